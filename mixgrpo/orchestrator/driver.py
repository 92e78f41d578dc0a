"""The driver: checks the run, places the actors, and runs the step loop.

One step (see DESIGN.md, "One step, as data"): sample P prompts -> generators
(sharded) -> ``ray.put`` once -> every reward channel at once -> mixer ->
learner group -> adapter broadcast -> metrics, rollouts, checkpoint.
"""

from __future__ import annotations

import datetime
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray

from mixgrpo.actors.generator import Generator
from mixgrpo.actors.models import check_model_path
from mixgrpo.actors.reward import RewardWorker
from mixgrpo.batch import PromptBatch, RolloutBatch, TrainBatch, rollout_table
from mixgrpo.config import Config, dump_config
from mixgrpo.orchestrator.checkpoint import load_latest_checkpoint, save_checkpoint
from mixgrpo.orchestrator.learner_group import LearnerGroup
from mixgrpo.orchestrator.metrics import METRICS, ROLLOUTS, RunRecorder, StageTimer, plot_rewards, summary_table
from mixgrpo.orchestrator.placement import Slot, actor_options, plan_slots, remote_class, reserved, start_ray
from mixgrpo.orchestrator.scoring import score_all_channels
from mixgrpo.rewards.channels import build_channel
from mixgrpo.rewards.mixer import compute_advantages
from mixgrpo.tasks import Task, make_task
from mixgrpo.tasks.tiny_model import resolve_model_path

logger = logging.getLogger("mixgrpo.driver")


@dataclass(frozen=True)
class RunOutputs:
    """Where a finished run's outputs are."""

    run_dir: Path
    metrics: Path
    rollouts: Path
    tensorboard: Path
    reward_plot: Path
    adapter: Path
    summary: str


def default_run_dir() -> Path:
    """runs/<date-time> under the current directory."""
    return Path("runs") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def preflight(config: Config) -> Task:
    """Every check that needs no actor: model path, channel kinds and options, prompt source.

    Raises ValueError / FileNotFoundError with a one-line message before Ray starts.
    """
    check_model_path(config.model.path)
    for channel in config.rewards:
        try:
            build_channel(channel.kind, channel.options)
        except ValueError as error:
            raise ValueError(f"rewards.{channel.name}: {error}") from None
    return make_task(config.task, config.run.seed)


@dataclass
class Actors:
    """Handles of the run's actors."""

    generators: list[Any]
    rewards: list[Any]
    learner: LearnerGroup

    def placements(self) -> dict[str, list[dict[str, Any]]]:
        """Node and GPU ids of every actor, by role."""
        return {
            "generator": ray.get([g.placement.remote() for g in self.generators]),
            "reward": ray.get([r.placement.remote() for r in self.rewards]),
            "learner": self.learner.placements(),
        }


def create_actors(config: Config, group: Any, slots: list[Slot]) -> Actors:
    """One actor per slot, each pinned to its placement-group bundle."""
    by_role: dict[str, list[Slot]] = {}
    for slot in slots:
        by_role.setdefault(slot.role, []).append(slot)
    remote_generator, remote_reward = remote_class(Generator), remote_class(RewardWorker)
    generators = [
        remote_generator.options(**actor_options(group, slots, slot)).remote(
            config.model, config.learner.lora, config.generator, config.run.seed
        )
        for slot in by_role["generator"]
    ]
    rewards = [
        remote_reward.options(**actor_options(group, slots, slot)).remote(config.rewards[slot.index])
        for slot in by_role["reward"]
    ]
    learner = LearnerGroup(config, [actor_options(group, slots, slot) for slot in by_role["learner"]])
    return Actors(generators, rewards, learner)


def generate(generators: list[Any], prompts: PromptBatch, step: int) -> RolloutBatch:
    """Shard the prompts over the generators and join their rollouts (group-major)."""
    shards = [s for s in np.array_split(np.arange(len(prompts)), len(generators)) if len(s)]
    parts = ray.get([g.generate.remote(prompts.take(rows), step) for g, rows in zip(generators, shards)])
    return RolloutBatch.concat(parts, [int(rows[0]) for rows in shards])


def broadcast_adapter(generators: list[Any], adapter: dict[str, Any], version: int) -> None:
    """Put the adapter in the object store once; every generator loads it as ``version``."""
    reference = ray.put(adapter)
    ray.get([g.load_adapter.remote(reference, version) for g in generators])


