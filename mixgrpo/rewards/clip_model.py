"""An open_clip model loaded once per reward actor, scoring images against texts (CLIPScore).

CLIPScore (Hessel et al. 2021, "CLIPScore: A Reference-free Evaluation Metric for
Image Captioning", eq. 1): ``w * max(cos(E_image, E_text), 0)`` with w = 2.5.

Model sources: an open_clip name plus a ``pretrained`` tag or checkpoint file
(``ViT-B-32`` + ``laion2b_s34b_b79k``), ``local-dir:/path`` (an
``open_clip_config.json`` + weights folder), ``hf-hub:org/repo``, or
``builtin:tiny-clip``: a 3 M-parameter ViT/text-transformer pair with random
weights built locally from a model config and cached (no downloads; its scores
mean nothing, it exercises the same code path as a real checkpoint).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mixgrpo.builtin.tiny_clip import CLIP_BUILTINS, resolve_clip_name
from mixgrpo.runtime import pick_device

CLIPSCORE_W = 2.5
"""Hessel et al. 2021 rescale cosines by 2.5 so scores spread over roughly [0, 1]."""
LOCAL_DIR_WEIGHTS = (".safetensors", ".bin", ".pth")
"""Weights files open_clip looks for in a ``local-dir:`` folder (without one it warns and initialises randomly)."""


def check_clip_source(model: str, pretrained: str | None) -> None:
    """ValueError for a source that cannot load, checked without loading anything."""
    if model.startswith("builtin:") and model not in CLIP_BUILTINS:
        raise ValueError(f"unknown builtin CLIP model {model!r}; known: {', '.join(CLIP_BUILTINS)}")
    if model.startswith("local-dir:"):
        folder = Path(model.removeprefix("local-dir:"))
        if not (folder / "open_clip_config.json").is_file():
            raise ValueError(f"{model}: no open_clip_config.json in that directory")
        if not any(any(folder.glob(f"*{suffix}")) for suffix in LOCAL_DIR_WEIGHTS):
            raise ValueError(f"{model}: no weights file ({', '.join(LOCAL_DIR_WEIGHTS)}) beside open_clip_config.json "
                             "(open_clip would start from random weights)")
    looks_like_file = pretrained is not None and (pretrained.startswith(("/", ".", "~")) or "." in Path(pretrained).name)
    if looks_like_file and not Path(pretrained).expanduser().is_file():
        raise ValueError(f"pretrained checkpoint not found: {pretrained}")


class ClipScorer:
    """CLIPScore of (image, text) pairs, batched on one device; the model loads on ``load()``."""

    def __init__(self, model: str, pretrained: str | None = None, device: str = "auto",
                 batch_size: int = 32, w: float = CLIPSCORE_W) -> None:
        check_clip_source(model, pretrained)
        self.model_name, self.pretrained = model, pretrained
        self.device_name, self.batch_size, self.w = device, batch_size, w
        self.model: Any = None
        self._lock = threading.Lock()

    def load(self) -> "ClipScorer":
        """Load model, preprocessing and tokenizer (idempotent, thread-safe)."""
        import open_clip

        with self._lock:
            if self.model is None:
                name = resolve_clip_name(self.model_name)
                self.device = pick_device(self.device_name)
                model, _, preprocess = open_clip.create_model_and_transforms(
                    name, pretrained=None if name.startswith(("local-dir:", "hf-hub:")) else self.pretrained,
                    device=self.device)
                self.preprocess, self.tokenizer = preprocess, open_clip.get_tokenizer(name)
                self.model = model.eval()
        return self

    def image_tensor(self, images: list[Image.Image]) -> torch.Tensor:
        """(B, 3, S, S) preprocessed images on the model's device."""
        return torch.stack([self.preprocess(image) for image in images]).to(self.device)

    def text_features(self, texts: list[str]) -> torch.Tensor:
        """(B, D) unit-norm text embeddings."""
        tokens = self.tokenizer(texts).to(self.device)
        return torch.nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1)

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, D) unit-norm image embeddings of preprocessed ``pixels`` (B, 3, S, S)."""
        return torch.nn.functional.normalize(self.model.encode_image(pixels).float(), dim=-1)

    def cosine(self, pixels: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """(B,) cosine of each image with its text (differentiable w.r.t. ``pixels``)."""
        return (self.image_features(pixels) * self.text_features(texts)).sum(-1)

    @torch.no_grad()
    def score(self, images: list[Image.Image | None], texts: list[str]) -> list[float | None]:
        """(N,) CLIPScore ``w * max(cos, 0)``; None where the image is None.

        Each distinct text and each distinct image object (a prompt's image is
        shared by its m completions) is encoded once, in batches of batch_size.
        """
        self.load()
        present = [i for i, image in enumerate(images) if image is not None]
        if not present:
            return [None] * len(images)
        text_keys = list(dict.fromkeys(texts[i] for i in present))
        image_keys = list(dict.fromkeys(id(images[i]) for i in present))
        by_id = {id(images[i]): images[i] for i in present}
        text_table = self._batched(text_keys, self.text_features)
        image_table = self._batched([by_id[k] for k in image_keys],
                                    lambda chunk: self.image_features(self.image_tensor(chunk)))
        text_index = {key: row for row, key in enumerate(text_keys)}
        image_index = {key: row for row, key in enumerate(image_keys)}
        text_rows = [text_index[texts[i]] for i in present]
        image_rows = [image_index[id(images[i])] for i in present]
        cosines = (image_table[image_rows] * text_table[text_rows]).sum(-1)
        values = (self.w * cosines.clamp(min=0.0)).cpu().numpy().astype(np.float64)
        scores: list[float | None] = [None] * len(images)
        for i, value in zip(present, values):
            scores[i] = float(value)
        return scores

    def _batched(self, items: list[Any], encode: Any) -> torch.Tensor:
        return torch.cat([encode(items[s:s + self.batch_size]) for s in range(0, len(items), self.batch_size)])
