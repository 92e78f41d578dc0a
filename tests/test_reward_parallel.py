"""Reward channels on Ray: replicas, sub-channels, GPU placement of replicas, real image channels in actors,
reward-map overlays, and the svg-poster config end to end."""

from __future__ import annotations

import json
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
from ray_helpers import start_local_ray

from mixgrpo.batch import PromptBatch, RolloutBatch, rollout_table
from mixgrpo.config import RewardChannelConfig, load_config
from mixgrpo.orchestrator.driver import train
from mixgrpo.orchestrator.placement import (
    Introspect,
    actor_options,
    plan_slots,
    reserved,
)
from mixgrpo.orchestrator.reward_maps import write_reward_overlays
from mixgrpo.orchestrator.scoring import replica_rows, score_all_channels, start_reward_hosts
from mixgrpo.rundir import read_metrics
from mixgrpo.tasks import make_task
from mixgrpo.tasks.svg_poster import reference_svg

SVG_CONFIG = "configs/svg-poster.yaml"


@pytest.fixture(scope="module", autouse=True)
def local_ray(tiny_model_cache):
    start_local_ray(num_cpus=2, num_gpus=4)
    yield
    ray.shutdown()


def workers_for(channels: list[RewardChannelConfig]) -> list:
    """The RewardHost actors of ``channels`` (``placement.reward_actors``), returned once all are up.

    They reserve no CPU (num_cpus=0), so the training run of the last test still gets its bundles.
    """
    workers = start_reward_hosts(channels, lambda spec: {"num_cpus": 0})
    ray.get([w.placement.remote() for w in workers])  # as the driver does before its first step
    return workers


def text_batch(texts: list[str], group: int = 2) -> tuple[PromptBatch, RolloutBatch]:
    n, prompts = len(texts), len(texts) // group
    return (PromptBatch(np.arange(prompts), [f"p{i}" for i in range(prompts)], [{} for _ in range(prompts)]),
            RolloutBatch(np.repeat(np.arange(prompts), group), [np.arange(2)] * n, [np.arange(1)] * n,
                         [np.zeros(1, dtype=np.float32)] * n, texts, np.zeros(n, dtype=np.int64)))


def test_replicas_of_a_gpu_channel_get_distinct_gpus_disjoint_from_generators_and_learner():
    config = load_config(None, [
        "rewards=[{name: clip, kind: regex, device: gpu, replicas: 2, options: {pattern: x}},"
        " {name: fmt, kind: regex, options: {pattern: x}}]", "cluster.gpus=4"])
    slots = plan_slots(config, total_cpus=2)
    probe = ray.remote(type("Probe", (Introspect,), {}))
    with reserved(slots, config.cluster.strategy) as group:
        actors = [probe.options(**actor_options(group, slots, slot)).remote() for slot in slots]
        placed = [tuple(p["gpu_ids"]) for p in ray.get([a.placement.remote() for a in actors])]
    by_slot = {(s.role, s.index, s.replica): ids for s, ids in zip(slots, placed)}
    assert by_slot[("reward", 1, 0)] == ()
    gpu_actors = [by_slot[k] for k in [("generator", 0, 0), ("reward", 0, 0), ("reward", 0, 1), ("learner", 0, 0)]]
    assert all(len(ids) == 1 for ids in gpu_actors)
    assert len({ids[0] for ids in gpu_actors}) == 4


TEXT_CHANNELS = [
    RewardChannelConfig(name="parts", kind="python", replicas=3, sub_channels={"length": 1.0, "pid": 0.0},
                        options={"callable": "parallel_rewards:length_and_pid", "batched": True}),
    RewardChannelConfig(name="plain", kind="python", options={"callable": "parallel_rewards:lengths", "batched": True}),
    RewardChannelConfig(name="slow", kind="python", replicas=2, timeout_s=1.0,
                        options={"callable": "parallel_rewards:hangs_on_marked", "batched": True}),
]


@pytest.fixture(scope="module")
def text_workers() -> list:
    """The actors of TEXT_CHANNELS (3 + 1 + 2), started once for the module."""
    workers = workers_for(TEXT_CHANNELS)
    yield workers
    for worker in workers:
        ray.kill(worker)


def test_replicas_split_the_batch_in_order_and_sub_channels_fill_their_columns(text_workers):
    channels = TEXT_CHANNELS[:2]
    texts = ["x" * i for i in range(10)]
    scores = score_all_channels(text_workers[:4], channels, *text_batch(texts))
    assert scores.rewards.shape == (10, 3)
    np.testing.assert_array_equal(scores.rewards[:, 0], np.arange(10))
    np.testing.assert_array_equal(scores.rewards[:, 2], np.arange(10))
    pids = scores.rewards[:, 1]
    shares = [set(pids[rows]) for rows in replica_rows(10, 3)]
    assert all(len(share) == 1 for share in shares) and len(set.union(*shares)) == 3
    assert scores.counters == {"parts/length": {}, "parts/pid": {}, "plain": {}}


