"""Process-level choices shared by every layer: where built artefacts are cached and which device to use."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


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


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend (plots are written, never shown; no display needed).

    Imported on first use: matplotlib costs about a second and only runs that draw need it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


DTYPE_NAMES = ("float32", "bfloat16", "float16")
"""The parameter dtypes a config may name (model.dtype, reward-model channels)."""


def torch_dtype(name: str) -> Any:
    """The ``torch.dtype`` called ``name`` (one of DTYPE_NAMES)."""
    if name not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {list(DTYPE_NAMES)}, got {name!r}")
    import torch

    return getattr(torch, name)
