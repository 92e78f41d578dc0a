"""The plain Generator and Learner classes without Ray, on the builtin tiny model."""

import io

import numpy as np
import pytest
import torch
from peft import PeftModel, get_peft_model_state_dict
from transformers import AutoModelForCausalLM

from mixgrpo.actors.generator import Generator
from mixgrpo.actors.learner import Learner
from mixgrpo.actors.models import encode_prompts
from mixgrpo.batch import PromptBatch, RolloutBatch, TrainBatch
from mixgrpo.config import Config, load_config

P, M = 2, 4
BASE_OVERRIDES = [
    f"generator.group_size={M}",
    f"task.prompts_per_step={P}",
    "generator.max_new_tokens=6",
    "generator.temperature=1.0",
    "generator.top_p=1.0",
    "learner.micro_batch_size=64",
]


def make_config(*overrides: str) -> Config:
    return load_config(None, [*BASE_OVERRIDES, *overrides])


def make_generator(config: Config) -> Generator:
    return Generator(config.model, config.learner.lora, config.generator, seed=config.run.seed)


def make_learner(config: Config) -> Learner:
    return Learner(config.model, config.learner, config.algorithm.loss, config.generator.temperature, config.run.seed,
                   max_new_tokens=config.generator.max_new_tokens)


def prompts(texts=("3+4=", "9+9=")) -> PromptBatch:
    return PromptBatch(
        prompt_ids=np.arange(len(texts), dtype=np.int64),
        prompts=list(texts),
        metadata=[{"answer": str(eval(t[:-1]))} for t in texts],
    )


def train_batch(rollouts: RolloutBatch, advantages) -> TrainBatch:
    return TrainBatch(
        prompt_token_ids=rollouts.prompt_token_ids,
        completion_token_ids=rollouts.completion_token_ids,
        behaviour_logprobs=rollouts.behaviour_logprobs,
        advantages=np.asarray(advantages, dtype=np.float32),
    )


def alternating_advantages(n: int) -> np.ndarray:
    return np.where(np.arange(n) % 2 == 0, 1.0, -1.0).astype(np.float32)


def lora_tensors(tensors: dict, which: str) -> dict:
    found = {k: v for k, v in tensors.items() if f"lora_{which}" in k}
    assert found, f"no lora_{which} tensors in {list(tensors)[:4]}"
    return found


def same_rollouts(a: RolloutBatch, b: RolloutBatch, atol: float = 0.0) -> bool:
    if any(not np.array_equal(x, y) for x, y in zip(a.completion_token_ids, b.completion_token_ids)):
        return False
    return all(np.allclose(x, y, atol=atol, rtol=0) for x, y in zip(a.behaviour_logprobs, b.behaviour_logprobs))


@pytest.fixture(scope="module")
def config(tiny_model_cache) -> Config:
    return make_config()


@pytest.fixture(scope="module")
def generator(config) -> Generator:
    return make_generator(config)


