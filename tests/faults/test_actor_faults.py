"""Crashed actors mid-step: reward workers, generators and learner ranks are killed for real (SIGKILL)."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from harness import corrupt, kill

from mixgrpo.config import load_config
from mixgrpo.orchestrator.driver import train
from mixgrpo.rundir import read_metrics
from mixgrpo.tasks import make_task

pytestmark = pytest.mark.faults

# No held-out eval: its generate and score calls would shift the call counts the failpoints are armed at.
SMALL = ["task.prompts_per_step=4", "generator.group_size=4", "run.tensorboard=false", "run.progress=false",
         "task.eval_fraction=0", "eval.every=0"]


@pytest.fixture(scope="module", autouse=True)
def plan(ray_with_faults):
    return ray_with_faults


def _run(tmp_path, *overrides):
    config = load_config(None, [*SMALL, *overrides])
    train(config, tmp_path / "run")
    return config, read_metrics(tmp_path / "run"), pq.read_table(tmp_path / "run" / "rollouts.parquet")


def test_killed_reward_actor_is_null_for_that_step_and_scores_again_next_step(plan, tmp_path):
    plan.arm(kill("reward-format", at="score", step=1))
    # an actor of its own: killed, it nulls only its channel (test_shared_reward_actors: a shared actor's crash)
    config, rows, _ = _run(tmp_path, "run.steps=4", "rewards.format.actor=own")
    assert plan.fired() == 1
    assert [r["null_rate/format"] for r in rows] == [0.0, 1.0, 0.0, 0.0]
    assert rows[1]["failures/format/actor_errors"] == 1
    assert all(r["null_rate/correct"] == 0.0 for r in rows)
    assert all(np.isfinite(r["learner/loss"]) for r in rows)


def test_killed_generator_regenerates_its_shard_with_the_current_adapter(plan, tmp_path):
    plan.arm(kill("generator-0", at="generate", step=2))
    config, rows, table = _run(tmp_path, "run.steps=4")
    assert plan.fired() == 1
    assert rows[2]["restarts/generator"] >= 1
    task = make_task(config.task, config.run.seed)
    m = config.generator.group_size
    for step in range(4):
        of_step = table.filter(pc.equal(table.column("step"), step))
        assert of_step.num_rows == config.task.prompts_per_step * m  # nothing lost, nothing doubled
        assert of_step.column("prompt_id").to_pylist() == np.repeat(task.sample(step).prompt_ids, m).tolist()
        assert set(of_step.column("policy_version").to_pylist()) == {step}  # never an older adapter


def test_killed_learner_rank_restarts_the_group_from_the_last_checkpoint(plan, tmp_path):
    plan.arm(kill("learner-1", at="train_step", step=3))
    config, rows, table = _run(tmp_path, "run.steps=5", "run.checkpoint_every=2", "learner.ranks=2",
                               "learner.collective_timeout_s=60")
    assert plan.fired() == 1
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[-1]["restarts/learner"] == 1
    assert rows[2]["restarts/learner"] == 1  # step 2 ran again after the restart from checkpoint step-2
    assert [r["policy_version"] for r in rows] == [1, 2, 3, 4, 5]
    assert table.num_rows == 5 * config.task.prompts_per_step * config.generator.group_size


def test_non_finite_update_is_skipped_and_counted(plan, tmp_path):
    plan.arm(corrupt("learner-0", at="loss", step=1))
    config, rows, _ = _run(tmp_path, "run.steps=3")
    assert [r["learner/step_skipped"] for r in rows] == [0.0, 1.0, 0.0]
    assert [r["policy_version"] for r in rows] == [1, 1, 2]  # the skipped step changed nothing
    assert all(np.isfinite(r["learner/loss"]) for r in (rows[0], rows[2]))


def test_consecutive_non_finite_updates_stop_the_run_with_the_channel_statistics(plan, tmp_path):
    plan.arm(*(corrupt("learner-0", at="loss", step=s) for s in (0, 1)))
    with pytest.raises(RuntimeError, match=r"step 1: 2 consecutive updates were not finite.*correct: null 0%"):
        _run(tmp_path, "run.steps=4", "learner.max_skipped_in_row=2")


def test_every_channel_null_fails_after_the_configured_number_of_steps(plan, tmp_path):
    plan.arm()
    nulls = ("rewards=[{name: broken, kind: python, options: {callable: 'hostile_rewards:always_raises'}},"
             " {name: partial_none, kind: python, options: {callable: 'hostile_rewards:always_none'}}]")
    with pytest.raises(RuntimeError, match=r"step 1: every reward channel was null for 2 consecutive steps"):
        _run(tmp_path, "run.steps=4", "run.max_all_null_steps=2", nulls)
    rows = read_metrics(tmp_path / "run")
    assert rows[0]["learner/all_null_step"] == 1.0 and rows[0]["policy_version"] == 0


def test_user_callable_runs_only_inside_its_reward_actor(plan, tmp_path):
    import os

    plan.arm()
    marker = tmp_path / "pids"
    channel = (f"rewards=[{{name: correct, kind: numeric_match}}, {{name: pid, kind: python, "
               f"options: {{callable: 'hostile_rewards:record_pid', kwargs: {{path: '{marker}'}}}}}}]")
    _run(tmp_path, "run.steps=1", channel)
    pids = set(marker.read_text().split())
    assert len(pids) == 1 and str(os.getpid()) not in pids
