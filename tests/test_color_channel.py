"""The ``color`` channel on hand-made images (right, wrong, empty, transparent) and on rendered posters."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mixgrpo.rewards.channels import ChannelOptionsError, ScoringInput, build_channel
from mixgrpo.rewards.channels.base import ItemError
from mixgrpo.tasks.svg_poster import compact_svg


def _png(pixels: np.ndarray, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _white(size: int = 10) -> np.ndarray:
    return np.full((size, size, 3), 255, dtype=np.uint8)


def _score(images: list[bytes], colors: list[str | None]) -> list:
    channel = build_channel("color", {"image_key": "image"})
    metadata = [{"image": image} if color is None else {"image": image, "color": color}
                for image, color in zip(images, colors)]
    n = len(images)
    return channel(ScoringInput(prompts=["p"] * n, completions=[""] * n, metadata=metadata, completion_tokens=[0] * n))


def test_right_wrong_empty_and_transparent_images():
    right = _white()
    right[2:5, 2:6] = (0, 0, 255)       # 12 pure blue pixels
    right[5, 2:6] = (128, 128, 255)     # 4 anti-aliased edge pixels: half blue, half white
    mixed = right.copy()
    mixed[8, 0:4] = (255, 0, 0)         # 4 red pixels: 16 of 20 drawn pixels are blue
    wrong = _white()
    wrong[2:5, 2:6] = (255, 0, 0)
    faint = _white()
    faint[0, 0] = (250, 250, 250)       # within the background tolerance: nothing drawn
    transparent = np.zeros((10, 10, 4), dtype=np.uint8)
    transparent[..., 2] = 255           # blue everywhere, but alpha 0: composited onto white
    half = transparent.copy()
    half[0:2, 0:5, 3] = 255             # 10 opaque blue pixels
    values = _score([_png(right), _png(mixed), _png(wrong), _png(_white()), _png(faint),
                     _png(transparent, "RGBA"), _png(half, "RGBA")], ["blue"] * 7)
    assert values[:2] == [1.0, pytest.approx(0.8)]
    assert values[2] == 0.0
    assert values[3:6] == [None, None, None]
    assert values[6] == 1.0


def test_the_colour_comes_from_the_metadata_in_any_form_pil_reads():
    red = _white()
    red[0:3, 0:3] = (255, 0, 0)
    values = _score([_png(red)] * 5, ["red", "#ff0000", "rgb(255, 0, 0)", None, "reddish"])
    assert values[:3] == [1.0, 1.0, 1.0]
    assert values[3] is None                    # the prompt asks for no colour
    assert isinstance(values[4], ItemError)     # an unknown name: null for that completion, counted


def test_close_colours_are_told_apart():
    purple = _white()
    purple[0:3, 0:3] = (128, 0, 128)
    orange = _white()
    orange[0:3, 0:3] = (255, 165, 0)
    assert _score([_png(purple), _png(orange)], ["blue", "red"]) == [0.0, 0.0]


def test_rendered_posters_in_the_right_and_the_wrong_colour():
    channel = build_channel("color", {"render": "svg", "render_size": 128})
    completions = [compact_svg("Jazz Night", "green", "serif"), compact_svg("Jazz Night", "orange", "serif"),
                   compact_svg("Jazz Night", "green", "serif")[:-12], "no drawing"]
    batch = ScoringInput(prompts=["p"] * 4, completions=completions, metadata=[{"color": "green"}] * 4,
                         completion_tokens=[0] * 4)
    right, wrong, broken, prose = channel(batch)
    assert right > 0.9 and wrong < 0.05
    assert broken is None and prose is None


def test_options_are_validated():
    with pytest.raises(ChannelOptionsError, match="options.tolerance"):
        build_channel("color", {"render": "svg", "tolerance": 0})
    with pytest.raises(ChannelOptionsError, match="exactly one of image_key or render"):
        build_channel("color", {})
