"""Off-policy corrections for the gap between the generator and the learner (pure torch).

The tokens of a rollout were sampled by the generator (behaviour policy mu: another
engine's numerics, and with ``async_steps`` N an adapter up to N versions old); the
learner's PPO surrogate is built on its own proximal policy pi_old (the learner's
log-probs of the same tokens before the update). Each correction turns the per-token
ratio

    rho_t = pi_old(o_t) / mu(o_t) = exp(proximal_t - behaviour_t)        (B, T)

into a detached weight w_t that multiplies the policy-gradient term of token t
(the KL and entropy terms are not reweighted). ``cap`` is C >= 1 for every method.

  * ``tis``: truncated importance sampling, w_t = min(rho_t, C)
    (Yao et al. 2025, "Your efficient RL framework secretly brings you off-policy RL training").
  * ``icepop``: token masking outside a band, w_t = 1[1/C <= rho_t <= C]
    (IcePop, Ling Team 2025, "Every Step Evolves: Scaling RL for Trillion-Scale Thinking Model", sec. 3.1).
  * ``seq_mask``: sequence-level masked importance sampling: every token of sequence i
    gets w_i = 1[1/C <= rho_i <= C] with rho_i = exp(mean_t log rho_t), the geometric
    mean of its token ratios, so length does not decide the mask (verl rollout correction,
    geometric level in mask mode; prime-rl's masked importance sampling).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

OffPolicy = Literal["none", "tis", "seq_mask", "icepop"]

# exp() of a log-ratio beyond this overflows float32; such ratios are far outside any band or cap anyway.
_LOG_RATIO_LIMIT = 20.0


def _log_ratio(proximal_logprobs: Tensor, behaviour_logprobs: Tensor, mask: Tensor) -> Tensor:
    """(B, T) log rho_t, 0 at masked-out positions (which may hold NaN/-inf)."""
    log_ratio = (proximal_logprobs - behaviour_logprobs).clamp(-_LOG_RATIO_LIMIT, _LOG_RATIO_LIMIT)
    return torch.where(mask.bool(), log_ratio, log_ratio.new_zeros(()))


def tis_weights(proximal_logprobs: Tensor, behaviour_logprobs: Tensor, mask: Tensor, cap: float) -> Tensor:
    """Truncated IS: w_t = min(exp(proximal_t - behaviour_t), cap); (B, T) x3 -> (B, T), 0 where masked out."""
    weights = torch.exp(_log_ratio(proximal_logprobs, behaviour_logprobs, mask)).clamp(max=cap)
    return weights * mask.to(weights.dtype)


def icepop_weights(proximal_logprobs: Tensor, behaviour_logprobs: Tensor, mask: Tensor, cap: float) -> Tensor:
    """IcePop: w_t = 1 if 1/cap <= rho_t <= cap else 0; (B, T) x3 -> (B, T) in {0, 1}."""
    log_ratio = _log_ratio(proximal_logprobs, behaviour_logprobs, mask)
    inside = log_ratio.abs() <= torch.log(torch.tensor(cap, dtype=log_ratio.dtype))
    return (inside & mask.bool()).to(log_ratio.dtype)


def sequence_mask_weights(proximal_logprobs: Tensor, behaviour_logprobs: Tensor, mask: Tensor,
                          cap: float) -> Tensor:
    """Sequence masking: w_i = 1 if 1/cap <= exp(mean_t log rho_t) <= cap, repeated on its tokens; (B, T) -> (B, T)."""
    log_ratio = _log_ratio(proximal_logprobs, behaviour_logprobs, mask)
    weights = mask.to(log_ratio.dtype)
    sequence_log_ratio = log_ratio.sum(-1) / weights.sum(-1).clamp(min=1.0)  # (B,) log geometric mean
    inside = sequence_log_ratio.abs() <= torch.log(torch.tensor(cap, dtype=log_ratio.dtype))
    return inside.to(log_ratio.dtype).unsqueeze(-1) * weights


def off_policy_weights(method: OffPolicy, proximal_logprobs: Tensor, behaviour_logprobs: Tensor, mask: Tensor,
                       cap: float) -> Tensor:
    """The (B, T) detached weights of ``method`` (see the module docstring); ``none`` gives the mask itself."""
    if method not in get_args(OffPolicy):
        raise ValueError(f"off_policy must be one of {get_args(OffPolicy)}, got {method!r}")
    if not cap >= 1.0:
        raise ValueError(f"off_policy cap must be >= 1, got {cap}")
    proximal, behaviour = proximal_logprobs.detach(), behaviour_logprobs.detach()
    if method == "tis":
        return tis_weights(proximal, behaviour, mask, cap)
    if method == "icepop":
        return icepop_weights(proximal, behaviour, mask, cap)
    if method == "seq_mask":
        return sequence_mask_weights(proximal, behaviour, mask, cap)
    return mask.to(proximal.dtype)
