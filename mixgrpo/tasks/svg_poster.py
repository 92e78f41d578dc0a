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


COMPACT_SIZE = 128
"""Canvas side of ``compact_svg`` posters (the renderers scale it to their own size)."""
_CHATTY_PREFIXES = ("Sure! Here is your poster:\n", "Here you go: ", "Of course.\n")
_REFUSALS = ("I cannot draw posters.", "Sorry, I only write text.", "A poster with nice colours.")


def compact_svg(text: str, color: str, font: str, *, frame: bool = True, x: int | None = None,
                y: int | None = None, font_size: int | None = None) -> str:
    """The poster of ``reference_svg`` in the compact SVG a tiny policy writes (about 60 tokens).

    A 128-pixel canvas (no background rect: renders composite onto white), an
    optional frame in ``color`` and the text centred; ``x``, ``y`` and
    ``font_size`` override the placement (off-canvas or tiny text in the noisy corpus).
    """
    size = font_size if font_size is not None else max(9, min(20, int(1.7 * COMPACT_SIZE / max(len(text), 1))))
    x = COMPACT_SIZE // 2 if x is None else x
    y = COMPACT_SIZE // 2 + size // 3 if y is None else y
    rect = (f'<rect x="6" y="6" width="{COMPACT_SIZE - 12}" height="{COMPACT_SIZE - 12}" fill="none" '
            f'stroke="{color}" stroke-width="3"/>') if frame else ""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{COMPACT_SIZE}" height="{COMPACT_SIZE}">{rect}'
            f'<text x="{x}" y="{y}" text-anchor="middle" font-family="{font}" font-size="{size}" '
            f'fill="{color}">{escape(text)}</text></svg>')


def misspell(text: str, rng: np.random.Generator) -> str:
    """``text`` with one letter dropped, doubled or swapped with its neighbour (a seeded choice)."""
    at = int(rng.integers(len(text) - 1))
    edit = int(rng.integers(3))
    if edit == 0:
        return text[:at] + text[at + 1:]
    if edit == 1:
        return text[:at] + text[at] + text[at:]
    return text[:at] + text[at + 1] + text[at] + text[at + 2:]


def noisy_poster(text: str, color: str, font: str, rng: np.random.Generator) -> str:
    """One completion for the prompt of (text, color, font), each defect drawn independently.

    Wrong colour 30 %, wrong or misspelled text 30 %, no frame 20 %, off-canvas
    or tiny text 12 %, broken markup (unclosed tags, cut short) 35 %, a chatty
    prefix 15 %, a refusal with no SVG at all 5 %: about 60 % render and about a
    fifth are right on every head.
    """
    if rng.random() < 0.05:
        return str(rng.choice(_REFUSALS))
    if rng.random() < 0.3:
        color = str(rng.choice([c for c in COLORS if c != color]))
    if rng.random() < 0.3:
        text = misspell(text, rng) if rng.random() < 0.6 else str(rng.choice([t for t in TEXTS if t != text]))
    placement: dict[str, int] = {}
    if rng.random() < 0.12:
        placement = [{"x": 200}, {"y": -12}, {"font_size": 2}][int(rng.integers(3))]
    svg = compact_svg(text, color, font, frame=rng.random() >= 0.2, **placement)
    if rng.random() < 0.35:
        cut = ["</text>", "</svg>", '"/>'][int(rng.integers(3))]
        svg = svg.replace(cut, "", 1) if cut != "</svg>" else svg[: -len(cut) - int(rng.integers(0, 12))]
    if rng.random() < 0.15:
        svg = str(rng.choice(_CHATTY_PREFIXES)) + svg
    return svg


def warm_start_corpus(seed: int, copies: int = 20) -> tuple[list[str], list[str]]:
    """(prompts, completions): every text x colour x font prompt ``copies`` times, each with a ``noisy_poster``."""
    rng = np.random.default_rng(seed)
    combos = [(t, c, f) for t in TEXTS for c in COLORS for f in FONTS] * copies
    order = rng.permutation(len(combos))
    chosen = [combos[i] for i in order]
    return [poster_prompt(*combo) for combo in chosen], [noisy_poster(*combo, rng) for combo in chosen]