class StepLoop:
    """Runs steps against live actors and records them."""

    def __init__(self, config: Config, task: Task, actors: Actors, recorder: RunRecorder) -> None:
        self.config, self.task, self.actors, self.recorder = config, task, actors, recorder
        self.weights = np.asarray(config.channel_weights, dtype=np.float64)
        self.thresholds = np.array(
            [c.weak_threshold if c.weak_threshold is not None else -np.inf for c in config.rewards]
        )

    def run_step(self, step: int) -> dict[str, float]:
        """One synchronous GRPO step; returns its metrics."""
        timer = StageTimer()
        prompts = self.task.sample(step)
        mark = time.monotonic()
        rollouts = generate(self.actors.generators, prompts, step)
        mark = timer.add("generate", mark)
        scores = score_all_channels(self.actors.rewards, self.config.rewards, prompts, rollouts)
        mark = timer.add("reward", mark)
        p, m, r = len(prompts), self.config.generator.group_size, len(self.config.rewards)
        mix = compute_advantages(
            scores.rewards.reshape(p, m, r), self.weights,
            mode=self.config.algorithm.mode, scope=self.config.algorithm.scope,
            std_normalize=self.config.algorithm.std_normalize, clip=self.config.algorithm.clip,
            post_normalize=self.config.algorithm.post_normalize, gate_threshold=self.config.algorithm.gate_threshold,
            head_names=self.config.channel_names, weak_thresholds=self.thresholds,
        )
        advantages = mix.advantages.reshape(-1)
        mark = timer.add("mixer", mark)
        result = self.actors.learner.train_step(TrainBatch(
            rollouts.prompt_token_ids, rollouts.completion_token_ids, rollouts.behaviour_logprobs,
            advantages.astype(np.float32),
        ))
        mark = timer.add("learn", mark)
        broadcast_adapter(self.actors.generators, result.adapter, result.version)
        timer.add("broadcast", mark)
        diagnostics = mix.diagnostics
        metrics = self._step_metrics(scores, advantages, rollouts, result.metrics, result.version)
        metrics.update(timer.metrics())
        table = rollout_table(
            step, prompts, rollouts, scores.rewards, self.config.channel_names, advantages,
            diagnostics.weak_heads.reshape(p * m, r), diagnostics.review_reason.reshape(-1),
        )
        self.recorder.record(step, metrics, table)
        return metrics

    def _step_metrics(self, scores: Any, advantages: np.ndarray, rollouts: RolloutBatch,
                      learner_metrics: dict[str, float], version: int) -> dict[str, float]:
        metrics: dict[str, float] = {"policy_version": float(version)}
        for index, name in enumerate(self.config.channel_names):
            column = scores.rewards[:, index]
            present = ~np.isnan(column)
            metrics[f"reward/{name}"] = float(column[present].mean()) if present.any() else float("nan")
            metrics[f"null_rate/{name}"] = float(1.0 - present.mean())
            for counter, count in scores.counters[name].items():
                metrics[f"failures/{name}/{counter}"] = float(count)
        metrics["advantage/abs_mean"] = float(np.abs(advantages).mean())
        metrics["completion_tokens/mean"] = float(rollouts.completion_lengths.mean())
        metrics.update({f"learner/{k}": v for k, v in learner_metrics.items()})
        return metrics


def _prepare_run_dir(config: Config, run_dir: Path, resume: bool) -> None:
    if resume:
        if not (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(f"--resume {run_dir}: not a run directory (config.yaml missing)")
        return
    if (run_dir / METRICS).exists():
        raise FileExistsError(f"{run_dir} already holds a run; use --resume {run_dir} or another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_config(config))


def train(config: Config, run_dir: Path | None = None, resume: bool = False) -> RunOutputs:
    """Run (or resume) a whole training job; returns where its outputs are."""
    run_dir = Path(run_dir or config.run.out_dir or default_run_dir())
    task = preflight(config)
    _prepare_run_dir(config, run_dir, resume)
    resolve_model_path(config.model.path, config.run.seed)  # build a builtin model once, before the actors
    started_ray = start_ray(config.cluster)
    try:
        slots = plan_slots(config, total_cpus=ray.cluster_resources().get("CPU", 1.0))
        with reserved(slots, config.cluster.strategy) as group:
            actors = create_actors(config, group, slots)
            try:
                return _run_steps(config, task, actors, run_dir, resume)
            finally:
                actors.learner.shutdown()
    finally:
        if started_ray:
            ray.shutdown()


def _run_steps(config: Config, task: Task, actors: Actors, run_dir: Path, resume: bool) -> RunOutputs:
    recorder = RunRecorder(run_dir, config.channel_names, config.run.steps,
                           tensorboard=config.run.tensorboard, progress=config.run.progress)
    for role, places in actors.placements().items():  # also waits until every actor is up
        logger.info("%s actors on %s", role, [(p["node_id"][:8], p["gpu_ids"]) for p in places])
    start = 0
    checkpoint = load_latest_checkpoint(run_dir) if resume else None
    if checkpoint is not None:
        version = actors.learner.load_state(checkpoint.learner_state)
        broadcast_adapter(actors.generators, checkpoint.learner_state["adapter"], version)
        start = checkpoint.next_step
        logger.info("resumed from %s at step %d", checkpoint.path, start)
    recorder.truncate_from(start)
    loop = StepLoop(config, task, actors, recorder)
    for step in range(start, config.run.steps):
        loop.run_step(step)
        done = step + 1
        if done % config.run.checkpoint_every == 0 or done == config.run.steps:
            save_checkpoint(run_dir, done, actors.learner.state())
    recorder.close()
    adapter_dir = run_dir / "adapter"
    actors.learner.save_adapter(str(adapter_dir))
    return RunOutputs(
        run_dir=run_dir,
        metrics=run_dir / METRICS,
        rollouts=run_dir / ROLLOUTS,
        tensorboard=run_dir / "tensorboard",
        reward_plot=plot_rewards(run_dir, config.channel_names),
        adapter=adapter_dir,
        summary=summary_table(run_dir, config.channel_names),
    )
