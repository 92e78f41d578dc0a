"""What the driver does while the learner ranks train: the Parquet part, and (async) the next step's rollouts."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import ray
from ray_helpers import start_local_ray

from mixgrpo.config import load_config
from mixgrpo.orchestrator.driver import train
from mixgrpo.orchestrator.learner_group import LearnerGroup
from mixgrpo.orchestrator.metrics import RunRecorder
from mixgrpo.orchestrator.rollouts import RolloutPipeline
from mixgrpo.rundir import read_metrics


@pytest.fixture
def calls(monkeypatch, tiny_model_cache):
    """The driver's calls in order: collect <step>, start, finish, parquet <step> (spies on the real methods)."""
    seen: list[str] = []
    collect, start, finish = RolloutPipeline.collect, LearnerGroup.start_step, LearnerGroup.finish_step
    write = RunRecorder.write_rollouts

    def spy_collect(pipeline, step, *args, **kwargs):
        seen.append(f"collect {step}")
        return collect(pipeline, step, *args, **kwargs)

    def spy_start(group, batch):
        seen.append("start")
        return start(group, batch)

    def spy_finish(group, pending):
        seen.append("finish")
        return finish(group, pending)

    def spy_write(recorder, step, table):
        seen.append(f"parquet {step}")
        return write(recorder, step, table)

    monkeypatch.setattr(RolloutPipeline, "collect", spy_collect)
    monkeypatch.setattr(LearnerGroup, "start_step", spy_start)
    monkeypatch.setattr(LearnerGroup, "finish_step", spy_finish)
    monkeypatch.setattr(RunRecorder, "write_rollouts", spy_write)
    start_local_ray(num_cpus=2)
    yield seen
    ray.shutdown()


@pytest.mark.parametrize("async_steps", [0, 1])
def test_the_driver_works_while_the_ranks_train_and_no_rollout_is_older_than_async_steps(tmp_path, calls,
                                                                                          async_steps):
    config = load_config(None, ["run.steps=4", "run.progress=false", "run.tensorboard=false", "eval.every=0",
                                f"algorithm.async_steps={async_steps}", "task.prompts_per_step=8"])
    train(config, tmp_path / "run")
    if async_steps:  # step t + 1 is collected (and its scoring started) while the ranks train on step t
        expected = ["collect 0"] + [c for t in range(3) for c in ("start", f"parquet {t}", f"collect {t + 1}",
                                                                  "finish")] + ["start", "parquet 3", "finish"]
    else:  # synchronous: step t + 1 is not even generated before step t's adapter is broadcast
        expected = [c for t in range(4) for c in (f"collect {t}", "start", f"parquet {t}", "finish")]
    assert calls == expected
    rows = read_metrics(tmp_path / "run")
    assert [r["rollout_lag/max"] for r in rows] == [0.0] + [float(async_steps)] * 3
    assert pq.read_table(tmp_path / "run" / "rollouts.parquet").num_rows == 4 * 8 * config.generator.group_size
