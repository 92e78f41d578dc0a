"""``renders``: a format check for drawing policies: 1 when the completion renders, else 0."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from mixgrpo.rewards.channels.base import ChannelOptions, PerSample, register
from mixgrpo.rewards.images import Renderer, render_svg


class RendersOptions(ChannelOptions):
    render: Renderer = "svg"
    """What the completion must be to render (svg: cairosvg, safe mode)."""
    render_size: int = Field(default=64, ge=16, le=2048)
    """Side in pixels of the check render (small: only whether it renders matters)."""


@register("renders", RendersOptions)
def renders_channel(options: RendersOptions) -> PerSample:
    """1.0 when the completion holds an SVG that cairosvg renders, else 0.0 (never null)."""

    def score(prompt: str, completion: str, metadata: dict[str, Any], n_tokens: int) -> float:
        return 0.0 if render_svg(completion, options.render_size) is None else 1.0

    return PerSample(score)
