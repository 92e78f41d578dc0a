"""RewardWorker: one reward channel scoring a whole batch, failures turned into nulls.

A channel that raises, exceeds its timeout, returns the wrong number of values,
or returns None / NaN / inf / non-numbers / absurd magnitudes gives null (NaN)
for the affected completions, never 0. Every failure is counted per kind, and
the first message of each kind is logged once per worker.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from numbers import Real
from typing import Any

import numpy as np

from mixgrpo.batch import ChannelScores, PromptBatch, RolloutBatch
from mixgrpo.config import RewardChannelConfig
from mixgrpo.rewards.channels import ScoringInput, build_channel

logger = logging.getLogger("mixgrpo.reward")

MAX_ABS_REWARD = 1e9
"""Values beyond this magnitude are treated as garbage (null): they would overflow the mixer's variance."""


def scoring_input(prompts: PromptBatch, rollouts: RolloutBatch) -> ScoringInput:
    """The N-completion view a channel scores, prompts and metadata expanded per completion."""
    rows = rollouts.prompt_index
    return ScoringInput(
        prompts=[prompts.prompts[i] for i in rows],
        completions=list(rollouts.completion_text),
        metadata=[prompts.metadata[i] for i in rows],
        completion_tokens=[int(n) for n in rollouts.completion_lengths],
    )


def _call_with_timeout(function: Any, argument: Any, timeout_s: float) -> Any:
    """Run ``function(argument)`` in a daemon thread; TimeoutError when it outlives timeout_s."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = function(argument)
        except BaseException as error:  # re-raised in the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True, name="reward-channel")
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TimeoutError(f"channel did not return within {timeout_s:g}s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def sanitize(raw: Any, n: int) -> tuple[np.ndarray, dict[str, int]]:
    """(N,) float64 with NaN for every unusable value, and counters of what was replaced."""
    counters = {"null": 0, "non_finite": 0, "not_a_number": 0, "out_of_range": 0}
    values = np.full(n, np.nan)
    raw = raw.tolist() if hasattr(raw, "tolist") else raw  # numpy arrays / torch tensors -> Python numbers
    if isinstance(raw, (str, bytes)) or not hasattr(raw, "__len__") or len(raw) != n:
        got = len(raw) if hasattr(raw, "__len__") and not isinstance(raw, (str, bytes)) else type(raw).__name__
        raise ValueError(f"channel returned {got} values for {n} completions")
    for i, value in enumerate(raw):
        if value is None:
            counters["null"] += 1
        elif isinstance(value, bool) or not isinstance(value, Real):
            counters["not_a_number"] += 1
        elif not math.isfinite(float(value)):
            counters["non_finite"] += 1
        elif abs(float(value)) > MAX_ABS_REWARD:
            counters["out_of_range"] += 1
        else:
            values[i] = float(value)
    return values, counters


class RewardWorker:
    """Scores one channel for whole batches (a plain class; the orchestrator makes it an actor)."""

    def __init__(self, channel: RewardChannelConfig, threads: int = 1) -> None:
        import torch

        torch.set_num_threads(threads)
        self.config = channel
        self.channel = build_channel(channel.kind, channel.options)
        self.totals: dict[str, int] = {}
        self._logged_kinds: set[str] = set()

    def score(self, prompts: PromptBatch, rollouts: RolloutBatch) -> ChannelScores:
        """Score every completion; failures become nulls and counters."""
        started = time.monotonic()
        n = len(rollouts)
        counters: dict[str, int] = {}
        try:
            raw = _call_with_timeout(self.channel, scoring_input(prompts, rollouts), self.config.timeout_s)
            values, counters = sanitize(raw, n)
        except TimeoutError as error:
            values, counters = np.full(n, np.nan), {"timeouts": 1}
            self._log_once("timeout", error)
        except Exception as error:  # a channel bug must not stop training: null + counted
            values, counters = np.full(n, np.nan), {"errors": 1}
            self._log_once(type(error).__name__, error)
        counters = {k: v for k, v in counters.items() if v}
        for key, value in counters.items():
            self.totals[key] = self.totals.get(key, 0) + value
        return ChannelScores(values={self.config.name: values}, counters=counters, seconds=time.monotonic() - started)

    def _log_once(self, kind: str, error: BaseException) -> None:
        if kind not in self._logged_kinds:
            self._logged_kinds.add(kind)
            logger.warning("reward channel %r: %s: %s (further %s failures counted, not logged)",
                           self.config.name, kind, error, kind)
