"""Rollout generation across the generator actors, synchronous or up to N steps ahead.

``collect(step)`` returns the prompts and rollouts of ``step``, launching the
generation if it is not already under way. With ``async_steps = N`` the step loop
calls ``launch(step + 1) ... launch(step + N)`` before the learner trains on
``step``, so rollout and learning overlap; each generator actor runs its calls in
order, so an adapter broadcast queued behind those generations is applied right
after them, and the rollouts of step t + N come from the adapter N versions behind
the learner. No generation is ever launched further ahead, so no rollout is older
than N versions (a shard that is older, from a restarted generator, is generated
again). ``generate(prompts, step, **options)`` runs one extra generation now
(held-out eval, dynamic-sampling rounds) through the same shards and retries.

What comes back is a RolloutView per shard (``transport.SplitsRollouts``): text, lengths and
versions, with ``tokens`` pointing at the shard's RolloutBatch, which stays in the object store
for the learner ranks; the driver never unpickles token arrays.
Group selection helpers (``take_groups``, ``constant_groups``, ``concat_groups``)
serve dynamic sampling.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Callable, TypeVar

import numpy as np
import ray

from mixgrpo.batch import PromptBatch, RolloutBatch, RolloutView, TokenRows
from mixgrpo.orchestrator.placement import wait_until_alive
from mixgrpo.tasks import Task

logger = logging.getLogger("mixgrpo.rollouts")


MAX_SHARD_RETRIES = 3
"""Times one shard is generated again after its generator died or served an old adapter."""


ShardCallback = Callable[[PromptBatch, RolloutView, int], None]
"""Called with a generator shard's prompts, its rollouts and the row where they start in the step's batch."""


class ColocatedRankLost(RuntimeError):
    """A colocated rank died while generating: a learner failure (the driver recreates the group)."""


@dataclass(frozen=True)
class _Launched:
    shards: list[PromptBatch]
    offsets: list[int]
    refs: list[tuple[Any, Any]]
    """(view, rollouts) ObjectRefs of each shard's ``generate_split``."""
    version: int
    """The adapter version published when the step was launched: no shard may come from an older one."""
    options: dict[str, Any]
    """Keyword options of ``Generator.generate`` (eval: n, temperature, ...), repeated on a retry."""


