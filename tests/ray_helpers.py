"""Shared helpers for the tests that start Ray (imported by test modules, not a test file)."""

from __future__ import annotations

import os
from pathlib import Path

import ray

TESTS_DIR = Path(__file__).parent


def start_local_ray(num_cpus: int = 2, num_gpus: int = 0) -> None:
    """A fresh local Ray whose workers can import the modules in tests/ (user reward callables)."""
    if ray.is_initialized():
        ray.shutdown()
    path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = f"{TESTS_DIR}{os.pathsep}{path}" if path else str(TESTS_DIR)
    ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, log_to_driver=False)
