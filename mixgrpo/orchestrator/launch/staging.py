"""What a job ships besides the package: its resolved config and the prompt file it reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mixgrpo.config import Config


def staged_config(config: Config) -> tuple[str, dict[str, Path]]:
    """The config as YAML for the job's working directory, and the local files to put beside it.

    A ``task.kind: file`` prompt file is shipped as ``prompts<suffix>`` and the config points at
    that relative name (the job runs in the directory it is unpacked in).
    """
    data: dict[str, Any] = config.model_dump(mode="json")
    files: dict[str, Path] = {}
    if config.task.kind == "file" and config.task.path:
        source = Path(config.task.path).expanduser()
        files[f"prompts{source.suffix}"] = source
        data["task"]["path"] = f"prompts{source.suffix}"
    return yaml.safe_dump(data, sort_keys=False), files
