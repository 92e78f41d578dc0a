"""GRPO policy loss: PPO-clip surrogate, KL to the reference, entropy bonus.

Pure torch; every function takes explicit tensors and documents their shapes
(B sequences, T token positions, V vocabulary entries).

Objective: DeepSeekMath GRPO (Shao et al. 2024, eq. 3) with the PPO clipped
surrogate (Schulman et al. 2017, eq. 7), optional clip-higher (DAPO, Yu et al.
2025), sequence-level importance ratios (GSPO, Zheng et al. 2025), the k1/k2/k3
KL estimators (Schulman 2020, "Approximating KL divergence"), Dr.GRPO's
constant-length aggregation (Liu et al. 2025) and off-policy corrections
(truncated IS, Yao et al. 2025; sequence masking; IcePop: actors/off_policy.py).

Which "old" log-probs the ratio uses:
  * ``proximal_logprobs`` (the learner's own numerics before this update) when
    given, else ``behaviour_logprobs`` (what the generator recorded).
  * With ``off_policy`` set (tis, seq_mask, icepop) and ``proximal_logprobs``
    given, the policy-gradient term of each token is multiplied by the constant
    weight of :mod:`mixgrpo.actors.off_policy` built on
    ``exp(proximal - behaviour)``: the tokens were sampled by the generator,
    whose numerics (e.g. vLLM) and adapter version (async) differ from the
    learner's, so the surrogate built on the proximal policy needs that
    correction. The KL and entropy terms are not reweighted (as in Yao et al. and verl).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Protocol, get_args

import torch
from torch import Tensor

from mixgrpo.actors.off_policy import OffPolicy, off_policy_weights

ImportanceLevel = Literal["token", "sequence"]
KlEstimator = Literal["k1", "k2", "k3"]
Aggregation = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]

# exp() of a log-ratio beyond this overflows float32/bf16 into inf and turns one
# wildly stale token into an inf/NaN loss; such tokens lose their gradient instead.
LOG_RATIO_LIMIT = 20.0


def _check_choice(name: str, value: str, choices: object) -> None:
    allowed = get_args(choices)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


class LossConfig(Protocol):
    """The settings :func:`grpo_loss` reads (Shao et al. 2024, eq. 3).

    Their one definition (names, defaults, bounds, docstrings) is
    ``mixgrpo.config.LossSettings``: this module must not import mixgrpo, so it
    states what it reads as a Protocol instead of keeping a second dataclass (two
    copies had drifted apart). Any object with these attributes works; values are
    validated where LossSettings is built, not here.
    """

    @property
    def eps_low(self) -> float:
        """PPO clip lower side: the ratio is clipped at 1 - eps_low (Schulman et al. 2017, eq. 7)."""

    @property
    def eps_high(self) -> float:
        """PPO clip upper side: 1 + eps_high; > eps_low is DAPO's clip-higher (Yu et al. 2025)."""

    @property
    def importance_level(self) -> ImportanceLevel:
        """"token": per-token ratios (PPO/GRPO); "sequence": GSPO length-normalised sequence ratio."""

    @property
    def kl_coef(self) -> float:
        """beta of the KL-to-reference penalty; 0 disables it (ref_logprobs may then be None)."""

    @property
    def kl_estimator(self) -> KlEstimator:
        """Per-token KL estimator (Schulman 2020): k1, k2 or k3."""

    @property
    def entropy_coef(self) -> float:
        """Entropy bonus: loss -= entropy_coef * entropy (entropy must then be given)."""

    @property
    def aggregation(self) -> Aggregation:
        """How masked token losses become a scalar; see :func:`aggregate_token_losses`."""

    @property
    def max_response_tokens(self) -> int | None:
        """Constant L of "seq-mean-token-sum-norm" (Dr.GRPO); None uses the micro-batch's T."""

    @property
    def off_policy(self) -> OffPolicy:
        """Generator/learner gap correction (tis, seq_mask, icepop; see actors/off_policy.py)."""

    @property
    def off_policy_cap(self) -> float:
        """C >= 1: the tis cap, or the band [1/C, C] of icepop and seq_mask."""

    @property
    def uses_proximal(self) -> bool:
        """True when the loss needs the learner's proximal log-probs (an off-policy correction is on)."""


