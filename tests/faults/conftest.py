"""Fixtures of the fault-injection scenarios: one Ray session with a fault plan installed."""

from __future__ import annotations

import pytest
import ray
from harness import FaultPlan
from ray_helpers import start_local_ray


@pytest.fixture(scope="session")
def fault_plan(tmp_path_factory) -> FaultPlan:
    plan = FaultPlan(tmp_path_factory.mktemp("faults"))
    plan.install()
    return plan


@pytest.fixture(scope="module")
def ray_with_faults(fault_plan, tiny_model_cache):
    start_local_ray(num_cpus=2)
    yield fault_plan
    fault_plan.arm()
    ray.shutdown()
