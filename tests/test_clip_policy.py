"""The CLIP classifier policy: sampling and log-probs by hand, LoRA targets, reference, scopes, bad input, resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.functional import normalize

from mixgrpo.actors.clip_policy import (
    ClipPolicy,
    check_clip_inputs,
    check_clip_policy_source,
)
from mixgrpo.batch import PromptBatch, TrainBatch
from mixgrpo.config import ConfigError, config_from_dict
from mixgrpo.errors import InputError
from mixgrpo.orchestrator.driver import train
from mixgrpo.orchestrator.placement import choose_placement
from mixgrpo.rewards.mixer import compute_advantages
from mixgrpo.tasks import make_task

CHANNEL = [{"name": "accuracy", "kind": "exact_match", "options": {"answer_key": "label"}}]


def _config(*, clip: dict | None = None, task: dict | None = None, **sections):
    data = {
        "model": {"kind": "clip", "path": "builtin:tiny-clip-digits", "clip": {"tune": "full", **(clip or {})}},
        "task": {"kind": "image-classes", "prompts_per_step": 8, "eval_fraction": 0.2, **(task or {})},
        "generator": {"group_size": 4, "temperature": 2.0},
        "rewards": CHANNEL,
        "cluster": {"placement": "colocated"},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return config_from_dict(data)


def _policy(config) -> ClipPolicy:
    return ClipPolicy(config.model, config.learner, config.algorithm.loss, config.generator, config.run.seed,
                      task=config.task)


@pytest.fixture(scope="module")
def full_policy(tiny_model_cache):
    config = _config()
    return config, _policy(config), make_task(config.task, config.run.seed)


def _train_batch(policy: ClipPolicy, prompts: PromptBatch, step: int) -> TrainBatch:
    """One GRPO batch: sampled classes rewarded 1 when right, group-normalised advantages."""
    rollouts = policy.generate(prompts, step)
    labels = np.array([prompts.metadata[i]["label_index"] for i in rollouts.prompt_index])
    rewards = (np.concatenate(rollouts.completion_token_ids) == labels).astype(float)
    advantages = compute_advantages(rewards.reshape(len(prompts), -1, 1), np.ones(1), mode="na", scope="group")
    return TrainBatch(rollouts.prompt_token_ids, rollouts.completion_token_ids, rollouts.behaviour_logprobs,
                      advantages.advantages.reshape(-1).astype(np.float32))


def test_sampling_and_logprobs_match_a_hand_computation(full_policy):
    config, policy, task = full_policy
    prompts = task.sample(0)
    rollouts = policy.generate(prompts, 0)
    m = config.generator.group_size
    assert len(rollouts) == len(prompts) * m
    assert list(rollouts.prompt_index) == [i for i in range(len(prompts)) for _ in range(m)]
    clip = policy.clip
    with torch.no_grad():  # by hand: CLIP's zero-shot logits, softmax at the sampling temperature
        texts = [[t.format(c) for t in config.task.image_classes.templates] for c in policy.classes.names]
        text = torch.stack([normalize(normalize(clip.encode_text(policy.tokenizer(ts)), dim=-1).mean(0), dim=0)
                            for ts in texts])
        image = normalize(clip.encode_image(policy.images.pixels(prompts.prompt_ids)), dim=-1)
        log_p = torch.log_softmax(clip.logit_scale.exp() * image @ text.T / config.generator.temperature, dim=-1)
    for k in range(len(rollouts)):
        image_row, action = rollouts.prompt_index[k], int(rollouts.completion_token_ids[k][0])
        assert int(rollouts.prompt_token_ids[k][0]) == int(prompts.prompt_ids[image_row])
        assert rollouts.completion_text[k] == policy.classes.names[action]
        assert float(rollouts.behaviour_logprobs[k][0]) == pytest.approx(float(log_p[image_row, action]), abs=1e-5)
    assert policy.generate(prompts, 0).completion_text == rollouts.completion_text  # seeded by (seed, step, id)
    greedy = policy.generate(prompts, 0, n=1, temperature=0.0)
    assert [int(c[0]) for c in greedy.completion_token_ids] == log_p.argmax(-1).tolist()


def test_sampled_class_frequencies_follow_the_policy(full_policy):
    config, policy, task = full_policy
    prompts = task.pool.take([0])
    rollouts = policy.generate(prompts, 0, n=4000)
    with torch.no_grad():
        expected = torch.softmax(policy.logits(prompts.prompt_ids)[0] / config.generator.temperature, -1).numpy()
    observed = np.bincount(np.concatenate(rollouts.completion_token_ids), minlength=10) / 4000
    assert np.abs(observed - expected).max() < 0.03


def test_learner_logprobs_equal_the_sampling_logprobs_before_an_update(full_policy):
    _, policy, task = full_policy
    result = policy.train_step(_train_batch(policy, task.sample(1), 1))
    assert result.metrics["logprob_mismatch_max"] < 1e-5
    assert result.metrics["ratio_max"] == pytest.approx(1.0, abs=1e-5)


def test_the_entropy_bonus_is_the_entropy_of_the_whole_class_distribution(tiny_model_cache):
    config = _config(algorithm={"loss": {"entropy_coef": 0.01}})
    policy, task = _policy(config), make_task(config.task, 0)
    prompts = task.sample(0)
    batch = _train_batch(policy, prompts, 0)
    with torch.no_grad():
        p = torch.softmax(policy.logits(prompts.prompt_ids) / config.generator.temperature, dim=-1)
    per_image = -(p * p.log()).sum(-1)  # over all ten classes, not the sampled one's -log p alone
    expected = float(per_image.repeat_interleave(config.generator.group_size).mean())
    assert policy.train_step(batch).metrics["entropy"] == pytest.approx(expected, rel=1e-4)


def test_a_trained_logit_scale_is_clamped_at_ln_100(tiny_model_cache):
    config = _config(clip={"train_logit_scale": True})
    policy = _policy(config)
    assert "logit_scale" in policy.adapter_tensors()
    ids = make_task(config.task, 0).held_out.prompt_ids[:4]
    with torch.no_grad():
        policy.clip.logit_scale.fill_(math.log(100.0))
        at_the_cap = policy.logits(ids)
        policy.clip.logit_scale.fill_(math.log(1000.0))
        assert torch.equal(policy.logits(ids), at_the_cap)


def test_grpo_steps_raise_the_probability_of_rewarded_classes(tiny_model_cache):
    config = _config(learner={"lr": 3e-3})
    policy, task = _policy(config), make_task(config.task, 0)
    prompts = task.sample(0)
    labels = torch.tensor([record["label_index"] for record in prompts.metadata])

    def p_correct() -> float:
        with torch.no_grad():
            probs = torch.softmax(policy.logits(prompts.prompt_ids) / config.generator.temperature, -1)
        return float(probs[torch.arange(len(labels)), labels].mean())

    before = p_correct()
    for step in range(10):
        policy.train_step(_train_batch(policy, prompts, step))
    assert p_correct() > before + 0.1


@pytest.mark.parametrize("target", ["out_proj", "attn.out_proj", "all-linear", "q_proj"])
def test_lora_targets_that_train_nothing_are_refused_naming_the_ones_that_do(target):
    with pytest.raises(ConfigError, match=r"model.clip.lora_targets.*'attn', 'mlp.c_fc', 'mlp.c_proj'"):
        _config(clip={"tune": "lora", "lora_targets": [target]})


def test_out_proj_lora_factors_do_not_change_open_clip_attention(tiny_model_cache):
    """Why out_proj is refused: nn.MultiheadAttention reads out_proj.weight directly, bypassing a LoRA wrapper."""
    import open_clip
    from peft import LoraConfig, get_peft_model

    from mixgrpo.builtin.tiny_clip import resolve_clip_name

    clip = open_clip.create_model_and_transforms(resolve_clip_name("builtin:tiny-clip-digits"))[0].eval()
    wrapped = get_peft_model(clip, LoraConfig(r=4, target_modules=r"^visual\.transformer\.resblocks\.\d+\.attn\.out_proj$"))
    pixels = torch.randn(2, 3, 16, 16)
    before = wrapped.base_model.model.encode_image(pixels)
    for name, parameter in wrapped.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_()
    assert torch.equal(wrapped.base_model.model.encode_image(pixels), before)


@pytest.mark.parametrize("targets", [["attn"], ["mlp.c_fc"], ["mlp.c_proj"]])
def test_lora_targets_that_work_change_the_policy_after_one_step(tiny_model_cache, targets):
    config = _config(clip={"tune": "lora", "lora_targets": targets}, learner={"lr": 1e-2})
    policy, task = _policy(config), make_task(config.task, 0)
    assert policy.trainable and all("lora_" in name for name in policy.adapter_tensors())
    prompts = task.sample(0)
    before = policy.logits(prompts.prompt_ids).detach()
    for step in range(2):  # LoRA B starts at 0: the first step moves B, the second makes A's gradient count
        policy.train_step(_train_batch(policy, prompts, step))
    assert not torch.allclose(policy.logits(prompts.prompt_ids), before, atol=1e-6)


def test_lora_reference_is_the_model_with_the_adapter_off(tiny_model_cache):
    config = _config(clip={"tune": "lora"}, learner={"lr": 1e-2},
                     algorithm={"loss": {"kl_coef": 0.1}})
    policy, task = _policy(config), make_task(config.task, 0)
    prompts = task.sample(0)
    initial = policy.logits(prompts.prompt_ids).detach()
    for step in range(3):
        result = policy.train_step(_train_batch(policy, prompts, step))
    assert result.metrics["kl"] > 0
    with torch.no_grad(), policy.model.disable_adapter():
        reference = policy.logits(prompts.prompt_ids)
    assert torch.allclose(reference, initial, atol=1e-5)
    assert not torch.allclose(policy.logits(prompts.prompt_ids), initial, atol=1e-4)


def test_full_fine_tune_reference_is_a_frozen_copy_of_the_initial_weights(tiny_model_cache):
    config = _config(learner={"lr": 1e-2}, algorithm={"loss": {"kl_coef": 0.1}})
    policy, task = _policy(config), make_task(config.task, 0)
    prompts = task.sample(0)
    initial = policy.logits(prompts.prompt_ids).detach()
    text_forwards = []  # the text tower is frozen: the reference reads the cached class features too
    policy.reference.token_embedding.register_forward_hook(lambda *_: text_forwards.append(1))
    for step in range(3):
        result = policy.train_step(_train_batch(policy, prompts, step))
    assert result.metrics["kl"] > 0 and text_forwards == []
    assert torch.allclose(policy.logits(prompts.prompt_ids, policy.reference), initial, atol=1e-5)
    assert not any(p.requires_grad for p in policy.reference.parameters())


def test_frozen_text_tower_features_are_cached_and_its_weights_do_not_train(full_policy):
    _, policy, _ = full_policy
    assert policy._text_features is not None
    assert all(name.startswith("visual.") for name in policy.adapter_tensors())


def test_group_size_one_needs_batch_scope():
    with pytest.raises(ConfigError, match="algorithm.scope=batch"):
        _config(generator={"group_size": 1})
    config = _config(generator={"group_size": 1}, algorithm={"scope": "batch"})
    rewards = np.array([1.0, 0.0, 0.0, 1.0]).reshape(4, 1, 1)
    batch = compute_advantages(rewards, np.ones(1), mode="na", scope=config.algorithm.scope)
    group = compute_advantages(rewards, np.ones(1), mode="na", scope="group")
    assert np.allclose(group.advantages, 0)  # one sample per group: no baseline, no signal
    assert np.allclose(batch.advantages.reshape(-1), [1, -1, -1, 1])


def test_one_label_per_image_with_batch_scope_gets_advantages_and_updates(tiny_model_cache):
    config = _config(generator={"group_size": 1}, algorithm={"scope": "batch"}, task={"prompts_per_step": 32})
    policy, task = _policy(config), make_task(config.task, 0)
    prompts = task.sample(0)
    rollouts = policy.generate(prompts, 0)
    assert len(rollouts) == len(prompts)  # one label per image
    labels = np.array([record["label_index"] for record in prompts.metadata])
    rewards = (np.concatenate(rollouts.completion_token_ids) == labels).astype(float)
    assert 0 < rewards.sum() < len(rewards)  # seed 0 samples some right and some wrong labels
    mix = compute_advantages(rewards.reshape(-1, 1, 1), np.ones(1), mode="na", scope=config.algorithm.scope)
    advantages = mix.advantages.reshape(-1)
    assert np.allclose(advantages, (rewards - rewards.mean()) / rewards.std(), atol=1e-6)
    before = policy.logits(prompts.prompt_ids).detach()
    result = policy.train_step(TrainBatch(rollouts.prompt_token_ids, rollouts.completion_token_ids,
                                          rollouts.behaviour_logprobs, advantages.astype(np.float32)))
    assert result.metrics["grad_norm"] > 0
    assert not torch.allclose(policy.logits(prompts.prompt_ids), before)


def test_resume_restores_the_same_policy_optimizer_and_version(tiny_model_cache):
    config = _config()
    policy, task = _policy(config), make_task(config.task, 0)
    for step in range(2):
        policy.train_step(_train_batch(policy, task.sample(step), step))
    state = policy.state()
    resumed = _policy(config)
    assert resumed.load_state(state) == policy.version == 2
    prompts = task.sample(2)
    assert torch.allclose(resumed.logits(prompts.prompt_ids), policy.logits(prompts.prompt_ids))
    batch = _train_batch(policy, prompts, 2)
    policy.train_step(batch)
    resumed.train_step(batch)
    assert torch.allclose(resumed.logits(prompts.prompt_ids), policy.logits(prompts.prompt_ids), atol=1e-6)


def test_save_adapter_writes_peft_format_for_lora(tiny_model_cache, tmp_path):
    config = _config(clip={"tune": "lora", "train_logit_scale": True})
    policy = _policy(config)
    policy.save_adapter(str(tmp_path / "adapter"))
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["r"] == config.learner.lora.rank
    assert (tmp_path / "adapter" / "trained.safetensors").is_file()  # logit_scale travels beside the LoRA


@pytest.mark.parametrize("tune", ["lora", "full"])
def test_a_saved_policy_loads_back_into_a_fresh_one(tiny_model_cache, tmp_path, tune):
    config = _config(clip={"tune": tune, "train_logit_scale": tune == "lora"})
    policy, task = _policy(config), make_task(config.task, 0)
    for step in range(2):
        policy.train_step(_train_batch(policy, task.sample(step), step))
    policy.save_adapter(str(tmp_path / "adapter"))
    fresh = _policy(config)
    ids = task.held_out.prompt_ids
    assert not torch.allclose(fresh.logits(ids), policy.logits(ids))
    fresh.load_saved(str(tmp_path / "adapter"))
    assert fresh.adapter_tensors().keys() == policy.adapter_tensors().keys()
    for name, tensor in fresh.adapter_tensors().items():
        assert torch.equal(tensor, policy.adapter_tensors()[name]), name
    assert torch.allclose(fresh.logits(ids), policy.logits(ids), atol=1e-5)  # float32 attention: ~2e-6 apart
    with pytest.raises(InputError, match="adapter_model.safetensors|trained.safetensors"):
        fresh.load_saved(str(tmp_path))  # not an adapter directory


def test_chosen_class_gradcam_is_a_map_over_the_image_of_the_argmax_class(full_policy):
    config, policy, task = full_policy
    image_id = int(task.held_out.prompt_ids[0])
    heat, probabilities = policy.chosen_class_gradcam(image_id, (32, 32))
    assert heat.shape == (32, 32) and heat.min() >= 0.0 and heat.max() == pytest.approx(1.0)
    expected = torch.softmax(policy.logits(np.array([image_id]))[0], dim=-1).detach().numpy()
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5)
    assert all(p.grad is None for p in policy.model.parameters())  # no gradient left behind for the next step


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _png_data_url() -> str:
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _file_task(path, **options):
    return _config(task={"path": str(path), "eval_fraction": 0.0,
                         "image_classes": {"classes": ["cat", "dog"], "templates": ["a {}"], **options}}).task


def test_bad_image_files_fail_with_one_line_naming_row_and_column(tmp_path, tiny_model_cache):
    good = {"image": _png_data_url(), "label": "cat"}
    missing = _write_jsonl(tmp_path / "missing.jsonl", [good, {"picture": good["image"], "label": "dog"}])
    with pytest.raises(InputError, match=r"missing.jsonl: row 1: no 'image' column \(task.image_classes.image_column"):
        make_task(_file_task(missing), 0)
    unknown = _write_jsonl(tmp_path / "unknown.jsonl", [good, good, {"image": good["image"], "label": "cow"}])
    with pytest.raises(InputError, match=r"row 2, column 'label': label 'cow' is not in task.image_classes.classes"):
        make_task(_file_task(unknown), 0)
    unreadable = _write_jsonl(tmp_path / "unreadable.jsonl", [good, {"image": "no-such.png", "label": "dog"}])
    config = _config(task={"path": str(unreadable), "eval_fraction": 0.0,
                           "image_classes": {"classes": ["cat", "dog"], "templates": ["a {}"]}})
    with pytest.raises(InputError, match=r"unreadable.jsonl: row 1, column 'image': not a readable image") as error:
        check_clip_inputs(config.model, config.task, 0)
    assert "\n" not in str(error.value)
    with pytest.raises(InputError, match=r"unreadable.jsonl: row 1, column 'image'"):
        train(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before the run directory, Ray or any actor


def _png(colour, path=None) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (6, 4), colour).save(buffer, format="PNG")
    if path is not None:
        path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def _decoded(task) -> list[tuple[tuple[int, int, int], str, int]]:
    """(top-left pixel, label, label index) of every row, decoded as the policy decodes them."""
    from mixgrpo.actors.clip_policy import ImageTable

    table = ImageTable(task, 0, preprocess=None)
    return [(table.decode(i).getpixel((0, 0)), r["label"], r["label_index"]) for i, r in sorted(table.records.items())]


def test_user_images_from_jsonl_paths_and_data_urls_and_parquet_bytes(tmp_path):
    import base64

    import pyarrow as pa
    import pyarrow.parquet as pq

    red, green, blue = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    (tmp_path / "images").mkdir()
    _png(red, tmp_path / "images" / "red.png")
    _png(green, tmp_path / "green.png")
    rows = [{"image": "images/red.png", "label": "cat"},  # relative to the file's directory
            {"image": str(tmp_path / "green.png"), "label": "dog"},
            {"image": "data:image/png;base64," + base64.b64encode(_png(blue)).decode(), "label": "cat"}]
    jsonl = _write_jsonl(tmp_path / "rows.jsonl", rows)
    assert _decoded(_file_task(jsonl)) == [(red, "cat", 0), (green, "dog", 1), (blue, "cat", 0)]
    rooted = _write_jsonl(tmp_path / "rooted.jsonl", [{"image": "red.png", "label": "dog"}])
    assert _decoded(_file_task(rooted, image_root=str(tmp_path / "images")))[0][0] == red
    table = pa.table({"img": [_png(red), _png(blue)], "digit": [7, 3],  # bytes; integer labels match "7"
                      "hf": [{"bytes": _png(green), "path": None}, {"bytes": None, "path": "green.png"}]})
    pq.write_table(table, tmp_path / "rows.parquet")
    for column, colours in (("img", [red, blue]), ("hf", [green, green])):  # the HF datasets {bytes, path} form
        task = _file_task(tmp_path / "rows.parquet", image_column=column, label_column="digit", classes=["3", "7"])
        assert _decoded(task) == [(colours[0], "7", 1), (colours[1], "3", 0)]


def test_an_image_channel_resolves_relative_paths_as_the_policy_does(tmp_path):
    from mixgrpo.rewards.images import ImageOptions, ImageSource

    (tmp_path / "images").mkdir()
    _png((255, 0, 0), tmp_path / "images" / "red.png")
    task = make_task(_file_task(_write_jsonl(tmp_path / "rows.jsonl", [{"image": "images/red.png", "label": "cat"}])), 0)
    judge = ImageSource(ImageOptions(image_key="image"))  # a clipscore judge with image_key: image, no image_root
    assert judge.images(["cat"], task.pool.metadata)[0].getpixel((0, 0)) == (255, 0, 0)  # not the working dir's


def test_a_clipscore_judge_scores_each_sampled_class_against_its_image(full_policy):
    from mixgrpo.actors.reward import scoring_input
    from mixgrpo.rewards.action_dependence import action_independent_heads
    from mixgrpo.rewards.channels import build_channel

    config, policy, task = full_policy
    prompts = task.sample(3)
    rollouts = policy.generate(prompts, 3)
    judge = build_channel("clipscore", {"image_key": "image", "model": "builtin:tiny-clip", "device": "cpu"})
    judge.setup()  # a separate frozen CLIP: the row's image against the sampled class name
    scores = np.array(judge(scoring_input(prompts, rollouts)), dtype=np.float64)
    assert np.isfinite(scores).all()
    actions = np.concatenate(rollouts.completion_token_ids).reshape(len(prompts), -1)
    assert not action_independent_heads(scores.reshape(len(prompts), -1, 1), actions)[0]  # it depends on the class


def test_a_job_ships_the_image_file_with_every_image_inline(tmp_path, monkeypatch):
    import yaml

    from mixgrpo.orchestrator.launch.staging import staged_config

    (tmp_path / "images").mkdir()
    _png((255, 0, 0), tmp_path / "images" / "red.png")
    rows = [{"image": "images/red.png", "label": "cat"}, {"image": _png_data_url(), "label": "dog"}]
    config = _config(task={"path": str(_write_jsonl(tmp_path / "rows.jsonl", rows)), "eval_fraction": 0.0,
                           "image_classes": {"classes": ["cat", "dog"], "templates": ["a {}"]}})
    text, files = staged_config(config)
    job = tmp_path / "job"  # the job's working directory on another machine: only what was shipped
    job.mkdir()
    for name, content in files.items():
        (job / name).write_bytes(content)
    monkeypatch.chdir(job)
    shipped = config_from_dict(yaml.safe_load(text)).task
    assert shipped.path == "images.parquet" and shipped.image_classes.image_root is None
    assert _decoded(shipped) == _decoded(config.task)


def test_bad_parquet_rows_fail_naming_row_and_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"image": [_png((0, 0, 0)), None], "label": ["cat", "dog"]}), tmp_path / "null.parquet")
    with pytest.raises(InputError, match=r"null.parquet: row 1, column 'image': empty \(null\)"):
        make_task(_file_task(tmp_path / "null.parquet"), 0)
    pq.write_table(pa.table({"image": [_png((0, 0, 0)), b"not a png"], "label": ["cat", "dog"]}),
                   tmp_path / "bad.parquet")
    with pytest.raises(InputError, match=r"bad.parquet: row 1, column 'image': not a readable image"):
        check_clip_inputs(_config().model, _file_task(tmp_path / "bad.parquet"), 0)


def test_a_file_task_needs_its_class_list():
    with pytest.raises(ConfigError, match="needs task.image_classes.classes"):
        _config(task={"path": "images.jsonl"})


def test_a_random_init_text_tower_stays_frozen():
    with pytest.raises(ConfigError, match="random-init text tower, which must stay frozen"):
        _config(clip={"towers": "both"})


@pytest.mark.parametrize(("cluster", "async_steps", "placement"), [
    ({"placement": "colocated"}, 0, "colocated"),
    ({"placement": "auto"}, 0, "colocated"),  # the policy samples inside its ranks
    ({"placement": "auto"}, 1, "disaggregated"),  # async: separate ClipPolicy generators
    ({"placement": "disaggregated"}, 0, "disaggregated"),
])
def test_clip_samples_in_its_ranks_unless_asked_for_separate_generators(cluster, async_steps, placement):
    config = _config(cluster=cluster, algorithm={"async_steps": async_steps})
    assert choose_placement(config)[0] == placement


def test_pretrained_weights_that_are_not_local_fail_at_once(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty hub cache
    config = _config()
    model = config.model.model_copy(update={"path": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"})
    with pytest.raises(InputError, match="not in the local cache and the hub is disabled"):
        check_clip_policy_source(model)
    with pytest.raises(InputError, match="is not an open_clip tag of ViT-B-32"):
        check_clip_policy_source(model.model_copy(update={"pretrained": "no-such-tag"}))


def test_sources_that_would_start_from_random_weights_or_stall_fail_at_once(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty hub cache
    model = _config().model
    (tmp_path / "open_clip_config.json").write_text("{}")
    cases = {
        f"local-dir:{tmp_path}": r"no weights file \(.safetensors, .bin, .pth\) beside open_clip_config.json",
        "ViT-B-32": r"model.path=ViT-B-32 needs model.pretrained: a tag \(openai, laion400m_e31",
        "ViT-B-33": r"model.path='ViT-B-33' is not an open_clip architecture",
        "hf-hub:org/clip": r"hf-hub:org/clip: its open_clip_config.json and weights are not in the local cache and "
                           "the hub is disabled",
    }
    for path, message in cases.items():
        with pytest.raises(InputError, match=message) as error:
            check_clip_policy_source(model.model_copy(update={"path": path}))
        assert "\n" not in str(error.value)


def test_an_hf_hub_repo_in_the_local_cache_loads_offline(monkeypatch, tmp_path, tiny_model_cache):
    from mixgrpo.actors.clip_policy import load_clip
    from mixgrpo.builtin.tiny_clip import resolve_clip_name

    folder = Path(resolve_clip_name("builtin:tiny-clip").removeprefix("local-dir:"))
    snapshot = tmp_path / "models--org--tiny-clip" / "snapshots" / ("0" * 40)  # the hub cache's layout
    snapshot.mkdir(parents=True)
    for name in ("open_clip_config.json", "open_clip_model.safetensors"):
        (snapshot / name).write_bytes((folder / name).read_bytes())
    (tmp_path / "models--org--tiny-clip" / "refs").mkdir()
    (tmp_path / "models--org--tiny-clip" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    model = _config().model.model_copy(update={"path": "hf-hub:org/tiny-clip"})
    check_clip_policy_source(model)
    clip, _, _ = load_clip(model, "cpu")
    local, _, _ = load_clip(model.model_copy(update={"path": f"local-dir:{folder}"}), "cpu")
    assert torch.equal(clip.visual.conv1.weight, local.visual.conv1.weight)  # the cached weights, not a random init


def test_a_head_that_ignores_the_sampled_label_is_flagged():
    from mixgrpo.rewards.action_dependence import action_independent_heads

    actions = np.array([[0, 1, 1], [2, 2, 2], [3, 4, 3]])
    rewards = np.stack([
        np.array([[1.0, 0, 0], [0, 0, 0], [0, 1, 0]]),              # correctness: varies with the label
        np.array([[0.7, 0.7, 0.7], [0.2, 0.2, 0.2], [0.4, 0.4, 0.4]]),  # p(correct | image): per image only
        np.array([[0.5, np.nan, 0.5], [1, 2, 3], [np.nan, 1, np.nan]]),  # constant where it has values
    ], axis=-1)
    assert action_independent_heads(rewards, actions).tolist() == [False, True, True]
    same_actions = np.zeros((2, 3), dtype=int)  # no group sampled two labels: no evidence, no flag
    assert not action_independent_heads(np.ones((2, 3, 1)), same_actions).any()
