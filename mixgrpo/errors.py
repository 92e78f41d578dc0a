"""The one exception type for bad configuration and input.

Raised wherever a run is rejected because of what the user gave (config
fields, prompt files, model paths, channel options, output directories, command
options). The command line prints it as one line and exits with code 2; every
other exception is a bug and keeps its traceback (exit code 1).
"""

from __future__ import annotations


class InputError(ValueError):
    """Configuration or input that cannot run; the message names the field, file or option."""
