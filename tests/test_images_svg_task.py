"""Images for image channels (metadata paths/bytes, SVG rendering), the ``renders`` check, the svg-poster task."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from mixgrpo.config import TaskConfig
from mixgrpo.rewards.channels import ScoringInput, build_channel
from mixgrpo.rewards.images import ImageOptions, ImageSource, extract_svg, load_image, render_svg
from mixgrpo.tasks import make_task
from mixgrpo.tasks.svg_poster import svg_poster_pool

RED_SQUARE = '<svg width="10" height="10"><rect width="10" height="10" fill="red"/></svg>'


def png(colour: str = "blue", size: tuple[int, int] = (8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_svg_renders_onto_a_white_square_canvas():
    image = render_svg(f"Here you go:\n{RED_SQUARE}\nEnjoy!", size=64)
    assert image.mode == "RGB" and image.size == (64, 64)
    assert image.getpixel((32, 32)) == (255, 0, 0)
    transparent = render_svg('<svg width="4" height="4"></svg>', size=32)
    assert transparent.getpixel((5, 5)) == (255, 255, 255)


@pytest.mark.parametrize("text", ["7", "", "<svg><rect", "<svg width='10' height='10'><rect></svg",
                                  "<svg>" + "x" * 300_000 + "</svg>", "<html>nope</html>"])
def test_what_does_not_render_is_none(text):
    assert render_svg(text, size=32) is None


def test_external_files_are_never_fetched(tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(png("red", (10, 10)))
    svg = f'<svg width="10" height="10"><image href="file://{secret}" width="10" height="10"/></svg>'
    image = render_svg(svg, size=20)
    assert image is not None and np.asarray(image).min() == 255  # all white: the red file was not read


def test_extract_svg_takes_the_first_block():
    assert extract_svg("a <svg>1</svg> b <svg>2</svg>") == "<svg>1</svg>"
    assert extract_svg("no drawing") is None
    assert extract_svg("start <svg width='3'>") == "<svg width='3'>"


def test_load_image_from_path_bytes_data_url_and_dict(tmp_path):
    (tmp_path / "a.png").write_bytes(png("green"))
    data_url = "data:image/png;base64," + base64.b64encode(png("red")).decode()
    assert load_image(str(tmp_path / "a.png")).getpixel((0, 0)) == (0, 128, 0)
    assert load_image("a.png", root=str(tmp_path)).size == (8, 6)
    assert load_image(png("blue")).getpixel((1, 1)) == (0, 0, 255)
    assert load_image(data_url).getpixel((0, 0)) == (255, 0, 0)
    assert load_image({"bytes": png("blue"), "path": None}).size == (8, 6)
    for bad in [None, "", str(tmp_path / "missing.png"), b"not an image", 3]:
        assert load_image(bad) is None


def test_image_source_loads_each_prompt_image_once():
    record_a, record_b = {"image": png("red")}, {"image": b"broken"}
    images = ImageSource(ImageOptions(image_key="image")).images(["x"] * 3, [record_a, record_a, record_b])
    assert images[0] is images[1] and images[2] is None
    with pytest.raises(ValueError, match="exactly one of image_key or render"):
        ImageOptions()
    with pytest.raises(ValueError, match="render_size"):
        ImageOptions(render="svg", render_size=4)


def test_renders_format_check_is_zero_or_one_never_null():
    check = build_channel("renders", {})
    batch = ScoringInput(prompts=["p"] * 4, completions=[RED_SQUARE, "7", "<svg><b", ""],
                         metadata=[{}] * 4, completion_tokens=[1] * 4)
    assert check(batch) == [1.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="render"):
        build_channel("renders", {"render": "pdf"})


def test_svg_poster_pool_is_seeded_and_every_reference_renders_its_text():
    pool = svg_poster_pool(300, seed=3)
    assert len(pool) == 300 and pool.prompts == svg_poster_pool(300, seed=3).prompts
    assert pool.prompts != svg_poster_pool(300, seed=4).prompts
    first = pool.metadata[0]
    assert pool.prompts[0] == f'an SVG poster displaying "{first["text"]}" in a {first["color"]} {first["font"]} font'
    assert len(set(pool.prompts[:216])) == 216  # every text x colour x font once before repeating
    assert render_svg(first["reference"]) is not None


def test_make_task_builds_the_svg_poster_task():
    task = make_task(TaskConfig(kind="svg-poster", prompts_per_step=4, num_prompts=50), seed=0)
    batch = task.sample(2)
    assert len(batch) == 4 and all('"' in p for p in batch.prompts)
    assert batch.prompts == make_task(TaskConfig(kind="svg-poster", prompts_per_step=4, num_prompts=50), 0).sample(2).prompts
