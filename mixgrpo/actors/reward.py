"""RewardWorker: one reward channel scoring a whole batch, failures turned into nulls; RewardHost: the
RewardWorkers of one actor process (several channels of a shared ``actor`` group, or one channel).

Every failure gives null (NaN) for the completions it affects, never 0, and is
counted per kind (``failures/<channel>/<kind>`` in the metrics); the first
message of each kind is logged once per worker:

- one completion of a per-completion kind (``PerSample``: ``python`` without
  ``batched``, regex, numeric_match, ...) raises: that completion, ``item_errors``;
- a batched channel raises, or returns the wrong number of values: the batch, ``errors``;
- None / NaN / inf / non-numbers / magnitudes above 1e9: those values,
  ``null`` / ``non_finite`` / ``not_a_number`` / ``out_of_range``;
- the call outlives ``timeout_s``: the batch, ``timeouts``;
- the previous call timed out and is still running: the batch at once, ``stuck``.

Timeouts. Python cannot stop a thread, so a timed-out call keeps running inside
the channel object. The worker never enters the channel again while it does:
the next call waits for it within its own ``timeout_s`` and, if it still runs,
returns its nulls (counted ``stuck``) without entering the channel; the
orchestrator then has Ray restart this actor (``orchestrator/scoring.py``), the
only way to end the stuck call and free what it holds. So at most one abandoned
thread exists at any time, and every call answers within ``timeout_s``. Why not
one child process per call: a channel holds what ``setup()`` loaded (a model,
often on a GPU), which a fork cannot carry and a spawn would reload every step.
Why not restart at the timeout itself: a call that was slow once and ends by
the next call (a judge taking 1.5 s) then costs nothing; only a call still
running a step later costs a restart.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Mapping
from numbers import Real
from typing import Any

import numpy as np

from mixgrpo.batch import ChannelScores, PromptBatch, RolloutBatch, RolloutView
from mixgrpo.config import RewardChannelConfig
from mixgrpo.faults import failpoint
from mixgrpo.rewards.channels import ScoringInput, build_channel
from mixgrpo.rewards.channels.base import ItemError

logger = logging.getLogger("mixgrpo.reward")

MAX_ABS_REWARD = 1e9
"""Values beyond this magnitude are treated as garbage (null): they would overflow the mixer's variance."""

STUCK = "stuck"
"""Counter of a call refused because the previous, timed-out call still runs (the orchestrator restarts the actor)."""


class ChannelStuck(RuntimeError):
    """The channel's previous call timed out and is still running; the channel is not entered again."""


def scoring_input(prompts: PromptBatch, rollouts: RolloutView | RolloutBatch) -> ScoringInput:
    """The N-completion view a channel scores, prompts and metadata expanded per completion."""
    rows = rollouts.prompt_index
    return ScoringInput(
        prompts=[prompts.prompts[i] for i in rows],
        completions=list(rollouts.completion_text),
        metadata=[prompts.metadata[i] for i in rows],
        completion_tokens=[int(n) for n in rollouts.completion_lengths],
    )


def sanitize(raw: Any, n: int) -> tuple[np.ndarray, dict[str, int]]:
    """(N,) float64 with NaN for every unusable value (or ``ItemError``), and counters of what was replaced."""
    counters = {"null": 0, "non_finite": 0, "not_a_number": 0, "out_of_range": 0}
    values = np.full(n, np.nan)
    raw = raw.tolist() if hasattr(raw, "tolist") else raw  # numpy arrays / torch tensors -> Python numbers
    if isinstance(raw, (str, bytes)) or not hasattr(raw, "__len__") or len(raw) != n:
        got = len(raw) if hasattr(raw, "__len__") and not isinstance(raw, (str, bytes)) else type(raw).__name__
        raise ValueError(f"channel returned {got} values for {n} completions")
    for i, value in enumerate(raw):
        if isinstance(value, ItemError):
            counters["item_errors"] = counters.get("item_errors", 0) + 1
        elif value is None:
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


