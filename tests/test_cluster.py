"""A real two-node Ray cluster on this machine (ray.cluster_utils.Cluster), two declared GPUs per node.

What Ray guarantees, and so what is tested: a placement group places bundles
with GPUs first; SPREAD puts each next bundle on a node the group does not use
yet while one fits (best effort, STRICT_SPREAD would be the hard rule), so the
generator and the learner rank land on different nodes; PACK fills one node
first, so their bundles share a node. Each GPU actor gets its own GPU id of its node.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
import ray
from launch_fakes import free_port
from ray.cluster_utils import Cluster
from ray.util import placement_group_table

from mixgrpo.config import load_config
from mixgrpo.orchestrator.driver import train
from mixgrpo.orchestrator.placement import plan_slots, reserved
from mixgrpo.rundir import read_metrics

SHORT = ["run.steps=2", "task.prompts_per_step=4", "run.tensorboard=false", "run.progress=false", "cluster.gpus=2"]


@pytest.fixture(scope="module")
def two_nodes(tiny_model_cache):
    """A CPU-less head (the driver's) and two worker nodes with 2 CPUs and 2 fake GPUs each."""
    if ray.is_initialized():
        ray.shutdown()
    # Its own Ray temp dir: the cluster's address file must not lead other ray.init() calls on this machine here.
    temp_dir = tempfile.mkdtemp(prefix="mgc-", dir="/tmp")
    previous = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = temp_dir
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "num_gpus": 0,
                                                            "dashboard_agent_listen_port": free_port()})
    workers = [cluster.add_node(num_cpus=2, num_gpus=2) for _ in range(2)]
    try:
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        yield {w.node_id for w in workers}
    finally:
        ray.shutdown()
        cluster.shutdown()
        if previous is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = previous
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_spread_puts_generator_and_learner_on_different_nodes_and_the_job_runs(two_nodes, tmp_path):
    config = load_config(None, [*SHORT, "cluster.strategy=spread"])
    seen = {}

    def watch(step, metrics, actors, loop):
        if not seen:
            seen.update(actors.placements())

    outputs = train(config, tmp_path / "run", observer=watch)
    (generator,), (learner,) = seen["generator"], seen["learner"]
    assert {generator["node_id"], learner["node_id"]} == two_nodes  # one on each GPU node
    assert len(generator["gpu_ids"]) == 1 and len(learner["gpu_ids"]) == 1
    assert {generator["gpu_ids"][0], learner["gpu_ids"][0]} <= {"0", "1"}
    assert all(r["node_id"] in two_nodes and r["gpu_ids"] == [] for r in seen["reward"])
    assert [r["step"] for r in read_metrics(outputs.run_dir)] == [0, 1]
    assert (outputs.adapter / "adapter_config.json").is_file()


def test_pack_puts_generator_and_learner_bundles_on_one_node(two_nodes):
    config = load_config(None, [*SHORT, "cluster.strategy=pack"])
    slots = plan_slots(config, total_cpus=ray.cluster_resources()["CPU"])
    with reserved(slots, config.cluster.strategy) as group:
        nodes = placement_group_table(group)["bundles_to_node_id"]
    by_role = {slot.role: nodes[index] for index, slot in enumerate(slots) if slot.gpus}
    assert by_role["generator"] == by_role["learner"] and by_role["generator"] in two_nodes
