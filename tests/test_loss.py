"""Tests of mixgrpo.actors.loss against hand-computed numbers (float64, CPU)."""

import math
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mixgrpo.actors.loss import (
    LossConfig,
    LossInputs,
    aggregate_token_losses,
    aggregation_count,
    gather_token_logprobs,
    grpo_loss,
    kl_penalty,
    masked_mean,
    token_entropy,
)
from mixgrpo.config import LossSettings

DTYPE = torch.float64
BEHAVIOUR_LOGPROB = -1.0

# Hand example, eps_low = 0.2, eps_high = 0.28 -> clip range [0.8, 1.28].
# seq 0, A = +1: ratios 1.1 (inside), 0.7 (below, but A > 0 keeps r A = 0.7), 1.3 (clipped high to 1.28)
#   token losses -1.1, -0.7, -1.28; sum -3.08
# seq 1, A = -2: ratios 1.5 (above, A < 0 keeps r A = -3), 0.75 (clipped low to 0.8 -> -1.6), padding
#   token losses 3.0, 1.6; sum 4.6
HAND_RATIOS = [[1.1, 0.7, 1.3], [1.5, 0.75, 0.5]]
HAND_MASK = [[1, 1, 1], [1, 1, 0]]
HAND_ADVANTAGES = [1.0, -2.0]


def _tensor(values: list) -> torch.Tensor:
    return torch.tensor(values, dtype=DTYPE)


def hand_inputs(**overrides: torch.Tensor) -> LossInputs:
    """LossInputs of the (2, 3) hand example; logprobs is a fresh leaf requiring grad."""
    ratios = _tensor(HAND_RATIOS)
    fields = {
        "logprobs": (BEHAVIOUR_LOGPROB + ratios.log()).requires_grad_(True),
        "behaviour_logprobs": torch.full_like(ratios, BEHAVIOUR_LOGPROB),
        "advantages": _tensor(HAND_ADVANTAGES),
        "response_mask": _tensor(HAND_MASK),
    }
    fields.update(overrides)
    return LossInputs(**fields)


def random_inputs(seed: int, batch_size: int = 4, horizon: int = 6, spread: float = 0.3) -> LossInputs:
    generator = torch.Generator().manual_seed(seed)
    behaviour = -torch.rand(batch_size, horizon, generator=generator, dtype=DTYPE) * 3
    noise = torch.randn(batch_size, horizon, generator=generator, dtype=DTYPE) * spread
    mask = (torch.rand(batch_size, horizon, generator=generator) < 0.7).to(DTYPE)
    return LossInputs(
        logprobs=(behaviour + noise).requires_grad_(True),
        behaviour_logprobs=behaviour,
        advantages=torch.randn(batch_size, generator=generator, dtype=DTYPE),
        response_mask=mask,
        ref_logprobs=behaviour + torch.randn(batch_size, horizon, generator=generator, dtype=DTYPE) * spread,
        entropy=torch.rand(batch_size, horizon, generator=generator, dtype=DTYPE).requires_grad_(True),
    )


def logprob_grad(inputs: LossInputs, config: LossConfig) -> torch.Tensor:
    grpo_loss(inputs, config).loss.backward()
    return inputs.logprobs.grad


@pytest.mark.parametrize(
    ("aggregation", "max_response_tokens", "expected"),
    [
        ("token-mean", None, (-3.08 + 4.6) / 5),
        ("seq-mean-token-mean", None, (-3.08 / 3 + 4.6 / 2) / 2),
        ("seq-mean-token-sum-norm", None, (-3.08 / 3 + 4.6 / 3) / 2),
        ("seq-mean-token-sum-norm", 4, (-3.08 / 4 + 4.6 / 4) / 2),
    ],
)
def test_hand_example_each_aggregation(aggregation: str, max_response_tokens: int | None, expected: float) -> None:
    config = LossSettings(eps_low=0.2, eps_high=0.28, aggregation=aggregation, max_response_tokens=max_response_tokens)
    output = grpo_loss(hand_inputs(), config)
    assert output.loss.item() == pytest.approx(expected, abs=1e-12)
    assert output.metrics["policy_loss"] == pytest.approx(expected, abs=1e-12)
    assert output.metrics["loss"] == pytest.approx(expected, abs=1e-12)


