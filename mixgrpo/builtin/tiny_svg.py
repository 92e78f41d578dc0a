"""``builtin:tiny-svg``: a tiny causal LM that writes compact SVG posters (built once and cached).

No downloads: a byte-level BPE tokenizer is trained on the svg-poster task's
prompts and compact posters, a 2-layer Llama with random weights is created
(head_dim 64), and a short supervised pass on a noisy corpus derived from the
task's reference posters (``tasks.svg_poster.warm_start_corpus``: wrong colour,
wrong or misspelled text, no frame, off-canvas or tiny text, unclosed tags,
chatty prefixes, refusals) makes it write a poster that renders about half of
the time and one right on every head a minority of the time, so each image
channel has something to rank. Same pieces as ``tiny-arith`` (``causal_lm``).
"""

from __future__ import annotations

import time
from pathlib import Path

from mixgrpo.builtin.causal_lm import tiny_llama, train_tokenizer, warm_start
from mixgrpo.tasks.svg_poster import warm_start_corpus

BUILD_VERSION = "v1"
"""Bumped whenever the build changes, so a cache of an older build is never reused."""
VOCAB_SIZE = 800
SVG_PIECES = r' ?[^ "<>]+"?|<[^ "<>]*>?|[<>"]'
"""Tokens never cross these pieces: a word or attribute with its ``="`` or closing quote, a tag, a bracket.
A poster is about 40 tokens (``stroke="``, ``red"``, ``Summer``, `` Camp``, ``</text>``), its prompt about 14."""
WARM_START_STEPS = 400
"""Supervised steps of 32 (prompt, poster) rows: about 30 s on one CPU thread (render rate about 0.55 at temperature 1)."""


def build_tiny_svg(directory: Path, seed: int) -> None:
    """Train tokenizer, create and warm-start the model, ``save_pretrained`` both into directory."""
    started = time.monotonic()
    prompts, posters = warm_start_corpus(seed)
    tokenizer = train_tokenizer(prompts + posters, VOCAB_SIZE, SVG_PIECES)
    model = tiny_llama(tokenizer, seed)
    loss = warm_start(model, tokenizer, posters, steps=WARM_START_STEPS, prompts=prompts)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / "BUILD.txt").write_text(
        f"builtin:tiny-svg {BUILD_VERSION} seed={seed} warm-start loss={loss:.3f} "
        f"built in {time.monotonic() - started:.1f}s\n"
    )
