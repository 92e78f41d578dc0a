"""Scoring every reward channel of a step at once, each under its own deadline.

The batch is put in the object store once; every RewardWorker gets the same
references. The driver waits with ``ray.wait`` until each channel's timeout (the
worker enforces it too; the driver's grace covers a worker that is stuck or
dead): a late, failed or dead channel is null for the step, never a stall.
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

logger = logging.getLogger("mixgrpo.scoring")

DRIVER_GRACE_S = 5.0
"""Extra seconds the driver waits beyond a channel's own timeout before giving up on its actor."""


@dataclass(frozen=True)
class StepScores:
    """All channels of one step."""

    rewards: np.ndarray
    """(N, R) float64, NaN = null."""
    counters: dict[str, dict[str, int]]
    """channel name -> failure counters for this step."""
    seconds: dict[str, float]
    """channel name -> scoring wall time reported by the worker."""


def score_all_channels(
    workers: list[Any], channels: list[RewardChannelConfig], prompts: PromptBatch, rollouts: RolloutBatch
) -> StepScores:
    """Score all channels concurrently; (N, R) rewards with nulls for anything that failed."""
    prompts_ref, rollouts_ref = ray.put(prompts), ray.put(rollouts)
    started = time.monotonic()
    pending = {worker.score.remote(prompts_ref, rollouts_ref): index for index, worker in enumerate(workers)}
    deadlines = {ref: started + channels[i].timeout_s + DRIVER_GRACE_S for ref, i in pending.items()}
    rewards = np.full((len(rollouts), len(channels)), np.nan)
    counters: dict[str, dict[str, int]] = {c.name: {} for c in channels}
    seconds: dict[str, float] = {}
    while pending:
        wait_s = max(0.0, min(deadlines[ref] for ref in pending) - time.monotonic())
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=wait_s)
        for ref in ready:
            channel = channels[pending.pop(ref)]
            try:
                result = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as error:
                counters[channel.name] = {"actor_errors": 1}
                logger.warning("reward channel %r: actor failed: %s", channel.name, str(error).splitlines()[0])
                continue
            rewards[:, channels.index(channel)] = result.values[channel.name]
            counters[channel.name] = dict(result.counters)
            seconds[channel.name] = result.seconds
        for ref in [r for r in pending if deadlines[r] <= time.monotonic()]:
            channel = channels[pending.pop(ref)]
            counters[channel.name] = {"timeouts": 1}
            ray.cancel(ref)
            logger.warning("reward channel %r: no answer within its deadline; null for this step", channel.name)
    return StepScores(rewards=rewards, counters=counters, seconds=seconds)
