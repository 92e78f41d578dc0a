"""The built-in "svg-poster" task: write an SVG poster that shows a given text in a given style.

A prompt reads ``an SVG poster displaying "Spring Sale" in a blue serif font``;
its metadata holds the pieces (``text``, ``color``, ``font``) and ``reference``,
an SVG that satisfies the prompt (for warm starts, demos and tests). The quoted
string is what the ``ocr`` channel looks for; ``clipscore`` compares the
rendered poster with the prompt; ``renders`` checks that the SVG renders at all.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

import numpy as np

from mixgrpo.batch import PromptBatch

TEXTS = (
    "Spring Sale", "Jazz Night", "Open Late", "Big Sale 2024", "Summer Camp", "Book Fair", "Fresh Bread",
    "Art Show", "Live Music", "Spring Collection 2024", "Grand Opening", "Film Club",
)
COLORS = ("blue", "red", "green", "black", "purple", "orange")
FONTS = ("serif", "sans-serif", "monospace")


def reference_svg(text: str, color: str, font: str, size: int = 256) -> str:
    """A square poster that satisfies the prompt: a frame and the text centred in ``color`` and ``font``."""
    font_size = max(14, min(32, int(1.4 * size / max(len(text), 1))))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}">'
            f'<rect width="{size}" height="{size}" fill="white"/>'
            f'<rect x="8" y="8" width="{size - 16}" height="{size - 16}" fill="none" stroke="{color}" '
            f'stroke-width="4"/>'
            f'<text x="{size // 2}" y="{size // 2 + font_size // 3}" text-anchor="middle" '
            f'font-family="{font}" font-size="{font_size}" fill="{color}">{escape(text)}</text></svg>')


def poster_prompt(text: str, color: str, font: str) -> str:
    """The instruction for one poster."""
    return f'an SVG poster displaying "{text}" in a {color} {font} font'


def svg_poster_pool(num_prompts: int, seed: int) -> PromptBatch:
    """A seeded pool of ``num_prompts`` poster prompts (text x colour x font combinations repeat past 216)."""
    rng = np.random.default_rng(seed)
    combos = [(t, c, f) for t in TEXTS for c in COLORS for f in FONTS]
    order = rng.permutation(len(combos))
    chosen = [combos[order[i % len(combos)]] for i in range(num_prompts)]
    return PromptBatch(
        prompt_ids=np.arange(num_prompts, dtype=np.int64),
        prompts=[poster_prompt(t, c, f) for t, c, f in chosen],
        metadata=[{"text": t, "color": c, "font": f, "reference": reference_svg(t, c, f)} for t, c, f in chosen],
    )