def test_hand_example_metrics() -> None:
    metrics = grpo_loss(hand_inputs(), LossSettings(eps_low=0.2, eps_high=0.28)).metrics
    assert metrics["clip_frac_high"] == pytest.approx(1 / 5)  # seq 0, ratio 1.3
    assert metrics["clip_frac_low"] == pytest.approx(1 / 5)  # seq 1, ratio 0.75
    assert metrics["clip_frac"] == pytest.approx(2 / 5)
    assert metrics["ratio_min"] == pytest.approx(0.7)
    assert metrics["ratio_max"] == pytest.approx(1.5)  # padding ratio 0.5 is ignored
    assert metrics["ratio_mean"] == pytest.approx((1.1 + 0.7 + 1.3 + 1.5 + 0.75) / 5)
    kept_ratios = [1.1, 0.7, 1.3, 1.5, 0.75]
    assert metrics["approx_kl"] == pytest.approx(sum(0.5 * math.log(r) ** 2 for r in kept_ratios) / 5)
    assert "kl" not in metrics and "entropy" not in metrics and "off_policy_weight_mean" not in metrics


def test_hand_example_gradient_is_zero_on_clipped_tokens() -> None:
    # d(-r A)/d logp = -r A, divided by the 5 masked tokens; clipped tokens and padding get 0.
    grad = logprob_grad(hand_inputs(), LossSettings(eps_low=0.2, eps_high=0.28))
    expected = _tensor([[-1.1 / 5, -0.7 / 5, 0.0], [1.5 * 2 / 5, 0.0, 0.0]])
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-12)


def test_symmetric_clip_clips_where_clip_higher_does_not() -> None:
    # ratio 1.3 with A = +1: eps_high 0.2 clips at 1.2 -> token losses -1.1, -0.7, -1.2.
    output = grpo_loss(hand_inputs(), LossSettings(eps_low=0.2, eps_high=0.2, aggregation="seq-mean-token-sum-norm"))
    assert output.loss.item() == pytest.approx((-3.0 / 3 + 4.6 / 3) / 2, abs=1e-12)


@pytest.mark.parametrize(
    ("ratio", "advantage", "expected_loss", "clipped_low", "clipped_high"),
    [
        (1.25, 1.0, -1.25, 0.0, 0.0),  # below 1 + eps_high = 1.28: unclipped
        (1.40, 1.0, -1.28, 0.0, 1.0),  # above: upper clip active
        (1.40, -1.0, 1.40, 0.0, 0.0),  # above, negative A: min keeps the unclipped (larger) penalty
        (0.75, -1.0, 0.80, 1.0, 0.0),  # below 1 - eps_low = 0.8, negative A: lower clip active
        (0.75, 1.0, -0.75, 0.0, 0.0),  # below, positive A: unclipped
    ],
)
def test_clip_higher_branches(
    ratio: float, advantage: float, expected_loss: float, clipped_low: float, clipped_high: float
) -> None:
    inputs = LossInputs(
        logprobs=_tensor([[math.log(ratio)]]),
        behaviour_logprobs=_tensor([[0.0]]),
        advantages=_tensor([advantage]),
        response_mask=_tensor([[1.0]]),
    )
    output = grpo_loss(inputs, LossSettings(eps_low=0.2, eps_high=0.28))
    assert output.loss.item() == pytest.approx(expected_loss, abs=1e-12)
    assert output.metrics["clip_frac_low"] == clipped_low
    assert output.metrics["clip_frac_high"] == clipped_high


