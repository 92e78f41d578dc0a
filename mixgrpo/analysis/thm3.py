"""Theorem 3 of multi-reward GRPO: the gradient-noise floor of the group estimator.

Paper: "Decoupling and Conditioning Reshape Influence Allocation and the
Gradient-Noise Floor in Multi-Reward GRPO" (Theorem 3); reference
implementation: the ``multireward-grpo`` package 0.1.1,
``multireward_grpo/analysis.py``.

Shapes: ``P`` prompts, ``K`` groups (seeds) per prompt, ``m`` rollouts per
group, ``R`` reward channels, ``D`` score dimensions. For one group with mixer
advantages ``A`` ``(m,)`` and per-rollout scores ``s_j = grad log pi(y_j)``
``(D,)``, the group gradient estimator is::

    g_hat = (1/m) sum_j A_j s_j                                        (D,)

Theorem 3 (NA, ``A_j = sum_l w_l z_jl`` with ``z`` the within-group z-scores)::

    E || g_hat - g ||^2  ~=  (tau^2 / m) w^T C w

with ``tau^2 = E || s - E s ||^2`` the score variance and ``C`` the
within-group reward correlation. For AN the same law is the one-channel case
on the scalarised reward ``w . r``, whose z-score has unit variance: the
prediction is ``tau^2 / m`` times the share of non-constant groups.

Two harnesses:

- :func:`analyze_random_scores` reproduces the package's ``analyze`` on a
  reward tensor ``(P, K, m, R)``: scalar scores ``g ~ N(0, 1)`` (``tau^2 = 1``)
  drawn as ``default_rng(score_seed).standard_normal((P, K, m))``, realized
  MSE ``Var_k(g_hat)`` (ddof 0), prediction ``(1/m) w^T mean_k(C_hat) w``.
  The scores are independent of the rewards, so the law holds almost by
  construction there.
- :func:`analyze_real_scores` takes the real scores of sampled rollouts
  (i.i.d. within a prompt) and cuts them into groups of each size ``m``: the
  realized MSE is against the true gradient when it is known (the bandit of
  :mod:`mixgrpo.analysis.bandit`), else the variance of ``g_hat`` across
  groups (ddof 1); ``tau^2`` is measured on the same samples.

Nulls (NaN rewards) follow the mixer for the advantages; in ``C_hat`` and in
the influence a null counts as a centred value of 0 (the mixer's zero fill).
Without nulls every number equals the package's up to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mixgrpo.rewards.mixer import compute_advantages

PACKAGE_EPS = 1e-8
"""The package's variance / std floor (``delta`` in the paper)."""
ESTIMATORS = ("na", "an")


def group_advantages(rewards: np.ndarray, weights: np.ndarray, mode: str) -> np.ndarray:
    """Mixer advantages ``(..., m)`` of groups of rewards ``(..., m, R)`` (NaN = null), one call."""
    *lead, m, channels = rewards.shape
    flat = np.ascontiguousarray(rewards, dtype=np.float64).reshape(-1, m, channels)
    return compute_advantages(flat, weights, mode=mode).advantages.reshape(*lead, m)


