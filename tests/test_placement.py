"""Placement on a local Ray with declared (fake) GPUs: each GPU actor gets its own GPU id."""

from __future__ import annotations

import pytest
import ray
from ray_helpers import start_local_ray

from mixgrpo.config import load_config
from mixgrpo.orchestrator.driver import create_actors
from mixgrpo.orchestrator.placement import plan_slots, reserved

GPU_REWARDS = (
    "rewards=[{name: correct, kind: numeric_match, device: gpu},"
    " {name: format, kind: regex, options: {pattern: '\\d+'}},"
    " {name: judge, kind: exact_match, device: gpu}]"
)


@pytest.fixture(scope="module", autouse=True)
def ray_with_fake_gpus(tiny_model_cache):
    start_local_ray(num_cpus=2, num_gpus=6)
    yield
    ray.shutdown()


def test_every_gpu_actor_gets_a_distinct_gpu():
    config = load_config(None, [GPU_REWARDS, "cluster.gpus=6", "generator.replicas=2", "learner.ranks=2"])
    slots = plan_slots(config, total_cpus=2)
    assert [s.gpus for s in slots] == [1, 1, 1, 0, 1, 1, 1]
    with reserved(slots, config.cluster.strategy) as group:
        actors = create_actors(config, group, slots)
        placed = actors.placements()
        actors.learner.shutdown()
    gpu_ids = {role: [tuple(p["gpu_ids"]) for p in places] for role, places in placed.items()}
    assert [len(ids) for ids in gpu_ids["generator"]] == [1, 1]
    assert [len(ids) for ids in gpu_ids["reward"]] == [1, 0, 1]
    assert [len(ids) for ids in gpu_ids["learner"]] == [1, 1]
    every = [i for ids in gpu_ids.values() for one in ids for i in one]
    assert len(every) == 6 and len(set(every)) == 6


def test_cpu_only_run_gets_cpu_fractions():
    config = load_config(None, [])
    slots = plan_slots(config, total_cpus=2)
    assert all(s.gpus == 0 for s in slots)
    assert sum(s.cpus for s in slots) <= 2.0
    assert [s.role for s in slots] == ["generator", "reward", "learner"]  # the four rule channels share one actor


def test_too_few_gpus_is_an_error_before_any_actor():
    config = load_config(None, [GPU_REWARDS, "cluster.gpus=3", "learner.ranks=2"])
    with pytest.raises(ValueError, match="needs 5 GPUs"):
        plan_slots(config, total_cpus=2)
