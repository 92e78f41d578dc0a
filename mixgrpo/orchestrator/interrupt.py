"""Ctrl-C and SIGTERM during a run: the first asks the step loop to stop, a second exits at once.

The first signal only sets a flag; the driver finishes the step in flight,
writes a checkpoint and raises ``TrainingInterrupted``, which the command line
prints as one line (exit code 128 + signal: 130 for SIGINT, 143 for SIGTERM).
A second signal exits the process immediately, killing the processes it started
first (a local Ray's GCS, raylet, workers and agents: left alone, the agents
outlive the raylet for minutes).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType, TracebackType

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(Exception):
    """A run stopped by a signal after checkpointing ``step``; resumable with ``--resume run_dir``."""

    def __init__(self, run_dir: Path, step: int, signum: int) -> None:
        super().__init__(f"interrupted at step {step}; resume with: mixgrpo train --resume {run_dir}")
        self.run_dir, self.step, self.signum = run_dir, step, signum

    @property
    def exit_code(self) -> int:
        """The shell's convention for death by a signal: 128 + the signal number."""
        return 128 + self.signum


def _kill_descendants() -> None:
    """SIGKILL every process this one started, children first in no particular order (best effort)."""
    import psutil

    for child in psutil.Process().children(recursive=True):
        try:
            child.kill()
        except psutil.Error:
            pass  # already gone


class StopRequest:
    """Context manager installing the two-stage SIGINT/SIGTERM handler (main thread only; elsewhere a no-op)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        """The first signal received, or None."""
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        """True once a stop signal arrived."""
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            sys.stderr.write(f"\nmixgrpo: {signal.Signals(signum).name} again: exiting now, without a checkpoint\n")
            sys.stderr.flush()
            _kill_descendants()
            os._exit(128 + signum)
        self.signum = signum
        sys.stderr.write(f"\nmixgrpo: {signal.Signals(signum).name}: stopping after the current step "
                         "(again to exit at once)\n")
        sys.stderr.flush()

    def install(self) -> None:
        """(Re)install the handlers: ray.init puts its own SIGTERM handler in place, which aborts the process."""
        if threading.current_thread() is threading.main_thread():
            for signum in _SIGNALS:
                self._previous.setdefault(signum, signal.signal(signum, self._handle))

    def __enter__(self) -> "StopRequest":
        self.install()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        for signum, handler in self._previous.items():  # None: a handler set outside Python
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
