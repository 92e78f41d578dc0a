"""Rollout generation across the generator actors, synchronous or one step off-policy.

``collect(step)`` returns the prompts and rollouts of ``step``, launching the
generation if it is not already under way. With ``async_steps = 1`` the driver
calls ``launch(step + 1)`` before the learner trains on ``step``, so rollout and
learning overlap; each generator actor runs its calls in order, so an adapter
broadcast queued behind that generation is applied right after it, and the
rollouts of step t+1 come from the adapter one version behind the learner.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray

from mixgrpo.batch import PromptBatch, RolloutBatch
from mixgrpo.orchestrator.placement import wait_until_alive
from mixgrpo.tasks import Task

logger = logging.getLogger("mixgrpo.rollouts")


MAX_SHARD_RETRIES = 3
"""Times one shard is generated again after its generator died or served an old adapter."""


class ColocatedRankLost(RuntimeError):
    """A colocated rank died while generating: a learner failure (the driver recreates the group)."""


@dataclass(frozen=True)
class _Launched:
    shards: list[PromptBatch]
    offsets: list[int]
    refs: list[Any]
    version: int
    """The adapter version published when the step was launched: no shard may come from an older one."""


class RolloutPipeline:
    """Shards each step's prompts over the generators and keeps at most one step in flight ahead.

    A generator that dies is restarted by Ray (``max_restarts``); its shard is generated again
    after the current adapter is re-sent, so no rollout is lost or duplicated and no restarted
    generator serves a version older than the one the learner published.

    ``colocated``: the generators are the learner ranks (ColocatedRank), which hold the learner's
    weights: ``broadcast`` only records the version, and a rank that dies raises ColocatedRankLost.
    """

    def __init__(self, generators: list[Any], task: Task, colocated: bool = False) -> None:
        self.generators = generators
        self.task = task
        self.colocated = colocated
        self.version = 0
        self.restarts = 0
        """Shards generated again after a generator failure (a metric)."""
        self._adapter_ref: Any = None
        self._launched: dict[int, _Launched] = {}
        self._broadcasts: list[Any] = []

    def launch(self, step: int) -> None:
        """Start generating ``step`` (no-op when already launched)."""
        if step in self._launched:
            return
        prompts = self.task.sample(step)
        rows = [s for s in np.array_split(np.arange(len(prompts)), len(self.generators)) if len(s)]
        shards = [prompts.take(r) for r in rows]
        refs = [g.generate.remote(shard, step) for g, shard in zip(self.generators, shards)]
        self._launched[step] = _Launched(shards, [int(r[0]) for r in rows], refs, self.version)

    def collect(self, step: int) -> tuple[PromptBatch, RolloutBatch]:
        """The prompts and (group-major) rollouts of ``step``; waits for pending broadcasts too."""
        self.launch(step)
        launched = self._launched.pop(step)
        parts = [self._shard(index, launched, step) for index in range(len(launched.refs))]
        self.wait_for_broadcast()
        prompts = PromptBatch(
            prompt_ids=np.concatenate([s.prompt_ids for s in launched.shards]),
            prompts=[p for s in launched.shards for p in s.prompts],
            metadata=[m for s in launched.shards for m in s.metadata],
        )
        return prompts, RolloutBatch.concat(parts, launched.offsets)

    def _shard(self, index: int, launched: _Launched, step: int) -> RolloutBatch:
        ref = launched.refs[index]
        for _ in range(MAX_SHARD_RETRIES + 1):
            try:
                part = ray.get(ref)
                if (part.policy_version >= launched.version).all():
                    return part
                reason = f"served adapter version {int(part.policy_version.min())} < {launched.version}"
            except ray.exceptions.RayActorError as error:
                reason = f"died ({str(error).splitlines()[0][:120]})"
                if self.colocated:
                    raise ColocatedRankLost(f"colocated rank {index} {reason} at step {step}") from error
            self.restarts += 1
            logger.warning("generator %d %s at step %d: generating its shard again", index, reason, step)
            generator = self.generators[index]
            wait_until_alive(generator)
            if self._adapter_ref is not None:
                generator.load_adapter.remote(self._adapter_ref, self.version, True)
            ref = generator.generate.remote(launched.shards[index], step)
        raise RuntimeError(f"generator {index} failed {MAX_SHARD_RETRIES + 1} times at step {step}")

    def discard_launched(self) -> None:
        """Forget generation launched ahead (after a learner restart it would be from a dropped adapter)."""
        self._launched.clear()

    def broadcast(self, adapter: dict[str, Any], version: int, rollback: bool = False) -> None:
        """Send the adapter (one object-store copy) to every generator as ``version``.

        Returns at once: each generator runs its calls in order, so the load is applied before
        the next generation on that actor (in async mode, right after the one in flight); the
        next ``collect`` checks that every load succeeded. ``rollback`` allows an older version
        (restoring a checkpoint). Colocated: the ranks already hold it; only the version is recorded.
        """
        if self.colocated:
            self.version = version
            return
        self._adapter_ref, self.version = ray.put(adapter), version
        self._broadcasts = [g.load_adapter.remote(self._adapter_ref, version, rollback) for g in self.generators]

    def wait_for_broadcast(self) -> None:
        """Block until the last broadcast is applied everywhere; a generator that died gets it again."""
        for index, ref in enumerate(self._broadcasts):
            try:
                ray.get(ref)
            except ray.exceptions.RayActorError:
                self.restarts += 1
                logger.warning("generator %d died while loading adapter %d: re-sending it", index, self.version)
                wait_until_alive(self.generators[index])
                ray.get(self.generators[index].load_adapter.remote(self._adapter_ref, self.version, True))
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
