"""Held-out evaluation: the run's generators and reward channels score prompts that training never samples.

The prompts are the task's held-out split (``task.eval_fraction``) or a prompt file
(``eval.path``). Each evaluation asks ``Generator.generate`` for ``eval.n`` samples per
prompt at ``eval.temperature`` (0 = greedy) with ``eval.max_new_tokens`` and the separate
``eval.seed``, through the same rollout pipeline (shards, retries) as training, then
scores every channel. Nothing is learned, and the training RNG does not move: every
training generation seeds its own sampler from (run seed, step, prompt).

Metrics, one row per evaluation in eval.jsonl (``step`` = training steps done):
``eval/<channel>`` (mean over non-null samples), ``eval/null_rate/<channel>``, and for
channels whose values are all 0 or 1 (some 1: an all-zero channel such as a length
penalty is not taken for a pass/fail one), ``eval/<channel>/pass@<n>`` (unbiased estimator of
Chen et al. 2021, eq. 1, with k = n; a null counts as a fail).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

from mixgrpo.actors.clip_policy import ClipPolicy
from mixgrpo.actors.generator import Generator
from mixgrpo.batch import PromptBatch
from mixgrpo.config import Config, LoraConfig
from mixgrpo.errors import InputError
from mixgrpo.orchestrator.dynamic_sampling import Scorer
from mixgrpo.orchestrator.placement import remote_class, reward_actors, start_ray
from mixgrpo.orchestrator.prompt_lengths import load_task
from mixgrpo.orchestrator.rollouts import RolloutPipeline
from mixgrpo.orchestrator.scoring import score_all_channels, start_reward_hosts
from mixgrpo.orchestrator.transport import SplitsRollouts
from mixgrpo.tasks import Task
from mixgrpo.tasks.files import read_prompt_file


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c pass: 1 - C(n - c, k) / C(n, k) (Chen et al. 2021, eq. 1)."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def eval_metrics(rewards: np.ndarray, channel_names: list[str]) -> dict[str, float]:
    """eval/<channel>, eval/null_rate/<channel> and, for 0/1 channels (some 1), eval/<channel>/pass@n.

    rewards: (P, n, R) float64, NaN = null.
    """
    _, n, _ = rewards.shape
    metrics: dict[str, float] = {}
    for index, name in enumerate(channel_names):
        values = rewards[:, :, index]
        present = ~np.isnan(values)
        metrics[f"eval/{name}"] = float(values[present].mean()) if present.any() else float("nan")
        metrics[f"eval/null_rate/{name}"] = float(1.0 - present.mean())
        if np.isin(values[present], (0.0, 1.0)).all() and (values[present] == 1.0).any():
            passes = (values == 1.0).sum(axis=1)  # NaN == 1 is False: a null is a fail
            metrics[f"eval/{name}/pass@{n}"] = float(np.mean([pass_at_k(n, int(c), n) for c in passes]))
    return metrics


def eval_prompts(config: Config, task: Task) -> PromptBatch:
    """The held-out prompts: eval.path when set, else the task's split (task.eval_fraction)."""
    if config.eval.path is not None:
        return read_prompt_file(config.eval.path)
    if not len(task.held_out):
        raise InputError("no held-out prompts: set task.eval_fraction (a split of the task) or eval.path (a file)")
    return task.held_out


