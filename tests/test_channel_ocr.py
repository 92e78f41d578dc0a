"""The ``ocr`` channel: target extraction and Hungarian matching by hand, then real Tesseract on Pillow images."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from mixgrpo.rewards.channels import ScoringInput, build_channel
from mixgrpo.rewards.ocr import (
    OcrLine,
    match_targets,
    normalise,
    prompt_targets,
    read_lines,
)
from mixgrpo.tasks.svg_poster import reference_svg


def text_image(lines: list[tuple[str, int]], size: tuple[int, int] = (640, 260)) -> Image.Image:
    """Black text on white, one (text, y) per line, in Pillow's bundled font at 36 px."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=36)
    for text, y in lines:
        draw.text((24, y), text, fill="black", font=font)
    return image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def line(text: str, confidence: float) -> OcrLine:
    return OcrLine(text, confidence, (0, 0, 10, 10))


def test_targets_are_the_quoted_strings():
    prompt = 'an SVG poster displaying "Spring Collection 2024" and \u201cBig Sale\u201d in a blue serif font'
    assert prompt_targets(prompt) == ["Spring Collection 2024", "Big Sale"]
    assert prompt_targets("no quotes here") == []
    assert prompt_targets('empty "" quotes "x"') == ["x"]
    assert normalise("  Big\n  SALE ") == "big sale"


def test_single_target_takes_its_best_line():
    match = match_targets(["sale"], [line("sole", 0.9), line("sale", 0.5), line("nothing alike", 1.0)])
    # r = conf * (1 - d): "sole" 0.9 * 0.75 = 0.675, "sale" 0.5 * 1 = 0.5
    assert match.score == pytest.approx(0.675)
    assert match.legibility == pytest.approx(0.9) and match.accuracy == pytest.approx(0.75)


def test_several_targets_are_matched_one_to_one_hungarian():
    # r (targets x lines): "abcd": [1.0, 0.5 * 0.75], "abce": [0.75, 0.5]. Both targets' best line is
    # "abcd" (independent maxima would give (1.0 + 0.75) / 2); one-to-one, the best total is
    # "abcd" -> "abcd", "abce" -> "abce": (1.0 + 0.5) / 2.
    match = match_targets(["abcd", "abce"], [line("abcd", 1.0), line("abce", 0.5)])
    assert match.score == pytest.approx(0.75)
    assert match.legibility == pytest.approx(0.75) and match.accuracy == pytest.approx(1.0)
    # three targets, two lines: the third is unmatched and counts 0
    three = match_targets(["abcd", "abce", "zzzz"], [line("abcd", 1.0), line("abce", 0.5)])
    assert three.score == pytest.approx(1.5 / 3)


def test_a_missing_target_lowers_the_score():
    one = match_targets(["Jazz Night"], [line("Jazz Night", 0.9)])
    two = match_targets(["Jazz Night", "Free Entry"], [line("Jazz Night", 0.9)])
    assert one.score == pytest.approx(0.9)
    assert two.score == pytest.approx(0.45) and two.accuracy == pytest.approx(0.5)
    assert match_targets(["x"], []).score == 0.0


def test_tesseract_reads_lines_with_confidence_and_boxes():
    image = text_image([("Spring Collection 2024", 30), ("Big Sale", 150)])
    lines = read_lines(image)
    assert [normalise(x.text) for x in lines] == ["spring collection 2024", "big sale"]
    assert all(0.5 < x.confidence <= 1.0 for x in lines)
    left, top, right, bottom = lines[1].box
    assert 10 < left < 60 and 140 < top < 170 and right > left and bottom > top


def ocr_batch(prompts: list[str], images: list[Image.Image | None]) -> ScoringInput:
    metadata = [{"image": None if image is None else png_bytes(image)} for image in images]
    return ScoringInput(prompts=prompts, completions=[""] * len(prompts), metadata=metadata,
                        completion_tokens=[0] * len(prompts))


def test_channel_rewards_the_right_text_more_than_a_misspelt_or_missing_one():
    ocr = build_channel("ocr", {"image_key": "image"})
    prompt = 'a poster displaying "Spring Collection 2024"'
    good = text_image([("Spring Collection 2024", 60)])
    misspelt = text_image([("Sprng Colecton 2042", 60)])
    blank = Image.new("RGB", (640, 260), "white")
    values = ocr(ocr_batch([prompt] * 4 + ["no target in this prompt"], [good, misspelt, blank, None, good]))
    assert values[0] > 0.85
    assert 0.2 < values[1] < values[0] - 0.2
    assert values[2] == 0.0  # an image without text: rendered, nothing written
    assert values[3] is None and values[4] is None  # no image / no target: not applicable


def test_channel_parts_are_the_sub_channels():
    ocr = build_channel("ocr", {"image_key": "image"})
    image = text_image([("Jazz Night", 60)])
    parts = ocr.parts(ocr_batch(['"Jazz Night" and "Free Entry"', '"Jazz Night"'], [image, None]))
    assert set(parts) == {"score", "legibility", "accuracy"}
    assert parts["accuracy"][0] == pytest.approx(0.5, abs=0.05)  # one of two targets found
    assert parts["score"][1] is None and parts["legibility"][1] is None


def test_rendered_svg_completions_and_metadata_targets():
    ocr = build_channel("ocr", {"render": "svg", "targets_key": "text"})
    completions = [reference_svg("Jazz Night", "red", "serif"), "7", "<svg><text>broken"]
    batch = ScoringInput(prompts=["p"] * 3, completions=completions, metadata=[{"text": "Jazz Night"}] * 3,
                         completion_tokens=[1] * 3)
    values = ocr(batch)
    assert values[0] > 0.85 and values[1] is None and values[2] is None


@pytest.mark.parametrize("options, message", [
    ({}, "^options: needs exactly one of image_key or render$"),
    ({"image_key": "a", "render": "svg"}, "exactly one"),
    ({"render": "png"}, "^options.render: Input should be 'svg'$"),
    ({"render": "svg", "psm": 99}, "^options.psm: Input should be less than or equal to 13$"),
    ({"render": "svg", "language": "eng"}, "^options.language: unknown option; allowed: "),
])
def test_bad_options_fail_at_build_time(options, message):
    with pytest.raises(ValueError, match=message):
        build_channel("ocr", options)


def test_line_rewards_feed_the_maps():
    match = match_targets(["Jazz Night"], [line("Jazz Night", 0.9), line("Tickets", 0.95)])
    assert match.line_rewards[0] == pytest.approx(0.9)
    assert match.line_rewards[1] < 0.3
    assert np.all((match.line_rewards >= 0) & (match.line_rewards <= 1))