def split_sub_channels(raw: Any, subs: list[str], n: int) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """A channel's sub-channel output -> sub name -> (N,) float64, with counters keyed ``<sub>/<kind>``.

    ``raw`` is a dict sub -> N values, or N rows keyed by sub (a dict, None, or an
    ``ItemError``: null in every sub-channel). A declared sub-channel the channel did
    not return is all null (counted ``<sub>/missing``); undeclared keys are ignored
    (a channel may offer more parts than a config uses).
    """
    if not isinstance(raw, Mapping):
        rows = raw.tolist() if hasattr(raw, "tolist") else raw
        if isinstance(rows, (str, bytes)) or not hasattr(rows, "__len__") or len(rows) != n or \
                not all(row is None or isinstance(row, (Mapping, ItemError)) for row in rows):
            raise ValueError(f"channel declares sub_channels {subs} but returned {type(raw).__name__}, "
                             "not a dict of sub-channel values (or one dict per completion)")
        raw = {sub: [row.get(sub) if isinstance(row, Mapping) else row for row in rows] for sub in subs
               if any(isinstance(row, ItemError) or (isinstance(row, Mapping) and sub in row) for row in rows)}
    values, counters = {}, {}
    for sub in subs:
        if sub not in raw:
            values[sub], counters[f"{sub}/missing"] = np.full(n, np.nan), 1
            continue
        values[sub], sub_counters = sanitize(raw[sub], n)
        counters.update({f"{sub}/{kind}": count for kind, count in sub_counters.items()})
    return values, counters