class Evaluator:
    """Runs the held-out evaluation of a run through its rollout pipeline and reward channels (``score``)."""

    def __init__(self, config: Config, prompts: PromptBatch, pipeline: RolloutPipeline, score: Scorer) -> None:
        self.config, self.prompts, self.pipeline, self.score = config, prompts, pipeline, score

    def due(self, steps_done: int) -> bool:
        """Evaluate after ``steps_done`` steps: before training and every eval.every steps, and at the end."""
        every = self.config.eval.every
        return steps_done == self.config.run.steps or (every > 0 and steps_done % every == 0)

    def run(self, steps_done: int) -> dict[str, float]:
        """Generate and score the held-out prompts with the adapter the generators serve now."""
        started = time.monotonic()
        settings = self.config.eval
        rollouts = self.pipeline.generate(
            self.prompts, steps_done, n=settings.n, temperature=settings.temperature,
            max_new_tokens=settings.max_new_tokens or self.config.generator.max_new_tokens, seed=settings.seed,
        )
        scores = self.score(self.prompts, rollouts)
        metrics = eval_metrics(scores.rewards.reshape(len(self.prompts), settings.n, -1), self.config.channel_names)
        metrics.update({
            "eval/policy_version": float(rollouts.policy_version.min()),
            "eval/prompts": float(len(self.prompts)),
            "eval/completion_tokens/mean": float(rollouts.completion_lengths.mean()),
            "eval/seconds": time.monotonic() - started,
        })
        return metrics


def read_adapter(directory: Path) -> tuple[LoraConfig, dict[str, torch.Tensor]]:
    """The LoRA settings (adapter_config.json) and tensors (adapter_model.safetensors) of a PEFT adapter directory."""
    from safetensors.torch import load_file

    config_path, weights_path = directory / "adapter_config.json", directory / "adapter_model.safetensors"
    if not config_path.is_file() or not weights_path.is_file():
        raise InputError(f"{directory} is not a PEFT adapter directory (adapter_config.json and "
                         "adapter_model.safetensors expected)")
    peft = json.loads(config_path.read_text())
    targets = peft.get("target_modules") or []
    lora = LoraConfig(rank=int(peft["r"]), alpha=float(peft["lora_alpha"]),
                      target_modules=sorted([targets] if isinstance(targets, str) else targets))
    return lora, load_file(str(weights_path))


def evaluate_adapter(config: Config, adapter: Path | None) -> dict[str, Any]:
    """One held-out evaluation of ``adapter`` (None: the base model) on fresh generator and reward actors.

    No learner is started (a CLIP run's one policy rank samples, it does not train). The row's
    ``step`` is run.steps, so a run's own final adapter gets the same sampling seeds as its
    end-of-run evaluation.
    """
    task = load_task(config)
    prompts = eval_prompts(config, task)
    clip = config.model.kind == "clip"
    lora, tensors = read_adapter(adapter) if adapter is not None and not clip else (config.learner.lora, None)
    started_ray = start_ray(config.cluster)
    actors: list[Any] = []
    try:
        count = (1 if clip else config.generator.replicas) + len(reward_actors(config.rewards))
        cpus = min(1.0, ray.cluster_resources().get("CPU", 1.0) / count)
        gpu = 1 if config.cluster.gpus > 0 else 0
        if clip:
            policy = remote_class(ClipPolicy, SplitsRollouts).options(num_cpus=cpus, num_gpus=gpu).remote(
                config.model, config.learner, config.algorithm.loss, config.generator, config.run.seed,
                task=config.task)
            if adapter is not None:
                ray.get(policy.load_saved.remote(str(adapter)))
            generators = [policy]
        else:
            generators = [remote_class(Generator, SplitsRollouts).options(num_cpus=cpus, num_gpus=gpu).remote(
                config.model, lora, config.generator, config.run.seed, index)
                for index in range(config.generator.replicas)]
        workers = start_reward_hosts(config.rewards, lambda spec: {
            "num_cpus": cpus, "num_gpus": gpu if config.rewards[spec.channels[0]].device == "gpu" else 0})
        actors = generators + workers
        pipeline = RolloutPipeline(generators, task)
        if tensors is not None:
            pipeline.broadcast(tensors, version=1)
            pipeline.wait_for_broadcast()
        evaluator = Evaluator(config, prompts, pipeline, lambda p, r: score_all_channels(workers, config.rewards, p, r))
        return {"step": config.run.steps, **evaluator.run(config.run.steps)}
    finally:
        for actor in actors:
            ray.kill(actor)
        if started_ray:
            ray.shutdown()
