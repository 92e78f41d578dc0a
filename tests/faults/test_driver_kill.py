"""The driver killed with SIGKILL between steps and while writing a checkpoint: --resume continues correctly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from harness import kill

from mixgrpo.config import load_config
from mixgrpo.orchestrator.checkpoint import load_latest_checkpoint
from mixgrpo.rundir import read_metrics
from mixgrpo.tasks import make_task

pytestmark = pytest.mark.faults

SETS = ["run.steps=6", "run.checkpoint_every=2", "task.prompts_per_step=4", "generator.group_size=4",
        "run.tensorboard=false", "run.progress=false", "cluster.num_cpus=2"]


def _train(args: list[str], extra_sets: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``mixgrpo train`` with SETS, then ``extra_sets`` (later overrides win)."""
    command = [sys.executable, "-m", "mixgrpo.orchestrator.cli", "train", *args]
    for item in [*SETS, *extra_sets]:
        command += ["--set", item]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=dict(os.environ))


def _assert_complete_and_in_order(run_dir):
    rows = read_metrics(run_dir)
    assert [r["step"] for r in rows] == list(range(6))
    assert [r["policy_version"] for r in rows] == list(range(1, 7))
    config = load_config(run_dir / "config.yaml")
    task, m = make_task(config.task, config.run.seed), config.generator.group_size
    table = pq.read_table(run_dir / "rollouts.parquet")
    for step in range(6):
        ids = [pid for s, pid in zip(table.column("step").to_pylist(), table.column("prompt_id").to_pylist()) if s == step]
        assert ids == np.repeat(task.sample(step).prompt_ids, m).tolist()


def test_driver_killed_between_steps_resumes_at_the_right_step(fault_plan, tiny_model_cache, tmp_path):
    run_dir = tmp_path / "run"
    fault_plan.arm(kill("driver", at="step_end", step=2))
    killed = _train(["--out", str(run_dir)])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert [r["step"] for r in read_metrics(run_dir)] == [0, 1, 2]
    assert pq.read_table(run_dir / "rollouts.parquet").num_rows == 3 * 16  # readable after the kill
    assert load_latest_checkpoint(run_dir).next_step == 2
    resumed = _train(["--resume", str(run_dir)])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _assert_complete_and_in_order(run_dir)


def test_driver_killed_during_a_checkpoint_write_never_loads_it(fault_plan, tiny_model_cache, tmp_path):
    run_dir = tmp_path / "run"
    fault_plan.arm(kill("driver", at="checkpoint_write", step=4))
    killed = _train(["--out", str(run_dir)])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    checkpoints = run_dir / "checkpoints"
    assert any(p.name.startswith(".writing-") for p in checkpoints.iterdir())  # the half-written one
    assert not (checkpoints / "step-000004").exists()
    assert load_latest_checkpoint(run_dir).next_step == 2  # the previous one stays valid
    resumed = _train(["--resume", str(run_dir)])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _assert_complete_and_in_order(run_dir)
