"""``renders``: a format check for drawing policies: 1 when the completion renders, else 0."""

from __future__ import annotations

from typing import Any

from mixgrpo.rewards.channels.base import PerSample, pop_options, register
from mixgrpo.rewards.images import RENDERERS, render_svg


@register("renders")
def renders_channel(options: dict[str, Any]) -> PerSample:
    """1.0 when the completion holds an SVG that cairosvg renders, else 0.0 (never null).

    options: render (default "svg"), render_size (pixels of the check render, default 64).
    """
    opts = pop_options(options, "renders", {"render": "svg", "render_size": 64})
    if opts["render"] not in RENDERERS or not 16 <= int(opts["render_size"]) <= 2048:
        raise ValueError(f"channel kind 'renders': options.render in {list(RENDERERS)}, render_size in [16, 2048]")
    size = int(opts["render_size"])

    def score(prompt: str, completion: str, metadata: dict[str, Any], n_tokens: int) -> float:
        return 0.0 if render_svg(completion, size) is None else 1.0

    return PerSample(score)