class RewardWorker:
    """Scores one channel for whole batches (a plain class; the orchestrator makes it an actor).

    A channel object may define ``setup()`` (load a model: called once here, so a
    model loads when the actor starts, not inside a step's timeout), ``parts(batch)``
    (its sub-channels as a dict, used when the config declares ``sub_channels``) and
    ``reward_maps(batch)`` (dense maps, see mixgrpo.rewards.maps).
    """

    def __init__(self, channel: RewardChannelConfig, threads: int = 1) -> None:
        self.config = channel
        self.channel = build_channel(channel.kind, channel.options)
        if hasattr(self.channel, "setup"):
            self.channel.setup()
        if "torch" in sys.modules:  # a model channel loaded it; a rule channel's process never imports torch
            sys.modules["torch"].set_num_threads(threads)
        self.subs = list(channel.sub_channels) if channel.sub_channels is not None else None
        self.calls = 0
        self._logged_kinds: set[str] = set()
        self._abandoned: threading.Thread | None = None
        """The thread of the last call that timed out, while it may still be inside the channel."""

    def _call(self, function: Any, batch: ScoringInput) -> Any:
        """``function(batch)`` in a thread under the channel's timeout; never while a timed-out call still runs."""
        deadline = time.monotonic() + self.config.timeout_s
        if self._abandoned is not None:  # the timed-out call may still end within this call's budget
            self._abandoned.join(self.config.timeout_s)
            if self._abandoned.is_alive():
                raise ChannelStuck("its previous call timed out and is still running; the actor must be restarted")
            self._abandoned = None
        outcome: dict[str, Any] = {}

        def target() -> None:
            try:
                outcome["value"] = function(batch)
            except BaseException as error:  # re-raised in the caller's thread
                outcome["error"] = error

        thread = threading.Thread(target=target, daemon=True, name=f"reward-{self.config.name}")
        thread.start()
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            self._abandoned = thread
            raise TimeoutError(f"channel did not return within {self.config.timeout_s:g}s")
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def _evaluate(self, batch: ScoringInput) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        n, name = len(batch), self.config.name
        if self.subs is None:
            raw = self._call(self.channel, batch)
            if isinstance(raw, Mapping):
                raise ValueError(f"channel returned sub-channels {sorted(raw)} but the config declares none "
                                 "(add sub_channels: {name: weight, ...} to the channel)")
            self._log_item_errors(raw)
            values, counters = sanitize(raw, n)
            return {name: values}, counters
        raw = self._call(getattr(self.channel, "parts", self.channel), batch)
        self._log_item_errors(raw)
        values, counters = split_sub_channels(raw, self.subs, n)
        return {f"{name}/{sub}": column for sub, column in values.items()}, counters

    def score(self, prompts: PromptBatch, rollouts: RolloutView | RolloutBatch,
              rows: np.ndarray | None = None) -> ChannelScores:
        """Score every completion (or only ``rows``, this replica's share); failures become nulls and counters.

        ``values`` has one (n,) column per head (the channel's name, or ``<name>/<sub>``
        per declared sub-channel); whole-batch failures are counted as ``timeouts`` /
        ``errors`` / ``stuck``, per-value ones as ``<kind>`` or ``<sub>/<kind>``
        (``item_errors``: a completion whose own call raised).
        """
        started = time.monotonic()
        if rows is not None:
            rollouts = rollouts.take(np.asarray(rows, dtype=np.int64))
        failpoint("score", f"reward-{self.config.name}", self.calls)
        self.calls += 1
        n = len(rollouts)
        try:
            values, counters = self._evaluate(scoring_input(prompts, rollouts))
        except TimeoutError as error:
            values, counters = self._all_null(n), {"timeouts": 1}
            self._log_once("timeout", error, "timeouts")
        except ChannelStuck as error:
            values, counters = self._all_null(n), {STUCK: 1}
            self._log_once(STUCK, error, STUCK)
        except Exception as error:  # a channel bug must not stop training: null + counted
            values, counters = self._all_null(n), {"errors": 1}
            self._log_once(type(error).__name__, error, "errors")
        counters = {k: v for k, v in counters.items() if v}
        return ChannelScores(values=values, counters=counters, seconds=time.monotonic() - started)

    def _all_null(self, n: int) -> dict[str, np.ndarray]:
        return {head: np.full(n, np.nan) for head in self.config.head_names}

    def reward_maps(self, batch: ScoringInput) -> list[tuple[np.ndarray, np.ndarray] | None]:
        """(N,) (image (H, W, 3) uint8, map (H, W) in [0, 1]) or None, from a channel that has maps."""
        if not hasattr(self.channel, "reward_maps"):
            raise ValueError(f"channel kind {self.config.kind!r} has no reward maps")
        return self.channel.reward_maps(batch)

    def _log_item_errors(self, raw: Any) -> None:
        """Log the first exception of each type raised on a single completion (counted by ``sanitize``)."""
        if isinstance(raw, (list, tuple)):
            for index, value in enumerate(raw):
                if isinstance(value, ItemError):
                    self._log_once(f"item {type(value.error).__name__}",
                                   f"completion {index} of {len(raw)}: {value.error}", "item_errors")

    def _log_once(self, kind: str, error: BaseException | str, counted_as: str) -> None:
        if kind not in self._logged_kinds:
            self._logged_kinds.add(kind)
            logger.warning("reward channel %r: %s: %s (further %s failures counted as %s, not logged)",
                           self.config.name, kind, error, kind, counted_as)


class RewardHost:
    """The reward channels of one actor process, a RewardWorker each (a plain class; the orchestrator makes it an actor).

    Channels of a shared ``actor`` group live in one process (one Python, one copy of the libraries);
    each keeps its own worker: its own timeout, stuck guard, failure counters and logged kinds. The
    process is restarted as a whole, so restarting one channel restarts all of them.
    """

    def __init__(self, channels: list[RewardChannelConfig], threads: int = 1) -> None:
        self.workers = {channel.name: RewardWorker(channel, threads) for channel in channels}

    def score(self, names: list[str], prompts: PromptBatch, rollouts: RolloutView | RolloutBatch,
              rows: np.ndarray | None = None) -> dict[str, ChannelScores]:
        """Score the named channels on the same batch (or ``rows`` of it), one after another: name -> scores.

        Each is ``RewardWorker.score`` of that channel, so each call answers within the channel's
        ``timeout_s`` and the whole within the sum of theirs.
        """
        return {name: self.workers[name].score(prompts, rollouts, rows) for name in names}

    def reward_maps(self, name: str, batch: ScoringInput) -> list[tuple[np.ndarray, np.ndarray] | None]:
        """``RewardWorker.reward_maps`` of the named channel."""
        return self.workers[name].reward_maps(batch)
