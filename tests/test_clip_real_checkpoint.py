"""A real open_clip architecture (ViT-B-32, random weights) through ClipPolicy, offline, from a checkpoint file and local-dir:.

ViT-B-32 itself, not a smaller registered config: what the README's example names, and
affordable on CPU (151 M parameters; building it, a few 224-pixel forwards and one LoRA
step: 13-18 s for both cases on a loaded 2-core machine). Its weights are random (nothing
downloads), so the test checks the wiring, not accuracy: the checkpoint's weights are the
ones loaded, open_clip's own tokenizer for the name, the model's validation transform at
the config's image size, sampling and learner log-probs that agree, and a LoRA step that
moves the adapter.
"""

from __future__ import annotations

import io
import json

import numpy as np
import open_clip
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from mixgrpo.actors.clip_policy import ClipPolicy, check_clip_inputs
from mixgrpo.batch import TrainBatch
from mixgrpo.config import config_from_dict
from mixgrpo.tasks import make_task

ARCH = "ViT-B-32"
CLASSES = ["cat", "dog"]
TEMPLATES = ["a photo of a {}.", "a blurry photo of a {}."]
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, monkeypatch_module):
    """(random ViT-B-32 state dict, a local-dir folder whose weights file doubles as the checkpoint file, data file)."""
    from safetensors.torch import save_file

    monkeypatch_module.setenv("HF_HUB_OFFLINE", "1")  # any hub access fails instead of downloading
    monkeypatch_module.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    folder = tmp_path_factory.mktemp("vit-b-32")
    torch.manual_seed(0)
    state = open_clip.create_model(ARCH, pretrained=None).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": open_clip.get_model_config(ARCH)}))
    pngs = []
    for colour in COLOURS:  # not square: a train-time random crop would show, the validation transform is fixed
        buffer = io.BytesIO()
        Image.new("RGB", (40, 24), colour).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    data = folder / "pets.parquet"
    pq.write_table(pa.table({"picture": pngs, "species": ["cat", "dog", "cat"]}), data)
    return state, folder, data


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _config(model: dict, data):
    return config_from_dict({
        "model": {"kind": "clip", **model, "clip": {"tune": "lora", "towers": "visual"}},
        "task": {"kind": "image-classes", "path": str(data), "eval_fraction": 0.0, "prompts_per_step": 3,
                 "image_classes": {"image_column": "picture", "label_column": "species",
                                   "classes": CLASSES, "templates": TEMPLATES}},
        "generator": {"group_size": 2, "temperature": 1.0},
        "rewards": [{"name": "accuracy", "kind": "exact_match", "options": {"answer_key": "label"}}],
        "learner": {"lr": 1e-2},
        "cluster": {"placement": "colocated"},
    })


@pytest.mark.parametrize("source", ["checkpoint-file", "local-dir"])
def test_a_real_architecture_loads_samples_and_takes_a_lora_step(checkpoint, source):
    state, folder, data = checkpoint
    model = ({"path": ARCH, "pretrained": str(folder / "open_clip_model.safetensors")} if source == "checkpoint-file"
             else {"path": f"local-dir:{folder}"})
    config = _config(model, data)
    check_clip_inputs(config.model, config.task, 0)  # the preflight passes offline: nothing to download
    policy = ClipPolicy(config.model, config.learner, config.algorithm.loss, config.generator, 0, task=config.task)

    for name in ("visual.conv1.weight", "token_embedding.weight", "logit_scale"):  # the checkpoint's weights
        assert torch.equal(policy.clip.state_dict()[name], state[name]), name
    texts = [t.format(c) for c in CLASSES for t in TEMPLATES]
    assert isinstance(policy.tokenizer, open_clip.SimpleTokenizer)  # open_clip's BPE tokenizer for the name
    assert torch.equal(policy.tokenizer(texts), open_clip.get_tokenizer(ARCH)(texts))
    assert policy.tokenizer(texts).shape == (4, 77)

    prompts = make_task(config.task, 0).sample(0)
    validation = open_clip.image_transform(policy.clip.visual.image_size, is_train=False)
    pixels = policy.images.pixels(prompts.prompt_ids)
    assert pixels.shape == (3, 3, 224, 224)  # the image size of ViT-B-32's config
    for image_id, row in zip(prompts.prompt_ids, pixels):
        assert torch.equal(row, validation(policy.images.decode(int(image_id))))

    rollouts = policy.generate(prompts, 0)
    assert len(rollouts) == 3 * 2 and set(rollouts.completion_text) <= set(CLASSES)
    with torch.no_grad():
        log_p = torch.log_softmax(policy.logits(prompts.prompt_ids), dim=-1)  # temperature 1
    chosen = [float(log_p[i, int(c[0])]) for i, c in zip(rollouts.prompt_index, rollouts.completion_token_ids)]
    np.testing.assert_allclose(np.concatenate(rollouts.behaviour_logprobs), chosen, atol=1e-5)

    before = policy.adapter_tensors()
    assert before and all("lora_" in name and name.startswith("base_model.model.visual.") for name in before)
    advantages = np.ones(len(rollouts), dtype=np.float32)  # +-1 within a group cancel when both drew one class
    result = policy.train_step(TrainBatch(rollouts.prompt_token_ids, rollouts.completion_token_ids,
                                          rollouts.behaviour_logprobs, advantages))
    assert result.metrics["logprob_mismatch_max"] < 1e-4  # the learner's log-probs are the sampler's
    assert result.metrics["grad_norm"] > 0 and policy.version == 1
    after = policy.adapter_tensors()
    moved = [name for name in before if not torch.equal(before[name], after[name])]
    assert any("lora_B" in name for name in moved)  # B starts at 0: the first step moves it