def test_kl_estimators_on_hand_values() -> None:
    logprobs = _tensor([[-1.0, -2.0]])
    ref = _tensor([[-1.5, -1.0]])  # r = ref - logp = -0.5, +1.0
    torch.testing.assert_close(kl_penalty(logprobs, ref, "k1"), _tensor([[0.5, -1.0]]))
    torch.testing.assert_close(kl_penalty(logprobs, ref, "k2"), _tensor([[0.125, 0.5]]))
    torch.testing.assert_close(kl_penalty(logprobs, ref, "k3"), _tensor([[math.exp(-0.5) - 0.5, math.e - 2.0]]))


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_kl_estimators_vanish_at_reference(estimator: str) -> None:
    logprobs = -torch.rand(3, 5, dtype=DTYPE) * 4
    assert torch.equal(kl_penalty(logprobs, logprobs.clone(), estimator), torch.zeros_like(logprobs))


def test_k3_is_nonnegative() -> None:
    log_ref_ratios = torch.linspace(-30.0, 30.0, 2001, dtype=DTYPE)
    values = kl_penalty(torch.zeros_like(log_ref_ratios), log_ref_ratios, "k3")
    assert bool((values >= 0).all()) and bool(values.isfinite().all())


def test_kl_term_in_loss() -> None:
    # Zero advantages: the loss is kl_coef * token-mean of k3 = 0.1 * ((e^-0.5 - 0.5) + (e - 2)) / 2.
    inputs = LossInputs(
        logprobs=_tensor([[-1.0, -2.0]]),
        behaviour_logprobs=_tensor([[-1.0, -2.0]]),
        advantages=_tensor([0.0]),
        response_mask=_tensor([[1.0, 1.0]]),
        ref_logprobs=_tensor([[-1.5, -1.0]]),
    )
    output = grpo_loss(inputs, LossSettings(kl_coef=0.1, kl_estimator="k3"))
    expected_kl = ((math.exp(-0.5) - 0.5) + (math.e - 2.0)) / 2
    assert output.metrics["kl"] == pytest.approx(expected_kl)
    assert output.loss.item() == pytest.approx(0.1 * expected_kl)


def test_loss_decomposes_into_its_metrics() -> None:
    config = LossSettings(kl_coef=0.05, entropy_coef=0.01, aggregation="seq-mean-token-mean")
    metrics = grpo_loss(random_inputs(seed=3), config).metrics
    expected = metrics["policy_loss"] + 0.05 * metrics["kl"] - 0.01 * metrics["entropy"]
    assert metrics["loss"] == pytest.approx(expected, abs=1e-12)


def test_entropy_bonus_gradient() -> None:
    inputs = random_inputs(seed=4)
    grpo_loss(inputs, LossSettings(entropy_coef=0.5)).loss.backward()
    mask = inputs.response_mask
    torch.testing.assert_close(inputs.entropy.grad, -0.5 * mask / mask.sum())


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_zero_advantages_give_zero_policy_gradient(level: str) -> None:
    inputs = random_inputs(seed=5, spread=1.0)
    inputs = replace(inputs, advantages=torch.zeros(4, dtype=DTYPE))
    grad = logprob_grad(inputs, LossSettings(importance_level=level))
    assert torch.equal(grad, torch.zeros_like(grad))


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_on_policy_gradient_is_reinforce_with_baseline(level: str) -> None:
    inputs = random_inputs(seed=6)
    behaviour = inputs.behaviour_logprobs
    inputs = replace(inputs, logprobs=behaviour.clone().requires_grad_(True))
    grad = logprob_grad(inputs, LossSettings(importance_level=level))
    mask = inputs.response_mask
    expected = -inputs.advantages.unsqueeze(-1) * mask / mask.sum()
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-15)


