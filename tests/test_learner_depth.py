"""PPO epochs and mini-batches, and micro-batch parity for every aggregation (plain Learner, no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mixgrpo.actors.generator import Generator
from mixgrpo.actors.learner import Learner, _collate, plan_micro_batches
from mixgrpo.batch import PromptBatch, TrainBatch
from mixgrpo.config import Config, load_config

AGGREGATIONS = ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
OVERRIDES = ["generator.group_size=4", "task.prompts_per_step=3", "generator.max_new_tokens=6",
             "learner.micro_batch_size=64"]


def make_config(*overrides: str) -> Config:
    return load_config(None, [*OVERRIDES, *overrides])


def make_learner(config: Config) -> Learner:
    return Learner(config.model, config.learner, config.algorithm.loss, config.generator.temperature, config.run.seed,
                   max_new_tokens=config.generator.max_new_tokens)


@pytest.fixture(scope="module")
def batch(tiny_model_cache) -> TrainBatch:
    """12 completions of 3 prompts, at least two longer than the shortest (micro-batches have different longest
    completions, and sorting by length packs with less padding than the sampled order)."""
    config = make_config()
    generator = Generator(config.model, config.learner.lora, config.generator, seed=config.run.seed)
    texts = ["3+4=", "12+30=", "7+0="]
    prompts = PromptBatch(np.arange(3, dtype=np.int64), texts, [{} for _ in texts])
    for step in range(40):  # the first sampling step (seeded) with two completions longer than the shortest
        rollouts = generator.generate(prompts, step=step)
        lengths = rollouts.completion_lengths
        if (lengths > lengths.min()).sum() >= 2:
            break
    assert (lengths > lengths.min()).sum() >= 2
    advantages = np.random.default_rng(0).normal(size=len(rollouts)).astype(np.float32)
    return TrainBatch(rollouts.prompt_token_ids, rollouts.completion_token_ids, rollouts.behaviour_logprobs,
                      advantages)


@pytest.mark.parametrize("cut_by", ["learner.micro_batch_size=3", "learner.max_tokens_per_micro_batch=40"])
@pytest.mark.parametrize(("epochs", "mini_batches"), [(1, 1), (2, 2)])
@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_micro_batching_does_not_change_the_update(batch, aggregation, epochs, mini_batches, cut_by):
    """Dr.GRPO used to divide by each micro-batch's longest completion: 3.7e-2 apart, now float noise.

    The token budget also reorders the rows (length-sorted): the same update.
    """
    common = [f"algorithm.loss.aggregation={aggregation}", "algorithm.loss.kl_coef=0.05",
              f"learner.epochs={epochs}", f"learner.mini_batches={mini_batches}"]
    whole = make_learner(make_config(*common)).train_step(batch)
    cut = make_learner(make_config(*common, cut_by)).train_step(batch)
    for name in ("grad_norm", "loss", "policy_loss", "kl"):
        assert cut.metrics[name] == pytest.approx(whole.metrics[name], rel=1e-5), name
    for key, value in whole.adapter.items():
        # Adam normalises each element: a near-zero gradient may differ in sign by float noise (one lr wide)
        torch.testing.assert_close(cut.adapter[key], value, rtol=1e-3, atol=1e-4)


def test_epochs_and_mini_batches_step_the_optimizer_and_the_clip_acts_after_the_first(batch):
    config = make_config("learner.epochs=2", "learner.mini_batches=3", "learner.lr=0.05")
    learner = make_learner(config)
    result = learner.train_step(batch)
    assert result.version == learner.version == 6
    assert result.metrics["optimizer_steps"] == 6.0 and result.metrics["step_skipped"] == 0.0
    assert result.metrics["clip_frac/last"] > 0.0  # the ratio against the behaviour log-probs left the clip range
    assert 0.0 < result.metrics["clip_frac"] <= 1.0
    assert result.metrics["approx_kl"] > 0.0
    single = make_learner(make_config("learner.lr=0.05")).train_step(batch)
    assert single.version == 1 and single.metrics["optimizer_steps"] == 1.0
    assert single.metrics["clip_frac"] == single.metrics["clip_frac/last"] == 0.0  # on-policy: nothing to clip


def test_off_policy_proximal_stays_the_pre_update_policy(batch):
    """With a correction on, the ratio is against the learner's log-probs before the first step, not the current ones."""
    config = make_config("learner.epochs=3", "learner.lr=0.05", "algorithm.loss.off_policy=tis")
    result = make_learner(config).train_step(batch)
    assert result.version == 3
    assert result.metrics["clip_frac/last"] > 0.0 and result.metrics["approx_kl"] > 0.0


def test_more_mini_batches_than_rows_gives_one_row_each(batch):
    config = make_config("learner.mini_batches=50")
    result = make_learner(config).train_step(batch)
    assert result.version == len(batch) and result.metrics["optimizer_steps"] == len(batch)


