"""builtin:tiny-poster-clip: trained at build time so its CLIPScore prefers the asked colour and text."""

from __future__ import annotations

import numpy as np
import pytest

from mixgrpo.builtin.tiny_clip import CLIP_BUILTINS
from mixgrpo.builtin.tiny_poster_clip import TINY_POSTER_CLIP, poster_pairs
from mixgrpo.rewards.channels import ScoringInput, build_channel
from mixgrpo.tasks.svg_poster import COLORS, FONTS, TEXTS, compact_svg, poster_prompt


@pytest.fixture(scope="module")
def judge(tiny_model_cache):
    channel = build_channel("clipscore", {"model": TINY_POSTER_CLIP, "render": "svg", "render_size": 128})
    channel.setup()
    return channel


def test_training_pairs_are_seeded_and_captioned_with_what_they_show():
    svgs, captions = poster_pairs(0, variants=2)
    assert (svgs, captions) == poster_pairs(0, variants=2)
    assert len(svgs) == 2 * len(TEXTS) * len(COLORS) * len(FONTS)
    assert all(f'fill="{caption.split(" in a ")[1].split()[0]}"' in svg for svg, caption in zip(svgs, captions))
    assert TINY_POSTER_CLIP in CLIP_BUILTINS


def test_clipscore_prefers_the_right_colour_and_the_right_text(judge):
    rng = np.random.default_rng(7)
    prompts, completions = [], []
    for _ in range(24):
        text, color, font = TEXTS[rng.integers(len(TEXTS))], COLORS[rng.integers(len(COLORS))], FONTS[rng.integers(3)]
        other_color = COLORS[(COLORS.index(color) + 1 + rng.integers(len(COLORS) - 1)) % len(COLORS)]
        other_text = TEXTS[(TEXTS.index(text) + 1 + rng.integers(len(TEXTS) - 1)) % len(TEXTS)]
        prompts += [poster_prompt(text, color, font)] * 3
        completions += [compact_svg(text, color, font), compact_svg(text, other_color, font),
                        compact_svg(other_text, color, font)]
    scores = np.array(judge(ScoringInput(prompts=prompts, completions=completions, metadata=[{}] * len(prompts),
                                         completion_tokens=[0] * len(prompts)))).reshape(-1, 3)
    right, wrong_colour, wrong_text = scores.T
    assert np.mean(right > wrong_colour) > 0.9
    assert np.mean(right > wrong_text) > 0.6
    assert right.mean() - wrong_text.mean() > 0.1