@dataclass(frozen=True)
class LossInputs:
    """Per-token tensors of one micro-batch; every (B, T) tensor is aligned with ``logprobs``.

    ``behaviour_logprobs``, ``proximal_logprobs``, ``ref_logprobs`` and
    ``advantages`` are treated as constants (detached). Values at masked-out
    positions are ignored, even when they are NaN or -inf.
    """

    logprobs: Tensor
    """(B, T) log-prob of each sampled token under the current policy (requires grad)."""
    behaviour_logprobs: Tensor
    """(B, T) log-probs the generator recorded when sampling."""
    advantages: Tensor
    """(B,) one scalar advantage per sequence (from the mixer)."""
    response_mask: Tensor
    """(B, T) 1/True for response tokens that count, 0/False for padding and prompt."""
    ref_logprobs: Tensor | None = None
    """(B, T) reference policy (adapter disabled); needed when kl_coef > 0."""
    entropy: Tensor | None = None
    """(B, T) per-token entropy of the current policy; needed when entropy_coef > 0."""
    proximal_logprobs: Tensor | None = None
    """(B, T) learner's own log-probs of the same tokens before the update."""

    def __post_init__(self) -> None:
        if self.logprobs.dim() != 2 or self.logprobs.shape[0] < 1 or self.logprobs.shape[1] < 1:
            raise ValueError(f"logprobs must be (B, T) with B, T >= 1, got shape {tuple(self.logprobs.shape)}")
        batch_size, horizon = self.logprobs.shape
        for name in ("behaviour_logprobs", "response_mask", "ref_logprobs", "entropy", "proximal_logprobs"):
            tensor = getattr(self, name)
            if tensor is not None and tensor.shape != self.logprobs.shape:
                raise ValueError(
                    f"{name} must have the shape of logprobs {(batch_size, horizon)}, got {tuple(tensor.shape)}"
                )
        if self.advantages.shape != (batch_size,):
            raise ValueError(f"advantages must be ({batch_size},), got {tuple(self.advantages.shape)}")
        if not ((self.response_mask == 0) | (self.response_mask == 1)).all():
            raise ValueError("response_mask must contain only 0 and 1")


@dataclass(frozen=True)
class LossOutput:
    """Scalar loss and float diagnostics of :func:`grpo_loss`.

    ``metrics`` always holds: loss, policy_loss, clip_frac, clip_frac_low,
    clip_frac_high, approx_kl, ratio_min, ratio_mean, ratio_max. It holds
    ``kl`` when ref_logprobs were given, ``entropy`` when entropy was given and
    ``off_policy_weight_mean`` and ``off_policy_masked_frac`` (tokens whose
    weight is 0) when an off-policy correction was applied. policy_loss, kl
    and entropy use the configured aggregation, so
    loss = policy_loss + kl_coef * kl - entropy_coef * entropy. The others are
    means over masked tokens: approx_kl is k2 = 0.5 * (logprobs - old)^2 of the
    current policy against the ratio's "old" log-probs; ratio_* are the
    importance ratios actually clipped (the sequence ratio, repeated per token,
    at sequence level); clip_frac_low / _high are the fractions of tokens whose
    gradient the lower / upper clip removes (ratio < 1 - eps_low with A < 0 /
    ratio > 1 + eps_high with A > 0); clip_frac is their sum. With no masked
    token the means are 0 and the ratios 1.
    """

    loss: Tensor
    """Scalar, differentiable w.r.t. logprobs (and entropy)."""
    metrics: dict[str, float]
    """Float diagnostics, see the class docstring."""


