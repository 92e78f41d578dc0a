"""Lean reward processes: channels of one ``actor`` group (the rule channels by default: ``cpu-light``) share one
Ray actor process, with the same scores, per-channel timeouts and failure counters as actors of their own."""

from __future__ import annotations

import time

import numpy as np
import pytest
import ray
from parallel_rewards import process_report
from ray_helpers import start_local_ray

from mixgrpo.batch import PromptBatch, RolloutBatch
from mixgrpo.config import ConfigError, RewardChannelConfig, load_config
from mixgrpo.orchestrator.driver import create_actors
from mixgrpo.orchestrator.placement import AUTO_GROUP, plan_slots, reserved, reward_actors
from mixgrpo.orchestrator.scoring import SHARED_RESTARTS, score_all_channels, start_reward_hosts

HANG = "hang!"


@pytest.fixture(scope="module", autouse=True)
def local_ray(tiny_model_cache):
    start_local_ray(num_cpus=2)
    yield
    ray.shutdown()


def hosts_for(channels: list[RewardChannelConfig], max_restarts: int = 0) -> list:
    """The RewardHost actors of ``channels``, up; no CPU reserved."""
    hosts = start_reward_hosts(channels, lambda spec: {"num_cpus": 0, "max_restarts": max_restarts})
    ray.get([host.placement.remote() for host in hosts])
    return hosts


def arithmetic_batch(texts: list[str]) -> tuple[PromptBatch, RolloutBatch]:
    """Two prompts (1+2, 3+4), completions in groups of len(texts) / 2."""
    n, group = len(texts), len(texts) // 2
    prompts = PromptBatch(np.array([0, 1]), ["1+2=", "3+4="], [{"answer": "3"}, {"answer": "7"}])
    rollouts = RolloutBatch(np.repeat(np.arange(2), group), [np.arange(2)] * n, [np.arange(1)] * n,
                            [np.zeros(1, dtype=np.float32)] * n, texts, np.zeros(n, dtype=np.int64))
    return prompts, rollouts


def test_the_default_jobs_four_rule_channels_share_one_placement_slot_and_one_process_without_torch():
    config = load_config(None, [])
    assert [c.kind for c in config.rewards] == ["numeric_match", "regex", "length", "numeric_distance"]
    slots = plan_slots(config, total_cpus=2)
    assert [s.role for s in slots] == ["generator", "reward", "learner"]
    with reserved(slots, config.cluster.strategy) as group:
        actors = create_actors(config, group, slots)
        try:
            assert len(actors.rewards) == 1 and list(actors.by_name(config)) == [
                "generator-0", f"reward-{AUTO_GROUP}", "learner-0"]
            report = ray.get(actors.rewards[0].__ray_call__.remote(process_report))
            scores = score_all_channels(actors.rewards, config.rewards, *arithmetic_batch(["3", "x 4", "7", "12"]))
        finally:
            actors.learner.shutdown()
    assert report["heavy"] == []  # the shared rule-channel process imported no model library
    np.testing.assert_array_equal(scores.rewards[:, 0], [1.0, 0.0, 1.0, 0.0])  # correct
    np.testing.assert_array_equal(scores.rewards[:, 3], [0.0, -1.0, 0.0, -5.0])  # closeness


def test_a_shared_actor_scores_exactly_as_actors_of_their_own():
    shared = load_config(None, []).rewards
    own = [c.model_copy(update={"actor": "own"}) for c in shared]
    assert len(reward_actors(shared)) == 1 and len(reward_actors(own)) == 4
    batch = arithmetic_batch(["3", "3 ", "-2", "", "7", "seven", "77777", "6"])
    together, apart = hosts_for(shared), hosts_for(own)
    expected = score_all_channels(apart, own, *batch)
    got = score_all_channels(together, shared, *batch)
    np.testing.assert_array_equal(got.rewards, expected.rewards)  # NaN where the same ones are null
    assert np.isnan(got.rewards).any() and got.counters == expected.counters
    assert set(got.seconds) == {c.name for c in shared}
    pids = {ray.get(host.__ray_call__.remote(process_report))["pid"] for host in together + apart}
    assert len(pids) == 5


def test_explicit_groups_own_actors_and_the_automatic_group():
    channels = [
        RewardChannelConfig(name="a", kind="python", actor="judges",
                            options={"callable": "parallel_rewards:lengths", "batched": True}),
        RewardChannelConfig(name="correct", kind="numeric_match"),
        RewardChannelConfig(name="b", kind="regex", actor="judges", options={"pattern": "7"}),
        RewardChannelConfig(name="fmt", kind="regex", actor="own", options={"pattern": r"\d+"}),
        RewardChannelConfig(name="c", kind="python", options={"callable": "parallel_rewards:lengths", "batched": True}),
        RewardChannelConfig(name="d", kind="python", actor=AUTO_GROUP,  # a user callable may opt in
                            options={"callable": "parallel_rewards:lengths", "batched": True}),
    ]
    specs = reward_actors(channels)
    assert [(s.name, s.channels) for s in specs] == [("judges", (0, 2)), (AUTO_GROUP, (1, 5)), ("fmt", (3,)), ("c", (4,))]
    hosts = hosts_for(channels)
    pids = [ray.get(host.__ray_call__.remote(process_report))["pid"] for host in hosts]
    assert len(set(pids)) == 4
    scores = score_all_channels(hosts, channels, *arithmetic_batch(["3", "77", "7", "x"]))
    np.testing.assert_array_equal(scores.rewards, [[1, 1, 0, 1, 1, 1], [2, 0, 0, 1, 2, 2],
                                                   [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 1, 1]])


