"""One GRPO step against live actors: rollouts -> rewards -> mixer -> learner -> broadcast -> record.

A completion whose every reward channel is null gets advantage 0 from the mixer and is left
out of the policy loss altogether (``loss_rows``: neither gradient nor a place in the
aggregation's denominator), counted as ``completion/all_null_frac``; so is a truncated
completion with ``algorithm.overlong: mask`` (``completion/truncated_frac``). A step where
every channel of every completion is null does not train at all (``run.max_all_null_steps``).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from mixgrpo.batch import PromptBatch, RolloutView, TrainOrder, rollout_table
from mixgrpo.config import Config
from mixgrpo.orchestrator.dynamic_sampling import select_groups
from mixgrpo.orchestrator.metrics import RunRecorder, StageTimer
from mixgrpo.orchestrator.rollouts import RolloutPipeline
from mixgrpo.orchestrator.scoring import ScoringRound, StepScores, score_all_channels
from mixgrpo.rewards.action_dependence import action_independent_heads
from mixgrpo.rewards.mixer import MixResult, compute_advantages

logger = logging.getLogger("mixgrpo.step")


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
        self.disabled_channels: set[str] = set()
        """Reward channels whose actor is dead (on_dead: disable): null for the rest of the run."""
        self.last_driver_spans: list[tuple[str, float, float]] = []
        """The driver's (stage, start, end) spans of the last step (for mixgrpo bench)."""
        self.warned_action_independent: set[str] = set()
        """model.kind=clip: heads already warned about for scoring every sampled label alike."""
        self._ahead: tuple[int, PromptBatch, RolloutView, ScoringRound] | None = None
        """async_steps >= 1: (step, prompts, rollouts, scoring) of the next step, collected while the ranks trained."""
        self.weights = np.asarray(config.channel_weights, dtype=np.float64)
        self.thresholds = np.array(
            [c.weak_threshold if c.weak_threshold is not None else -np.inf for c in config.rewards
             for _ in c.head_names]  # one per mixer head: sub-channels share their channel's threshold
        )

    def run_step(self, step: int) -> dict[str, float]:
        """One GRPO step (rollouts of ``step``; with async_steps N also launches steps up to ``step + N``).

        With async_steps >= 1 the rollouts of ``step + 1`` are already being generated while the ranks
        train on ``step``: the driver collects them and starts their scoring meanwhile (``_ahead``),
        so the learner waits for neither. Launching is unchanged (after the broadcast), so no rollout
        is more than async_steps versions behind.
        """
        timer = StageTimer()
        mark = time.monotonic()
        prompts, rollouts, scoring = self._collect(step)
        for ahead in range(1, self.config.algorithm.async_steps + 1):  # keep N steps of generation in flight
            if step + ahead < self.config.run.steps:
                self.pipeline.launch(step + ahead)
        mark = timer.add("generate", mark)
        scores = scoring.finish()
        mark = timer.add("reward", mark)  # what is left of scoring after the last shard
        selection = select_groups(self.config, step, prompts, rollouts, scores, self.pipeline, self.score)
        if self.config.algorithm.filter_groups != "none":
            mark = timer.add("extra_rounds", mark)  # the extra generation rounds and their scoring
        prompts, rollouts, scores = selection.prompts, selection.rollouts, selection.scores
        mix = self._mix(scores, len(prompts))
        if self.config.model.kind == "clip":
            self._warn_action_independent(scores, rollouts, len(prompts))
        advantages = mix.advantages.reshape(-1)
        mark = timer.add("mixer", mark)
        lag = self.learner_version - rollouts.policy_version
        trained = selection.trained_rows
        table = self._table(step, prompts, rollouts, scores, advantages, mix, selection.dropped)

        def while_learning() -> None:
            self.recorder.write_rollouts(step, table)
            if self.config.algorithm.async_steps and step + 1 < self.config.run.steps:
                self._ahead = (step + 1, *self._collect(step + 1))

        if len(trained):
            learner_metrics = self._learn(
                step, StepScores(scores.rewards[trained], scores.counters, scores.seconds), rollouts.take(trained),
                advantages[trained], timer, mark, while_learning=while_learning)
        else:
            while_learning()
            learner_metrics = {"no_group_left": 1.0}
        metrics = self._metrics(scores, advantages[trained], rollouts, learner_metrics)
        if self.config.algorithm.filter_groups != "none":
            metrics.update(selection.metrics())
        metrics.update({"rollout_lag/max": float(lag.max()),
                        "restarts/generator": float(self.pipeline.restarts),
                        "restarts/learner": float(self.learner_restarts)})
        metrics.update(self.pipeline.task.metrics)  # prompts/overlong_* counted when the task was loaded
        metrics.update({f"zero_variance_groups/{name}": float(rate)  # groups where the head carries no signal
                        for name, rate in zip(self.config.channel_names, mix.diagnostics.head_zero_var_group_rate)})
        metrics.update(timer.metrics())
        self.last_driver_spans = timer.spans
        self.recorder.record(step, metrics)
        return metrics

    def _table(self, step: int, prompts: PromptBatch, rollouts: RolloutView, scores: StepScores,
               advantages: np.ndarray, mix: MixResult, dropped: np.ndarray) -> pa.Table:
        """The step's rollouts as the Parquet part: rewards, advantages, mixer flags, label (CLIP), dropped."""
        diagnostics = mix.diagnostics
        table = rollout_table(
            step, prompts, rollouts, scores.rewards, self.config.channel_names, advantages,
            diagnostics.weak_heads.reshape(len(rollouts), -1), diagnostics.review_reason.reshape(-1),
        )
        if self.config.model.kind == "clip":  # the image's label beside its sampled class (completion)
            labels = [prompts.metadata[i]["label"] for i in rollouts.prompt_index]
            table = table.append_column("label", pa.array(labels, type=pa.string()))
        return table.append_column("dropped", pa.array([str(reason) for reason in dropped[rollouts.prompt_index]]))

    def _collect(self, step: int) -> tuple[PromptBatch, RolloutView, ScoringRound]:
        """The rollouts of ``step`` (collected ahead, or now), their scoring started shard by shard as they arrive."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == step:
            return ahead[1:]
        scoring = ScoringRound(self.reward_workers, self.config.rewards, self.disabled_channels)
        prompts, rollouts = self.pipeline.collect(step, on_shard=scoring.add)
        return prompts, rollouts, scoring

    def discard_ahead(self) -> None:
        """Forget rollouts generated or collected ahead (after a learner restart they are from a dropped adapter)."""
        self._ahead = None
        self.pipeline.discard_launched()

    def score(self, prompts: PromptBatch, rollouts: RolloutView) -> StepScores:
        """Every channel of a batch (training or eval), channels disabled for the run left null."""
        return score_all_channels(self.reward_workers, self.config.rewards, prompts, rollouts, self.disabled_channels)

    def _learn(self, step: int, scores: StepScores, rollouts: RolloutView, advantages: np.ndarray,
               timer: StageTimer, mark: float, while_learning: Callable[[], None]) -> dict[str, float]:
        """Train and broadcast, unless every channel was null; enforce the consecutive-failure limits.

        ``while_learning`` (writing the step's Parquet part; async: collecting the next step) runs once
        on every path that returns; when the ranks train, it runs in the driver meanwhile: the learner,
        the critical path of an async step, does not wait for it (the ``learn`` stage spans both).
        """
        if np.isnan(scores.rewards).all():
            self.all_null_in_row += 1
            if self.all_null_in_row >= self.config.run.max_all_null_steps:
                raise RuntimeError(f"step {step}: every reward channel was null for {self.all_null_in_row} "
                                   f"consecutive steps ({_channel_summary(self.config, scores)})")
            while_learning()
            return {"all_null_step": 1.0}
        self.all_null_in_row = 0
        rows = loss_rows(scores.rewards, rollouts.truncated, self.config.algorithm.overlong)
        if len(rows) == 0:
            while_learning()
            return {"loss_rows_frac": 0.0, "no_loss_rows": 1.0}  # e.g. every completion truncated, overlong=mask
        pending = self.learner.start_step(TrainOrder.from_rollouts(rollouts, advantages, rows))  # tokens by reference
        try:
            while_learning()
        finally:  # the ranks' step is waited for whatever the driver's work meanwhile did
            result = self.learner.finish_step(pending)
        result.metrics["loss_rows_frac"] = len(rows) / len(rollouts)
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

    def _warn_action_independent(self, scores: StepScores, rollouts: RolloutView, num_prompts: int) -> None:
        """Warn once per head whose rewards ignore the sampled class (all its group advantages are 0)."""
        _, actions = np.unique(np.asarray(rollouts.completion_text), return_inverse=True)  # the class names
        actions = actions.reshape(num_prompts, -1)
        flags = action_independent_heads(scores.rewards.reshape(num_prompts, actions.shape[1], -1), actions)
        for name in np.asarray(self.config.channel_names)[flags]:
            if name not in self.warned_action_independent:
                self.warned_action_independent.add(str(name))
                logger.warning("reward channel %s gives every sampled class of an image the same value: its "
                               "group advantages are all 0 and it trains nothing (a reward must depend on the "
                               "sampled label, e.g. exact_match against metadata['label'])", name)

    def _mix(self, scores: StepScores, num_prompts: int) -> MixResult:
        algorithm = self.config.algorithm
        rewards = scores.rewards.reshape(num_prompts, self.config.generator.group_size, -1)
        return compute_advantages(
            rewards, self.weights, mode=algorithm.mode, scope=algorithm.scope,
            std_normalize=algorithm.std_normalize, clip=algorithm.clip, post_normalize=algorithm.post_normalize,
            gate_threshold=algorithm.gate_threshold, head_names=self.config.channel_names,
            weak_thresholds=self.thresholds,
        )

    def _metrics(self, scores: StepScores, advantages: np.ndarray, rollouts: RolloutView,
                 learner_metrics: dict[str, float]) -> dict[str, float]:
        metrics: dict[str, float] = {"policy_version": float(self.learner_version)}
        for index, name in enumerate(self.config.channel_names):
            column = scores.rewards[:, index]
            present = ~np.isnan(column)
            metrics[f"reward/{name}"] = float(column[present].mean()) if present.any() else float("nan")
            metrics[f"null_rate/{name}"] = float(1.0 - present.mean())
            for counter, count in scores.counters[name].items():
                metrics[f"failures/{name}/{counter}"] = float(count)
        for channel, spent in scores.seconds.items():  # inside the worker: a slow channel is named here
            metrics[f"reward_seconds/{channel}"] = spent
        metrics["advantage/abs_mean"] = float(np.abs(advantages).mean())
        metrics["completion_tokens/mean"] = float(rollouts.completion_lengths.mean())
        metrics["completion/truncated_frac"] = float(rollouts.truncated.mean())
        metrics["completion/all_null_frac"] = float((~np.isfinite(scores.rewards).any(axis=1)).mean())
        metrics.update({f"learner/{k}": v for k, v in learner_metrics.items()})
        return metrics


def loss_rows(rewards: np.ndarray, truncated: np.ndarray, overlong: str) -> np.ndarray:
    """Indices of the completions the policy loss uses; rewards: (N, R), NaN = null; truncated: (N,) bool.

    Left out: a completion whose every channel is null (nothing measured it; the mixer gives it
    advantage 0) and, with overlong=mask, one cut at max_new_tokens without EOS (its rewards judge
    a cut-off text). Left out means absent from the learner's batch: no gradient from any term and
    not in the aggregation's denominator. Advantage 0 alone would keep them in the denominator and
    under the KL and entropy terms, so a channel outage or many truncations would silently shrink
    the update of the completions that were measured. They still count in their group's statistics
    (as in DAPO, where the overlong mask applies to the loss, after the advantages).
    """
    keep = np.isfinite(rewards).any(axis=1)
    if overlong == "mask":
        keep &= ~truncated
    return np.flatnonzero(keep)


def _channel_summary(config: Config, scores: StepScores) -> str:
    """Per channel: null rate and failure counters of a step, for error messages."""
    parts = []
    for index, name in enumerate(config.channel_names):
        column = scores.rewards[:, index]
        counters = ", ".join(f"{k}={v}" for k, v in scores.counters.get(name, {}).items())
        parts.append(f"{name}: null {np.isnan(column).mean():.0%}" + (f" [{counters}]" if counters else ""))
    return "; ".join(parts)