def _zero_where_masked_out(values: Tensor, mask: Tensor) -> Tensor:
    """(B, T) values with masked-out entries replaced by 0, before any nonlinearity.

    torch.where (not a product) so that NaN/-inf padding neither leaks into the
    value nor into the gradient.
    """
    return torch.where(mask.bool(), values, values.new_zeros(()))


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``values`` over entries where ``mask`` is set; 0 where there are none.

    values: (..., T) any shape; mask: same shape, 0/1 or bool. dim=None reduces
    everything to a scalar, else the mean over ``dim``. Masked-out entries may
    hold NaN/inf. (Shao et al. 2024, eq. 3: the 1/|o_i| sum over tokens.)
    """
    weights = mask.to(values.dtype)
    kept = _zero_where_masked_out(values, mask)
    if dim is None:
        return kept.sum() / weights.sum().clamp(min=1.0)
    return kept.sum(dim) / weights.sum(dim).clamp(min=1.0)


def aggregate_token_losses(
    token_losses: Tensor,
    mask: Tensor,
    aggregation: Aggregation,
    max_response_tokens: int | None = None,
) -> Tensor:
    """Reduce (B, T) per-token losses over a (B, T) 0/1 mask to a scalar.

    token-mean: sum(loss * mask) / sum(mask) (DAPO, Yu et al. 2025, §3.3).
    seq-mean-token-mean: mean over sequences with at least one token of their
    token means (GRPO, Shao et al. 2024, eq. 3).
    seq-mean-token-sum-norm: per-sequence token sum / L, mean over all B
    sequences, L = max_response_tokens or T (Dr. GRPO objective, Liu et al. 2025):
    constant normalisers, so no length bias.
    Empty masks give 0, never NaN.
    """
    _check_choice("aggregation", aggregation, Aggregation)
    if aggregation == "token-mean":
        return masked_mean(token_losses, mask)
    weights = mask.to(token_losses.dtype)
    sequence_sums = _zero_where_masked_out(token_losses, mask).sum(-1)
    if aggregation == "seq-mean-token-mean":
        tokens_per_sequence = weights.sum(-1)
        sequence_means = sequence_sums / tokens_per_sequence.clamp(min=1.0)
        has_tokens = (tokens_per_sequence > 0).to(token_losses.dtype)
        return (sequence_means * has_tokens).sum() / has_tokens.sum().clamp(min=1.0)
    horizon = max_response_tokens if max_response_tokens is not None else token_losses.shape[-1]
    return (sequence_sums / horizon).mean()


def aggregation_count(mask: Tensor, aggregation: Aggregation) -> float:
    """Denominator of :func:`aggregate_token_losses` over a (B, T) 0/1 mask.

    token-mean: masked tokens; seq-mean-token-mean: sequences with at least one
    token; seq-mean-token-sum-norm: all B sequences. A batch cut into parts
    whose aggregated losses are weighted by count(part) / count(whole) sums to the
    aggregated loss of the whole batch (for seq-mean-token-sum-norm only with a
    constant max_response_tokens): how the learner accumulates micro-batches and ranks.
    """
    _check_choice("aggregation", aggregation, Aggregation)
    if aggregation == "token-mean":
        return float(mask.sum())
    if aggregation == "seq-mean-token-mean":
        return float((mask.sum(dim=-1) > 0).sum())
    return float(mask.shape[0])


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, estimator: KlEstimator) -> Tensor:
    """Per-token estimate of KL(pi || ref) from tokens sampled by pi; (B, T) -> (B, T).

    With r = ref - logprobs: k1 = -r, k2 = r^2 / 2, k3 = exp(r) - r - 1 >= 0
    (Schulman 2020, "Approximating KL divergence"; k3 is GRPO's, Shao et al.
    2024, eq. 4). All three are 0 where logprobs == ref.
    """
    _check_choice("kl_estimator", estimator, KlEstimator)
    log_ref_ratio = ref_logprobs - logprobs
    if estimator == "k1":
        return -log_ref_ratio
    if estimator == "k2":
        return 0.5 * log_ref_ratio.square()
    log_ref_ratio = log_ref_ratio.clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)
    return torch.expm1(log_ref_ratio) - log_ref_ratio


def _over_rows_in_float32(function: Callable[..., Tensor], logits: Tensor, *per_row: Tensor) -> Tensor:
    """Apply ``function`` to (B, T, V) logits, upcasting half precision one row at a time.

    float32/float64 logits are used whole; bf16/fp16 ones are upcast per
    sequence so the float32 copy costs T * V, not B * T * V.
    """
    if logits.dtype in (torch.float32, torch.float64):
        return function(logits, *per_row)
    rows = [function(row.float(), *(extra[index] for extra in per_row)) for index, row in enumerate(logits)]
    return torch.stack(rows)


def _token_logprobs_full_precision(logits: Tensor, tokens: Tensor) -> Tensor:
    selected = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return selected - torch.logsumexp(logits, dim=-1)


def _entropy_full_precision(logits: Tensor) -> Tensor:
    log_probs = torch.log_softmax(logits, dim=-1)
    return -(log_probs.exp() * log_probs).sum(-1)


def gather_token_logprobs(logits: Tensor, tokens: Tensor) -> Tensor:
    """log softmax(logits)[token] per position: logits (B, T, V), tokens (B, T) -> (B, T).

    Computed as logit[token] - logsumexp(logits), never materialising the full
    log-softmax; float32 for half-precision logits, else the logits' dtype
    (Shao et al. 2024, eq. 3: log pi_theta(o_t | q, o_<t)).
    """
    if logits.dim() != 3 or logits.shape[:-1] != tokens.shape:
        raise ValueError(f"need logits (B, T, V) and tokens (B, T), got {tuple(logits.shape)}, {tuple(tokens.shape)}")
    return _over_rows_in_float32(_token_logprobs_full_precision, logits, tokens.long())


def token_entropy(logits: Tensor) -> Tensor:
    """Entropy of the categorical over the vocabulary per position: (B, T, V) -> (B, T).

    H = -sum_v p_v log p_v with p = softmax(logits); logits must be finite.
    float32 for half-precision logits, else the logits' dtype (the entropy
    bonus of Schulman et al. 2017, eq. 9).
    """
    if logits.dim() != 3:
        raise ValueError(f"need logits (B, T, V), got {tuple(logits.shape)}")
    return _over_rows_in_float32(_entropy_full_precision, logits)


def _importance_ratio(logprobs: Tensor, old_logprobs: Tensor, mask: Tensor, level: ImportanceLevel) -> Tensor:
    """(B, T) importance ratios, differentiable w.r.t. logprobs (padding already zeroed).

    token: exp(logp_t - old_t) (Schulman et al. 2017, eq. 6).
    sequence: GSPO-token (Zheng et al. 2025, §4.3): every token carries
    sg[s_i] * exp(logp_t - sg[logp_t]) whose value is the sequence ratio
    s_i = exp(mean_t (logp_t - old_t)) and whose gradient is s_i * grad logp_t,
    so the gradient reaches every masked token of the sequence.
    """
    log_ratio = logprobs - old_logprobs
    if level == "sequence":
        sequence_log_ratio = masked_mean(log_ratio, mask, dim=-1).detach()
        log_ratio = sequence_log_ratio.unsqueeze(-1) + logprobs - logprobs.detach()
    return torch.exp(log_ratio.clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT))


def _clipped_surrogate(ratio: Tensor, advantages: Tensor, config: LossConfig) -> tuple[Tensor, Tensor, Tensor]:
    """Per-token PPO-clip loss -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A); (B, T), (B,) -> (B, T).

    Also returns the (B, T) bool masks of tokens where the lower / upper clip
    is the active branch (zero gradient). Schulman et al. 2017, eq. 7; DAPO
    clip-higher, Yu et al. 2025, §3.1.
    """
    token_advantages = advantages.unsqueeze(-1)
    lower_bound, upper_bound = 1.0 - config.eps_low, 1.0 + config.eps_high
    clipped_ratio = ratio.clamp(lower_bound, upper_bound)
    token_losses = torch.maximum(-ratio * token_advantages, -clipped_ratio * token_advantages)
    clipped_low = (ratio < lower_bound) & (token_advantages < 0)
    clipped_high = (ratio > upper_bound) & (token_advantages > 0)
    return token_losses, clipped_low, clipped_high


def _check_inputs_for_config(inputs: LossInputs, config: LossConfig) -> None:
    if config.kl_coef > 0 and inputs.ref_logprobs is None:
        raise ValueError("kl_coef > 0 needs ref_logprobs")
    if config.entropy_coef > 0 and inputs.entropy is None:
        raise ValueError("entropy_coef > 0 needs entropy")


def _ratio_metrics(
    ratio: Tensor, log_ratio: Tensor, clipped_low: Tensor, clipped_high: Tensor, mask: Tensor
) -> dict[str, float]:
    """Token means over the (B, T) mask of clipping, k2 approx-KL and ratio statistics."""
    clip_frac_low = masked_mean(clipped_low.to(ratio.dtype), mask).item()
    clip_frac_high = masked_mean(clipped_high.to(ratio.dtype), mask).item()
    kept_ratios = ratio[mask]
    if kept_ratios.numel() == 0:
        kept_ratios = ratio.new_ones(1)
    return {
        "clip_frac": clip_frac_low + clip_frac_high,
        "clip_frac_low": clip_frac_low,
        "clip_frac_high": clip_frac_high,
        "approx_kl": masked_mean(0.5 * log_ratio.square(), mask).item(),
        "ratio_min": kept_ratios.min().item(),
        "ratio_mean": kept_ratios.mean().item(),
        "ratio_max": kept_ratios.max().item(),
    }


def grpo_loss(inputs: LossInputs, config: LossConfig) -> LossOutput:
    """GRPO loss of one micro-batch (Shao et al. 2024, eq. 3; PPO-clip, Schulman et al. 2017, eq. 7).

    loss = agg(w_t * pg_t) + kl_coef * agg(kl_t) - entropy_coef * agg(H_t) with
    pg_t the clipped surrogate of the token (or GSPO sequence) ratio against
    proximal_logprobs if given else behaviour_logprobs, w_t the detached TIS
    weight of the configured off_policy correction on exp(proximal - behaviour)
    (1 unless off_policy and proximal_logprobs are both set), kl_t the configured estimator and agg the
    configured aggregation over response_mask. All (B, T) except advantages (B,).
    """
    _check_inputs_for_config(inputs, config)
    mask = inputs.response_mask.bool()
    logprobs = _zero_where_masked_out(inputs.logprobs, mask)
    behaviour = _zero_where_masked_out(inputs.behaviour_logprobs.detach(), mask)
    use_proximal = inputs.proximal_logprobs is not None
    old = _zero_where_masked_out(inputs.proximal_logprobs.detach(), mask) if use_proximal else behaviour
    ratio = _importance_ratio(logprobs, old, mask, config.importance_level)
    advantages = inputs.advantages.detach().to(ratio.dtype)
    policy_token_losses, clipped_low, clipped_high = _clipped_surrogate(ratio, advantages, config)

    def aggregate(token_values: Tensor) -> Tensor:
        return aggregate_token_losses(token_values, mask, config.aggregation, config.max_response_tokens)

    metrics: dict[str, float] = {}
    if config.uses_proximal and use_proximal:  # off-policy correction (actors/off_policy.py)
        weights = off_policy_weights(config.off_policy, old, behaviour, mask, config.off_policy_cap)
        policy_token_losses = policy_token_losses * weights
        metrics["off_policy_weight_mean"] = masked_mean(weights, mask).item()
        metrics["off_policy_masked_frac"] = masked_mean((weights == 0).to(weights.dtype), mask).item()
    policy_loss = aggregate(policy_token_losses)
    loss = policy_loss
    if inputs.ref_logprobs is not None:
        ref = _zero_where_masked_out(inputs.ref_logprobs.detach(), mask)
        kl = aggregate(kl_penalty(logprobs, ref, config.kl_estimator))
        if config.kl_coef > 0:
            loss = loss + config.kl_coef * kl
        metrics["kl"] = kl.item()
    if inputs.entropy is not None:
        entropy = aggregate(_zero_where_masked_out(inputs.entropy, mask))
        if config.entropy_coef > 0:
            loss = loss - config.entropy_coef * entropy
        metrics["entropy"] = entropy.item()
    with torch.no_grad():
        metrics.update(_ratio_metrics(ratio, logprobs - old, clipped_low, clipped_high, mask))
    metrics.update(loss=loss.item(), policy_loss=policy_loss.item())
    return LossOutput(loss=loss, metrics=metrics)