@pytest.mark.parametrize(("override", "message"), [
    ("{name: j, kind: regex, device: gpu, actor: g, options: {pattern: x}}",
     "channel 'j' with device: gpu cannot share actor 'g'"),
    ("{name: j, kind: regex, replicas: 2, actor: g, options: {pattern: x}}",
     "channel 'j' with replicas: 2 cannot share actor 'g'"),
    ("{name: j, kind: regex, actor: 'a/b', options: {pattern: x}}", "actor group 'a/b' must be non-empty"),
    ("{name: j, kind: regex, actor: correct, options: {pattern: x}}",
     "actor group names ['correct'] are also names of channels outside the group"),
])
def test_a_gpu_or_replicated_channel_in_a_shared_group_is_a_one_line_config_error(override, message):
    with pytest.raises(ConfigError) as raised:
        load_config(None, [f"rewards=[{{name: correct, kind: numeric_match}}, {override}]"])
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_gpu_and_replicated_channels_keep_their_own_actors_and_own_is_allowed_for_them():
    config = load_config(None, [
        "rewards=[{name: correct, kind: numeric_match, device: gpu, actor: own},"
        " {name: fmt, kind: regex, replicas: 2, options: {pattern: x}}, {name: len, kind: length}]"])
    assert [(s.name, s.channels, s.replica) for s in reward_actors(config.rewards)] == [
        ("correct", (0,), 0), ("fmt-0", (1,), 0), ("fmt-1", (1,), 1), (AUTO_GROUP, (2,), 0)]


def test_a_hanging_channel_in_a_shared_actor_nulls_only_itself_and_its_restart_is_counted_for_the_others():
    channels = [RewardChannelConfig(name="correct", kind="numeric_match"),
                RewardChannelConfig(name="slow", kind="python", timeout_s=1.0, actor=AUTO_GROUP,
                                    options={"callable": "parallel_rewards:hangs_on_marked", "batched": True}),
                RewardChannelConfig(name="fmt", kind="regex", options={"pattern": r"\d+"})]
    hosts = hosts_for(channels, max_restarts=1)
    assert len(hosts) == 1
    pid = ray.get(hosts[0].__ray_call__.remote(process_report))["pid"]
    started = time.monotonic()
    scores = score_all_channels(hosts, channels, *arithmetic_batch(["3", HANG, "7", "8"]))
    assert time.monotonic() - started < 10.0  # the channel's 1 s timeout, not the 30 s hang
    assert np.isnan(scores.rewards[:, 1]).all()
    np.testing.assert_array_equal(scores.rewards[:, [0, 2]], [[1, 1], [0, 0], [1, 1], [0, 1]])
    assert scores.counters == {"correct": {}, "slow": {"timeouts": 1}, "fmt": {}}
    # the timed-out call still runs at the next call: stuck, and the actor (all three channels) is restarted
    scores = score_all_channels(hosts, channels, *arithmetic_batch(["3", "4", "7", "8"]))
    np.testing.assert_array_equal(scores.rewards[:, [0, 2]], [[1, 1], [0, 1], [1, 1], [0, 1]])
    assert np.isnan(scores.rewards[:, 1]).all()
    assert scores.counters == {"correct": {SHARED_RESTARTS: 1}, "slow": {"stuck": 1}, "fmt": {SHARED_RESTARTS: 1}}
    assert ray.get(hosts[0].__ray_call__.remote(process_report))["pid"] != pid
    scores = score_all_channels(hosts, channels, *arithmetic_batch(["3", "4", "7", "8"]))
    np.testing.assert_array_equal(scores.rewards, [[1, 1, 1], [0, 1, 1], [1, 1, 1], [0, 1, 1]])


def test_a_crashing_channel_takes_its_shared_actor_along_and_each_channel_follows_its_on_dead():
    channels = [RewardChannelConfig(name="correct", kind="numeric_match"),
                RewardChannelConfig(name="dying", kind="python", actor=AUTO_GROUP,
                                    options={"callable": "failing_rewards:exits_process", "batched": True}),
                RewardChannelConfig(name="fmt", kind="regex", actor="own", options={"pattern": r"\d+"})]
    hosts = hosts_for(channels)  # no restart left: the first crash is for good
    disabled: set[str] = set()
    scores = score_all_channels(hosts, channels, *arithmetic_batch(["3", "4", "7", "8"]), disabled=disabled)
    assert np.isnan(scores.rewards[:, :2]).all() and not np.isnan(scores.rewards[:, 2]).any()
    assert scores.counters == {"correct": {"actor_errors": 1}, "dying": {"actor_errors": 1}, "fmt": {}}
    assert disabled == {"correct", "dying"}
    scores = score_all_channels(hosts, channels, *arithmetic_batch(["3", "4", "7", "8"]), disabled=disabled)
    assert scores.counters == {"correct": {"disabled": 1}, "dying": {"disabled": 1}, "fmt": {}}
