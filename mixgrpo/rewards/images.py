"""Images for image reward channels: from the prompt record, or by rendering the completion.

A text policy has no image of its own, so an image channel gets one of two ways:

- ``image_key: <column>``: the prompt record's metadata holds a path, raw bytes
  (PNG/JPEG, as Parquet binary columns hold them), a ``data:image/...;base64,``
  URL, or a ``{"bytes": ..., "path": ...}`` dict (the Hugging Face datasets form);
- ``render: svg``: the completion is SVG, rendered with cairosvg onto a fixed
  square white canvas (``render_size`` pixels, aspect kept by the SVG's own
  ``preserveAspectRatio``), so a hostile width/height cannot allocate a huge
  surface. External files and URLs are never fetched (cairosvg's safe mode).

An image that cannot be had is None: the channel's value is then null.
"""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from typing import Any, Literal, Mapping

from PIL import Image
from pydantic import Field, model_validator

from mixgrpo.rewards.channels.base import ChannelOptions

Renderer = Literal["svg"]
"""How a completion becomes an image (svg: cairosvg)."""
MAX_SVG_CHARS = 200_000
"""Longer completions are not rendered (null): a policy gone wild should not stall the reward actor."""

_SVG_BLOCK = re.compile(r"<svg\b.*?</svg\s*>", re.IGNORECASE | re.DOTALL)
_SVG_OPEN = re.compile(r"<svg\b", re.IGNORECASE)


def extract_svg(text: str) -> str | None:
    """The first ``<svg ...>...</svg>`` block of ``text`` (prose around it is ignored), or None."""
    found = _SVG_BLOCK.search(text)
    if found:
        return found.group()
    opened = _SVG_OPEN.search(text)
    return text[opened.start():] if opened else None  # unclosed: let the parser decide


def render_svg(text: str, size: int = 448) -> Image.Image | None:
    """Render the SVG in ``text`` to a ``size`` x ``size`` RGB image on white; None when it does not render."""
    import cairosvg

    svg = extract_svg(text)
    if svg is None or len(svg) > MAX_SVG_CHARS:
        return None
    try:
        png = cairosvg.svg2png(bytestring=svg.encode("utf-8"), output_width=size, output_height=size,
                               parent_width=size, parent_height=size, unsafe=False)
        rendered = Image.open(io.BytesIO(png))
        rendered.load()
    except Exception:  # malformed XML, unknown units, zero size, cairo errors: it does not render
        return None
    return on_white(rendered)


def on_white(image: Image.Image) -> Image.Image:
    """RGB copy of ``image`` with transparency composited onto white."""
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        canvas = Image.new("RGB", image.size, "white")
        canvas.paste(image, mask=image.getchannel("A"))
        return canvas
    return image.convert("RGB")


def load_image(value: Any, root: str | None = None) -> Image.Image | None:
    """An RGB image from a metadata value (path, bytes, data URL or {bytes, path} dict); None if unusable."""
    try:
        if isinstance(value, Mapping):
            value = value.get("bytes") or value.get("path")
        if isinstance(value, (bytes, bytearray, memoryview)):
            image = Image.open(io.BytesIO(bytes(value)))
        elif isinstance(value, str) and value.startswith("data:image/"):
            image = Image.open(io.BytesIO(base64.b64decode(value.split(",", 1)[1])))
        elif isinstance(value, str) and value:
            path = Path(value).expanduser()
            image = Image.open(path if path.is_absolute() or root is None else Path(root) / path)
        else:
            return None
        image.load()
    except Exception:  # missing file, not an image, truncated bytes
        return None
    return on_white(image)


class ImageOptions(ChannelOptions):
    """Options of an image channel: the image from the prompt record (``image_key``) or the completion (``render``)."""

    image_key: str | None = None
    """Prompt-metadata column holding the image (path, bytes, data URL, {bytes, path}); exclusive with render."""
    image_root: str | None = None
    """Directory relative image paths are resolved against (None: the record's image_root, e.g. an image-classes file's folder, else the working directory)."""
    render: Renderer | None = None
    """Render the completion instead (svg: cairosvg, safe mode); exclusive with image_key."""
    render_size: int = Field(default=448, ge=16, le=2048)
    """Side in pixels of the square canvas a completion is rendered on."""

    @model_validator(mode="after")
    def _one_source(self) -> "ImageOptions":
        if (self.image_key is None) == (self.render is None):
            raise ValueError("needs exactly one of image_key or render")
        return self


class ImageSource:
    """Where a channel's images come from: ``image_key`` (prompt metadata) or ``render`` (the completion).

    ``images(completions, metadata)`` returns one image or None per completion,
    loading each prompt's image once per batch.
    """

    def __init__(self, options: ImageOptions) -> None:
        self.image_key, self.render = options.image_key, options.render
        self.root, self.size = options.image_root, options.render_size

    def images(self, completions: list[str], metadata: list[dict[str, Any]]) -> list[Image.Image | None]:
        """(N,) images (None where there is none: a completion that does not render, a missing file)."""
        if self.render is not None:
            return [render_svg(text, self.size) for text in completions]
        by_record: dict[int, Image.Image | None] = {}  # the m completions of a prompt share its record
        for record in metadata:
            if id(record) not in by_record:
                by_record[id(record)] = load_image(record.get(self.image_key), self.root or record.get("image_root"))
        return [by_record[id(record)] for record in metadata]
