"""Builtin models: tiny checkpoints built locally (no download) on first use and cached.

``builtin:tiny-arith`` is the default job's causal LM (``tiny_arith``),
``builtin:tiny-svg`` the svg-poster job's (``tiny_svg``);
``builtin:tiny-clip`` a random open_clip pair for the CLIP channels (``tiny_clip``).
Each is built once into ``cache_root()`` by an atomic rename, so concurrent
actors never see half a model, and then loads exactly like a real checkpoint.
This module stays light (no torch import): the builders import their own stacks.
"""

from __future__ import annotations

import importlib
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from mixgrpo.errors import InputError
from mixgrpo.runtime import cache_root

BUILTIN_PREFIX = "builtin:"
TINY_ARITH = "tiny-arith"
TINY_SVG = "tiny-svg"
_LM_BUILDERS = {TINY_ARITH: ("mixgrpo.builtin.tiny_arith", "build_tiny_arith"),
                TINY_SVG: ("mixgrpo.builtin.tiny_svg", "build_tiny_svg")}
"""Builtin causal LM -> (module, builder); the module (torch + transformers) is imported only when asked for."""
LANGUAGE_MODELS = tuple(_LM_BUILDERS)
"""Builtin causal LMs, by name after the prefix."""


def is_builtin(path: str) -> bool:
    """True for a ``builtin:<name>`` model path."""
    return path.startswith(BUILTIN_PREFIX)


def check_builtin_name(path: str) -> None:
    """Raise ValueError unless ``path`` names a known builtin language model."""
    if path.removeprefix(BUILTIN_PREFIX) not in LANGUAGE_MODELS:
        known = ", ".join(BUILTIN_PREFIX + name for name in LANGUAGE_MODELS)
        raise InputError(f"unknown builtin model {path!r}; known: {known}")


def resolve_model_path(path: str, seed: int = 0) -> str:
    """A loadable model path: builtin names are built on first use, others returned unchanged."""
    if not is_builtin(path):
        return path
    check_builtin_name(path)
    name = path.removeprefix(BUILTIN_PREFIX)
    module_name, builder = _LM_BUILDERS[name]
    module = importlib.import_module(module_name)
    target = cache_root() / f"{name}-{module.BUILD_VERSION}-seed{seed}"
    build_once(target, "config.json", lambda staging: getattr(module, builder)(staging, seed))
    return str(target)


def build_once(target: Path, marker: str, build: Callable[[Path], None]) -> Path:
    """Build into a staging folder next to ``target`` and rename it there, unless ``target/marker`` exists.

    A concurrent builder that renamed first wins; its result is equivalent (same seed, same code).
    """
    if (target / marker).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".building-{target.name}-", dir=target.parent))
    try:
        build(staging)
        try:
            staging.rename(target)
        except OSError:
            if not (target / marker).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
