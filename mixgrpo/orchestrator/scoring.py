"""Scoring every reward channel of a step at once, each under its own deadline.

The batch is put in the object store once; every reward actor (a RewardHost:
the channels of a shared ``actor`` group, or one channel; see
``placement.reward_actors``) gets the same references and one call per part,
scoring its channels one after another. A channel with ``replicas: N`` has N
actors, each scoring its contiguous share of the completions (rows passed by
reference, no second copy of the batch); their values are written back in
order. Each channel's worker enforces its own ``timeout_s``; the driver waits
with ``ray.wait`` until the call's deadline, the sum of its channels' timeouts
plus a grace (which covers an actor that is stuck or dead): a late, failed or
dead channel (or replica) is null for the step (its rows), never a stall. A
call that misses the driver's deadline nulls every channel in it.

Streaming. With several generator replicas the step loop does not wait for the
slowest shard before scoring: ``ScoringRound.add`` starts every channel on each
shard as it arrives (rows offset into the whole batch), ``finish`` collects
them; the mixer still sees whole groups (a shard holds whole groups), and the
step's reward stage shrinks to what is left after the last shard.

Restarts. A worker whose actor crashed is restarted by Ray; one that reports
``stuck`` (its timed-out call still runs, see actors/reward.py) or that missed
the driver's deadline is restarted here through Ray, the only way to stop a
call inside it. The driver waits for the restart before the next step, logging
what it waits for at least every ``timeout_s + DRIVER_GRACE_S``. Every restart,
crash or stuck call alike, uses one of the actor's ``cluster.max_actor_restarts``
(Ray's own count): a channel that hangs on every call is thus restarted a
bounded number of times, not every step for the rest of the run. Once Ray reports
the actor dead (``ActorDiedError``: restarts used up), the channel's ``on_dead``
decides: ``disable`` (null for the rest of the run, counted ``disabled``, one
loud log line) or ``stop`` (``RewardChannelDead``; the driver checkpoints and
saves the adapter first).

Shared actors. A restart ends the whole process, so every channel of a shared
actor is restarted with the one that was stuck, late or crashed: each of the
others counts it as ``shared_restarts`` (their values of the step still count),
and all of them spend the same ``cluster.max_actor_restarts``; an actor dead for
good applies each of its channels' ``on_dead``.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
import ray

from mixgrpo.actors.reward import STUCK, RewardHost
from mixgrpo.batch import PromptBatch, RolloutBatch, RolloutView
from mixgrpo.config import RewardChannelConfig
from mixgrpo.orchestrator.dead_channel import RewardChannelDead
from mixgrpo.orchestrator.placement import RewardActorSpec, remote_class, reward_actors

logger = logging.getLogger("mixgrpo.scoring")

DRIVER_GRACE_S = 5.0
"""Extra seconds the driver waits beyond a channel's own timeout before giving up on its actor."""

RESTART_WAIT_S = 300.0
"""Longest wait for Ray to bring a reward actor back (a model channel reloads its model); past it the actor is dead."""

DISABLED = "disabled"
"""Counter of a step in which a channel was not scored because its actor is dead (``on_dead: disable``)."""

SHARED_RESTARTS = "shared_restarts"
"""Counter of a channel whose shared actor was restarted for another channel in it (stuck, late or crashed)."""


@dataclass(frozen=True)
class StepScores:
    """All channels of one step."""

    rewards: np.ndarray
    """(N, R) float64, NaN = null; R = mixer heads (config.channel_names: sub-channels expanded)."""
    counters: dict[str, dict[str, int]]
    """head name -> failure counters for this step (summed over the channel's replicas)."""
    seconds: dict[str, float]
    """channel name -> scoring wall time reported by the worker (the slowest replica)."""


def start_reward_hosts(channels: list[RewardChannelConfig],
                       options: Callable[[RewardActorSpec], dict[str, Any]]) -> list[Any]:
    """One RewardHost actor per ``reward_actors(channels)`` entry, in that order, each with ``.options(**options(spec))``."""
    remote = remote_class(RewardHost)
    return [remote.options(**options(spec)).remote([channels[i] for i in spec.channels])
            for spec in reward_actors(channels)]


