"""Reward-channel failures reproduced for real: one failing completion nulls only itself (issue 17.1), and a
timed-out call never overlaps the next one (issue 15.4). Worker tests without Ray, then a real run on Ray."""

from __future__ import annotations

import logging
import threading

import failing_rewards
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import ray
from ray_helpers import start_local_ray

from mixgrpo.actors.reward import RewardWorker
from mixgrpo.batch import PromptBatch, RolloutBatch
from mixgrpo.config import RewardChannelConfig, load_config
from mixgrpo.orchestrator.driver import train
from mixgrpo.orchestrator.scoring import _head_counters
from mixgrpo.rundir import read_metrics

TEXTS = ["12", "19", "7", "99", "3", "9 or 8", "5", "6"]
NINES = [i for i, text in enumerate(TEXTS) if "9" in text]


def batch(texts: list[str], metadata: list[dict] | None = None) -> tuple[PromptBatch, RolloutBatch]:
    """Two prompts, len(texts) // 2 completions each."""
    n, m = len(texts), len(texts) // 2
    return (PromptBatch(np.arange(2), ["1+1=", "2+2="], metadata or [{"answer": "2"}, {"answer": "4"}]),
            RolloutBatch(np.repeat(np.arange(2), m), [np.arange(2)] * n, [np.arange(1)] * n,
                         [np.zeros(1, dtype=np.float32)] * n, texts, np.zeros(n, dtype=np.int64)))


def worker(function: str, batched: bool = False, timeout_s: float = 5.0, **kwargs) -> RewardWorker:
    options = {"callable": f"failing_rewards:{function}", "batched": batched, "kwargs": kwargs}
    return RewardWorker(RewardChannelConfig(name="judge", kind="python", timeout_s=timeout_s, options=options))


def test_per_completion_callable_nulls_only_the_completions_it_fails_on():
    scores = worker("raises_on_nine").score(*batch(TEXTS))
    values = scores.values["judge"]
    assert np.isnan(values[NINES]).all()
    np.testing.assert_array_equal(np.delete(values, NINES), [len(t) for i, t in enumerate(TEXTS) if i not in NINES])
    assert scores.counters == {"item_errors": len(NINES)}


def test_batched_callable_is_all_or_nothing():
    w = worker("raises_on_nine_batched", batched=True)
    scores = w.score(*batch(TEXTS))
    assert np.isnan(scores.values["judge"]).all() and scores.counters == {"errors": 1}
    clean = [text.replace("9", "1") for text in TEXTS]
    scores = w.score(*batch(clean))
    np.testing.assert_array_equal(scores.values["judge"], [len(t) for t in clean])
    assert scores.counters == {}


def test_item_failures_are_logged_once_per_exception_type(caplog):
    w = worker("raises_on_nine")
    with caplog.at_level(logging.WARNING, logger="mixgrpo.reward"):
        counted = [w.score(*batch(TEXTS)).counters for _ in range(2)]
    records = [r.getMessage() for r in caplog.records if r.name == "mixgrpo.reward"]
    assert len(records) == 1, records
    assert "'judge'" in records[0] and "ValueError" in records[0] and "completion 1 of 8" in records[0]
    assert "'19'" in records[0] and "item_errors" in records[0]
    assert counted == [{"item_errors": len(NINES)}] * 2  # every call counts, only the first logs


def test_a_failing_completion_is_null_in_every_sub_channel():
    config = RewardChannelConfig(name="parts", kind="python", sub_channels={"length": 1.0, "digits": 1.0},
                                 options={"callable": "failing_rewards:parts_raising_on_nine"})
    scores = RewardWorker(config).score(*batch(TEXTS))
    for head in ("parts/length", "parts/digits"):
        assert np.isnan(scores.values[head][NINES]).all()
        assert not np.isnan(np.delete(scores.values[head], NINES)).any()
    assert scores.counters == {"length/item_errors": len(NINES), "digits/item_errors": len(NINES)}
    assert _head_counters(config, scores.counters) == {"parts/length": {"item_errors": len(NINES)},
                                                       "parts/digits": {"item_errors": len(NINES)}}


def test_builtin_per_completion_kind_isolates_completions_whose_gold_answer_is_missing():
    config = RewardChannelConfig(name="exact", kind="exact_match", options={"answer_key": "city"})
    scores = RewardWorker(config).score(*batch(["Paris", "Lyon", "x", "y"], [{"city": "Paris"}, {}]))
    np.testing.assert_array_equal(scores.values["exact"], [1.0, 0.0, np.nan, np.nan])  # prompt 2 has no city
    assert scores.counters == {"item_errors": 2}


def test_a_slow_call_ends_before_the_next_one_enters_the_channel():
    failing_rewards.calls = failing_rewards.max_inside = 0
    w = worker("exclusive_probe", batched=True, timeout_s=0.5, first_seconds=0.7)
    assert w.score(*batch(TEXTS)).counters == {"timeouts": 1}
    second = w.score(*batch(TEXTS))  # waits for the first call to end (0.2 s), then scores within its budget
    assert second.counters == {} and (second.values["judge"] == 1.0).all()
    assert failing_rewards.calls == 2 and failing_rewards.max_inside == 1


def test_a_channel_hanging_on_every_call_never_piles_up_threads():
    w = worker("hangs_forever", batched=True, timeout_s=0.2)
    before = threading.active_count()
    counters = []
    for _ in range(10):
        scores = w.score(*batch(TEXTS))
        assert np.isnan(scores.values["judge"]).all()
        counters.append(scores.counters)
        assert threading.active_count() <= before + 1  # the one abandoned call, never more
    assert counters == [{"timeouts": 1}] + [{"stuck": 1}] * 9  # the channel is never entered again


@pytest.fixture(scope="module")
def local_ray(tiny_model_cache):
    start_local_ray(num_cpus=2)
    yield
    ray.shutdown()


def test_in_a_run_only_the_failing_completions_are_null(local_ray, tmp_path):
    """Issue 17.1 for real: 32 x 8 completions, a per-completion and a batched judge raising on a '9'."""
    channels = ("rewards=[{name: correct, kind: numeric_match},"
                " {name: judge, kind: python, options: {callable: 'failing_rewards:raises_on_nine'}},"
                " {name: batch_judge, kind: python, options: {callable: 'failing_rewards:raises_on_nine_batched',"
                " batched: true}}]")
    config = load_config(None, ["run.steps=2", "run.tensorboard=false", "run.progress=false", channels])
    train(config, tmp_path / "run")
    rows = read_metrics(tmp_path / "run")
    table = pq.read_table(tmp_path / "run" / "rollouts.parquet")
    n = config.task.prompts_per_step * config.generator.group_size
    for row in rows:
        of_step = table.filter(pc.equal(table.column("step"), row["step"]))
        nine = np.array(["9" in text for text in of_step.column("completion").to_pylist()])
        assert 0 < nine.sum() < n, "the tiny model wrote no completion with a 9: the run proves nothing"
        null = np.array(of_step.column("reward_judge").is_null().to_pylist())
        assert (null == nine).all()  # exactly the completions it failed on
        assert row["null_rate/judge"] == pytest.approx(nine.mean())
        assert row["failures/judge/item_errors"] == nine.sum()
        assert row["null_rate/batch_judge"] == 1.0 and row["failures/batch_judge/errors"] == 1
        assert np.isfinite(row["learner/loss"])
