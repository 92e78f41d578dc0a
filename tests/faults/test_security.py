"""The Ray dashboard, when asked for, listens on 127.0.0.1 only."""

from __future__ import annotations

import time

import psutil
import pytest
import ray

from mixgrpo.config import ClusterConfig
from mixgrpo.orchestrator.placement import start_ray

pytestmark = pytest.mark.faults


def test_dashboard_binds_to_loopback_only():
    if ray.is_initialized():
        ray.shutdown()
    assert start_ray(ClusterConfig(num_cpus=1, dashboard=True)) is True
    try:
        url = ray._private.worker.global_worker.node.address_info["webui_url"]
        host, port = url.rsplit(":", 1)
        assert host.endswith("127.0.0.1")
        deadline, listeners = time.monotonic() + 60, []
        while time.monotonic() < deadline and not listeners:
            listeners = [c for c in psutil.net_connections(kind="tcp")
                         if c.status == psutil.CONN_LISTEN and c.laddr.port == int(port)]
            time.sleep(0.5)
        assert listeners, f"nothing listens on the dashboard port {port}"
        assert {c.laddr.ip for c in listeners} == {"127.0.0.1"}
    finally:
        ray.shutdown()