def group_workers(workers: list[Any], channels: list[RewardChannelConfig]) -> list[list[Any]]:
    """Per channel, the actors scoring it (one per replica), from the actor list in ``reward_actors`` order."""
    specs = _checked_specs(workers, channels)
    hosts: list[list[Any]] = [[] for _ in channels]
    for spec, worker in zip(specs, workers):
        for index in spec.channels:
            hosts[index].append(worker)
    return hosts


def _checked_specs(workers: list[Any], channels: list[RewardChannelConfig]) -> list[RewardActorSpec]:
    specs = reward_actors(channels)
    if len(workers) != len(specs):
        raise ValueError(f"{len(workers)} reward workers for channels needing {len(specs)} reward actors")
    return specs


def replica_rows(n: int, replicas: int) -> list[np.ndarray]:
    """Contiguous, in-order shares of rows 0..n-1 (sizes differ by at most one); empty shares dropped."""
    return [rows for rows in np.array_split(np.arange(n, dtype=np.int64), replicas) if len(rows)]


def _head_counters(channel: RewardChannelConfig, counters: dict[str, int]) -> dict[str, dict[str, int]]:
    """A worker's counters per head: ``<sub>/<kind>`` goes to that sub-channel, a plain kind to every head."""
    per_head: dict[str, dict[str, int]] = {head: {} for head in channel.head_names}
    for key, count in counters.items():
        sub, _, kind = key.rpartition("/")
        targets = [f"{channel.name}/{sub}"] if sub else channel.head_names
        for head in targets:
            if head in per_head:
                per_head[head][kind] = per_head[head].get(kind, 0) + count
    return per_head


def _add(total: dict[str, dict[str, int]], more: dict[str, dict[str, int]]) -> None:
    for head, counters in more.items():
        for kind, count in counters.items():
            total[head][kind] = total[head].get(kind, 0) + count


def score_all_channels(
    workers: list[Any], channels: list[RewardChannelConfig], prompts: PromptBatch,
    rollouts: RolloutView | RolloutBatch, disabled: set[str] | None = None,
) -> StepScores:
    """Score all channels (and all replicas of each) concurrently; (N, R) rewards, nulls for what failed.

    ``workers`` are the RewardHost actors in ``reward_actors(channels)`` order; replica k
    of a channel scores the k-th contiguous share of the completions. ``disabled`` (the
    caller keeps it across steps) names channels whose actor is dead: they are null and
    counted ``disabled``; a channel whose actor dies for good in this step is added to it,
    or raises RewardChannelDead with ``on_dead: stop``.
    """
    scoring = ScoringRound(workers, channels, disabled)
    scoring.add(prompts, rollouts, 0)
    return scoring.finish()


