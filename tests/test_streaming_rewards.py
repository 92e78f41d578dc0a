"""Streaming rewards: with several generator replicas each shard is scored as it arrives, on the right rows."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
from ray_helpers import start_local_ray

from mixgrpo.config import load_config
from mixgrpo.orchestrator.driver import train
from mixgrpo.rundir import read_metrics


@pytest.fixture(scope="module", autouse=True)
def local_ray(tiny_model_cache):
    start_local_ray(num_cpus=2)
    yield
    ray.shutdown()


def test_each_generator_shard_is_scored_on_its_own_and_lands_on_its_rows(tmp_path):
    calls = tmp_path / "calls.txt"
    config = load_config(None, [
        "run.steps=2", "task.prompts_per_step=6", "generator.group_size=4", "generator.replicas=2",
        "run.tensorboard=false", "run.progress=false", "eval.every=0",
        ("rewards=[{name: correct, kind: numeric_match}, {name: length, kind: python, options: "
         f"{{callable: 'hostile_rewards:length_logging_calls', batched: true, kwargs: {{path: '{calls}'}}}}}}]"),
    ])
    train(config, tmp_path / "run")
    # per step two shards of 3 prompts x 4, each scored on its own; then the end-of-run eval (20 held-out, greedy)
    assert [int(n) for n in calls.read_text().split()] == [12, 12] * 2 + [20]
    table = pq.read_table(tmp_path / "run" / "rollouts.parquet")
    lengths = np.array([len(text) for text in table.column("completion").to_pylist()], dtype=float)
    np.testing.assert_array_equal(np.array(table.column("reward_length").to_pylist()), lengths)
    rows = read_metrics(tmp_path / "run")
    assert all(row["null_rate/length"] == 0.0 and row["reward_seconds/length"] >= 0.0 for row in rows)
