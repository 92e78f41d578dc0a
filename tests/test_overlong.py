"""Overlong completions (truncated flag, algorithm.overlong, the overlong channel) and all-null completions."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
from ray_helpers import start_local_ray

from mixgrpo.batch import PromptBatch, RolloutBatch, rollout_table
from mixgrpo.config import ConfigError, load_config
from mixgrpo.orchestrator.driver import train
from mixgrpo.orchestrator.step import loss_rows
from mixgrpo.rewards.channels import ScoringInput, build_channel
from mixgrpo.rundir import read_metrics

NAN = float("nan")


@pytest.mark.parametrize(
    ("n_tokens", "expected"),
    # L_max = 8, L_cache = 4: free up to 4 tokens, then -1/4 per token, -1 at the cap and beyond
    [(1, 0.0), (4, 0.0), (5, -0.25), (7, -0.75), (8, -1.0), (9, -1.0)],
)
def test_overlong_channel_is_dapo_soft_punishment(n_tokens, expected):
    channel = build_channel("overlong", {"max_tokens": 8, "buffer": 4})
    assert channel(ScoringInput(["p"], ["c"], [{}], [n_tokens])) == [pytest.approx(expected)]


@pytest.mark.parametrize("options", [{"max_tokens": 4, "buffer": 5}, {"max_tokens": 8}, {"max_tokens": 0, "buffer": 1},
                                     {"max_tokens": 8, "buffer": 2, "scale": 1}])
def test_overlong_channel_rejects_bad_options(options):
    with pytest.raises(ValueError):
        build_channel("overlong", options)


def test_penalty_mode_needs_an_overlong_channel():
    with pytest.raises(ConfigError, match="algorithm.overlong=penalty needs a reward channel of kind overlong"):
        load_config(None, ["algorithm.overlong=penalty"])
    config = load_config(None, [
        "algorithm.overlong=penalty",
        "rewards=[{name: correct, kind: numeric_match}, {name: overlong, kind: overlong, "
        "options: {max_tokens: 8, buffer: 4}}]",
    ])
    assert [c.kind for c in config.rewards] == ["numeric_match", "overlong"]


def test_loss_rows_leave_out_all_null_and_masked_truncated_completions():
    rewards = np.array([[1.0, NAN], [NAN, NAN], [0.0, 2.0], [NAN, 1.0], [np.inf, NAN]])
    truncated = np.array([False, False, True, True, False])
    # row 1: every channel null; row 4: its only value is inf, which the mixer treats as null too
    assert loss_rows(rewards, truncated, "keep").tolist() == [0, 2, 3]
    assert loss_rows(rewards, truncated, "penalty").tolist() == [0, 2, 3]
    assert loss_rows(rewards, truncated, "mask").tolist() == [0]


def _rollouts(truncated=None) -> RolloutBatch:
    n = 3
    return RolloutBatch(np.zeros(n, dtype=np.int64), [np.arange(2)] * n, [np.arange(1)] * n,
                        [np.zeros(1, dtype=np.float32)] * n, ["a", "b", "c"], np.zeros(n, dtype=np.int64),
                        truncated=truncated)


def test_rollout_batch_carries_the_truncated_flag():
    assert _rollouts().truncated.tolist() == [False, False, False]  # not given: nothing truncated
    flagged = _rollouts(np.array([True, False, True]))
    assert flagged.take(np.array([2, 1])).truncated.tolist() == [True, False]
    assert RolloutBatch.concat([flagged, _rollouts()], [0, 1]).truncated.tolist() == [True, False, True] + [False] * 3
    with pytest.raises(ValueError, match="truncated"):
        _rollouts(np.array([True]))
    prompts = PromptBatch(np.array([7]), ["1+1="], [{}])
    table = rollout_table(0, prompts, flagged, np.zeros((3, 1)), ["r"], np.zeros(3), np.zeros((3, 1), bool),
                          np.array(["", "", ""]))
    assert table.column("truncated").to_pylist() == [True, False, True]


@pytest.fixture(scope="module")
def local_ray(tiny_model_cache):
    start_local_ray(num_cpus=2)
    yield
    ray.shutdown()


def test_masked_overlong_and_all_null_completions_are_counted_and_left_out(tmp_path, local_ray):
    """Two tokens are too few for most answers of the tiny model: many completions are cut at the cap,
    and a lone closeness channel is null for every completion that writes no number."""
    config = load_config(None, [
        "run.steps=2", "run.tensorboard=false", "run.progress=false", "task.prompts_per_step=4",
        "generator.group_size=4", "generator.max_new_tokens=2", "algorithm.overlong=mask",
        "rewards=[{name: closeness, kind: numeric_distance, options: {cap: 10}}]",
    ])
    outputs = train(config, tmp_path / "run")
    table = pq.read_table(outputs.rollouts)
    rows = read_metrics(outputs.run_dir)
    for step, row in enumerate(rows):
        of_step = table.filter(table.column("step").to_numpy() == step)
        truncated = np.array(of_step.column("truncated").to_pylist())
        null = np.array(of_step.column("reward_closeness").is_null().to_pylist())
        assert row["completion/truncated_frac"] == pytest.approx(truncated.mean())
        assert row["completion/all_null_frac"] == pytest.approx(null.mean())
        if not null.all():
            assert row["learner/loss_rows_frac"] == pytest.approx((~null & ~truncated).mean())
        lengths = np.array(of_step.column("completion_tokens").to_pylist())
        assert (lengths[truncated] == 2).all()
    assert np.array(table.column("truncated").to_pylist()).any()
