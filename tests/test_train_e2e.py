"""End-to-end runs of the real loop on Ray: it learns, it writes its outputs, it resumes, failures become nulls."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import ray
from peft import PeftModel
from ray_helpers import start_local_ray
from transformers import AutoModelForCausalLM

from mixgrpo.builtin import resolve_model_path
from mixgrpo.config import load_config
from mixgrpo.orchestrator.driver import train
from mixgrpo.rundir import read_metrics
from mixgrpo.tasks import make_task


@pytest.fixture(scope="module", autouse=True)
def local_ray(tiny_model_cache):
    start_local_ray(num_cpus=2)
    yield
    ray.shutdown()


def _short(tmp_path: Path, *overrides: str):
    config = load_config(None, ["run.tensorboard=false", "run.progress=false", *overrides])
    return config, tmp_path / "run"


@pytest.mark.parametrize("async_steps", [0, 1])
def test_default_job_learns_and_writes_every_output(tmp_path, async_steps):
    config = load_config(None, ["run.progress=false", f"algorithm.async_steps={async_steps}"])
    outputs = train(config, tmp_path / "run")
    rows = read_metrics(outputs.run_dir)
    assert [r["step"] for r in rows] == list(range(config.run.steps))
    first = np.mean([r["reward/correct"] for r in rows[:10]])
    last = np.mean([r["reward/correct"] for r in rows[-10:]])
    assert last - first >= 0.15, f"correct: first 10 steps {first:.3f}, last 10 steps {last:.3f}"
    table = pq.read_table(outputs.rollouts)
    assert table.num_rows == config.run.steps * config.task.prompts_per_step * config.generator.group_size
    for column in ["prompt", "completion", "advantage", "policy_version", "step", "weak_heads", "reward_closeness"]:
        assert column in table.column_names
    assert table.column("reward_closeness").null_count > 0  # completions without a number stay null
    assert outputs.reward_plot.stat().st_size > 10_000
    assert any(outputs.tensorboard.glob("events.out.tfevents.*"))
    base = AutoModelForCausalLM.from_pretrained(resolve_model_path(config.model.path, config.run.seed))
    adapted = PeftModel.from_pretrained(base, str(outputs.adapter))
    assert any("lora_B" in name and float(p.abs().sum()) > 0 for name, p in adapted.named_parameters())


def test_resume_continues_at_the_right_step_with_the_same_data(tmp_path):
    config, run_dir = _short(tmp_path, "run.steps=3", "run.checkpoint_every=2")
    train(config, run_dir)
    prompts_step2 = pq.read_table(run_dir / "rollouts.parquet" / "step-000002.parquet").column("prompt_id").to_pylist()
    # Pretend the run died after step 3 was logged but before its checkpoint: latest -> step 2.
    (run_dir / "checkpoints" / "latest").write_text("step-000002")
    resumed_config = load_config(run_dir / "config.yaml", ["run.steps=5"])
    train(resumed_config, run_dir, resume=True)
    rows = read_metrics(run_dir)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[2]["policy_version"] == 3  # step 2 trained on top of the two restored updates
    again = pq.read_table(run_dir / "rollouts.parquet" / "step-000002.parquet").column("prompt_id").to_pylist()
    assert again == prompts_step2
    assert json.loads((run_dir / "checkpoints" / "step-000005" / "driver.json").read_text())["next_step"] == 5


def test_failing_channels_become_nulls_and_training_goes_on(tmp_path):
    config, run_dir = _short(
        tmp_path, "run.steps=2", "eval.every=0",  # a held-out eval would score (and time out) first
        "rewards=[{name: correct, kind: numeric_match},"
        " {name: broken, kind: python, options: {callable: 'hostile_rewards:always_raises'}},"
        " {name: partial, kind: python, options: {callable: 'hostile_rewards:null_for_odd_answers'}},"
        " {name: garbage, kind: python, options: {callable: 'hostile_rewards:garbage'}},"
        " {name: slow, kind: python, timeout_s: 1, options: {callable: 'hostile_rewards:hangs'}}]",
    )
    train(config, run_dir)
    rows = read_metrics(run_dir)
    assert len(rows) == 2
    # slow: step 0's call times out; at step 1 it still runs, so the call is refused (stuck) and Ray restarts the actor
    assert [(r.get("failures/slow/timeouts"), r.get("failures/slow/stuck")) for r in rows] == [(1, None), (None, 1)]
    assert rows[0]["reward_seconds/slow"] >= 1.0 > rows[0]["reward_seconds/correct"]  # the slow channel is named
    for row in rows:
        n = config.task.prompts_per_step * config.generator.group_size
        assert row["null_rate/broken"] == 1.0 and row["failures/broken/item_errors"] == n  # each completion
        assert row["null_rate/slow"] == 1.0
        assert 0.0 < row["null_rate/partial"] < 1.0
        assert row["null_rate/garbage"] > 0.0
        assert np.isfinite(row["learner/loss"])
    table = pq.read_table(run_dir / "rollouts.parquet")
    assert table.column("reward_broken").null_count == table.num_rows
    odd = np.array([int(a) % 2 == 1 for a in _answers(table)])
    partial = np.array(table.column("reward_partial").is_null().to_pylist())
    assert (partial == odd).all()
    assert np.isfinite(np.array(table.column("advantage").to_pylist())).all()


def _answers(table) -> list[int]:
    return [eval(prompt.rstrip("=")) for prompt in table.column("prompt").to_pylist()]


@pytest.mark.parametrize("async_steps", [1, 2])
def test_async_pipeline_is_n_steps_off_and_loses_nothing(tmp_path, async_steps):
    config, run_dir = _short(tmp_path, "run.steps=4", f"algorithm.async_steps={async_steps}")
    train(config, run_dir)
    rows = read_metrics(run_dir)
    assert [r["rollout_lag/max"] for r in rows] == [min(step, async_steps) for step in range(4)]
    table = pq.read_table(run_dir / "rollouts.parquet")
    per_step = config.task.prompts_per_step * config.generator.group_size
    task = make_task(config.task, config.run.seed)
    for step in range(4):
        rows_of_step = table.filter(pc.equal(table.column("step"), step))
        assert rows_of_step.num_rows == per_step
        assert set(rows_of_step.column("policy_version").to_pylist()) == {max(0, step - async_steps)}
        expected = np.repeat(task.sample(step).prompt_ids, config.generator.group_size)
        assert rows_of_step.column("prompt_id").to_pylist() == expected.tolist()