class RolloutPipeline:
    """Shards each step's prompts over the generators; the step loop keeps up to async_steps steps in flight.

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
        self._broadcasts: list[tuple[int, Any]] = []
        """(generator index, load_adapter ref) of every broadcast not yet checked."""

    def launch(self, step: int) -> None:
        """Start generating ``step`` (no-op when already launched)."""
        if step in self._launched:
            return
        self._launched[step] = self._start(self.task.sample(step), step, {})

    def _start(self, prompts: PromptBatch, step: int, options: dict[str, Any]) -> _Launched:
        rows = [s for s in np.array_split(np.arange(len(prompts)), len(self.generators)) if len(s)]
        shards = [prompts.take(r) for r in rows]
        refs = [g.generate_split.remote(shard, step, **options) for g, shard in zip(self.generators, shards)]
        return _Launched(shards, [int(r[0]) for r in rows], refs, self.version, options)

    def collect(self, step: int, on_shard: ShardCallback | None = None) -> tuple[PromptBatch, RolloutView]:
        """The prompts and (group-major) rollouts of ``step``; checks the broadcasts applied so far.

        ``on_shard(prompts, rollouts, row_offset)`` is called for each shard as soon as it is back
        (in the order they finish; its rows start at ``row_offset`` in the returned batch).
        """
        self.launch(step)
        launched = self._launched.pop(step)
        rollouts = self._gather(launched, step, on_shard)
        self.wait_for_broadcast(block=False)
        return concat_prompts(launched.shards), rollouts

    def generate(self, prompts: PromptBatch, step: int, **options: Any) -> RolloutView:
        """Generate ``prompts`` now with the current adapter (after anything in flight); ``options`` go to
        ``Generator.generate`` (n, temperature, max_new_tokens, seed)."""
        return self._gather(self._start(prompts, step, options), step)

    def _gather(self, launched: _Launched, step: int, on_shard: ShardCallback | None = None) -> RolloutView:
        parts: dict[int, RolloutView] = {}
        waiting = {index: view for index, (view, _) in enumerate(launched.refs)}
        while waiting:
            if on_shard is None:  # in order
                index = min(waiting)
            else:  # the first to finish (a failed one is retried inside _shard)
                ready, _ = ray.wait(list(waiting.values()), num_returns=1)
                index = next(i for i, ref in waiting.items() if ref == ready[0])
            del waiting[index]
            parts[index] = self._shard(index, launched, step)
            if on_shard is not None:
                rows_per_prompt = len(parts[index]) // max(len(launched.shards[index]), 1)
                on_shard(launched.shards[index], parts[index], launched.offsets[index] * rows_per_prompt)
        return RolloutView.concat([parts[i] for i in range(len(parts))], launched.offsets)

    def _shard(self, index: int, launched: _Launched, step: int) -> RolloutView:
        view_ref, rollouts_ref = launched.refs[index]
        for _ in range(MAX_SHARD_RETRIES + 1):
            try:
                part = ray.get(view_ref)
                if (part.policy_version >= launched.version).all():
                    return replace(part, tokens=TokenRows.whole(rollouts_ref, len(part)))
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
            view_ref, rollouts_ref = generator.generate_split.remote(launched.shards[index], step, **launched.options)
        raise RuntimeError(f"generator {index} failed {MAX_SHARD_RETRIES + 1} times at step {step}")

    def discard_launched(self) -> None:
        """Forget generation launched ahead (after a learner restart it would be from a dropped adapter)."""
        self._launched.clear()

    def broadcast(self, adapter: dict[str, Any] | ray.ObjectRef, version: int, rollback: bool = False) -> None:
        """Send the adapter (one object-store copy; an ObjectRef is forwarded as it is) to every generator as ``version``.

        Returns at once: each generator runs its calls in order, so the load is applied before
        the next generation on that actor (in async mode, right after the one in flight); the
        next ``collect`` checks that every load succeeded. ``rollback`` allows an older version
        (restoring a checkpoint). Colocated: the ranks already hold it; only the version is recorded.
        """
        if self.colocated:
            self.version = version
            return
        self._adapter_ref = adapter if isinstance(adapter, ray.ObjectRef) else ray.put(adapter)
        self.version = version
        self._broadcasts += [(index, g.load_adapter.remote(self._adapter_ref, version, rollback))
                             for index, g in enumerate(self.generators)]

    def wait_for_broadcast(self, block: bool = True) -> None:
        """Check the broadcasts sent so far (``block``: wait for all; else only those already applied).

        A generator that died while loading gets the current adapter again; a load that failed
        otherwise (bad tensors) raises. Not blocking matters with async_steps >= 2: a load is
        queued behind generations of later steps, which the driver must not wait for.
        """
        pending = []
        for index, ref in self._broadcasts:
            if not block and not ray.wait([ref], timeout=0)[0]:
                pending.append((index, ref))
                continue
            try:
                ray.get(ref)
            except ray.exceptions.RayActorError:
                self.restarts += 1
                logger.warning("generator %d died while loading adapter %d: re-sending it", index, self.version)
                wait_until_alive(self.generators[index])
                ray.get(self.generators[index].load_adapter.remote(self._adapter_ref, self.version, True))
        self._broadcasts = pending


def concat_prompts(batches: list[PromptBatch]) -> PromptBatch:
    """Prompt batches joined in order."""
    return PromptBatch(
        prompt_ids=np.concatenate([b.prompt_ids for b in batches]),
        prompts=[p for b in batches for p in b.prompts],
        metadata=[m for b in batches for m in b.metadata],
    )


Rollouts = TypeVar("Rollouts", RolloutView, RolloutBatch)


def concat_groups(batches: list[tuple[PromptBatch, Rollouts]]) -> tuple[PromptBatch, Rollouts]:
    """Several (prompts, rollouts) of one step (generation rounds) as one, prompt_index renumbered."""
    offsets = np.cumsum([0] + [len(p) for p, _ in batches[:-1]]).tolist()
    joined = type(batches[0][1]).concat([r for _, r in batches], offsets)
    return concat_prompts([p for p, _ in batches]), joined


def take_groups(prompts: PromptBatch, rollouts: Rollouts, groups: np.ndarray) -> tuple[PromptBatch, Rollouts]:
    """The given groups (prompt rows, ascending) and their rollouts, prompt_index renumbered."""
    rows = np.flatnonzero(np.isin(rollouts.prompt_index, groups))
    kept = rollouts.take(rows)
    return prompts.take(groups), replace(kept, prompt_index=np.searchsorted(groups, kept.prompt_index))


def constant_groups(rewards: np.ndarray) -> np.ndarray:
    """(P,) True for groups in which every channel is constant over its non-null entries.

    rewards: (P, m, R) with NaN = null. Such a group has zero group-scope advantage under every
    mixer mode (a channel with no variance in a group carries no signal; DAPO dynamic sampling,
    Yu et al. 2025, sec. 3.2, drops it). A channel null in the whole group, or present once, counts as constant.
    """
    present = ~np.isnan(rewards)
    highest = np.where(present, rewards, -np.inf).max(axis=1)
    lowest = np.where(present, rewards, np.inf).min(axis=1)
    return ((highest - lowest <= 1e-12) | ~present.any(axis=1)).all(axis=1)
