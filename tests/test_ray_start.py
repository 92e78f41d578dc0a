"""The Ray that mixgrpo starts itself: its actor processes are not deprioritised behind the rest of the machine."""

from __future__ import annotations

import os

import ray

from mixgrpo.config import ClusterConfig
from mixgrpo.orchestrator.placement import start_ray


@ray.remote(num_cpus=0)
class _Niceness:
    def value(self) -> int:
        return os.nice(0)


def test_actors_of_a_ray_started_here_run_at_the_configured_niceness():
    if ray.is_initialized():
        ray.shutdown()
    assert start_ray(ClusterConfig(num_cpus=1, worker_niceness=3)) is True
    try:
        assert ray.get(_Niceness.remote().value.remote()) == 3
        assert ClusterConfig().worker_niceness == 0  # Ray's own default would be 15
    finally:
        ray.shutdown()
