"""Held-out evaluation pieces without Ray: pass@k, eval metrics, the held-out splits, the eval config."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mixgrpo.config import ConfigError, TaskConfig, load_config
from mixgrpo.orchestrator.evaluation import eval_metrics, eval_prompts, pass_at_k
from mixgrpo.tasks import make_task, split_held_out
from mixgrpo.tasks.toy import arithmetic_pool, arithmetic_split


@pytest.mark.parametrize(("n", "c", "k", "expected"), [
    (5, 2, 2, 1 - 3 / 10),       # 1 - C(3,2)/C(5,2)
    (4, 1, 1, 1 / 4),            # pass@1 = c / n
    (10, 3, 5, 1 - 21 / 252),    # 1 - C(7,5)/C(10,5)
    (4, 0, 4, 0.0),
    (4, 1, 4, 1.0),              # k = n: any pass
    (3, 3, 2, 1.0),
])
def test_pass_at_k_matches_hand_computed_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_eval_metrics_mean_null_rate_and_pass_at_n_for_binary_channels():
    nan = math.nan
    # 2 prompts x 3 samples x 2 channels: "correct" in {0, 1} with a null; "dist" continuous.
    rewards = np.array([
        [[1.0, -1.0], [0.0, -2.0], [nan, nan]],
        [[0.0, 0.0], [0.0, -3.0], [0.0, -1.0]],
    ])
    metrics = eval_metrics(rewards, ["correct", "dist"])
    assert metrics["eval/correct"] == pytest.approx(1 / 5)
    assert metrics["eval/null_rate/correct"] == pytest.approx(1 / 6)
    assert metrics["eval/correct/pass@3"] == pytest.approx(0.5)  # prompt 0 passes (once), prompt 1 never
    assert metrics["eval/dist"] == pytest.approx(-7 / 5)
    assert "eval/dist/pass@3" not in metrics
    all_zero = eval_metrics(np.zeros((2, 1, 1)), ["length"])  # a penalty that is 0 everywhere is not pass/fail
    assert all_zero["eval/length"] == 0.0 and "eval/length/pass@1" not in all_zero


def test_toy_split_holds_out_distinct_sums_and_keeps_the_old_pool_at_zero():
    train, held = arithmetic_split(512, seed=0, eval_fraction=0.2)
    assert len(held) == 20 and len(train) == 512
    assert not set(held.prompts) & set(train.prompts)
    assert not set(held.prompt_ids.tolist()) & set(train.prompt_ids.tolist())
    assert set(held.prompt_ids.tolist()) == set(range(512, 532))
    assert arithmetic_split(512, 0, 0.0)[0].prompts == arithmetic_pool(512, 0).prompts
    assert arithmetic_split(512, 0, 0.2)[1].prompts == held.prompts  # deterministic


def test_generic_split_keeps_ids_and_is_seeded():
    pool = arithmetic_pool(40, seed=1)
    train, held = split_held_out(pool, 0.25, seed=3)
    assert len(held) == 10 and len(train) == 30
    assert sorted(train.prompt_ids.tolist() + held.prompt_ids.tolist()) == list(range(40))
    assert split_held_out(pool, 0.25, seed=3)[1].prompt_ids.tolist() == held.prompt_ids.tolist()
    assert split_held_out(pool, 0.25, seed=4)[1].prompt_ids.tolist() != held.prompt_ids.tolist()


def test_task_never_samples_its_held_out_prompts():
    task = make_task(TaskConfig(prompts_per_step=32, eval_fraction=0.2), seed=0)
    held = set(task.held_out.prompts)
    for step in range(40):
        assert not held & set(task.sample(step).prompts)
    assert not held & set(task.sample_extra(3, 1, 32).prompts)


def test_eval_config_checks():
    config = load_config(None, ["task.eval_fraction=0.2", "eval.every=10"])
    assert config.eval_enabled and config.eval.temperature == 0.0
    assert len(eval_prompts(config, make_task(config.task, 0))) == 20
    with pytest.raises(ConfigError, match="eval.n must be 1"):
        load_config(None, ["eval.n=4"])
    with pytest.raises(ConfigError, match="eval.every needs held-out prompts"):
        load_config(None, ["task.eval_fraction=0", "eval.every=5"])
    assert load_config(None, ["eval.n=4", "eval.temperature=1.0"]).eval.n == 4
