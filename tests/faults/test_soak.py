"""Load: 200 short steps with a flaky channel; actor memory and the object store stay flat, every failure counted."""

from __future__ import annotations

import re

import numpy as np
import pytest
import ray
from ray._private.internal_api import memory_summary

from mixgrpo.config import load_config
from mixgrpo.orchestrator.driver import train
from mixgrpo.rundir import read_metrics

pytestmark = pytest.mark.faults

STEPS = 200
FLAKY = ("rewards=[{name: correct, kind: numeric_match}, {name: flaky, kind: python, timeout_s: 0.5,"
         " options: {callable: 'hostile_rewards:flaky', batched: true}}]")


class MemoryProbe:
    """StepObserver sampling every actor's resident memory and the object store every 10 steps."""

    def __init__(self) -> None:
        self.samples: list[tuple[int, dict[str, float], float]] = []

    def __call__(self, step, metrics, actors, loop) -> None:
        if step % 10:
            return
        lanes = {f"generator-{i}": g for i, g in enumerate(actors.generators)}
        lanes.update({f"reward-{i}": w for i, w in enumerate(actors.rewards)})
        lanes.update({f"learner-{i}": a for i, a in enumerate(actors.learner.actors)})
        memory = dict(zip(lanes, ray.get([a.resident_memory_mb.remote() for a in lanes.values()])))
        self.samples.append((step, memory, _object_store_mib()))


def _object_store_mib() -> float:
    summary = memory_summary(address=ray.get_runtime_context().gcs_address, stats_only=True)
    found = re.search(r"Plasma memory usage (\d+) MiB", summary)
    return float(found.group(1)) if found else 0.0


def test_soak_memory_flat_and_failures_counted(ray_with_faults, tmp_path, capsys):
    ray_with_faults.arm()
    config = load_config(None, [
        f"run.steps={STEPS}", "run.checkpoint_every=100", "task.prompts_per_step=2", "generator.group_size=4",
        "generator.max_new_tokens=4", "run.tensorboard=false", "run.progress=false", FLAKY,
        # a training soak: no held-out eval calls in between; a hang that outlives the next call restarts the
        # actor (counted stuck), and each restart spends one of max_actor_restarts, so give it room for 200 steps
        "task.eval_fraction=0", "eval.every=0", "cluster.max_actor_restarts=50",
    ])
    probe = MemoryProbe()
    train(config, tmp_path / "run", observer=probe)
    rows = read_metrics(tmp_path / "run")
    assert len(rows) == STEPS
    errors = sum(r.get("failures/flaky/errors", 0) for r in rows)
    timeouts = sum(r.get("failures/flaky/timeouts", 0) for r in rows)
    stuck = sum(r.get("failures/flaky/stuck", 0) for r in rows)
    assert 5 <= errors <= 40 and 1 <= timeouts <= 12 and stuck <= timeouts, (errors, timeouts, stuck)
    assert not any(r.get("failures/flaky/disabled") for r in rows)
    assert sum(r["null_rate/flaky"] == 1.0 for r in rows) == errors + timeouts + stuck  # each failure nulls its step
    assert all(np.isfinite(r["learner/loss"]) for r in rows)
    half = [s for s in probe.samples if s[0] >= STEPS // 2]
    report = []
    for lane in half[0][1]:
        start, end = probe.samples[0][1][lane], half[-1][1][lane]
        growth = max(s[1][lane] for s in half) - half[0][1][lane]
        report.append(f"{lane}: {start:.0f} MiB at step 0, {end:.0f} MiB at the end, +{growth:.1f} over the last half")
        assert growth < 25.0, report[-1]
    stores = [s[2] for s in half]
    assert max(stores) - min(stores) <= 8.0, stores
    with capsys.disabled():
        print(f"\nsoak: {STEPS} steps, flaky channel errors={errors:.0f} timeouts={timeouts:.0f} stuck={stuck:.0f}; "
              f"object store {stores[0]:.0f}-{max(stores):.0f} MiB\n  " + "\n  ".join(report))