def _centred(rewards: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rewards ``(..., m, R)`` centred per group and channel, nulls 0; and the present counts ``(..., 1, R)``."""
    present = np.isfinite(rewards)
    filled = np.where(present, rewards, 0.0)
    count = present.sum(axis=-2, keepdims=True)
    mean = filled.sum(axis=-2, keepdims=True) / np.maximum(count, 1)
    return np.where(present, filled - mean, 0.0), count


def sample_correlation(rewards: np.ndarray, eps: float = PACKAGE_EPS) -> np.ndarray:
    """Within-group reward correlation ``C_hat`` ``(..., R, R)`` of rewards ``(..., m, R)``.

    ``cov / outer(sd, sd)`` with the population covariance and
    ``sd = sqrt(diag(cov) + eps)`` (the package's ``sample_correlation``); a
    constant channel has a zero row and column.
    """
    centred, _ = _centred(np.asarray(rewards, dtype=np.float64))
    cov = np.einsum("...mr,...ms->...rs", centred, centred) / rewards.shape[-2]
    sd = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1) + eps)
    return cov / (sd[..., :, None] * sd[..., None, :])


def channel_influence(rewards: np.ndarray, advantages: np.ndarray, eps: float = PACKAGE_EPS) -> np.ndarray:
    """Influence ``(R,)`` of each channel on the advantage: ``Cov_j(A_j, z_jl)`` averaged over groups.

    Args:
        rewards: ``(..., m, R)``, NaN = null (a null is ``z = 0``).
        advantages: ``(..., m)`` advantages of the same groups.
        eps: added to each within-group std (``z = (r - mean) / (std + eps)``).

    The package's ``influence_per_channel``: for NA without correlation it is
    ``w_l`` (weight-proportional), for AN ``w_l sigma_l / sigma(w . r)``.
    """
    centred, count = _centred(np.asarray(rewards, dtype=np.float64))
    std = np.sqrt((centred**2).sum(axis=-2, keepdims=True) / np.maximum(count, 1))
    z = centred / (std + eps)
    z -= z.mean(axis=-2, keepdims=True)
    a = advantages - advantages.mean(axis=-1, keepdims=True)
    covariance = np.einsum("...m,...mr->...r", a, z) / rewards.shape[-2]
    return covariance.reshape(-1, rewards.shape[-1]).mean(axis=0)


@dataclass(frozen=True)
class RandomScoreAnalysis:
    """The package's ``Thm3Result`` numbers (same names), from :func:`analyze_random_scores`."""

    realized_an: np.ndarray
    """(P,) ``Var_k(g_hat)`` with AN advantages."""
    realized_na: np.ndarray
    """(P,) ``Var_k(g_hat)`` with NA advantages."""
    predicted_per_prompt: np.ndarray
    """(P,) ``(1/m) w^T mean_k(C_hat_pk) w``."""
    predicted_pooled: float
    """``(1/m) w^T mean_{p,k}(C_hat_pk) w``."""
    influence_an: np.ndarray
    """(R,) :func:`channel_influence` of AN."""
    influence_na: np.ndarray
    """(R,) :func:`channel_influence` of NA."""
    pooled_C: np.ndarray
    """(R, R) ``mean_{p,k}(C_hat_pk)``."""


def analyze_random_scores(rewards: np.ndarray, weights: np.ndarray, score_seed: int = 0) -> RandomScoreAnalysis:
    """The package's Theorem-3 analysis of a reward tensor ``(P, K, m, R)`` under N(0, 1) scores.

    Same numbers as ``multireward_grpo.analysis.analyze(rewards, weights, score_seed)``
    (no nulls, no group constant up to rounding), vectorised over prompts and seeds.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if rewards.ndim != 4:
        raise ValueError(f"rewards must be (P, K, m, R); got shape {rewards.shape}")
    num_prompts, num_seeds, m, channels = rewards.shape
    if weights.shape != (channels,):
        raise ValueError(f"weights must have shape ({channels},); got {weights.shape}")
    scores = np.random.default_rng(score_seed).standard_normal((num_prompts, num_seeds, m))
    advantages = {mode: group_advantages(rewards, weights, mode) for mode in ESTIMATORS}
    realized = {mode: (a * scores).mean(axis=-1).var(axis=1) for mode, a in advantages.items()}
    correlation = sample_correlation(rewards)  # (P, K, R, R)
    pooled = correlation.mean(axis=(0, 1))
    return RandomScoreAnalysis(
        realized_an=realized["an"],
        realized_na=realized["na"],
        predicted_per_prompt=np.einsum("r,prs,s->p", weights, correlation.mean(axis=1), weights) / m,
        predicted_pooled=float(weights @ pooled @ weights / m),
        influence_an=channel_influence(rewards, advantages["an"]),
        influence_na=channel_influence(rewards, advantages["na"]),
        pooled_C=pooled,
    )


@dataclass(frozen=True)
class ScoreSample:
    """Rollouts of P prompts with their rewards and real scores, i.i.d. within each prompt."""

    rewards: np.ndarray
    """(P, N, R) float64, NaN = null."""
    scores: np.ndarray
    """(P, N, D) score ``grad log pi(y)`` of each rollout (possibly randomly projected)."""
    true_gradients: dict[str, np.ndarray] | None = None
    """Estimator -> (P, D) population gradient it estimates (None: unknown, use the spread across groups)."""


@dataclass(frozen=True)
class EstimatorCheck:
    """Realized against predicted MSE of one estimator at one group size, per prompt."""

    measured: np.ndarray
    """(P,) mean over groups of ``||g_hat - g||^2`` (g = truth, or the mean over groups, ddof 1)."""
    measured_se: np.ndarray
    """(P,) standard error of ``measured`` over groups."""
    predicted: np.ndarray
    """(P,) ``tau_hat^2 / m * second_moment`` (NA: ``w^T C_hat w``; AN: share of non-constant groups)."""
    coupled: np.ndarray
    """(P,) ``(1/m) mean_j(A_j^2 ||s_j - s_bar||^2)``: the prediction without assuming A and s independent."""
    bias_sq: np.ndarray | None
    """(P,) ``||mean_groups(g_hat) - g||^2`` when the truth is known, else None."""

    @property
    def ratio(self) -> float:
        """Measured over predicted MSE, each averaged over prompts."""
        return float(self.measured.mean() / self.predicted.mean())


@dataclass(frozen=True)
class GroupSizeCheck:
    """Everything measured at one group size ``m``."""

    m: int
    groups: int
    """Groups per prompt (disjoint, ``N // m``)."""
    score_variance: np.ndarray
    """(P,) measured ``tau_hat^2``."""
    correlation: np.ndarray
    """(P, R, R) ``C_hat`` averaged over groups."""
    estimators: dict[str, EstimatorCheck]


def score_variance(scores: np.ndarray) -> np.ndarray:
    """``tau_hat^2`` ``(P,)``: trace of the sample covariance (ddof 1) of scores ``(P, N, D)``."""
    centred = scores - scores.mean(axis=1, keepdims=True)
    return np.einsum("pnd,pnd->p", centred, centred) / (scores.shape[1] - 1)


def check_group_size(sample: ScoreSample, weights: np.ndarray, m: int, tau2: np.ndarray) -> GroupSizeCheck:
    """Realized and predicted MSE of NA and AN for disjoint groups of ``m`` rollouts."""
    num_prompts, n, channels = sample.rewards.shape
    groups = n // m
    if groups < 2:
        raise ValueError(f"group size {m} leaves {groups} group(s) of {n} rollouts per prompt; need >= 2")
    rewards = sample.rewards[:, : groups * m].reshape(num_prompts, groups, m, channels)
    scores = sample.scores[:, : groups * m].reshape(num_prompts, groups, m, -1)
    centred_scores = scores - sample.scores.mean(axis=1)[:, None, None, :]
    score_norms = np.einsum("pgmd,pgmd->pgm", centred_scores, centred_scores)
    correlation = sample_correlation(rewards).mean(axis=1)
    checks = {}
    for mode in ESTIMATORS:
        advantages = group_advantages(rewards, weights, mode)
        estimates = np.einsum("pgm,pgmd->pgd", advantages, scores) / m  # (P, G, D)
        if sample.true_gradients is not None:
            truth = sample.true_gradients[mode][:, None, :]
            squared = ((estimates - truth) ** 2).sum(axis=-1)
            bias_sq = ((estimates.mean(axis=1) - truth[:, 0]) ** 2).sum(axis=-1)
        else:
            centred = estimates - estimates.mean(axis=1, keepdims=True)
            squared = (centred**2).sum(axis=-1) * groups / (groups - 1)
            bias_sq = None
        if mode == "na":
            moment = np.einsum("r,prs,s->p", weights, correlation, weights)
        else:
            moment = (advantages**2).mean(axis=(1, 2))
        checks[mode] = EstimatorCheck(
            measured=squared.mean(axis=1),
            measured_se=squared.std(axis=1, ddof=1) / np.sqrt(groups),
            predicted=tau2 * moment / m,
            coupled=(advantages**2 * score_norms).mean(axis=(1, 2)) / m,
            bias_sq=bias_sq,
        )
    return GroupSizeCheck(m, groups, tau2, correlation, checks)


@dataclass(frozen=True)
class RealScoreAnalysis:
    """The Theorem-3 check with real scores, at several group sizes."""

    checks: list[GroupSizeCheck]

    def slope(self, mode: str) -> float:
        """Fitted slope of log(measured MSE, mean over prompts) against log m (the law says -1)."""
        ms = np.log([c.m for c in self.checks])
        mse = np.log([c.estimators[mode].measured.mean() for c in self.checks])
        return float(np.polyfit(ms, mse, 1)[0]) if len(ms) >= 2 else float("nan")


def analyze_real_scores(sample: ScoreSample, weights: np.ndarray, group_sizes: list[int]) -> RealScoreAnalysis:
    """Theorem 3 with real scores: realized vs predicted MSE of NA and AN per group size."""
    weights = np.asarray(weights, dtype=np.float64)
    if sample.rewards.shape[:2] != sample.scores.shape[:2]:
        raise ValueError(f"rewards {sample.rewards.shape} and scores {sample.scores.shape} disagree on (P, N)")
    if weights.shape != (sample.rewards.shape[2],):
        raise ValueError(f"weights must have shape ({sample.rewards.shape[2]},); got {weights.shape}")
    tau2 = score_variance(sample.scores)
    return RealScoreAnalysis([check_group_size(sample, weights, m, tau2) for m in sorted(group_sizes)])