def test_generate_returns_group_major_rollouts(generator):
    batch = prompts()
    rollouts = generator.generate(batch, step=0)
    n = P * M
    assert len(rollouts) == n
    np.testing.assert_array_equal(rollouts.prompt_index, [0, 0, 0, 0, 1, 1, 1, 1])
    assert rollouts.prompt_index.dtype == np.int64
    np.testing.assert_array_equal(rollouts.policy_version, np.zeros(n, dtype=np.int64))
    tokenizer = generator.backend.tokenizer
    expected_prompt_tokens = encode_prompts(tokenizer, batch.prompts, "auto")
    for i in range(n):
        np.testing.assert_array_equal(rollouts.prompt_token_ids[i], expected_prompt_tokens[i // M])
        tokens, logprobs = rollouts.completion_token_ids[i], rollouts.behaviour_logprobs[i]
        assert tokens.dtype == np.int64 and logprobs.dtype == np.float32
        assert 1 <= len(tokens) <= 6
        assert len(logprobs) == len(tokens)
        assert np.isfinite(logprobs).all()
        assert (logprobs <= 0).all()
        eos_positions = np.flatnonzero(tokens == tokenizer.eos_token_id)
        assert eos_positions.size == 0 or eos_positions.tolist() == [len(tokens) - 1]  # cut after the first EOS
        assert rollouts.completion_text[i] == tokenizer.decode(tokens, skip_special_tokens=True)
    np.testing.assert_array_equal(rollouts.completion_lengths, [len(t) for t in rollouts.completion_token_ids])


def test_generate_marks_completions_cut_at_the_cap(generator):
    tokenizer = generator.backend.tokenizer
    capped = make_generator(make_config("generator.max_new_tokens=2"))
    for gen, cap in ((generator, 6), (capped, 2)):
        rollouts = gen.generate(prompts(), step=0)
        assert rollouts.truncated.dtype == bool and rollouts.truncated.shape == (len(rollouts),)
        for tokens, truncated in zip(rollouts.completion_token_ids, rollouts.truncated):
            assert truncated == (tokenizer.eos_token_id not in tokens.tolist())
            assert not truncated or len(tokens) == cap
    assert capped.generate(prompts(), step=0).truncated.any()


def test_generate_is_deterministic_per_step_and_seeded_by_step(generator):
    batch = prompts()
    first, again = generator.generate(batch, step=3), generator.generate(batch, step=3)
    assert same_rollouts(first, again)
    assert first.completion_text == again.completion_text
    other_steps = [generator.generate(batch, step=s) for s in (4, 5)]
    assert not all(same_rollouts(first, other) for other in other_steps)


def test_behaviour_logprobs_match_learner_before_any_update(config, generator):
    # prompts of different lengths exercise the generator's left padding against the learner's right padding
    batch = prompts(("3+4=", "12+30=", "7+0="))
    rollouts = generator.generate(batch, step=1)
    learner = make_learner(config)
    result = learner.train_step(train_batch(rollouts, alternating_advantages(len(rollouts))))
    assert result.metrics["logprob_mismatch_max"] < 1e-4
    assert result.metrics["logprob_mismatch_mean"] <= result.metrics["logprob_mismatch_max"]


def test_train_step_changes_adapter_and_increments_version(config, generator):
    learner = make_learner(config)
    before = learner.adapter_tensors()
    assert all(torch.count_nonzero(v) == 0 for v in lora_tensors(before, "B").values())  # fresh LoRA: B = 0
    rollouts = generator.generate(prompts(), step=0)
    result = learner.train_step(train_batch(rollouts, alternating_advantages(len(rollouts))))
    assert result.version == 1 and learner.version == 1
    assert set(result.adapter) == set(before)
    assert any(torch.count_nonzero(v) > 0 for v in lora_tensors(result.adapter, "B").values())
    assert result.metrics["grad_norm"] > 0
    assert result.metrics["lr"] == pytest.approx(config.learner.lr)
    assert result.metrics["skipped_steps"] == 0.0
    for key, value in learner.adapter_tensors().items():
        assert torch.equal(value, result.adapter[key])


def test_zero_advantages_leave_adapter_unchanged(generator):
    config = make_config("algorithm.loss.kl_coef=0", "algorithm.loss.entropy_coef=0", "learner.weight_decay=0")
    learner = make_learner(config)
    before = learner.adapter_tensors()
    rollouts = generator.generate(prompts(), step=0)
    result = learner.train_step(train_batch(rollouts, np.zeros(len(rollouts))))
    assert result.metrics["grad_norm"] == 0.0
    assert result.version == 1  # the optimizer stepped, with a zero update
    for key, value in result.adapter.items():
        assert torch.equal(value, before[key]), key
    assert all(torch.count_nonzero(v) == 0 for v in lora_tensors(result.adapter, "B").values())


def test_load_adapter_changes_generator_and_matches_learner(config):
    generator = make_generator(config)
    learner = make_learner(make_config("learner.lr=0.05"))
    batch = prompts()
    before = generator.generate(batch, step=0)
    result = learner.train_step(train_batch(before, alternating_advantages(len(before))))
    assert generator.load_adapter(result.adapter, result.version) == 1
    assert generator.version == 1
    after = generator.generate(batch, step=0)
    np.testing.assert_array_equal(after.policy_version, np.ones(len(after), dtype=np.int64))
    assert not same_rollouts(before, after, atol=1e-4)
    # the generator now samples from exactly the learner's policy
    check = learner.train_step(train_batch(after, np.zeros(len(after))))
    assert check.metrics["logprob_mismatch_max"] < 1e-4

    with pytest.raises(ValueError, match="refusing adapter version 0: already serving 1"):
        generator.load_adapter(result.adapter, 0)
    assert generator.version == 1
    assert generator.load_adapter(check.adapter, 1) == 1  # the same version again is allowed


def test_load_adapter_rejects_foreign_keys(config):
    generator = make_generator(config)
    with pytest.raises(ValueError, match="unexpected keys"):
        generator.load_adapter({"base_model.model.nowhere.lora_A.weight": torch.zeros(8, 128)}, 1)
    tensors = make_learner(config).adapter_tensors()
    with pytest.raises(ValueError, match="missing keys"):  # a partial adapter would leave stale factors
        generator.load_adapter(dict(list(tensors.items())[1:]), 1)
    key = next(iter(tensors))
    with pytest.raises(ValueError, match="wrong shape"):
        generator.load_adapter({**tensors, key: tensors[key].T}, 1)
    assert generator.version == 0


def test_learner_state_round_trip(config, generator):
    learner = make_learner(config)
    rollouts = generator.generate(prompts(), step=0)
    batch = train_batch(rollouts, alternating_advantages(len(rollouts)))
    learner.train_step(batch)
    learner.train_step(batch)
    state = learner.state()
    assert state["version"] == 2
    # as a checkpoint carries it (torch.save / torch.load), so the two learners share no tensors
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=False)

    fresh = make_learner(config)
    assert fresh.load_state(state) == 2
    assert fresh.version == 2
    original, restored = learner.adapter_tensors(), fresh.adapter_tensors()
    assert set(original) == set(restored)
    for key in original:
        assert torch.equal(original[key], restored[key]), key

    # optimizer and scheduler state came along: the next step is identical on both
    next_original, next_restored = learner.train_step(batch), fresh.train_step(batch)
    assert next_original.version == next_restored.version == 3
    for key in next_original.adapter:
        torch.testing.assert_close(next_original.adapter[key], next_restored.adapter[key], rtol=0, atol=1e-6)


def test_save_adapter_loads_with_peft(config, generator, tmp_path, tiny_model_cache):
    learner = make_learner(config)
    rollouts = generator.generate(prompts(), step=0)
    learner.train_step(train_batch(rollouts, alternating_advantages(len(rollouts))))
    directory = tmp_path / "adapter"
    assert learner.save_adapter(str(directory)) == str(directory)
    assert (directory / "adapter_config.json").is_file()

    base = AutoModelForCausalLM.from_pretrained(tiny_model_cache)
    loaded = PeftModel.from_pretrained(base, str(directory))
    saved = {k: v.detach().cpu() for k, v in get_peft_model_state_dict(loaded).items()}
    expected = learner.adapter_tensors()
    assert set(saved) == set(expected)
    for key in expected:
        assert torch.equal(saved[key], expected[key]), key
    assert any(torch.count_nonzero(v) > 0 for v in lora_tensors(saved, "B").values())


def test_learner_state_is_a_snapshot(config, generator):
    learner = make_learner(config)
    rollouts = generator.generate(prompts(), step=0)
    batch = train_batch(rollouts, alternating_advantages(len(rollouts)))
    learner.train_step(batch)
    state = learner.state()
    exp_avg = {i: s["exp_avg"].clone() for i, s in state["optimizer"]["state"].items()}
    learner.train_step(batch)
    for i, saved in exp_avg.items():
        assert torch.equal(state["optimizer"]["state"][i]["exp_avg"], saved), i