class ScoringRound:
    """The scoring calls of one batch, launched part by part (streaming: each generator shard as it arrives).

    ``add(prompts, rollouts, offset)`` puts a part (rows ``offset .. offset + len(rollouts)`` of the
    whole batch, its ``prompt_index`` relative to ``prompts``) in the object store and starts every
    actor on it at once (one call for all its channels), each call with its own deadline (after the
    deadline of the actor's previous call: an actor's calls queue); ``finish()`` waits for them all,
    has stuck, late or crashed actors restarted (once each) and returns the whole batch's scores.
    A channel's counters and seconds add up over the parts (its calls run one after another).
    """

    def __init__(self, workers: list[Any], channels: list[RewardChannelConfig],
                 disabled: set[str] | None = None) -> None:
        self.channels = channels
        self.actors = list(zip(_checked_specs(workers, channels), workers))
        self.disabled = set() if disabled is None else disabled
        self.heads = [head for channel in channels for head in channel.head_names]
        self.counters: dict[str, dict[str, int]] = {head: {} for head in self.heads}
        for channel in channels:
            if channel.name in self.disabled:
                _add(self.counters, _head_counters(channel, {DISABLED: 1}))
        self.rows = 0
        self._pending: dict[Any, tuple[int, list[RewardChannelConfig], np.ndarray]] = {}
        """call -> (actor index, the channels it scores, its rows of the whole batch)."""
        self._deadlines: dict[Any, float] = {}
        self._values: list[tuple[np.ndarray, int, np.ndarray]] = []
        """(rows of the whole batch, head column, values) of every answered call."""
        self._busy: dict[tuple[str, int], float] = {}
        """(channel, actor index) -> seconds its calls took inside the worker."""
        self._queue_end: dict[int, float] = {}
        """actor index -> the deadline of its last call so far (its calls queue on the actor)."""

    def _hosted(self, spec: RewardActorSpec) -> list[RewardChannelConfig]:
        return [self.channels[i] for i in spec.channels if self.channels[i].name not in self.disabled]

    def add(self, prompts: PromptBatch, rollouts: RolloutView | RolloutBatch, offset: int) -> None:
        """Start every actor on this part of the batch, for its channels that are not disabled.

        The actors get a RolloutView without its token references (they read text and lengths)."""
        if isinstance(rollouts, RolloutView):
            rollouts = replace(rollouts, tokens=None)
        prompts_ref, rollouts_ref = ray.put(prompts), ray.put(rollouts)
        now = time.monotonic()
        for index, (spec, worker) in enumerate(self.actors):
            hosted = self._hosted(spec)
            if not hosted:
                continue
            shares = replica_rows(len(rollouts), hosted[0].replicas)  # one share unless a channel's replica
            if spec.replica >= len(shares):
                continue  # fewer completions than replicas: this one has none
            rows = shares[spec.replica]
            ref = worker.score.remote([c.name for c in hosted], prompts_ref, rollouts_ref,
                                      rows if len(shares) > 1 else None)
            # an actor runs its calls one after another: this one may first wait for the previous part's
            deadline = max(now, self._queue_end.get(index, now)) + _call_budget(hosted)
            self._queue_end[index] = deadline
            self._pending[ref] = (index, hosted, offset + rows)
            self._deadlines[ref] = deadline
        self.rows = max(self.rows, offset + len(rollouts))

    def finish(self) -> StepScores:
        """Wait for every call (each until its deadline), restart what must be, assemble the (N, R) scores."""
        column = {head: index for index, head in enumerate(self.heads)}
        to_restart: dict[int, tuple[str, set[str]]] = {}
        """actor index -> (why, the channels it is restarted for): why is crashed (Ray restarts it by
        itself), stuck or late."""
        pending = self._pending
        while pending:
            wait_s = max(0.0, min(self._deadlines[ref] for ref in pending) - time.monotonic())
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=wait_s)
            for ref in ready:
                index, hosted, rows = pending.pop(ref)
                try:
                    results = ray.get(ref)
                except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as error:
                    for channel in hosted:
                        _add(self.counters, _head_counters(channel, {"actor_errors": 1}))
                    logger.warning("%s: actor failed: %s", _label(self.actors[index][0], hosted),
                                   str(error).splitlines()[0])
                    _blame(to_restart, index, "crashed", hosted)
                    continue
                for channel in hosted:
                    result = results[channel.name]
                    for head, values in result.values.items():
                        if head in column:
                            self._values.append((rows, column[head], values))
                    _add(self.counters, _head_counters(channel, result.counters))
                    key = (channel.name, index)
                    self._busy[key] = self._busy.get(key, 0.0) + result.seconds
                    if result.counters.get(STUCK):
                        _blame(to_restart, index, STUCK, [channel])
            for ref in [r for r in pending if self._deadlines[r] <= time.monotonic()]:
                index, hosted, _ = pending.pop(ref)
                for channel in hosted:
                    _add(self.counters, _head_counters(channel, {"timeouts": 1}))
                logger.warning("%s: no answer within its deadline; null for this step",
                               _label(self.actors[index][0], hosted))
                _blame(to_restart, index, "late", hosted, wins=True)  # the actor is busy: kill it
        for index, (why, culprits) in to_restart.items():
            self._restart(index, why, culprits)
        rewards = np.full((self.rows, len(self.heads)), np.nan)
        for rows, index, values in self._values:
            rewards[rows, index] = values
        seconds: dict[str, float] = {}
        for (name, _), spent in self._busy.items():
            seconds[name] = max(seconds.get(name, 0.0), spent)  # replicas run side by side: the slowest
        return StepScores(rewards=rewards, counters=self.counters, seconds=seconds)

    def _restart(self, index: int, why: str, culprits: set[str]) -> None:
        """Have actor ``index`` restarted for ``culprits``; the others it hosts count a shared restart."""
        spec, worker = self.actors[index]
        hosted = self._hosted(spec)
        if not hosted:
            return
        for channel in hosted:
            if channel.name not in culprits:
                _add(self.counters, _head_counters(channel, {SHARED_RESTARTS: 1}))
        if not _restarted(worker, _label(spec, hosted), _call_budget(hosted), why):
            for channel in hosted:
                _on_dead(channel, self.disabled)


