"""A colocated rank killed for real (SIGKILL) while generating or learning is a learner failure.

The group is recreated from the last checkpoint, as for a disaggregated learner rank
(driver._recover_learner); no rollout is lost or doubled and versions stay on-policy.
"""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from harness import kill

from mixgrpo.config import load_config
from mixgrpo.orchestrator.driver import train
from mixgrpo.rundir import read_metrics

pytestmark = pytest.mark.faults

SMALL = ["task.prompts_per_step=4", "generator.group_size=4", "run.tensorboard=false", "run.progress=false",
         "cluster.placement=colocated", "run.steps=5", "run.checkpoint_every=2"]


@pytest.fixture(scope="module", autouse=True)
def plan(ray_with_faults):
    return ray_with_faults


@pytest.mark.parametrize(("fault", "ranks"), [
    (kill("generator-0", at="generate", step=3), 1),  # rank 0 dies generating step 3
    (kill("learner-1", at="train_step", step=3), 2),  # rank 1 dies in its 4th update
])
def test_killed_colocated_rank_restarts_the_group_from_the_last_checkpoint(plan, tmp_path, fault, ranks):
    plan.arm(fault)
    config = load_config(None, [*SMALL, f"learner.ranks={ranks}", "learner.collective_timeout_s=60"])
    train(config, tmp_path / "run")
    rows = read_metrics(tmp_path / "run")
    assert plan.fired() == 1
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[2]["restarts/learner"] == 1  # step 2 ran again after the restart from checkpoint step-2
    assert [r["policy_version"] for r in rows] == [1, 2, 3, 4, 5]
    table = pq.read_table(tmp_path / "run" / "rollouts.parquet", columns=["step", "policy_version"])
    assert table.num_rows == 5 * config.task.prompts_per_step * config.generator.group_size
    assert table.column("policy_version").to_pylist() == table.column("step").to_pylist()
