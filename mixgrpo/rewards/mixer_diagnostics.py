"""Diagnostics of one mixer call: per-head statistics and per-completion review flags.

Computed lazily by :attr:`mixgrpo.rewards.mixer.MixResult.diagnostics`, so the
training hot path pays nothing for them. Every array is ready to become a
Parquet column (per head: length ``R``; per completion: ``(P, m)`` or
``(P, m, R)``, flattened by the writer).

Statistics are taken over the *valid* completions on the rewards as the
channels reported them (before any gating); nulls include ``+/-inf``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

NO_SIGNAL_REASON = "no_signal"


@dataclass(frozen=True, eq=False)
class DiagnosticInputs:
    """What a mixer call keeps for its lazy diagnostics.

    Attributes:
        rewards: ``(P, m, R)`` float64 rewards as passed (NaN/inf = null).
        valid: ``(P, m)`` bool, or None when every completion is valid.
        mode: the advantage mode used.
        gate_threshold: the ``"conditioned"`` gate threshold.
        head_names: ``R`` names.
        weak_thresholds: ``(R,)`` float64; reward < threshold = weak head.
        signal: ``(P, m)`` bool, completions whose advantage carries a signal.
    """

    rewards: np.ndarray
    valid: np.ndarray | None
    mode: str
    gate_threshold: float
    head_names: tuple[str, ...]
    weak_thresholds: np.ndarray
    signal: np.ndarray


@dataclass(frozen=True, eq=False)
class MixDiagnostics:
    """Per-head and per-completion diagnostics of one mixer call.

    Attributes:
        head_names: ``R`` names.
        head_std: ``(R,)`` population std over present entries (NaN when none): the unit of
            a weak head's shortfall. (Means, null rates and invalid counts per head are the
            step metrics ``reward/<head>``, ``null_rate/<head>``, ``failures/<head>/*``.)
        head_zero_var_group_rate: ``(R,)`` fraction of groups where the channel,
            as normalised (gated in ``"conditioned"`` mode), had < 2 present
            entries or zero variance; per group whatever the scope.
        weak_heads: ``(P, m, R)`` bool, present and below its weak threshold.
        review_head: ``(P, m)`` int64, the weak head with the largest shortfall
            ``(threshold - reward) / head_std`` (raw shortfall when the std is
            0 or NaN); -1 when no head is weak.
        review_reason: ``(P, m)`` object array of str: ``""`` when nothing to
            review, else e.g. ``"format=0.12<0.50"``, ``"no_signal"``, or both
            joined by ``"; "``.
        no_signal: ``(P, m)`` bool, valid completions whose advantage was set
            to 0 for lack of any present channel of positive weight.
    """

    head_names: tuple[str, ...]
    head_std: np.ndarray
    head_zero_var_group_rate: np.ndarray
    weak_heads: np.ndarray
    review_head: np.ndarray
    review_reason: np.ndarray
    no_signal: np.ndarray

def validated_head_names(head_names: Sequence[str] | None, num_heads: int) -> tuple[str, ...]:
    """``R`` head names; ``h0, h1, ...`` by default."""
    if head_names is None:
        return tuple(f"h{index}" for index in range(num_heads))
    names = tuple(str(name) for name in head_names)
    if len(names) != num_heads:
        raise ValueError(f"head_names must have R={num_heads} entries; got {len(names)}")
    return names


def validated_thresholds(thresholds: np.ndarray | None, num_heads: int) -> np.ndarray:
    """``(R,)`` weak-head thresholds; ``-inf`` (never weak) by default."""
    if thresholds is None:
        return np.full(num_heads, -np.inf)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.shape != (num_heads,):
        raise ValueError(f"weak_thresholds must have shape ({num_heads},); got {thresholds.shape}")
    return thresholds


def diagnose(
    inputs: DiagnosticInputs, filled: np.ndarray, present: np.ndarray, degenerate: np.ndarray
) -> MixDiagnostics:
    """Build :class:`MixDiagnostics`.

    Args:
        inputs: what the mixer call kept.
        filled: ``(P, R, m)`` channel-major raw rewards, 0 where absent.
        present: ``(P, R, m)`` bool, finite reward of a valid completion.
        degenerate: ``(P, R)`` bool, per-group degenerate channels as normalised.
    """
    valid = _valid_or_all(inputs.valid, inputs.rewards.shape[:2])
    std = _head_std(filled, present)
    thresholds = inputs.weak_thresholds[:, None]
    weak = present & (filled < thresholds)
    shortfall_unit = np.where(np.isfinite(std) & (std > 0), std, 1.0)[:, None]
    shortfall = np.where(weak, (thresholds - filled) / shortfall_unit, -np.inf)
    review_head = np.where(weak.any(axis=1), shortfall.argmax(axis=1), -1)
    no_signal = valid & ~inputs.signal
    return MixDiagnostics(
        head_names=inputs.head_names,
        head_std=std,
        head_zero_var_group_rate=_safe_ratio(degenerate.sum(axis=0), degenerate.shape[0]),
        weak_heads=np.ascontiguousarray(weak.transpose(0, 2, 1)),
        review_head=review_head,
        review_reason=_review_reasons(inputs, review_head, no_signal),
        no_signal=no_signal,
    )


def _valid_or_all(valid: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """``(P, m)`` bool validity, all True when ``valid`` is None."""
    return np.ones(shape, dtype=bool) if valid is None else valid


def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray | int) -> np.ndarray:
    """``numerator / denominator`` as float64, NaN where the denominator is 0."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.broadcast_to(np.asarray(denominator, dtype=np.float64), numerator.shape)
    out = np.full(numerator.shape, np.nan)
    return np.divide(numerator, denominator, out=out, where=denominator > 0)


def _head_std(filled: np.ndarray, present: np.ndarray) -> np.ndarray:
    """``(R,)`` population std of each head over its present entries (NaN if none).

    ``filled`` and ``present`` are channel-major ``(P, R, m)``.
    """
    count = np.einsum("pkm->k", present, dtype=np.float64)
    mean = _safe_ratio(np.einsum("pkm->k", filled), count)
    centred = (filled - np.nan_to_num(mean)[:, None]) * present
    return np.sqrt(_safe_ratio(np.einsum("pkm,pkm->k", centred, centred), count))


def _review_reasons(
    inputs: DiagnosticInputs, review_head: np.ndarray, no_signal: np.ndarray
) -> np.ndarray:
    """``(P, m)`` object array of reason strings, built only for flagged completions."""
    reasons = np.full(review_head.shape, "", dtype=object)
    for group, completion in zip(*np.nonzero((review_head >= 0) | no_signal)):
        parts = []
        head = review_head[group, completion]
        if head >= 0:
            reward = inputs.rewards[group, completion, head]
            threshold = inputs.weak_thresholds[head]
            parts.append(f"{inputs.head_names[head]}={reward:.2f}<{threshold:.2f}")
        if no_signal[group, completion]:
            parts.append(NO_SIGNAL_REASON)
        reasons[group, completion] = "; ".join(parts)
    return reasons