def _call_budget(channels: list[RewardChannelConfig]) -> float:
    """Seconds the driver gives one call scoring ``channels`` in turn: their timeouts plus DRIVER_GRACE_S."""
    return sum(c.timeout_s for c in channels) + DRIVER_GRACE_S


def _blame(to_restart: dict[int, tuple[str, set[str]]], index: int, why: str,
           channels: list[RewardChannelConfig], wins: bool = False) -> None:
    """Mark actor ``index`` for a restart because of ``channels``; ``wins``: ``why`` replaces an earlier reason."""
    earlier, culprits = to_restart.get(index, (why, set()))
    to_restart[index] = (why if wins else earlier, culprits | {c.name for c in channels})


def _label(spec: RewardActorSpec, channels: list[RewardChannelConfig]) -> str:
    """How logs name an actor: by its one channel, or by its group and channels."""
    if len(channels) == 1:
        return f"reward channel {channels[0].name!r}"
    return f"reward actor {spec.name!r} (channels {', '.join(c.name for c in channels)})"


_RESTART_REASONS = {"crashed": "its actor died", STUCK: "a timed-out call still runs inside its actor",
                    "late": "its actor is still inside the call that missed the deadline"}


def _exit_process(actor: Any) -> None:
    """Run inside a reward actor (``__ray_call__``): end its process so that Ray restarts it."""
    os._exit(1)


def _restarted(worker: Any, label: str, patience: float, why: str) -> bool:
    """Have Ray restart ``worker`` (``why``: crashed, Ray already does; stuck; late) and wait until it answers.

    False when Ray reports it dead for good (restarts used up) or it is not back within
    RESTART_WAIT_S; a line naming ``label`` is logged at least every ``patience`` seconds of waiting
    (the actor's call budget: its channels' timeouts plus the grace).
    """
    logger.warning("%s: %s; waiting for Ray to restart it", label, _RESTART_REASONS[why])
    if why == STUCK:  # idle: it ends its own process, so the poll below cannot be answered by the old one
        try:
            ray.get(worker.__ray_call__.remote(_exit_process), timeout=patience)
        except ray.exceptions.ActorDiedError:
            return False
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            pass  # it exited (or hangs on its way out: the poll below waits, and logs)
    elif why == "late":  # busy inside the late call: killed, it cannot answer the poll below before it dies
        ray.kill(worker, no_restart=False)
    started = last_log = time.monotonic()
    while True:
        try:
            ray.get(worker.placement.remote(), timeout=patience)
            return True
        except ray.exceptions.ActorDiedError:
            return False
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            now = time.monotonic()
            if now - started >= RESTART_WAIT_S:
                ray.kill(worker, no_restart=True)  # never back mid-run in an unknown state
                return False
            if now - last_log >= patience:
                logger.warning("%s: still waiting for Ray to restart its actor (%.0fs)", label, now - started)
                last_log = now
            time.sleep(0.5)


def _on_dead(channel: RewardChannelConfig, disabled: set[str]) -> None:
    """A channel whose actor is dead for good: disable it for the rest of the run, or stop the run."""
    if channel.on_dead == "stop":
        raise RewardChannelDead(channel.name)
    disabled.add(channel.name)
    logger.error("reward channel %r DISABLED for the rest of the run: its actor used up cluster.max_actor_restarts; "
                 "null from now on (failures/%s/%s)", channel.name, channel.name, DISABLED)
