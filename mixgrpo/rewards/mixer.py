"""Multi-reward advantages: rewards ``(P, m, R)`` + weights ``(R,)`` -> advantages ``(P, m)``.

``P`` groups (prompts), ``m`` completions per group, ``R`` reward channels.
A reward of NaN is *null*: the channel has no value for that completion (it
failed, timed out or does not apply). ``+inf``/``-inf`` are treated as null
too and counted in the diagnostics. ``valid`` ``(P, m)`` marks the real
completions of ragged groups; the others are left out of every statistic and
get advantage 0.

Modes (:data:`ADVANTAGE_MODES`):

- ``"na"`` Normalize-then-Aggregate, the decoupled estimator of the paper
  "Decoupling and Conditioning Reshape Influence Allocation and the
  Gradient-Noise Floor in Multi-Reward GRPO" (= MO-GRPO / GDPO decoupled
  normalisation): z-score every channel inside its group over the non-null
  entries, then ``A_j = (W / sum_{r in S_j} w_r) * sum_{r in S_j} w_r z_jr``
  with ``S_j`` the channels present for completion ``j`` and ``W = sum(w)``.
- ``"an"`` Aggregate-then-Normalize, classic GRPO (Shao et al. 2024,
  "DeepSeekMath", arXiv:2402.03300, sec. 4.1.2: ``A_j = (s_j - mean(s)) /
  std(s)``) applied to ``s_j = (W / sum_{S_j} w_r) * sum_{S_j} w_r r_jr``.
- ``"conditioned"`` channel 0 gates the others (Prop. 4 of the paper, the
  ``zero_fill`` rule of the reference package ``multireward-grpo``):
  ``r_jb <- r_jb * 1[r_j0 >= gate_threshold]`` for ``b >= 1``, then ``"na"``.
  When the gate is null the gated channels of that completion become null as
  well: nobody can tell whether it passed.
- ``"single"`` channel 0 alone, group z-scored (the single-reward baseline).

A z-score is ``(r - mean) / (std + eps)`` with the population std (ddof=0).
A (group, channel) with fewer than 2 present entries, or with
``std <= ZERO_STD_RTOL * |mean|`` (constant up to float rounding of the mean),
is *degenerate* and contributes 0. With no nulls, no ``valid`` and the default
options, ``na``/``an``/``single`` reproduce
``multireward_grpo.advantage.compute_advantage_batch`` (v0.1.1) up to float
rounding, whenever no group is constant up to rounding noise.

Options: ``scope="batch"`` takes the statistics over the whole batch instead
of each group (the batch-level normalisation of CLIP-GRPO, for tiny groups);
``std_normalize=False`` only centres (Dr.GRPO, Liu et al. 2025,
"Understanding R1-Zero-Like Training: A Critical Perspective",
arXiv:2503.20783); ``clip=c`` clips each normalised channel (NA) or the
normalised scalar (AN, single) to ``[-c, c]``; ``post_normalize=True`` z-scores
the aggregated advantages once more over the batch (GDPO-style).

The numeric path is vectorised over groups and completions and works on a
channel-major ``(P, R, m)`` copy: reductions over the contiguous last axis
(``einsum``) and broadcasts along it are several times faster than over the
middle axis of ``(P, m, R)``; one ``isfinite``, one zero-fill, centring in
place, aggregation as a batched ``matmul``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from mixgrpo.rewards.mixer_diagnostics import (
    DiagnosticInputs,
    MixDiagnostics,
    diagnose,
    validated_head_names,
    validated_thresholds,
)

SCOPES = ("group", "batch")
ZERO_STD_RTOL = 1e-12
"""A channel whose std is at most this fraction of ``|mean|`` counts as constant."""
_OVERFLOW_MESSAGE = "reward magnitudes overflow float64 (keep |r| well below 1e150); rescale"


@dataclass(frozen=True)
class MixOptions:
    """Normalisation options shared by every mode (see :func:`compute_advantages`)."""

    scope: str = "group"
    std_normalize: bool = True
    clip: float | None = None
    eps: float = 1e-8
    gate_threshold: float = 1.0


@dataclass(frozen=True, eq=False)
class MixResult:
    """Advantages ``(P, m)`` float64 and, computed on first access, their diagnostics.

    The diagnostics read the ``rewards`` array passed to
    :func:`compute_advantages` (no copy is taken, to keep the hot path fast):
    do not modify it in place before reading ``.diagnostics``.
    """

    advantages: np.ndarray
    _inputs: DiagnosticInputs = field(repr=False)

    @functools.cached_property
    def diagnostics(self) -> MixDiagnostics:
        """Per-head statistics and per-completion review flags (lazy, cached)."""
        inputs = self._inputs
        filled, present = _channel_major(inputs.rewards, inputs.valid)
        normalised, normalised_present = filled.copy(), present.copy()
        if inputs.mode == "conditioned":
            _gate(normalised, normalised_present, inputs.gate_threshold)
        degenerate = _degenerate_per_group(normalised, normalised_present)
        return diagnose(inputs, filled, present, degenerate)


def compute_advantages(
    rewards: np.ndarray,
    weights: np.ndarray,
    *,
    mode: str = "na",
    valid: np.ndarray | None = None,
    scope: str = "group",
    std_normalize: bool = True,
    clip: float | None = None,
    post_normalize: bool = False,
    eps: float = 1e-8,
    head_names: Sequence[str] | None = None,
    weak_thresholds: np.ndarray | None = None,
    gate_threshold: float = 1.0,
) -> MixResult:
    """Advantages of every completion from its multi-channel rewards.

    Args:
        rewards: ``(P, m, R)`` float; NaN = null, +/-inf = null (counted).
        weights: ``(R,)`` finite, non-negative, not all zero.
        mode: one of :data:`ADVANTAGE_MODES` (see the module docstring).
        valid: ``(P, m)`` bool or None (all valid); invalid completions are
            excluded from every statistic and get advantage 0.
        scope: ``"group"`` (per-group statistics) or ``"batch"``.
        std_normalize: divide by ``std + eps``; False = centring only (Dr.GRPO).
        clip: clip the normalised per-channel values (NA, conditioned) or the
            normalised scalar (AN, single) to ``[-clip, clip]``; None = no clip.
        post_normalize: z-score the advantages over the batch's valid
            completions that have a signal (always divides by ``std + eps``).
        eps: added to every std.
        head_names: ``R`` names for the diagnostics (default ``h0, h1, ...``).
        weak_thresholds: ``(R,)``; a present reward below it makes that head
            weak for the diagnostics; NaN or -inf = never weak (the default).
        gate_threshold: ``"conditioned"`` only; channel 0 passes when ``>=`` it.

    Returns:
        :class:`MixResult`; ``.advantages`` ``(P, m)`` float64, always finite.
        Completions without signal (no present channel of positive weight; for
        ``"single"``, channel 0 null) get 0 and are flagged ``no_signal``. One
        whose every channel is null is, besides, left out of the policy loss
        by the step loop (``orchestrator.step.loss_rows``), not just given 0.

    Raises:
        ValueError: on malformed inputs or options, or when the reward
            magnitudes overflow float64 (squares of |r| > ~1e154).
    """
    rewards, weights, valid = _validated_arrays(rewards, weights, valid)
    _check_options(mode, scope, clip, eps, gate_threshold)
    num_heads = rewards.shape[2]
    names = validated_head_names(head_names, num_heads)
    thresholds = validated_thresholds(weak_thresholds, num_heads)
    options = MixOptions(scope, std_normalize, clip, eps, gate_threshold)
    filled, present = _channel_major(rewards, valid)
    advantages, signal = _MODE_FUNCTIONS[mode](filled, present, weights, options)
    if post_normalize:
        advantages = _post_normalise(advantages, signal, eps)
    if not np.isfinite(advantages).all():
        raise ValueError(_OVERFLOW_MESSAGE)
    inputs = DiagnosticInputs(rewards, valid, mode, gate_threshold, names, thresholds, signal)
    return MixResult(advantages, inputs)


def _validated_arrays(
    rewards: np.ndarray, weights: np.ndarray, valid: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """float64 rewards ``(P, m, R)``, weights ``(R,)`` and bool valid ``(P, m)`` or None."""
    rewards = np.asarray(rewards, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if rewards.ndim != 3:
        raise ValueError(f"rewards must be 3-D (P, m, R); got shape {rewards.shape}")
    if rewards.shape[1] < 1:
        raise ValueError(f"each group needs m >= 1 completions; got m={rewards.shape[1]}")
    if weights.ndim != 1 or weights.shape[0] != rewards.shape[2]:
        raise ValueError(
            f"weights must be 1-D with R={rewards.shape[2]} entries; got shape {weights.shape}"
        )
    if not np.isfinite(weights).all():
        raise ValueError(f"weights must be finite; got {weights}")
    if (weights < 0).any():
        raise ValueError(f"weights must be non-negative; got {weights}")
    with np.errstate(over="ignore"):
        total_weight = weights.sum()
    if not (total_weight > 0 and np.isfinite(total_weight)):
        raise ValueError(f"weights must have a positive, finite sum; got {weights}")
    if valid is not None:
        valid = np.asarray(valid).astype(bool, copy=False)
        if valid.shape != rewards.shape[:2]:
            raise ValueError(f"valid must have shape {rewards.shape[:2]}; got {valid.shape}")
    return rewards, weights, valid


def _check_options(mode: str, scope: str, clip: float | None, eps: float, gate: float) -> None:
    """Raise ValueError for an unknown mode/scope or an out-of-range number."""
    if mode not in _MODE_FUNCTIONS:
        raise ValueError(f"mode must be one of {ADVANTAGE_MODES}; got {mode!r}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}; got {scope!r}")
    if clip is not None and not clip > 0:
        raise ValueError(f"clip must be > 0 or None; got {clip}")
    if not (np.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be finite and >= 0; got {eps}")
    if np.isnan(gate):
        raise ValueError("gate_threshold must not be NaN")


def _channel_major(rewards: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """New channel-major ``(P, R, m)`` arrays: zero-filled rewards and the bool presence mask.

    An entry is present when it is finite and its completion is valid; absent
    entries hold 0 so that masked sums need no NaN handling. The transposed
    copy is the only full-size float array a call allocates: everything else
    works in place on it, because fresh multi-megabyte temporaries cost more in
    page faults than the arithmetic on them.
    """
    filled = rewards.transpose(0, 2, 1).copy(order="C")  # always a copy: filled in place below
    present = np.isfinite(filled)
    if valid is not None:
        present &= valid[:, None, :]
    np.putmask(filled, ~present, 0.0)
    return filled, present


def _moments(values: np.ndarray, present: np.ndarray, scope: str) -> tuple[np.ndarray, ...]:
    """Centre ``values`` in place; return ``(count, mean, std)``.

    Args:
        values: ``(P, K, m)`` float64, 0 at absent entries; on return
            ``values - mean`` at present entries and still 0 elsewhere.
        present: ``(P, K, m)`` bool.
        scope: ``"group"`` -> statistics ``(P, K, 1)``; ``"batch"`` -> ``(1, K, 1)``.

    Two passes (mean, then centred squares) so that a constant channel has a
    std of float-rounding size, which :data:`ZERO_STD_RTOL` recognises.
    """
    spec = "pkm->pk" if scope == "group" else "pkm->k"
    shape = (-1, values.shape[1], 1)
    count = np.einsum(spec, present, dtype=np.float64).reshape(shape)
    divisor = np.maximum(count, 1.0)
    mean = np.einsum(spec, values).reshape(shape) / divisor
    values -= mean
    np.multiply(values, present, out=values)
    squares = np.einsum(spec.replace("pkm", "pkm,pkm"), values, values).reshape(shape)
    return count, mean, np.sqrt(squares / divisor)


def _is_degenerate(count: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """True where a channel carries no signal: < 2 entries or constant up to rounding."""
    return (count < 2) | (std <= ZERO_STD_RTOL * np.abs(mean))


def _standardise(values: np.ndarray, present: np.ndarray, options: MixOptions) -> np.ndarray:
    """Centre ``values`` ``(P, K, m)`` in place; return the scale ``(P|1, K, 1)`` to z-score them.

    ``values * scale`` is the z-score (or the centred value without
    ``std_normalize``) at present entries, 0 at absent ones and 0 for
    degenerate (group, channel) pairs.
    """
    count, mean, std = _moments(values, present, options.scope)
    if not np.isfinite(std).all():  # squares overflowed: the z-scores would silently be 0
        raise ValueError(_OVERFLOW_MESSAGE)
    signal = ~_is_degenerate(count, mean, std)
    if not options.std_normalize:
        return signal.astype(np.float64)
    return np.divide(1.0, std + options.eps, out=np.zeros_like(std), where=signal)


def _degenerate_per_group(values: np.ndarray, present: np.ndarray) -> np.ndarray:
    """``(P, K)`` bool: degenerate (group, channel) pairs; centres ``values`` in place."""
    count, mean, std = _moments(values, present, "group")
    return _is_degenerate(count, mean, std)[:, :, 0]


def _weight_present(weights: np.ndarray, present: np.ndarray) -> np.ndarray:
    """``(P, m)``: total weight of the channels present for each completion.

    ``einsum`` casts the bool mask in buffered chunks; ``matmul`` would first
    allocate a full float copy of it.
    """
    return np.einsum("k,pkm->pm", weights, present)


def _weighted_mean(
    weighted_sum: np.ndarray, weight_present: np.ndarray, total_weight: float
) -> tuple[np.ndarray, np.ndarray]:
    """``total_weight * weighted_sum / weight_present`` (in place) and the mask where it is > 0.

    ``weighted_sum`` ``(P, m)`` is already 0 where ``weight_present`` is 0 (no
    present channel has a positive weight there), so it is left as is there.
    Dividing first keeps a weighted average of bounded terms, so a tiny
    ``weight_present`` cannot overflow.
    """
    signal = weight_present > 0
    np.divide(weighted_sum, weight_present, out=weighted_sum, where=signal)
    weighted_sum *= total_weight
    return weighted_sum, signal


def _na_advantages(
    filled: np.ndarray, present: np.ndarray, weights: np.ndarray, options: MixOptions
) -> tuple[np.ndarray, np.ndarray]:
    """Normalize-then-Aggregate: ``(P, m)`` advantages and ``(P, m)`` signal mask.

    ``filled`` ``(P, R, m)`` (zero-filled rewards) is consumed in place.
    """
    scale = _standardise(filled, present, options)
    if options.clip is None:
        coefficients = (scale * weights[:, None]).transpose(0, 2, 1)  # (P|1, 1, R)
        weighted_sum = np.matmul(coefficients, filled)[:, 0, :]
    else:
        filled *= scale
        np.clip(filled, -options.clip, options.clip, out=filled)
        weighted_sum = np.matmul(weights, filled)
    return _weighted_mean(weighted_sum, _weight_present(weights, present), float(weights.sum()))


def _scalar_advantages(
    scalar: np.ndarray, signal: np.ndarray, options: MixOptions
) -> np.ndarray:
    """Z-score (or centre) a per-completion scalar ``(P, m)`` over its signal entries."""
    values = scalar[:, None, :].copy()
    scale = _standardise(values, signal[:, None, :], options)
    values *= scale
    if options.clip is not None:
        np.clip(values, -options.clip, options.clip, out=values)
    return values[:, 0, :]


def _an_advantages(
    filled: np.ndarray, present: np.ndarray, weights: np.ndarray, options: MixOptions
) -> tuple[np.ndarray, np.ndarray]:
    """Aggregate-then-Normalize (classic GRPO on the renormalised weighted sum)."""
    weight_present = _weight_present(weights, present)
    total_weight = float(weights.sum())
    scalar, signal = _weighted_mean(np.matmul(weights, filled), weight_present, total_weight)
    return _scalar_advantages(scalar, signal, options), signal


def _single_advantages(
    filled: np.ndarray, present: np.ndarray, weights: np.ndarray, options: MixOptions
) -> tuple[np.ndarray, np.ndarray]:
    """Channel 0 alone, normalised; ``weights`` is unused (kept for the registry signature)."""
    signal = present[:, 0, :]
    return _scalar_advantages(filled[:, 0, :], signal, options), signal


def _gate(filled: np.ndarray, present: np.ndarray, threshold: float) -> None:
    """Prop. 4 zero-fill gating in place on ``(P, R, m)``: channels ``1..R-1`` times
    ``1[channel 0 >= threshold]``.

    A null gate makes the gated channels null (present -> False, value 0).
    """
    gate_present = present[:, 0, :]
    passed = gate_present & (filled[:, 0, :] >= threshold)
    filled[:, 1:, :] *= passed[:, None, :]
    present[:, 1:, :] &= gate_present[:, None, :]


def _conditioned_advantages(
    filled: np.ndarray, present: np.ndarray, weights: np.ndarray, options: MixOptions
) -> tuple[np.ndarray, np.ndarray]:
    """Channel 0 gates the others (zero-fill), then Normalize-then-Aggregate."""
    _gate(filled, present, options.gate_threshold)
    return _na_advantages(filled, present, weights, options)


def _post_normalise(advantages: np.ndarray, signal: np.ndarray, eps: float) -> np.ndarray:
    """GDPO-style batch z-score of the aggregated advantages over the signal completions."""
    options = MixOptions(scope="batch", std_normalize=True, clip=None, eps=eps)
    return _scalar_advantages(advantages, signal, options)


ModeFunction = Callable[
    [np.ndarray, np.ndarray, np.ndarray, MixOptions], tuple[np.ndarray, np.ndarray]
]
_MODE_FUNCTIONS: dict[str, ModeFunction] = {
    "na": _na_advantages,
    "an": _an_advantages,
    "conditioned": _conditioned_advantages,
    "single": _single_advantages,
}
ADVANTAGE_MODES = tuple(_MODE_FUNCTIONS)
"""``("na", "an", "conditioned", "single")``."""
