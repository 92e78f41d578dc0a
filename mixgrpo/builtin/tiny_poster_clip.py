"""``builtin:tiny-poster-clip``: a tiny open_clip pair that judges svg-poster renders against their prompts.

The towers of ``builtin:tiny-clip`` (a 2-layer ViT on 64x64 images in 8x8
patches, a 2-layer text transformer, 32-d embeddings) trained contrastively at
build time (CLIP's symmetric InfoNCE, Radford et al. 2021, eq. in fig. 3) on
posters rendered from the task (``tasks.svg_poster.compact_svg``, with and
without frame, jittered in place and size, some misspelled) against the prompt
each poster satisfies. Every batch holds distinct (text, colour, font) prompts,
so the negatives of a poster are posters of another colour, text or font: at
toy scale its CLIPScore rewards the right colour and text. Real runs point the
clipscore channel at ViT-B-32 instead; the loading path is the same
(``local-dir:``). Built locally (no download) on first use and cached.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from mixgrpo.builtin import build_once
from mixgrpo.runtime import cache_root
from mixgrpo.tasks.svg_poster import COLORS, FONTS, TEXTS, compact_svg, misspell, poster_prompt

TINY_POSTER_CLIP = "builtin:tiny-poster-clip"
BUILD_VERSION = "v1"
"""Bump whenever the build changes (the cache folder is named after it)."""
_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
_MEAN_STD = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
RENDER_SIZE = 128
"""Side of the training renders (the preprocessing resizes them to 64 as it resizes a scored render)."""
VARIANTS = 6
"""Rendered posters per (text, colour, font) prompt."""
TRAIN_STEPS = 500
"""AdamW steps of the contrastive pass (about a CPU minute with the rendering)."""
BATCH_SIZE = 96


def poster_pairs(seed: int, variants: int = VARIANTS) -> tuple[list[str], list[str]]:
    """(svgs, captions): ``variants`` posters of every prompt; a misspelled one is captioned with its own text."""
    rng = np.random.default_rng(seed)
    svgs, captions = [], []
    for text, color, font in [(t, c, f) for t in TEXTS for c in COLORS for f in FONTS]:
        for _ in range(variants):
            shown = misspell(text, rng) if rng.random() < 0.15 else text
            size = max(9, min(20, int(1.7 * 128 / len(shown)))) + int(rng.integers(-2, 3))
            svgs.append(compact_svg(shown, color, font, frame=rng.random() < 0.75, font_size=size,
                                    x=64 + int(rng.integers(-6, 7)), y=64 + size // 3 + int(rng.integers(-10, 11))))
            captions.append(poster_prompt(shown, color, font))
    return svgs, captions


def render_white(svg: str, size: int) -> Any:
    """``svg`` rendered to a ``size`` x ``size`` RGB PIL image on white (cairosvg)."""
    import cairosvg
    from PIL import Image

    png = cairosvg.svg2png(bytestring=svg.encode(), output_width=size, output_height=size, background_color="white")
    return Image.open(io.BytesIO(png)).convert("RGB")


def train_contrastive(model: Any, pixels: Any, tokens: Any, groups: np.ndarray, seed: int,
                      steps: int = TRAIN_STEPS, batch_size: int = BATCH_SIZE) -> float:
    """CLIP's symmetric cross-entropy over batches of distinct ``groups`` (prompts); returns the last loss.

    pixels (M, 3, 64, 64), tokens (M, 32), groups (M,): the prompt index of each pair.
    """
    import torch
    from torch.nn.functional import cross_entropy, normalize

    rng = np.random.default_rng(seed)
    by_group = [np.flatnonzero(groups == g) for g in range(int(groups.max()) + 1)]
    optimizer = torch.optim.AdamW([p for n, p in model.named_parameters() if n != "logit_scale"], lr=1e-3,
                                  weight_decay=0.0)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        chosen = rng.choice(len(by_group), size=min(batch_size, len(by_group)), replace=False)
        rows = torch.from_numpy(np.array([rng.choice(by_group[g]) for g in chosen]))
        image = normalize(model.encode_image(pixels[rows]), dim=-1)
        text = normalize(model.encode_text(tokens[rows]), dim=-1)
        logits = model.logit_scale.exp() * image @ text.T
        target = torch.arange(len(rows))
        loss = (cross_entropy(logits, target) + cross_entropy(logits.T, target)) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return float(loss.detach())


def build_tiny_poster_clip(directory: Path, seed: int = 0) -> None:
    """Write the trained model (config + safetensors) that ``local-dir:`` loads, and BUILD.txt."""
    import time

    import open_clip
    import torch
    from safetensors.torch import save_file

    started = time.monotonic()
    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": _CONFIG, "preprocess_cfg": _MEAN_STD}, indent=1))
    model = open_clip.CLIP(**_CONFIG)
    tokenizer = open_clip.get_tokenizer(f"local-dir:{directory}")
    preprocess = open_clip.image_transform(_CONFIG["vision_cfg"]["image_size"], is_train=False, **_MEAN_STD)
    svgs, captions = poster_pairs(seed)
    pixels = torch.stack([preprocess(render_white(svg, RENDER_SIZE)) for svg in svgs])
    groups = np.repeat(np.arange(len(svgs) // VARIANTS), VARIANTS)
    loss = train_contrastive(model, pixels, tokenizer(captions), groups, seed)
    save_file(model.state_dict(), str(directory / "open_clip_model.safetensors"))
    (directory / "BUILD.txt").write_text(f"{TINY_POSTER_CLIP} {BUILD_VERSION} seed={seed} contrastive loss={loss:.3f} "
                                         f"built in {time.monotonic() - started:.1f}s\n")


def tiny_poster_clip_dir() -> Path:
    """The built model's folder (built once into the cache)."""
    target = cache_root() / f"tiny-poster-clip-{BUILD_VERSION}"
    return build_once(target, "open_clip_model.safetensors", build_tiny_poster_clip)
