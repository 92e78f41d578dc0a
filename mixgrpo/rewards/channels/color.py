"""``color``: is the drawing in the colour the prompt asks for? (A pixel-level image rule, no model.)

The image (the rendered completion with ``render: svg``, or the prompt's with
``image_key``) is composited onto white. Drawn pixels are those farther than
``background_tolerance`` from the background; the value is the share of drawn
pixels within ``tolerance`` of the segment from the background to the asked
colour (so the anti-aliased edges of a blue glyph, blends of blue and white,
count as blue). Distances are Euclidean in RGB scaled to [0, 1] (the cube's
diagonal is 1). The asked colour is the metadata column ``color_key`` (a CSS
name, ``#rrggbb`` or ``rgb(...)``, read by PIL). Null when there is no image or
nothing is drawn; a prompt without the column is null too, an unknown colour
name an item error (null, counted).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageColor
from pydantic import Field

from mixgrpo.rewards.channels.base import ItemError, ScoringInput, register
from mixgrpo.rewards.images import ImageOptions, ImageSource

_BACKGROUND = (255, 255, 255)
"""Every image is composited onto white (``images.on_white``)."""


class ColorOptions(ImageOptions):
    color_key: str = "color"
    """Prompt-metadata column with the asked colour (CSS name, #rrggbb or rgb(...))."""
    tolerance: float = Field(default=0.15, gt=0, le=1)
    """Largest distance of a pixel from the background-to-colour segment that still counts as the colour."""
    background_tolerance: float = Field(default=0.1, ge=0, lt=1)
    """Pixels this close to the white background are background, not drawn."""


def color_share(pixels: np.ndarray, color: tuple[int, int, int], tolerance: float,
                background_tolerance: float) -> float | None:
    """Share of drawn pixels of ``pixels`` (H, W, 3) uint8 close to ``color``; None when nothing is drawn.

    A pixel p is drawn when |p - b| > background_tolerance, and close when its
    distance to the segment b + t (c - b), t in [0, 1], is <= tolerance (b the
    background, c the colour; RGB in [0, 1], distances divided by sqrt 3).
    """
    p = pixels.reshape(-1, 3).astype(np.float64) / 255.0
    b = np.asarray(_BACKGROUND, dtype=np.float64) / 255.0
    c = np.asarray(color, dtype=np.float64) / 255.0
    scale = np.sqrt(3.0)
    drawn = np.linalg.norm(p - b, axis=1) / scale > background_tolerance
    if not drawn.any():
        return None
    direction = c - b
    length = float(direction @ direction)
    t = np.clip((p[drawn] - b) @ direction / length, 0.0, 1.0) if length > 0 else np.zeros(int(drawn.sum()))
    nearest = b + t[:, None] * direction
    close = np.linalg.norm(p[drawn] - nearest, axis=1) / scale <= tolerance
    return float(close.mean())


class ColorChannel:
    """Colour reward for a batch: share of the drawn pixels in the asked colour."""

    def __init__(self, options: ColorOptions) -> None:
        self.source = ImageSource(options)
        self.opts = options

    def one(self, image: Image.Image | None, metadata: dict[str, Any]) -> float | None | ItemError:
        """The value of one completion (None without image, colour or drawing)."""
        asked = metadata.get(self.opts.color_key)
        if image is None or asked is None:
            return None
        try:
            color = ImageColor.getrgb(str(asked))[:3]
        except ValueError:
            return ItemError(ValueError(f"{self.opts.color_key}={asked!r} is not a colour PIL knows"))
        return color_share(np.asarray(image.convert("RGB")), color, self.opts.tolerance,
                           self.opts.background_tolerance)

    def __call__(self, batch: ScoringInput) -> list[float | None | ItemError]:
        images = self.source.images(batch.completions, batch.metadata)
        return [self.one(image, md) for image, md in zip(images, batch.metadata)]


@register("color", ColorOptions)
def color_channel(options: ColorOptions) -> ColorChannel:
    """Colour channel: share of the drawn pixels close to the prompt's colour."""
    return ColorChannel(options)
