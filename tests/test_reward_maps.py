"""Dense reward maps: shapes, ranges, Grad-CAM non-negative, the OCR map highest on the target, the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from mixgrpo.builtin.tiny_clip import build_tiny_clip
from mixgrpo.orchestrator.cli import main
from mixgrpo.rewards import maps
from mixgrpo.rewards.clip_model import ClipScorer
from mixgrpo.rewards.ocr import match_targets, read_lines
from mixgrpo.tasks.svg_poster import reference_svg


@pytest.fixture(scope="module")
def scorer(tmp_path_factory) -> ClipScorer:
    directory = tmp_path_factory.mktemp("tiny-clip")
    build_tiny_clip(directory, seed=0)
    return ClipScorer(f"local-dir:{directory}").load()


@pytest.fixture(scope="module")
def wide_image() -> Image.Image:
    """160 x 96, so the model's centre crop (96 x 96) leaves 32-pixel margins left and right."""
    pixels = np.random.default_rng(0).integers(0, 255, (96, 160, 3), dtype=np.uint8)
    pixels[30:60, 60:100] = [255, 0, 0]
    return Image.fromarray(pixels)


@pytest.mark.parametrize("method", maps.CLIP_METHODS)
def test_clip_maps_have_the_image_shape_and_lie_in_0_1(scorer, wide_image, method):
    heat = maps.clip_map(scorer, wide_image, "a red square", method)
    assert heat.shape == (96, 160)
    assert heat.min() >= 0.0 and heat.max() == pytest.approx(1.0)
    assert np.all(heat[:, :32] == 0) and np.all(heat[:, -32:] == 0)  # outside what the model saw
    assert heat[:, 32:128].std() > 0


def test_gradcam_is_non_negative_and_not_trivially_zero(scorer, wide_image):
    for text in ["a red square", "Jazz Night", "blue"]:
        heat = maps.gradcam_map(scorer, wide_image, text)
        assert (heat >= 0).all() and (heat > 0).mean() > 0.05


def test_gradient_map_matches_autograd_at_one_pixel(scorer):
    image = Image.new("RGB", (64, 64), "white")
    heat = maps.gradient_map(scorer, image, "a poster")
    pixels = scorer.image_tensor([image]).requires_grad_(True)
    (scorer.w * scorer.cosine(pixels, ["a poster"]).sum()).backward()
    magnitude = pixels.grad[0].abs().amax(0)
    expected = (magnitude - magnitude.min()) / (magnitude.max() - magnitude.min())
    # same image size as the model input (64): the map is the normalised gradient itself
    np.testing.assert_allclose(heat, expected.numpy(), atol=1e-5)


def test_explicit_attention_equals_the_blocks_own_attention(scorer):
    block = scorer.model.visual.transformer.resblocks[-1]
    tokens = block.ln_1(torch.randn(2, 65, 64))
    with torch.no_grad():
        np.testing.assert_allclose(maps.explicit_attention(block, tokens).numpy(),
                                   block.attention(q_x=tokens).numpy(), atol=1e-5)
    weights = block.last_attention
    assert weights.shape == (2, 2, 65, 65) and torch.allclose(weights.sum(-1), torch.ones(2, 2, 65))
    del block.last_attention


def test_attention_hook_is_removed_afterwards(scorer, wide_image):
    before = scorer.score([wide_image], ["x"])
    maps.attention_map(scorer, wide_image, "x", gradient_weighted=True)
    assert "attention" not in scorer.model.visual.transformer.resblocks[-1].__dict__
    assert scorer.score([wide_image], ["x"]) == before


def test_ocr_map_is_highest_inside_the_targets_box():
    image = Image.new("RGB", (480, 240), "white")
    draw = ImageDraw.Draw(image)
    draw.text((20, 30), "Jazz Night", fill="black", font=ImageFont.load_default(size=40))
    draw.text((20, 150), "Tickets Now", fill="black", font=ImageFont.load_default(size=40))
    lines = read_lines(image)
    match = match_targets(["Jazz Night"], lines)
    heat = maps.ocr_map(image.size, lines, match.line_rewards, sigma=4)
    assert heat.shape == (240, 480) and heat.min() >= 0 and heat.max() <= 1
    target = next(line for line in lines if line.text == "Jazz Night")
    other = next(line for line in lines if line.text != "Jazz Night")
    inside = heat[target.box[1] + 6:target.box[3] - 6, target.box[0] + 6:target.box[2] - 6]
    assert inside.min() > 0.85
    assert heat[110:120, 300:470].mean() == pytest.approx(0.5, abs=0.01)  # neutral background
    other_inside = heat[other.box[1] + 6:other.box[3] - 6, other.box[0] + 6:other.box[2] - 6]
    assert other_inside.max() < 0.5 < inside.min()  # text nobody asked for is below neutral


def test_ocr_map_without_lines_is_neutral():
    heat = maps.ocr_map((30, 20), [], np.zeros(0))
    assert heat.shape == (20, 30) and np.allclose(heat, 0.5)


def test_overlay_blends_colours_over_the_image():
    image = Image.new("RGB", (20, 10), "white")
    heat = np.zeros((10, 20))
    heat[:, 10:] = 1.0
    blended = np.asarray(maps.overlay(image, heat, alpha=0.5))
    assert blended.shape == (10, 20, 3)
    assert blended[0, 0, 2] > blended[0, 0, 0]  # cold: blue side of the colour map
    assert blended[0, 15, 0] > blended[0, 15, 2]  # hot: red side


def test_explain_command_writes_overlays(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MIXGRPO_CACHE", str(tmp_path / "cache"))
    poster = tmp_path / "poster.svg"
    poster.write_text(reference_svg("Jazz Night", "red", "serif"))
    for method in ("gradcam", "ocr"):
        out = tmp_path / f"{method}.png"
        code = main(["explain", "--image", str(poster), "--text", 'a poster saying "Jazz Night"',
                     "--method", method, "--out", str(out), "--model", "builtin:tiny-clip"])
        assert code == 0 and Image.open(out).size == (448, 448)
    printed = capsys.readouterr().out
    assert "ocr score 0.9" in printed and "clipscore" in printed
    assert main(["explain", "--image", str(tmp_path / "missing.png"), "--text", "x", "--out",
                 str(tmp_path / "x.png")]) == 2
