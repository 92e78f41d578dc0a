"""Off-policy corrections (actors/off_policy.py) against hand-computed weights, and their effect in grpo_loss."""

from __future__ import annotations

import math

import pytest
import torch

from mixgrpo.actors.loss import LossInputs, grpo_loss
from mixgrpo.actors.off_policy import icepop_weights, off_policy_weights, sequence_mask_weights, tis_weights
from mixgrpo.config import LossSettings

DTYPE = torch.float64
# Token ratios rho = exp(proximal - behaviour): row 0 = [3, 1, 0.25], row 1 = [1.5, 0.6, <padding>].
PROXIMAL = torch.zeros(2, 3, dtype=DTYPE)
BEHAVIOUR = torch.tensor([[-math.log(3.0), 0.0, -math.log(0.25)], [-math.log(1.5), -math.log(0.6), float("nan")]],
                         dtype=DTYPE)
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=DTYPE)


def test_tis_truncates_each_token_ratio_at_the_cap():
    weights = tis_weights(PROXIMAL, BEHAVIOUR, MASK, cap=2.0)
    torch.testing.assert_close(weights, torch.tensor([[2.0, 1.0, 0.25], [1.5, 0.6, 0.0]], dtype=DTYPE))


def test_icepop_masks_tokens_outside_the_band():
    weights = icepop_weights(PROXIMAL, BEHAVIOUR, MASK, cap=2.0)  # band [0.5, 2]
    torch.testing.assert_close(weights, torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 0.0]], dtype=DTYPE))


def test_sequence_mask_uses_the_geometric_mean_ratio():
    # row 0: (3 * 1 * 0.25) ** (1/3) = 0.909 -> kept; row 1: (1.5 * 0.6) ** (1/2) = 0.949 -> kept at C = 2.
    kept = sequence_mask_weights(PROXIMAL, BEHAVIOUR, MASK, cap=2.0)
    torch.testing.assert_close(kept, MASK)
    # at C = 1.07 the band is [0.935, 1.07]: row 0 (0.909) is masked, row 1 (0.949) is kept.
    tight = sequence_mask_weights(PROXIMAL, BEHAVIOUR, MASK, cap=1.07)
    torch.testing.assert_close(tight, torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]], dtype=DTYPE))


def test_none_is_the_mask_and_bad_arguments_fail():
    torch.testing.assert_close(off_policy_weights("none", PROXIMAL, BEHAVIOUR, MASK, 2.0), MASK)
    with pytest.raises(ValueError, match="off_policy must be one of"):
        off_policy_weights("clip", PROXIMAL, BEHAVIOUR, MASK, 2.0)
    with pytest.raises(ValueError, match=">= 1"):
        off_policy_weights("tis", PROXIMAL, BEHAVIOUR, MASK, 0.5)


@pytest.mark.parametrize("method", ["tis", "icepop", "seq_mask"])
def test_grpo_loss_weights_the_policy_term_by_the_correction(method: str):
    # Ratio against proximal is 1 (logprobs = proximal), so each token's PPO loss is -A; advantages [1, -2].
    logprobs = PROXIMAL.clone().requires_grad_(True)
    inputs = LossInputs(logprobs=logprobs, behaviour_logprobs=BEHAVIOUR, advantages=torch.tensor([1.0, -2.0], dtype=DTYPE),
                        response_mask=MASK, proximal_logprobs=PROXIMAL)
    output = grpo_loss(inputs, LossSettings(off_policy=method, off_policy_cap=2.0))
    weights = off_policy_weights(method, PROXIMAL, BEHAVIOUR, MASK, 2.0)
    token_losses = -torch.tensor([[1.0], [-2.0]], dtype=DTYPE) * weights
    assert output.loss.item() == pytest.approx(float(token_losses.sum() / MASK.sum()))
    assert output.metrics["off_policy_weight_mean"] == pytest.approx(float(weights.sum() / MASK.sum()))
    assert output.metrics["off_policy_masked_frac"] == pytest.approx(float(((weights == 0) & (MASK == 1)).sum() / 5))
    output.loss.backward()
    assert logprobs.grad[1, 2] == 0.0 and torch.isfinite(logprobs.grad).all()  # padding gets no gradient
