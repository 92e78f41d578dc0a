"""``builtin:tiny-clip-digits``: a tiny open_clip pair sized for 8x8 digits, image tower at random init.

Image tower: a 2-layer ViT on 16x16 inputs in 8x8 patches (each patch one
quadrant of an upsampled digit), width 64: random weights, so a policy built on
it starts at chance. Text tower: the 2-layer text transformer of
``builtin:tiny-clip``, whose random features for "a photo of the digit 3." and
"... 4." point almost the same way (pairwise cosines 0.8-0.99), which leaves
the classifier logits no room. So the build spreads them, text only: 40
Adam steps on the text tower (embedding table fixed) minimise the log-sum-exp of the pairwise
cosines of the ten class features (each the mean over ``DIGIT_TEMPLATES``, as
the policy computes them): a uniformity loss (Wang & Isola 2020, eq. 1 on the
sphere). It never sees an image, so held-out accuracy still starts at chance;
the text tower is then frozen by the policy (model.clip.towers=visual).

Built locally (no download) on first use and cached, like every builtin.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mixgrpo.builtin import build_once
from mixgrpo.config import DIGIT_TEMPLATES
from mixgrpo.runtime import cache_root

TINY_CLIP_DIGITS = "builtin:tiny-clip-digits"
BUILD_VERSION = "v2"
"""Bump whenever the build changes (the cache folder is named after it)."""
_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 16, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
_GREY_MEAN_STD = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
SPREAD_STEPS = 40
"""Adam steps of the text-only uniformity loss at build time."""


def spread_text_features(model: Any, tokenizer: Any, names: list[str], templates: list[str], steps: int) -> float:
    """Train only the text tower so the class features (template means) spread; returns the final max cosine."""
    import torch
    from torch.nn.functional import normalize

    tokens = tokenizer([template.format(name) for name in names for template in templates])
    frozen = ("visual.", "token_embedding.", "logit_scale")  # the embedding table is 3 M rows of Adam state
    text_parameters = [p for n, p in model.named_parameters() if not n.startswith(frozen)]
    optimizer = torch.optim.Adam(text_parameters, lr=1e-3)
    off_diagonal = ~torch.eye(len(names), dtype=torch.bool)

    def cosines() -> torch.Tensor:
        features = normalize(model.encode_text(tokens), dim=-1).view(len(names), len(templates), -1)
        classes = normalize(features.mean(dim=1), dim=-1)
        return (classes @ classes.T)[off_diagonal]

    for _ in range(steps):
        loss = torch.logsumexp(4.0 * cosines(), dim=0)  # uniformity: push the closest pairs apart first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return float(cosines().max())


def build_tiny_clip_digits(directory: Path, seed: int = 0) -> None:
    """Write the model (config + safetensors) that ``local-dir:`` loads, its text features spread."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": _CONFIG, "preprocess_cfg": _GREY_MEAN_STD}, indent=1))
    model = open_clip.CLIP(**_CONFIG)
    tokenizer = open_clip.get_tokenizer(f"local-dir:{directory}")
    spread_text_features(model, tokenizer, [str(d) for d in range(10)], list(DIGIT_TEMPLATES), SPREAD_STEPS)
    save_file(model.state_dict(), str(directory / "open_clip_model.safetensors"))


def tiny_clip_digits_dir() -> Path:
    """The built model's folder (built once into the cache)."""
    target = cache_root() / f"tiny-clip-digits-{BUILD_VERSION}"
    return build_once(target, "open_clip_model.safetensors", build_tiny_clip_digits)