def test_dr_grpo_length_defaults_to_max_new_tokens(tiny_model_cache):
    config = make_config("algorithm.loss.aggregation=seq-mean-token-sum-norm")
    assert make_learner(config).loss_config.max_response_tokens == 6
    explicit = make_config("algorithm.loss.aggregation=seq-mean-token-sum-norm", "algorithm.loss.max_response_tokens=9")
    assert make_learner(explicit).loss_config.max_response_tokens == 9
    with pytest.raises(ValueError, match="max_response_tokens"):
        Learner(config.model, config.learner, config.algorithm.loss, 1.0, 0)


def test_mini_batches_cut_every_shard_by_the_whole_batch_rows():
    n = 11
    whole = TrainBatch([np.arange(2)] * n, [np.arange(1)] * n, [np.zeros(1)] * n, np.arange(n, dtype=np.float32))
    expected = [whole.rows[r].tolist() for r in whole.mini_batch_rows(3)]
    assert expected == [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9, 10]]
    for world_size in (2, 3, 4):
        shards = [whole.shard(rank, world_size) for rank in range(world_size)]
        for j in range(3):
            union = sorted(row for shard in shards for row in shard.rows[shard.mini_batch_rows(3)[j]].tolist())
            assert union == expected[j]


def test_micro_batch_plan_without_a_budget_keeps_the_order():
    plan = plan_micro_batches(np.array([5, 9, 2, 7, 3]), np.arange(5), max_rows=2)
    assert [rows.tolist() for rows in plan] == [[0, 1], [2, 3], [4]]


def test_micro_batch_plan_under_a_token_budget_packs_sorted_rows():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 60, size=200)
    rows = rng.permutation(200)[:150]
    plan = plan_micro_batches(lengths, rows, max_rows=16, max_tokens=128)
    assert sorted(np.concatenate(plan).tolist()) == sorted(rows.tolist())  # every row once
    for micro in plan:
        assert len(micro) <= 16
        assert len(micro) * lengths[micro].max() <= 128 or len(micro) == 1
    flat = np.concatenate(plan)
    assert (np.diff(lengths[flat]) <= 0).all()  # longest first
    padded = sum(len(m) * lengths[m].max() for m in plan)
    in_order = sum(len(m) * lengths[m].max() for m in plan_micro_batches(lengths, rows, max_rows=16))
    assert padded < 0.8 * in_order  # sorting keeps padding out of the compute
    assert [len(m) for m in plan_micro_batches(np.array([300, 10]), np.arange(2), 16, 128)] == [1, 1]


def test_padding_fraction_and_tokens_per_second_are_reported(batch):
    plain = make_learner(make_config("learner.micro_batch_size=2")).train_step(batch)
    packed = make_learner(make_config("learner.micro_batch_size=2", "learner.max_tokens_per_micro_batch=64")
                          ).train_step(batch)
    lengths = [len(p) + len(c) for p, c in zip(batch.prompt_token_ids, batch.completion_token_ids)]
    rectangle = sum(2 * max(lengths[k:k + 2]) for k in range(0, len(lengths), 2))
    assert plain.metrics["padding_frac"] == pytest.approx(1 - sum(lengths) / rectangle)
    assert plain.metrics["row_tokens_mean"] == pytest.approx(np.mean(lengths))
    assert packed.metrics["padding_frac"] < plain.metrics["padding_frac"]
    assert plain.metrics["tokens_per_s"] > 0 and packed.metrics["tokens_per_s"] > 0


def test_collate_pads_each_row_by_hand():
    batch = TrainBatch(prompt_token_ids=[np.array([5, 6]), np.array([7])],
                       completion_token_ids=[np.array([8]), np.array([9, 10, 11])],
                       behaviour_logprobs=[np.array([-0.5], np.float32), np.array([-1, -2, -3], np.float32)],
                       advantages=np.array([1.0, -1.0]))
    micro = _collate(batch, np.array([1, 0]), pad_id=0, proximal=[np.array([-4.0]), np.array([-5, -6, -7.0])])
    assert micro.input_ids.tolist() == [[7, 9, 10, 11], [5, 6, 8, 0]]
    assert micro.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert micro.target_positions.tolist() == [[0, 1, 2], [1, 0, 0]]  # the logits at p - 1 + t predict token t
    assert micro.completion_ids.tolist() == [[9, 10, 11], [8, 0, 0]]
    assert micro.response_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert micro.behaviour_logprobs.tolist() == [[-1, -2, -3], [-0.5, 0, 0]]
    assert micro.proximal_logprobs.tolist() == [[-5, -6, -7], [-4, 0, 0]]
    assert micro.advantages.tolist() == [-1.0, 1.0]
    assert micro.input_ids.dtype == torch.long and micro.behaviour_logprobs.dtype == torch.float32
