"""Dynamic sampling (DAPO, Yu et al. 2025, sec. 3.2): drop groups without signal, keep the batch at P groups.

With ``algorithm.filter_groups: zero_advantage`` a group in which every reward channel is
constant (all right, all wrong, ...) is dropped before the learner: its group-scope advantages
are all zero, so it only dilutes the batch. ``task.oversample`` keeps P = task.prompts_per_step
groups for the learner: a factor f generates ceil(f * P) groups per step and trains on the
first P that survive; ``until_full`` generates P, then further rounds of P fresh prompts
(``Task.sample_extra``) with the current adapter until P survive or ``task.max_extra_rounds``
is spent (then it trains on fewer). Every generated group is scored and logged; the
``dropped`` column of rollouts.parquet says which were not trained on and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from mixgrpo.batch import PromptBatch, RolloutView
from mixgrpo.config import Config
from mixgrpo.orchestrator.rollouts import RolloutPipeline, concat_groups, constant_groups
from mixgrpo.orchestrator.scoring import StepScores

Scorer = Callable[[PromptBatch, RolloutView], StepScores]
"""Scores every channel of a batch (the step loop's score_all_channels with its workers)."""

ZERO_ADVANTAGE, SURPLUS = "zero_advantage", "surplus"
"""Values of the ``dropped`` column ("" = trained on)."""

_ROUND_SEED_STRIDE = 100_003
"""Extra round r samples with seed run.seed + r * stride, so it never repeats round 0's draws."""


@dataclass(frozen=True)
class Selection:
    """Every group generated for a step (all rounds, in order) and which of them the learner gets."""

    prompts: PromptBatch
    rollouts: RolloutView
    scores: StepScores
    dropped: np.ndarray
    """(P_total,) str per group: "" trained on, "zero_advantage" or "surplus" (beyond P)."""
    extra_rounds: int

    @property
    def trained_rows(self) -> np.ndarray:
        """Rows of ``rollouts`` the learner trains on."""
        return np.flatnonzero(self.dropped[self.rollouts.prompt_index] == "")

    def metrics(self) -> dict[str, float]:
        """filter/dropped_groups (no signal), filter/surplus_groups, filter/trained_groups, filter/extra_rounds."""
        return {"filter/dropped_groups": float((self.dropped == ZERO_ADVANTAGE).sum()),
                "filter/surplus_groups": float((self.dropped == SURPLUS).sum()),
                "filter/trained_groups": float((self.dropped == "").sum()),
                "filter/extra_rounds": float(self.extra_rounds)}


def select_groups(config: Config, step: int, prompts: PromptBatch, rollouts: RolloutView, scores: StepScores,
                  pipeline: RolloutPipeline, score: Scorer) -> Selection:
    """Apply ``algorithm.filter_groups`` and ``task.oversample`` to a step's scored groups."""
    if config.algorithm.filter_groups == "none":
        return Selection(prompts, rollouts, scores, np.full(len(prompts), "", dtype=object), 0)
    target, m = config.task.prompts_per_step, config.generator.group_size
    rounds = [(prompts, rollouts, scores)]
    extra = 0

    def survivors() -> int:
        return sum(int((~constant_groups(s.rewards.reshape(len(p), m, -1))).sum()) for p, _, s in rounds)

    while config.task.oversample == "until_full" and extra < config.task.max_extra_rounds and survivors() < target:
        extra += 1
        more = pipeline.task.sample_extra(step, extra, target)
        more_rollouts = pipeline.generate(more, step, seed=config.run.seed + extra * _ROUND_SEED_STRIDE)
        rounds.append((more, more_rollouts, score(more, more_rollouts)))
    prompts, rollouts = concat_groups([(p, r) for p, r, _ in rounds])
    scores = merge_scores([s for _, _, s in rounds])
    constant = constant_groups(scores.rewards.reshape(len(prompts), m, -1))
    dropped = np.where(constant, ZERO_ADVANTAGE, "").astype(object)
    survivors_in_order = np.flatnonzero(~constant)
    dropped[survivors_in_order[target:]] = SURPLUS
    return Selection(prompts, rollouts, scores, dropped, extra)


def merge_scores(parts: list[StepScores]) -> StepScores:
    """Scores of consecutive batches as one: rewards stacked, failure counters and seconds summed."""
    if len(parts) == 1:
        return parts[0]
    counters: dict[str, dict[str, int]] = {head: {} for part in parts for head in part.counters}
    seconds: dict[str, float] = {}
    for part in parts:
        for head, kinds in part.counters.items():
            for kind, count in kinds.items():
                counters[head][kind] = counters[head].get(kind, 0) + count
        for channel, spent in part.seconds.items():
            seconds[channel] = seconds.get(channel, 0.0) + spent
    return StepScores(np.concatenate([p.rewards for p in parts]), counters, seconds)
