"""Process-level choices shared by every layer: where built artefacts are cached and which device to use."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """Where built artefacts live: $MIXGRPO_CACHE, else $XDG_CACHE_HOME/mixgrpo, else ~/.cache/mixgrpo."""
    if os.environ.get("MIXGRPO_CACHE"):
        return Path(os.environ["MIXGRPO_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "mixgrpo"


def pick_device(device: str = "auto") -> str:
    """``auto``: cuda when this process sees a GPU (an actor placed on a GPU bundle sees exactly its own)."""
    if device != "auto":
        return device
    import torch  # only callers that run a model ask for a device; rule-channel processes never import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