def test_a_hanging_replica_nulls_only_its_share(text_workers):
    channels, workers = TEXT_CHANNELS[2:], text_workers[4:]
    texts = ["a", "bb", "ccc", "dddd", "hang!", "ff"]
    started = time.monotonic()
    scores = score_all_channels(workers, channels, *text_batch(texts))
    assert time.monotonic() - started < 10.0  # the worker's 1 s timeout, not the 30 s hang
    np.testing.assert_array_equal(scores.rewards[:3, 0], [1.0, 2.0, 3.0])
    assert np.isnan(scores.rewards[3:, 0]).all()
    assert scores.counters == {"slow": {"timeouts": 1}}


def test_image_channels_score_in_actors_and_overlays_are_written(tmp_path):
    config = load_config(SVG_CONFIG, ["rewards.ocr.sub_channels={score: 1.0, accuracy: 0.5}"])
    task = make_task(config.task, config.run.seed)
    prompts = task.sample(0).take([0, 1])
    completions = [prompts.metadata[0]["reference"], "7", prompts.metadata[1]["reference"],
                   reference_svg("Wrong Words", "red", "serif")]
    rollouts = RolloutBatch(np.repeat(np.arange(2), 2), [np.arange(2)] * 4, [np.arange(1)] * 4,
                            [np.zeros(1, dtype=np.float32)] * 4, completions, np.zeros(4, dtype=np.int64))
    workers = workers_for(config.rewards)
    scores = score_all_channels(workers, config.rewards, prompts, rollouts)
    names = config.channel_names
    assert names == ["renders", "ocr/score", "ocr/accuracy", "color", "clipscore"]
    np.testing.assert_array_equal(scores.rewards[:, 0], [1.0, 0.0, 1.0, 1.0])
    assert np.isnan(scores.rewards[1, 1:]).all() and not np.isnan(scores.rewards[[0, 2, 3], 1:]).any()
    ocr = scores.rewards[:, names.index("ocr/score")]
    assert ocr[0] > 0.8 and ocr[2] > 0.8 and ocr[3] < 0.5
    run_dir = tmp_path / "run"
    (run_dir / "rollouts.parquet").mkdir(parents=True)
    table = rollout_table(0, prompts, rollouts, scores.rewards, names, np.zeros(4),
                          np.zeros((4, 4), dtype=bool), np.array([""] * 4))
    pq.write_table(table, run_dir / "rollouts.parquet" / "step-000000.parquet")
    paths = write_reward_overlays(config, task, workers, run_dir, limit=2)
    index = [json.loads(line) for line in (run_dir / "reward_maps" / "index.jsonl").read_text().splitlines()]
    assert sorted(p.name for p in paths) == ["clipscore-0.png", "clipscore-1.png", "ocr-0.png", "ocr-1.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
    assert [e["reward"] for e in index if e["channel"] == "ocr"] == sorted(ocr[[0, 2]], reverse=True)
    for worker in workers:
        ray.kill(worker)


def test_svg_poster_config_trains_end_to_end_and_logs_every_channel(tmp_path):
    config = load_config(SVG_CONFIG, ["run.steps=2", "run.tensorboard=false", "run.progress=false",
                                      "rewards.ocr.replicas=2"])
    outputs = train(config, tmp_path / "run")
    rows = read_metrics(outputs.run_dir)
    assert [r["step"] for r in rows] == [0, 1]
    heads = ["renders", "clipscore", "ocr/score", "ocr/legibility", "color"]
    for row in rows:
        for head in heads:
            assert f"reward/{head}" in row and f"null_rate/{head}" in row
        # image channels are null exactly where the completion does not render
        assert row["null_rate/clipscore"] == pytest.approx(1.0 - row["reward/renders"])
        assert row["null_rate/color"] >= row["null_rate/clipscore"]  # also null where nothing is drawn
        assert row["null_rate/ocr/score"] == row["null_rate/ocr/legibility"] == row["null_rate/clipscore"]
        assert np.isfinite(row["learner/loss"])
    table = pq.read_table(outputs.rollouts)
    assert {f"reward_{h}" for h in heads} <= set(table.column_names)
    assert table.num_rows == 2 * config.task.prompts_per_step * config.generator.group_size
    assert (outputs.run_dir / "reward_maps" / "index.jsonl").is_file()
