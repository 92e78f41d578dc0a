"""Scoring every reward channel of a step at once, each under its own deadline.

The batch is put in the object store once; every RewardWorker gets the same
references. A channel with ``replicas: N`` has N workers, each scoring its
contiguous share of the completions (rows passed by reference, no second copy
of the batch); their values are written back in order. The driver waits with
``ray.wait`` until each channel's timeout (the worker enforces it too; the
driver's grace covers a worker that is stuck or dead): a late, failed or dead
channel (or replica) is null for the step (its rows), never a stall.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray

from mixgrpo.batch import PromptBatch, RolloutBatch
from mixgrpo.config import RewardChannelConfig
from mixgrpo.orchestrator.placement import wait_until_alive

logger = logging.getLogger("mixgrpo.scoring")

DRIVER_GRACE_S = 5.0
"""Extra seconds the driver waits beyond a channel's own timeout before giving up on its actor."""


@dataclass(frozen=True)
class StepScores:
    """All channels of one step."""

    rewards: np.ndarray
    """(N, R) float64, NaN = null; R = mixer heads (config.channel_names: sub-channels expanded)."""
    counters: dict[str, dict[str, int]]
    """head name -> failure counters for this step (summed over the channel's replicas)."""
    seconds: dict[str, float]
    """channel name -> scoring wall time reported by the worker (the slowest replica)."""


def group_workers(workers: list[Any], channels: list[RewardChannelConfig]) -> list[list[Any]]:
    """The flat, channel-major worker list (``replicas`` actors per channel) split per channel."""
    if len(workers) != sum(c.replicas for c in channels):
        raise ValueError(f"{len(workers)} reward workers for channels needing {sum(c.replicas for c in channels)}")
    groups, start = [], 0
    for channel in channels:
        groups.append(workers[start:start + channel.replicas])
        start += channel.replicas
    return groups


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
    workers: list[Any], channels: list[RewardChannelConfig], prompts: PromptBatch, rollouts: RolloutBatch
) -> StepScores:
    """Score all channels (and all replicas of each) concurrently; (N, R) rewards, nulls for what failed.

    ``workers`` is channel-major with ``channel.replicas`` actors per channel; replica k
    of a channel scores the k-th contiguous share of the completions.
    """
    prompts_ref, rollouts_ref = ray.put(prompts), ray.put(rollouts)
    heads = [head for channel in channels for head in channel.head_names]
    column = {head: index for index, head in enumerate(heads)}
    started = time.monotonic()
    pending: dict[Any, tuple[RewardChannelConfig, np.ndarray]] = {}
    for channel, group in zip(channels, group_workers(workers, channels)):
        if len(group) == 1:
            pending[group[0].score.remote(prompts_ref, rollouts_ref)] = (channel, np.arange(len(rollouts)))
            continue
        for worker, rows in zip(group, replica_rows(len(rollouts), len(group))):
            pending[worker.score.remote(prompts_ref, rollouts_ref, rows)] = (channel, rows)
    deadlines = {ref: started + channel.timeout_s + DRIVER_GRACE_S for ref, (channel, _) in pending.items()}
    rewards = np.full((len(rollouts), len(heads)), np.nan)
    counters: dict[str, dict[str, int]] = {head: {} for head in heads}
    seconds: dict[str, float] = {}
    restarting = False
    while pending:
        wait_s = max(0.0, min(deadlines[ref] for ref in pending) - time.monotonic())
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=wait_s)
        for ref in ready:
            channel, rows = pending.pop(ref)
            try:
                result = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as error:
                _add(counters, _head_counters(channel, {"actor_errors": 1}))
                logger.warning("reward channel %r: actor failed: %s", channel.name, str(error).splitlines()[0])
                restarting = True
                continue
            for head, values in result.values.items():
                if head in column:
                    rewards[rows, column[head]] = values
            _add(counters, _head_counters(channel, result.counters))
            seconds[channel.name] = max(seconds.get(channel.name, 0.0), result.seconds)
        for ref in [r for r in pending if deadlines[r] <= time.monotonic()]:
            channel, _ = pending.pop(ref)
            _add(counters, _head_counters(channel, {"timeouts": 1}))
            ray.cancel(ref)
            logger.warning("reward channel %r: no answer within its deadline; null for this step", channel.name)
    if restarting:  # a dead worker is null for this step only: wait for Ray to bring it back
        for worker in workers:
            wait_until_alive(worker)
    return StepScores(rewards=rewards, counters=counters, seconds=seconds)
