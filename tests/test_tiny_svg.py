"""builtin:tiny-svg: built offline and deterministically; at step 0 it writes posters that sometimes render."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mixgrpo.builtin import LANGUAGE_MODELS
from mixgrpo.builtin.tiny_svg import build_tiny_svg
from mixgrpo.rewards.images import render_svg
from mixgrpo.tasks.svg_poster import svg_poster_pool, warm_start_corpus


def _digest(directory: Path) -> str:
    return hashlib.sha256((Path(directory) / "model.safetensors").read_bytes()).hexdigest()


def test_tiny_svg_rebuilds_offline_to_the_same_weights(tiny_svg_model, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may come from the hub
    assert "tiny-svg" in LANGUAGE_MODELS
    build_tiny_svg(tmp_path, seed=0)
    assert _digest(tmp_path) == _digest(Path(tiny_svg_model))
    assert (tmp_path / "tokenizer.json").read_text() == (Path(tiny_svg_model) / "tokenizer.json").read_text()


def test_the_warm_start_corpus_is_noisy_and_seeded():
    prompts, posters = warm_start_corpus(0, copies=2)
    assert (prompts, posters) == warm_start_corpus(0, copies=2)
    rendered = np.mean([render_svg(p, 32) is not None for p in posters])
    assert 0.45 < rendered < 0.8
    assert any(not p.startswith("<svg") and "<svg" in p for p in posters)  # chatty prefixes
    assert any("<svg" not in p for p in posters)  # refusals


def test_step_zero_posters_render_about_half_the_time_and_a_minority_are_right(tiny_svg_model):
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_svg_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_svg_model).eval()
    pool = svg_poster_pool(24, seed=1)
    rendered, right = [], []
    for prompt, record in zip(pool.prompts, pool.metadata):
        ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer(prompt, add_special_tokens=False).input_ids]] * 4)
        out = model.generate(ids, do_sample=True, temperature=1.0, max_new_tokens=56,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        for row in out[:, ids.shape[1]:]:
            text = tokenizer.decode(row, skip_special_tokens=True)
            rendered.append(render_svg(text, 32) is not None)
            right.append(rendered[-1] and f'fill="{record["color"]}">{record["text"]}</text>' in text
                         and f'stroke="{record["color"]}"' in text)
    assert 0.3 < np.mean(rendered) < 0.8, np.mean(rendered)
    assert 0.02 < np.mean(right) < 0.5, np.mean(right)