def test_sequence_ratio_equals_token_ratio_when_log_ratios_are_equal() -> None:
    log_ratios = _tensor([0.1, -0.3, 0.05, 0.4]).unsqueeze(-1).expand(4, 6)
    inputs = random_inputs(seed=7)
    token_inputs = replace(inputs, logprobs=(inputs.behaviour_logprobs + log_ratios).requires_grad_(True))
    sequence_inputs = replace(token_inputs, logprobs=token_inputs.logprobs.detach().requires_grad_(True))
    for aggregation in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"):
        token_out = grpo_loss(token_inputs, LossSettings(aggregation=aggregation, importance_level="token"))
        sequence_out = grpo_loss(sequence_inputs, LossSettings(aggregation=aggregation, importance_level="sequence"))
        torch.testing.assert_close(token_out.loss, sequence_out.loss)
        for name in ("ratio_min", "ratio_mean", "ratio_max", "clip_frac"):
            assert token_out.metrics[name] == pytest.approx(sequence_out.metrics[name])
        token_grad, = torch.autograd.grad(token_out.loss, token_inputs.logprobs)
        sequence_grad, = torch.autograd.grad(sequence_out.loss, sequence_inputs.logprobs)
        torch.testing.assert_close(token_grad, sequence_grad)


def test_sequence_level_gradient_reaches_every_masked_token() -> None:
    # Seq 0 log-ratios 0.1, -0.1, 0.09 (mean 0.03); seq 1 0.3, -0.1, padding (mean 0.1): s = e^0.03, e^0.1,
    # both inside [0.8, 1.2]. GSPO-token gradient per token: -A_i s_i / 5 under token-mean.
    logprobs = _tensor([[0.1, -0.1, 0.09], [0.3, -0.1, 7.0]]).requires_grad_(True)
    inputs = hand_inputs(logprobs=logprobs, behaviour_logprobs=torch.zeros(2, 3, dtype=DTYPE))
    output = grpo_loss(inputs, LossSettings(importance_level="sequence"))
    s0, s1 = math.exp(0.03), math.exp(0.1)
    assert output.loss.item() == pytest.approx((3 * -s0 + 2 * 2 * s1) / 5)
    assert output.metrics["ratio_min"] == pytest.approx(s0) and output.metrics["ratio_max"] == pytest.approx(s1)
    output.loss.backward()
    expected = _tensor([[-s0 / 5] * 3, [2 * s1 / 5, 2 * s1 / 5, 0.0]])
    torch.testing.assert_close(logprobs.grad, expected)


def test_sequence_level_clips_whole_sequences() -> None:
    # Seq 0 mean log-ratio log(1.3) > log(1.2) with A > 0: every token of seq 0 is clipped, none of seq 1.
    logprobs = _tensor([[math.log(1.3) + 0.2, math.log(1.3) - 0.2, math.log(1.3)], [0.0, 0.0, 0.0]])
    inputs = hand_inputs(logprobs=logprobs.requires_grad_(True), behaviour_logprobs=torch.zeros(2, 3, dtype=DTYPE))
    output = grpo_loss(inputs, LossSettings(importance_level="sequence"))
    assert output.metrics["clip_frac_high"] == pytest.approx(3 / 5)
    output.loss.backward()
    torch.testing.assert_close(logprobs.grad, _tensor([[0.0, 0.0, 0.0], [2 / 5, 2 / 5, 0.0]]))


def test_ratio_uses_proximal_logprobs_when_given() -> None:
    inputs = hand_inputs(
        logprobs=torch.zeros(2, 3, dtype=DTYPE),
        behaviour_logprobs=torch.full((2, 3), -5.0, dtype=DTYPE),
        proximal_logprobs=torch.zeros(2, 3, dtype=DTYPE),
    )
    metrics = grpo_loss(inputs, LossSettings()).metrics
    assert metrics["ratio_min"] == 1.0 and metrics["ratio_max"] == 1.0


