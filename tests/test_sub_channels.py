"""Sub-channels (config expansion, worker outputs) and replica slots, without Ray."""

from __future__ import annotations

import numpy as np
import pytest

from mixgrpo.actors.reward import RewardWorker, split_sub_channels
from mixgrpo.batch import PromptBatch, RolloutBatch
from mixgrpo.config import ConfigError, RewardChannelConfig, load_config
from mixgrpo.orchestrator.placement import plan_slots
from mixgrpo.orchestrator.scoring import _head_counters, group_workers, replica_rows

CHANNELS = ("rewards=[{name: correct, kind: numeric_match, weight: 2},"
            " {name: parts, kind: python, weight: 0.5, sub_channels: {length: 1.0, pid: 0.0},"
            "  options: {callable: 'parallel_rewards:length_and_pid', batched: true}}]")


def test_sub_channels_expand_names_and_weights_in_order():
    config = load_config(None, [CHANNELS])
    assert config.channel_names == ["correct", "parts/length", "parts/pid"]
    assert config.channel_weights == [2.0, 0.5, 0.0]
    assert config.rewards[1].head_names == ["parts/length", "parts/pid"]
    assert load_config(None, [CHANNELS, "algorithm.weights=[1, 1, 1]"]).channel_weights == [1, 1, 1]
    with pytest.raises(ConfigError, match="algorithm.weights has 2 values for 3 reward channels"):
        load_config(None, [CHANNELS, "algorithm.weights=[1, 1]"])


@pytest.mark.parametrize("override, message", [
    ("rewards=[{name: 'a/b', kind: regex, options: {pattern: x}}]", "contain no '/'"),
    ("rewards=[{name: a, kind: regex, sub_channels: {}, options: {pattern: x}}]", "at least one sub-channel"),
    ("rewards=[{name: a, kind: regex, sub_channels: {'x/y': 1}, options: {pattern: x}}]", "contain no '/'"),
    ("rewards=[{name: a, kind: regex, sub_channels: {x: -1}, options: {pattern: x}}]", "weight must be >= 0"),
    ("rewards=[{name: a, kind: regex, sub_channels: {x: 0}, options: {pattern: x}}]", "must not all be zero"),
    ("rewards=[{name: a, kind: regex, replicas: 0, options: {pattern: x}}]", "rewards.0.replicas"),
])
def test_bad_sub_channels_and_replicas_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def batch(texts: list[str]) -> tuple[PromptBatch, RolloutBatch]:
    n = len(texts)
    return (PromptBatch(np.array([0]), ["p"], [{}]),
            RolloutBatch(np.zeros(n, dtype=np.int64), [np.arange(2)] * n, [np.arange(1)] * n,
                         [np.zeros(1, dtype=np.float32)] * n, texts, np.zeros(n, dtype=np.int64)))


def worker(function: str, subs: dict[str, float] | None, batched: bool = True) -> RewardWorker:
    options = {"callable": f"parallel_rewards:{function}", "batched": batched}
    return RewardWorker(RewardChannelConfig(name="ch", kind="python", sub_channels=subs, options=options))


def test_worker_returns_one_column_per_declared_sub_channel():
    scores = worker("length_and_pid", {"length": 1.0, "pid": 0.5}).score(*batch(["a", "abc"]))
    assert list(scores.values) == ["ch/length", "ch/pid"]
    np.testing.assert_array_equal(scores.values["ch/length"], [1.0, 3.0])
    assert scores.counters == {}


def test_one_dict_per_completion_with_nulls_missing_and_extra_keys():
    w = worker("parts_per_completion", {"a": 1.0, "b": 1.0, "c": 1.0}, batched=False)
    scores = w.score(*batch(["ab", "abc", ""]))
    np.testing.assert_array_equal(scores.values["ch/a"], [2.0, 3.0, np.nan])
    np.testing.assert_array_equal(scores.values["ch/b"], [1.0, np.nan, np.nan])
    assert np.isnan(scores.values["ch/c"]).all()  # declared, never returned
    assert scores.counters == {"a/null": 1, "b/null": 2, "c/missing": 1}
    assert "extra" not in str(scores.values)


def test_undeclared_dict_or_plain_values_for_declared_subs_are_errors():
    scores = worker("length_and_pid", None).score(*batch(["a"]))
    assert np.isnan(scores.values["ch"]).all() and scores.counters == {"errors": 1}
    scores = worker("lengths", {"x": 1.0}).score(*batch(["a", "b"]))
    assert list(scores.values) == ["ch/x"] and np.isnan(scores.values["ch/x"]).all()
    assert scores.counters == {"errors": 1}
    with pytest.raises(ValueError, match="not a dict"):
        split_sub_channels([1.0, 2.0], ["x"], 2)


def test_a_replica_scores_only_its_rows():
    scores = worker("lengths", None).score(*batch(["a", "bb", "ccc", "dddd"]), rows=np.array([1, 2]))
    np.testing.assert_array_equal(scores.values["ch"], [2.0, 3.0])


def test_counters_are_routed_to_their_heads():
    channel = RewardChannelConfig(name="ocr", kind="ocr", sub_channels={"score": 1, "legibility": 1},
                                  options={"render": "svg"})
    routed = _head_counters(channel, {"errors": 1, "score/null": 3})
    assert routed == {"ocr/score": {"errors": 1, "null": 3}, "ocr/legibility": {"errors": 1}}


def test_replica_rows_are_contiguous_in_order_and_cover_everything():
    parts = replica_rows(10, 3)
    assert [p.tolist() for p in parts] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert [p.tolist() for p in replica_rows(2, 4)] == [[0], [1]]  # no empty shares
    channels = [RewardChannelConfig(name="a", kind="regex", replicas=2, options={"pattern": "x"}),
                RewardChannelConfig(name="b", kind="regex", options={"pattern": "x"})]
    assert group_workers(["a0", "a1", "b0"], channels) == [["a0", "a1"], ["b0"]]
    with pytest.raises(ValueError, match="2 reward workers"):
        group_workers(["a0", "b0"], channels)


def test_plan_slots_gives_every_replica_of_a_gpu_channel_its_own_gpu():
    config = load_config(None, [
        "rewards=[{name: clip, kind: regex, device: gpu, replicas: 3, options: {pattern: x}},"
        " {name: fmt, kind: regex, replicas: 2, options: {pattern: x}}]",
        "cluster.gpus=5",
    ])
    slots = plan_slots(config, total_cpus=2)
    rewards = [(s.index, s.replica, s.gpus) for s in slots if s.role == "reward"]
    assert rewards == [(0, 0, 1), (0, 1, 1), (0, 2, 1), (1, 0, 0), (1, 1, 0)]
    assert len(set(slots)) == len(slots)  # distinct slots: each actor gets its own bundle
    assert sum(s.gpus for s in slots) == 5  # + 1 generator + 1 learner rank
    with pytest.raises(ValueError, match="needs 5 GPUs"):
        plan_slots(load_config(None, [
            "rewards=[{name: clip, kind: regex, device: gpu, replicas: 3, options: {pattern: x}}]",
            "cluster.gpus=4"]), total_cpus=2)
