"""Rollout generation across the generator actors, synchronous or one step off-policy.

``collect(step)`` returns the prompts and rollouts of ``step``, launching the
generation if it is not already under way. With ``async_steps = 1`` the driver
calls ``launch(step + 1)`` before the learner trains on ``step``, so rollout and
learning overlap; each generator actor runs its calls in order, so an adapter
broadcast queued behind that generation is applied right after it, and the
rollouts of step t+1 come from the adapter one version behind the learner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import ray

from mixgrpo.batch import PromptBatch, RolloutBatch
from mixgrpo.tasks import Task


@dataclass(frozen=True)
class _Launched:
    prompts: PromptBatch
    offsets: list[int]
    refs: list[Any]


class RolloutPipeline:
    """Shards each step's prompts over the generators and keeps at most one step in flight ahead."""

    def __init__(self, generators: list[Any], task: Task, async_steps: int) -> None:
        self.generators = generators
        self.task = task
        self.async_steps = async_steps
        self._launched: dict[int, _Launched] = {}
        self._broadcasts: list[Any] = []

    def launch(self, step: int) -> None:
        """Start generating ``step`` (no-op when already launched)."""
        if step in self._launched:
            return
        prompts = self.task.sample(step)
        shards = [s for s in np.array_split(np.arange(len(prompts)), len(self.generators)) if len(s)]
        refs = [g.generate.remote(prompts.take(rows), step) for g, rows in zip(self.generators, shards)]
        self._launched[step] = _Launched(prompts, [int(rows[0]) for rows in shards], refs)

    def collect(self, step: int) -> tuple[PromptBatch, RolloutBatch]:
        """The prompts and (group-major) rollouts of ``step``; waits for pending broadcasts too."""
        self.launch(step)
        launched = self._launched.pop(step)
        parts = ray.get(launched.refs)
        self.wait_for_broadcast()
        return launched.prompts, RolloutBatch.concat(parts, launched.offsets)

    def broadcast(self, adapter: dict[str, Any], version: int) -> None:
        """Send the adapter (one object-store copy) to every generator as ``version``.

        Synchronous mode waits until every generator serves it; async mode leaves the
        loads queued behind the generation in flight and checks them at the next collect.
        """
        reference = ray.put(adapter)
        self._broadcasts = [g.load_adapter.remote(reference, version) for g in self.generators]
        if self.async_steps == 0:
            self.wait_for_broadcast()

    def wait_for_broadcast(self) -> None:
        """Block until the last broadcast is applied everywhere (raises if a generator refused it)."""
        if self._broadcasts:
            ray.get(self._broadcasts)
            self._broadcasts = []


def drop_stale_groups(
    prompts: PromptBatch, rollouts: RolloutBatch, learner_version: int, max_lag: int
) -> tuple[PromptBatch, RolloutBatch, int]:
    """Keep the groups whose rollouts are at most ``max_lag`` versions behind the learner.

    Returns the kept prompts, their rollouts (prompt_index renumbered) and the number of dropped groups.
    """
    lag = learner_version - rollouts.policy_version
    stale_groups = np.unique(rollouts.prompt_index[lag > max_lag])
    if stale_groups.size == 0:
        return prompts, rollouts, 0
    keep_groups = np.setdiff1d(np.arange(len(prompts)), stale_groups)
    rows = np.flatnonzero(np.isin(rollouts.prompt_index, keep_groups))
    kept = rollouts.take(rows)
    renumbered = np.searchsorted(keep_groups, kept.prompt_index)
    kept = RolloutBatch(**{**kept.__dict__, "prompt_index": renumbered})
    return prompts.take(keep_groups), kept, int(stale_groups.size)