def test_tis_weights_are_capped() -> None:
    # On-policy w.r.t. proximal (ratio 1); proximal - behaviour = log 3 for seq 0, log 0.5 for seq 1.
    # Weights min(3, 2) = 2 and 0.5; token losses -1 * 2 (x3) and +2 * 0.5 (x2): token-mean (-6 + 2) / 5.
    proximal = torch.zeros(2, 3, dtype=DTYPE)
    behaviour = _tensor([[-math.log(3.0)] * 3, [-math.log(0.5)] * 3])
    inputs = hand_inputs(
        logprobs=proximal.clone().requires_grad_(True), behaviour_logprobs=behaviour, proximal_logprobs=proximal
    )
    output = grpo_loss(inputs, LossSettings(off_policy="tis", off_policy_cap=2.0))
    assert output.loss.item() == pytest.approx((-6.0 + 2.0) / 5)
    assert output.metrics["off_policy_weight_mean"] == pytest.approx((3 * 2.0 + 2 * 0.5) / 5)
    untruncated = grpo_loss(inputs, LossSettings(off_policy="tis", off_policy_cap=10.0))
    assert untruncated.loss.item() == pytest.approx((-9.0 + 2.0) / 5)


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_tis_with_proximal_equal_to_behaviour_matches_plain_loss(level: str) -> None:
    plain_inputs = random_inputs(seed=8)
    tis_inputs = replace(
        plain_inputs,
        logprobs=plain_inputs.logprobs.detach().clone().requires_grad_(True),
        proximal_logprobs=plain_inputs.behaviour_logprobs.clone(),
    )
    plain = grpo_loss(plain_inputs, LossSettings(importance_level=level, kl_coef=0.1))
    with_tis = grpo_loss(tis_inputs, LossSettings(importance_level=level, kl_coef=0.1, off_policy="tis"))
    assert with_tis.metrics["off_policy_weight_mean"] == 1.0
    torch.testing.assert_close(plain.loss, with_tis.loss)
    plain.loss.backward()
    with_tis.loss.backward()
    torch.testing.assert_close(plain_inputs.logprobs.grad, tis_inputs.logprobs.grad)


def test_tis_without_proximal_is_a_no_op() -> None:
    plain = grpo_loss(hand_inputs(), LossSettings())
    with_cap = grpo_loss(hand_inputs(), LossSettings(off_policy="tis", off_policy_cap=2.0))
    assert plain.loss.item() == with_cap.loss.item()
    assert "off_policy_weight_mean" not in with_cap.metrics


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_all_zero_mask_gives_finite_zero_loss(level: str, aggregation: str) -> None:
    inputs = replace(random_inputs(seed=9), response_mask=torch.zeros(4, 6, dtype=DTYPE))
    config = LossSettings(importance_level=level, aggregation=aggregation, kl_coef=0.1, entropy_coef=0.01)
    output = grpo_loss(inputs, config)
    assert output.loss.item() == 0.0
    assert all(math.isfinite(value) for value in output.metrics.values())
    output.loss.backward()
    assert torch.equal(inputs.logprobs.grad, torch.zeros(4, 6, dtype=DTYPE))


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_nan_and_inf_padding_do_not_leak(level: str) -> None:
    logprobs = _tensor([[-1.0, -2.0, float("nan")], [-0.5, float("-inf"), float("nan")]]).requires_grad_(True)
    inputs = hand_inputs(
        logprobs=logprobs,
        behaviour_logprobs=_tensor([[-1.1, -1.9, float("-inf")], [-0.6, float("nan"), 3.0]]),
        response_mask=_tensor([[1, 1, 0], [1, 0, 0]]),
        ref_logprobs=_tensor([[-1.0, -2.0, float("inf")], [-0.5, float("nan"), float("-inf")]]),
        entropy=_tensor([[0.3, 0.2, float("nan")], [0.1, float("inf"), float("nan")]]),
    )
    output = grpo_loss(inputs, LossSettings(importance_level=level, kl_coef=0.1, entropy_coef=0.01))
    output.loss.backward()
    assert math.isfinite(output.loss.item())
    assert all(math.isfinite(value) for value in output.metrics.values())
    assert bool(logprobs.grad.isfinite().all())
    assert torch.equal(logprobs.grad[inputs.response_mask == 0], torch.zeros(3, dtype=DTYPE))


