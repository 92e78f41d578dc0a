"""A channel that hangs on every call for 50 steps (issue 15.4): its actor's Python threads and memory stay flat
(a timed-out call never overlaps the next one; a call still stuck at the next step gets the actor restarted
through Ray), and every step gets that channel's nulls within its timeout."""

from __future__ import annotations

import statistics

import pytest
import ray
from failing_rewards import process_probe

from mixgrpo.config import load_config
from mixgrpo.orchestrator.driver import train
from mixgrpo.orchestrator.scoring import DRIVER_GRACE_S
from mixgrpo.rundir import read_metrics

pytestmark = pytest.mark.faults

STEPS = 50
TIMEOUT_S = 0.3
HUNG = ("rewards=[{name: correct, kind: numeric_match}, {name: hung, kind: python, timeout_s: 0.3,"
        " options: {callable: 'failing_rewards:hangs_forever', batched: true}}]")


class ProcessProbe:
    """StepObserver: the hung channel's actor's Python thread count and resident memory after every step."""

    def __init__(self) -> None:
        self.samples: list[tuple[int, float]] = []

    def __call__(self, step, metrics, actors, loop) -> None:
        self.samples.append(ray.get(actors.rewards[1].__ray_call__.remote(process_probe)))


def test_channel_hanging_on_every_call_keeps_its_actor_flat_and_every_step_gets_its_nulls(ray_with_faults, tmp_path):
    ray_with_faults.arm()
    config = load_config(None, [
        f"run.steps={STEPS}", "run.checkpoint_every=100", "task.prompts_per_step=2", "generator.group_size=4",
        "generator.max_new_tokens=4", "run.tensorboard=false", "run.progress=false", HUNG,
        "task.eval_fraction=0", "eval.every=0",  # no eval: every call of the channel is a training step's
        f"cluster.max_actor_restarts={STEPS}",  # a restart every other step; the default budget: test_dead_channel
    ])
    probe = ProcessProbe()
    train(config, tmp_path / "run", observer=probe)
    rows = read_metrics(tmp_path / "run")
    assert len(rows) == STEPS
    reasons = [(r.get("failures/hung/timeouts", 0), r.get("failures/hung/stuck", 0)) for r in rows]
    assert all(r["null_rate/hung"] == 1.0 and r["null_rate/correct"] == 0.0 for r in rows)
    assert reasons == [(1, 0), (0, 1)] * (STEPS // 2)  # timed out; still stuck at the next call -> restarted
    on_timeout = [r["time/reward"] for r in rows[::2]]
    assert statistics.median(on_timeout) < TIMEOUT_S + DRIVER_GRACE_S, on_timeout
    threads = [t for t, _ in probe.samples]
    memory = [m for _, m in probe.samples[STEPS // 2:]]
    assert max(threads[-10:]) <= max(threads[:10]), threads  # never a pile of abandoned calls
    assert max(memory) - min(memory) < 25.0, memory
