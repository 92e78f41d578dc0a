"""The ``clipscore`` channel on a tiny open_clip model built from a model config (no downloads)."""

from __future__ import annotations

import io

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from mixgrpo.builtin.tiny_clip import build_tiny_clip, resolve_clip_name
from mixgrpo.rewards.channels import ScoringInput, build_channel
from mixgrpo.rewards.clip_model import CLIPSCORE_W, ClipScorer
from mixgrpo.tasks.svg_poster import reference_svg


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> str:
    directory = tmp_path_factory.mktemp("tiny-clip")
    build_tiny_clip(directory, seed=0)
    return f"local-dir:{directory}"


def noise_png(seed: int, size: tuple[int, int] = (96, 80)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def reference_scores(model_name: str, images: list[Image.Image], texts: list[str]) -> np.ndarray:
    """2.5 * max(cos, 0) straight from open_clip, one pair at a time."""
    model, _, preprocess = open_clip.create_model_and_transforms(model_name)
    tokenizer = open_clip.get_tokenizer(model_name)
    model.eval()
    out = []
    with torch.no_grad():
        for image, text in zip(images, texts):
            e_image = model.encode_image(preprocess(image)[None], normalize=True)
            e_text = model.encode_text(tokenizer([text]), normalize=True)
            out.append(CLIPSCORE_W * max(float((e_image * e_text).sum()), 0.0))
    return np.array(out)


def test_image_from_metadata_scored_against_the_completion(clip_dir):
    channel = build_channel("clipscore", {"model": clip_dir, "image_key": "image", "batch_size": 3})
    channel.setup()
    metadata = [{"image": noise_png(seed)} for seed in range(4)] + [{"image": None}]
    completions = ["a red poster", "blue sky", "a cat", "Spring Sale", "anything"]
    batch = ScoringInput(prompts=["describe"] * 5, completions=completions, metadata=metadata,
                         completion_tokens=[1] * 5)
    values = channel(batch)
    assert values[4] is None
    images = [Image.open(io.BytesIO(md["image"])).convert("RGB") for md in metadata[:4]]
    expected = reference_scores(clip_dir, images, completions[:4])
    np.testing.assert_allclose(values[:4], expected, atol=1e-5)


def test_clamp_at_zero_and_batching_do_not_change_scores(clip_dir):
    scorer = ClipScorer(clip_dir, batch_size=1).load()
    images = [Image.new("RGB", (64, 48), colour) for colour in ["white", "black", "red", "blue", "green", "red"]]
    texts = ["a poster", "Jazz Night", "blue", "7", "", "a poster"]
    one_by_one = np.array(scorer.score(images, texts))
    scorer.batch_size = 32
    np.testing.assert_allclose(np.array(scorer.score(images, texts)), one_by_one, atol=1e-5)
    with torch.no_grad():
        cosines = scorer.cosine(scorer.image_tensor(images), texts).numpy()
    assert (cosines < 0).any() and (cosines > 0).any(), "the tiny model gives both signs here"
    np.testing.assert_allclose(one_by_one, CLIPSCORE_W * np.maximum(cosines, 0), atol=1e-5)


def test_rendered_completion_scored_against_the_prompt(clip_dir):
    channel = build_channel("clipscore", {"model": clip_dir, "render": "svg", "render_size": 96})
    assert channel.text == "prompt"
    poster = reference_svg("Jazz Night", "red", "serif")
    batch = ScoringInput(prompts=['a poster "Jazz Night"'] * 3, completions=[poster, "no svg here", "<svg><x"],
                         metadata=[{}] * 3, completion_tokens=[1] * 3)
    values = channel(batch)
    assert values[1] is None and values[2] is None
    from mixgrpo.rewards.images import render_svg

    expected = reference_scores(clip_dir, [render_svg(poster, 96)], ['a poster "Jazz Night"'])
    assert values[0] == pytest.approx(float(expected[0]), abs=1e-5)


def test_builtin_tiny_clip_is_built_once_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MIXGRPO_CACHE", str(tmp_path))
    name = resolve_clip_name("builtin:tiny-clip")
    assert name.startswith("local-dir:") and (tmp_path / "tiny-clip-v1" / "open_clip_config.json").is_file()
    stamp = (tmp_path / "tiny-clip-v1" / "open_clip_model.safetensors").stat().st_mtime_ns
    assert resolve_clip_name("builtin:tiny-clip") == name
    assert (tmp_path / "tiny-clip-v1" / "open_clip_model.safetensors").stat().st_mtime_ns == stamp
    assert resolve_clip_name("ViT-B-32") == "ViT-B-32"


@pytest.mark.parametrize("options, message", [
    ({"image_key": "image"}, "^options.pretrained: model 'ViT-B-32' needs options.pretrained"),
    ({"model": "builtin:tiny-clip"}, "^options: needs exactly one of image_key or render$"),
    ({"model": "builtin:huge-clip", "render": "svg"}, "^options.model: unknown builtin CLIP model"),
    ({"model": "local-dir:/no/such/dir", "render": "svg"},
     "^options.model: local-dir:/no/such/dir: no open_clip_config.json"),
    ({"model": "ViT-B-32", "pretrained": "/no/such/weights.pt", "render": "svg"},
     "^options.model: pretrained checkpoint not found"),
    ({"model": "builtin:tiny-clip", "render": "svg", "text": "caption"},
     "^options.text: Input should be 'prompt' or 'completion'$"),
    ({"model": "builtin:tiny-clip", "render": "svg", "map_method": "lime"}, "^options.map_method: Input should be "),
])
def test_bad_options_fail_at_build_time_without_loading(options, message):
    with pytest.raises(ValueError, match=message):
        build_channel("clipscore", options)