def test_masked_mean_and_aggregation_helpers() -> None:
    values = _tensor([[1.0, 2.0, float("nan")], [4.0, float("inf"), 6.0]])
    mask = _tensor([[1, 1, 0], [1, 0, 0]])
    assert masked_mean(values, mask).item() == pytest.approx(7.0 / 3)
    torch.testing.assert_close(masked_mean(values, mask, dim=-1), _tensor([1.5, 4.0]))
    empty = torch.zeros(2, 3, dtype=DTYPE)
    assert masked_mean(values, empty).item() == 0.0
    one_empty_row = _tensor([[1, 1, 0], [0, 0, 0]])
    assert aggregate_token_losses(values, one_empty_row, "seq-mean-token-mean").item() == pytest.approx(1.5)
    assert aggregate_token_losses(values, one_empty_row, "seq-mean-token-sum-norm").item() == pytest.approx(3.0 / 3 / 2)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    level=st.sampled_from(["token", "sequence"]),
    aggregation=st.sampled_from(["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]),
    estimator=st.sampled_from(["k1", "k2", "k3"]),
)
def test_random_inputs_give_finite_loss_and_gradient(seed: int, level: str, aggregation: str, estimator: str) -> None:
    inputs = random_inputs(seed=seed, spread=2.0)
    config = LossSettings(
        importance_level=level, aggregation=aggregation, kl_coef=0.1, kl_estimator=estimator, entropy_coef=0.01
    )
    output = grpo_loss(inputs, config)
    output.loss.backward()
    assert math.isfinite(output.loss.item()) and bool(inputs.logprobs.grad.isfinite().all())
    assert 0.0 <= output.metrics["clip_frac"] <= 1.0
    assert output.metrics["ratio_min"] <= output.metrics["ratio_mean"] <= output.metrics["ratio_max"]


@pytest.mark.parametrize(
    "overrides",
    [
        {"importance_level": "segment"},
        {"kl_estimator": "k4"},
        {"aggregation": "sum"},
        {"eps_low": 1.0},
        {"eps_low": -0.1},
        {"eps_high": -0.1},
        {"eps_low": float("nan")},
        {"kl_coef": -0.1},
        {"entropy_coef": -0.01},
        {"off_policy": "is"},
        {"off_policy_cap": 0.5},
        {"max_response_tokens": 0},
    ],
)
def test_config_validation(overrides: dict) -> None:
    with pytest.raises(ValueError):
        LossSettings(**overrides)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"behaviour_logprobs": torch.zeros(2, 4, dtype=DTYPE)}, "behaviour_logprobs"),
        ({"response_mask": torch.ones(3, 3, dtype=DTYPE)}, "response_mask"),
        ({"ref_logprobs": torch.zeros(2, 2, dtype=DTYPE)}, "ref_logprobs"),
        ({"entropy": torch.zeros(2, dtype=DTYPE)}, "entropy"),
        ({"proximal_logprobs": torch.zeros(3, 2, dtype=DTYPE)}, "proximal_logprobs"),
        ({"advantages": torch.zeros(2, 3, dtype=DTYPE)}, "advantages"),
        ({"advantages": torch.zeros(3, dtype=DTYPE)}, "advantages"),
        ({"logprobs": torch.zeros(6, dtype=DTYPE)}, "logprobs"),
        ({"response_mask": _tensor([[1, 0.5, 1], [1, 1, 0]])}, "0 and 1"),
    ],
)
def test_input_validation(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        hand_inputs(**overrides)


def test_missing_reference_or_entropy_is_rejected() -> None:
    with pytest.raises(ValueError, match="ref_logprobs"):
        grpo_loss(hand_inputs(), LossSettings(kl_coef=0.1))
    with pytest.raises(ValueError, match="entropy"):
        grpo_loss(hand_inputs(), LossSettings(entropy_coef=0.1))
    assert math.isfinite(grpo_loss(hand_inputs(), LossSettings(kl_coef=0.0)).loss.item())


def test_gather_token_logprobs_and_entropy_match_categorical() -> None:
    generator = torch.Generator().manual_seed(10)
    logits = (torch.randn(3, 5, 11, generator=generator, dtype=DTYPE) * 4).requires_grad_(True)
    tokens = torch.randint(0, 11, (3, 5), generator=generator)
    distribution = torch.distributions.Categorical(logits=logits)
    torch.testing.assert_close(gather_token_logprobs(logits, tokens), distribution.log_prob(tokens))
    torch.testing.assert_close(token_entropy(logits), distribution.entropy())
    grad, = torch.autograd.grad(token_entropy(logits).sum(), logits)
    expected_grad, = torch.autograd.grad(distribution.entropy().sum(), logits)
    torch.testing.assert_close(grad, expected_grad)


def test_half_precision_logits_are_upcast_to_float32() -> None:
    generator = torch.Generator().manual_seed(11)
    logits = (torch.randn(2, 4, 50, generator=generator) * 3).to(torch.bfloat16)
    tokens = torch.randint(0, 50, (2, 4), generator=generator)
    distribution = torch.distributions.Categorical(logits=logits.float())
    logprobs = gather_token_logprobs(logits, tokens)
    entropy = token_entropy(logits)
    assert logprobs.dtype == torch.float32 and entropy.dtype == torch.float32
    torch.testing.assert_close(logprobs, distribution.log_prob(tokens))
    torch.testing.assert_close(entropy, distribution.entropy())


def test_logit_helpers_reject_bad_shapes() -> None:
    with pytest.raises(ValueError):
        gather_token_logprobs(torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError):
        token_entropy(torch.zeros(2, 5))


def test_loss_config_protocol_names_exactly_the_loss_settings() -> None:
    """LossSettings (config.py) is the one definition; the Protocol grpo_loss reads names the same settings."""
    protocol = {name for name, value in vars(LossConfig).items() if isinstance(value, property)}
    assert protocol == set(LossSettings.model_fields) | {"uses_proximal"}
    defaults = grpo_loss(hand_inputs(), LossSettings())
    explicit = grpo_loss(hand_inputs(), LossSettings(eps_low=0.2, eps_high=0.28, aggregation="token-mean"))
    assert defaults.loss.item() == explicit.loss.item() == pytest.approx((-3.08 + 4.6) / 5, abs=1e-12)


def _rows_cut_to_their_longest(inputs: LossInputs, rows: list[int]) -> LossInputs:
    """The given rows, cut after their last response token (as the learner collates a micro-batch)."""
    width = int(inputs.response_mask[rows].nonzero()[:, 1].max()) + 1
    tensors = ("logprobs", "behaviour_logprobs", "response_mask", "ref_logprobs")
    return LossInputs(advantages=inputs.advantages[rows], **{n: getattr(inputs, n)[rows, :width] for n in tensors})


@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_parts_weighted_by_aggregation_count_sum_to_the_whole(aggregation: str) -> None:
    """How the learner accumulates micro-batches: part losses times count(part) / count(whole) add up."""
    inputs = random_inputs(seed=3, batch_size=5, horizon=6)
    config = LossSettings(aggregation=aggregation, max_response_tokens=6, kl_coef=0.1)
    whole = grpo_loss(inputs, config).loss.item()
    total = aggregation_count(inputs.response_mask, aggregation)
    parts = [_rows_cut_to_their_longest(inputs, rows) for rows in ([0, 1], [2], [3, 4])]
    summed = sum(grpo_loss(part, config).loss.item() * aggregation_count(part.response_mask, aggregation) / total
                 for part in parts)
    assert summed == pytest.approx(whole, rel=1e-12)


def test_aggregation_count_per_aggregation() -> None:
    mask = _tensor([[1, 1, 0], [0, 0, 0], [1, 0, 0]])
    assert aggregation_count(mask, "token-mean") == 3.0
    assert aggregation_count(mask, "seq-mean-token-mean") == 2.0
    assert aggregation_count(mask, "seq-mean-token-sum-norm") == 3.0
