"""``builtin:tiny-clip``: a 3 M-parameter open_clip ViT/text-transformer pair with random weights.

Built locally from a model config (no download) and cached; its scores mean
nothing, it exercises the same ``local-dir:`` loading path as a real checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mixgrpo.builtin import build_once
from mixgrpo.builtin.tiny_clip_digits import TINY_CLIP_DIGITS, tiny_clip_digits_dir
from mixgrpo.builtin.tiny_poster_clip import TINY_POSTER_CLIP, tiny_poster_clip_dir
from mixgrpo.runtime import cache_root

TINY_CLIP = "builtin:tiny-clip"
_TINY_VERSION = "v1"
_TINY_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
_CLIP_MEAN_STD = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}


def build_tiny_clip(directory: Path, seed: int = 0) -> None:
    """Write a random tiny open_clip model (config + safetensors) that ``local-dir:`` loads."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = open_clip.CLIP(**_TINY_CONFIG)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), str(directory / "open_clip_model.safetensors"))
    (directory / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": _TINY_CONFIG, "preprocess_cfg": _CLIP_MEAN_STD}, indent=1))


CLIP_BUILTINS = (TINY_CLIP, TINY_CLIP_DIGITS, TINY_POSTER_CLIP)
"""Builtin open_clip models, by full name."""


def resolve_clip_name(model: str) -> str:
    """The open_clip model name to load: a builtin CLIP is built (once) and becomes ``local-dir:...``."""
    if model == TINY_CLIP_DIGITS:
        return f"local-dir:{tiny_clip_digits_dir()}"
    if model == TINY_POSTER_CLIP:
        return f"local-dir:{tiny_poster_clip_dir()}"
    if model != TINY_CLIP:
        return model
    target = build_once(cache_root() / f"tiny-clip-{_TINY_VERSION}", "open_clip_config.json", build_tiny_clip)
    return f"local-dir:{target}"
