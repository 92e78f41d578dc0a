"""One GRPO step against live actors: rollouts -> rewards -> mixer -> learner -> broadcast -> record."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from mixgrpo.batch import RolloutBatch, TrainBatch, rollout_table
from mixgrpo.config import Config
from mixgrpo.orchestrator.metrics import RunRecorder, StageTimer
from mixgrpo.orchestrator.rollouts import RolloutPipeline, drop_stale_groups
from mixgrpo.orchestrator.scoring import StepScores, score_all_channels
from mixgrpo.rewards.mixer import MixResult, compute_advantages


class StepLoop:
    """Runs the steps of a run; ``learner_version`` is the adapter version the learner holds."""

    def __init__(self, config: Config, pipeline: RolloutPipeline, reward_workers: list[Any],
                 learner: Any, recorder: RunRecorder, learner_version: int) -> None:
        self.config, self.pipeline, self.reward_workers = config, pipeline, reward_workers
        self.learner, self.recorder = learner, recorder
        self.learner_version = learner_version
        self.learner_restarts = 0
        self.all_null_in_row = 0
        self.skipped_in_row = 0
        self.last_driver_spans: list[tuple[str, float, float]] = []
        """The driver's (stage, start, end) spans of the last step (for mixgrpo bench)."""
        self.weights = np.asarray(config.channel_weights, dtype=np.float64)
        self.thresholds = np.array(
            [c.weak_threshold if c.weak_threshold is not None else -np.inf for c in config.rewards
             for _ in c.head_names]  # one per mixer head: sub-channels share their channel's threshold
        )

    def run_step(self, step: int) -> dict[str, float]:
        """One GRPO step (rollouts of ``step``; in async mode also launches ``step + 1``)."""
        timer = StageTimer()
        mark = time.monotonic()
        prompts, rollouts = self.pipeline.collect(step)
        max_lag = self.config.algorithm.async_steps
        prompts, rollouts, dropped = drop_stale_groups(prompts, rollouts, self.learner_version, max_lag)
        if max_lag and step + 1 < self.config.run.steps:
            self.pipeline.launch(step + 1)
        if len(rollouts) == 0:
            raise RuntimeError(f"step {step}: every rollout group was older than async_steps={max_lag}")
        mark = timer.add("generate", mark)
        scores = score_all_channels(self.reward_workers, self.config.rewards, prompts, rollouts)
        mark = timer.add("reward", mark)
        mix = self._mix(scores, len(prompts))
        advantages = mix.advantages.reshape(-1)
        mark = timer.add("mixer", mark)
        lag = self.learner_version - rollouts.policy_version
        learner_metrics = self._learn(step, scores, rollouts, advantages, timer, mark)
        metrics = self._metrics(scores, advantages, rollouts, learner_metrics)
        metrics.update({"rollout_lag/max": float(lag.max()), "rollout_lag/dropped_groups": float(dropped),
                        "restarts/generator": float(self.pipeline.restarts),
                        "restarts/learner": float(self.learner_restarts)})
        metrics.update(timer.metrics())
        self.last_driver_spans = timer.spans
        diagnostics = mix.diagnostics
        self.recorder.record(step, metrics, rollout_table(
            step, prompts, rollouts, scores.rewards, self.config.channel_names, advantages,
            diagnostics.weak_heads.reshape(len(rollouts), -1), diagnostics.review_reason.reshape(-1),
        ))
        return metrics

    def _learn(self, step: int, scores: StepScores, rollouts: RolloutBatch, advantages: np.ndarray,
               timer: StageTimer, mark: float) -> dict[str, float]:
        """Train and broadcast, unless every channel was null; enforce the consecutive-failure limits."""
        if np.isnan(scores.rewards).all():
            self.all_null_in_row += 1
            if self.all_null_in_row >= self.config.run.max_all_null_steps:
                raise RuntimeError(f"step {step}: every reward channel was null for {self.all_null_in_row} "
                                   f"consecutive steps ({_channel_summary(self.config, scores)})")
            return {"all_null_step": 1.0}
        self.all_null_in_row = 0
        result = self.learner.train_step(TrainBatch(
            rollouts.prompt_token_ids, rollouts.completion_token_ids, rollouts.behaviour_logprobs,
            advantages.astype(np.float32),
        ))
        mark = timer.add("learn", mark)
        if result.metrics.get("step_skipped"):
            self.skipped_in_row += 1
            if self.skipped_in_row >= self.config.learner.max_skipped_in_row:
                raise RuntimeError(f"step {step}: {self.skipped_in_row} consecutive updates were not finite and "
                                   f"skipped ({_channel_summary(self.config, scores)})")
            return result.metrics  # the adapter did not change: nothing to broadcast
        self.skipped_in_row = 0
        self.learner_version = result.version
        self.pipeline.broadcast(result.adapter, result.version)
        timer.add("broadcast", mark)
        return result.metrics

    def _mix(self, scores: StepScores, num_prompts: int) -> MixResult:
        algorithm = self.config.algorithm
        rewards = scores.rewards.reshape(num_prompts, self.config.generator.group_size, -1)
        return compute_advantages(
            rewards, self.weights, mode=algorithm.mode, scope=algorithm.scope,
            std_normalize=algorithm.std_normalize, clip=algorithm.clip, post_normalize=algorithm.post_normalize,
            gate_threshold=algorithm.gate_threshold, head_names=self.config.channel_names,
            weak_thresholds=self.thresholds,
        )

    def _metrics(self, scores: StepScores, advantages: np.ndarray, rollouts: RolloutBatch,
                 learner_metrics: dict[str, float]) -> dict[str, float]:
        metrics: dict[str, float] = {"policy_version": float(self.learner_version)}
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


def _channel_summary(config: Config, scores: StepScores) -> str:
    """Per channel: null rate and failure counters of a step, for error messages."""
    parts = []
    for index, name in enumerate(config.channel_names):
        column = scores.rewards[:, index]
        counters = ", ".join(f"{k}={v}" for k, v in scores.counters.get(name, {}).items())
        parts.append(f"{name}: null {np.isnan(column).mean():.0%}" + (f" [{counters}]" if counters else ""))
    return "; ".join(parts)
