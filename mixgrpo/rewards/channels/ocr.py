"""``ocr``: does the image show the text the prompt asks for? (Tesseract + edit distance.)

Targets are the quoted strings of the prompt (``"Spring Collection 2024"``), or
the metadata column ``targets_key`` (a string or a list of strings). The image
is the rendered completion (``render: svg``) or the prompt's image
(``image_key``). Value: mean over targets of ``confidence * (1 - normalised edit
distance)`` of the line matched to each target (Hungarian matching for several
targets; a target no line matches scores 0), see mixgrpo.rewards.ocr. Null when
the prompt has no target or there is no image.

Sub-channels (``sub_channels: {score: 1, legibility: 0.5, accuracy: 1}``):
``score`` (the value above), ``legibility`` (mean confidence of the matched
lines) and ``accuracy`` (mean ``1 - d`` of the matched lines).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from PIL import Image

from pydantic import Field

from mixgrpo.rewards.channels.base import ScoringInput, register
from mixgrpo.rewards.images import ImageOptions, ImageSource
from mixgrpo.rewards.ocr import OcrMatch, match_targets, prompt_targets, read_lines

PARTS = ("score", "legibility", "accuracy")


class OcrOptions(ImageOptions):
    lang: str = "eng"
    """Tesseract language(s), e.g. eng or eng+deu."""
    psm: int = Field(default=11, ge=0, le=13)
    """Tesseract page segmentation mode (11: sparse text, any order)."""
    case_sensitive: bool = False
    """Compare letter case when matching lines to targets."""
    targets_key: str | None = None
    """Prompt-metadata column with the target string(s) (None: the quoted strings of the prompt)."""
    min_confidence: float = Field(default=0.0, ge=0, le=1)
    """Tesseract lines below this confidence are ignored."""
    threads: int = Field(default=2, ge=1)
    """Images read in parallel (each a tesseract subprocess)."""
    map_sigma: float = Field(default=6.0, ge=0)
    """Blur in pixels of the OCR reward map."""


class OcrChannel:
    """OCR reward for a batch (``parts`` gives the sub-channels, ``reward_maps`` the per-pixel maps)."""

    def __init__(self, options: OcrOptions) -> None:
        self.source = ImageSource(options)
        self.opts = options

    def setup(self) -> None:
        """Fail at actor start (not on every batch) when the tesseract binary is missing."""
        import pytesseract

        pytesseract.get_tesseract_version()

    def targets(self, prompt: str, metadata: dict[str, Any]) -> list[str]:
        """The strings the image should show."""
        key = self.opts.targets_key
        if key is None:
            return prompt_targets(prompt)
        value = metadata.get(key)
        return [value] if isinstance(value, str) else [str(v) for v in (value or [])]

    def matches(self, batch: ScoringInput) -> list[tuple[Image.Image, list, OcrMatch] | None]:
        """(N,) (image, lines, match) per completion; None without image or targets."""
        images = self.source.images(batch.completions, batch.metadata)
        targets = [self.targets(p, md) for p, md in zip(batch.prompts, batch.metadata)]

        def one(i: int) -> tuple[Image.Image, list, OcrMatch] | None:
            if images[i] is None or not targets[i]:
                return None
            lines = read_lines(images[i], self.opts.lang, self.opts.psm, self.opts.min_confidence)
            return images[i], lines, match_targets(targets[i], lines, self.opts.case_sensitive)

        with ThreadPoolExecutor(max_workers=self.opts.threads) as pool:  # tesseract runs as a subprocess
            return list(pool.map(one, range(len(batch))))

    def parts(self, batch: ScoringInput) -> dict[str, list[float | None]]:
        """Sub-channel name -> (N,) values (score, legibility, accuracy)."""
        found = self.matches(batch)
        return {part: [None if f is None else getattr(f[2], part) for f in found] for part in PARTS}

    def __call__(self, batch: ScoringInput) -> list[float | None]:
        return [None if f is None else f[2].score for f in self.matches(batch)]

    def reward_maps(self, batch: ScoringInput) -> list[tuple[np.ndarray, np.ndarray] | None]:
        """(N,) (image (H, W, 3) uint8, OCR reward map (H, W) in [0, 1]); None without image or targets."""
        from mixgrpo.rewards.maps import ocr_map

        return [None if f is None else (np.asarray(f[0]), ocr_map(f[0].size, f[1], f[2].line_rewards,
                                                                  self.opts.map_sigma))
                for f in self.matches(batch)]


@register("ocr", OcrOptions)
def ocr_channel(options: OcrOptions) -> OcrChannel:
    """OCR channel: does the image show the prompt's target text."""
    return OcrChannel(options)
