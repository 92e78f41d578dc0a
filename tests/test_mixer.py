"""Tests of mixgrpo.rewards.mixer: hand-computed advantages, options, errors, properties.

Shapes: rewards (P, m, R), advantages (P, m). Expected numbers are worked out
by hand in the comments (population std, eps = 1e-8 negligible at 1e-6).
"""

import importlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mixgrpo.rewards.mixer import ADVANTAGE_MODES, compute_advantages

NAN = np.nan
INF = np.inf
Z3 = 1.224745  # group [1, 2, 3]: mean 2, std sqrt(2/3) = 0.816497, z = [-1.224745, 0, 1.224745]


def rewards_of(*channels):
    """One group ``(1, m, R)`` from ``R`` per-channel lists of length ``m``."""
    return np.array(channels, dtype=float).T[None]


def advantages(rewards, weights, **kwargs):
    return compute_advantages(rewards, np.asarray(weights, dtype=float), **kwargs).advantages


def assert_close(actual, expected, tol=1e-6):
    np.testing.assert_allclose(actual, np.asarray(expected, dtype=float), atol=tol, rtol=0)


# ---------------------------------------------------------------- modes, no nulls


def test_na_two_channels():
    # ch0 [1,2,3] -> z0 = [-1.224745, 0, 1.224745]
    # ch1 [0,0,1]: mean 1/3, std sqrt(2/9) = 0.471405 -> z1 = [-0.707107, -0.707107, 1.414214]
    # A = z0 + 0.5 z1 = [-1.578298, -0.353553, 1.931852]
    result = advantages(rewards_of([1, 2, 3], [0, 0, 1]), [1.0, 0.5])
    assert_close(result, [[-1.578298, -0.353553, 1.931852]])


def test_an_two_channels():
    # s = ch0 + 0.5 ch1 = [1, 2, 3.5]: mean 2.166667, deviations [-1.166667, -0.166667, 1.333333]
    # var = (1.361111 + 0.027778 + 1.777778) / 3 = 1.055556, std 1.027402
    # z = [-1.135550, -0.162221, 1.297771]
    result = advantages(rewards_of([1, 2, 3], [0, 0, 1]), [1.0, 0.5], mode="an")
    assert_close(result, [[-1.135550, -0.162221, 1.297771]])


def test_single_uses_channel_zero_only_and_ignores_weights():
    result = advantages(rewards_of([1, 2, 3], [9, 0, 4]), [5.0, 1.0], mode="single")
    assert_close(result, [[-Z3, 0.0, Z3]])


def test_single_null_channel_zero_is_no_signal():
    # ch0 over {1, 3}: z = [-1, 1]; completion 1 has no channel 0 -> 0, flagged
    mixed = compute_advantages(rewards_of([1, NAN, 3], [0, 1, 2]), np.ones(2), mode="single")
    assert_close(mixed.advantages, [[-1.0, 0.0, 1.0]])
    assert mixed.diagnostics.no_signal.tolist() == [[False, True, False]]


# ---------------------------------------------------------------- nulls


def test_na_null_renormalises_weights():
    # weights (1, 3), W = 4. ch0 [1,2,3] -> z0 = [-1.224745, 0, 1.224745]
    # ch1 [-, 0, 2] over {0, 2}: mean 1, std 1 -> z1 = [-, -1, 1]
    # A0 = (4/1) * z0 = -4.898979; A1 = (4/4)(0 + 3 * -1) = -3; A2 = 1.224745 + 3 = 4.224745
    result = advantages(rewards_of([1, 2, 3], [NAN, 0, 2]), [1.0, 3.0])
    assert_close(result, [[-4.898979, -3.0, 4.224745]])


def test_an_null_renormalises_weights():
    # weights (1, 3): s0 = 4 * 1 = 4; s1 = 2 + 3 * 0 = 2; s2 = 3 + 3 * 2 = 9
    # mean 5, deviations [-1, -3, 4], std sqrt(26/3) = 2.943920 -> [-0.339683, -1.019049, 1.358732]
    result = advantages(rewards_of([1, 2, 3], [NAN, 0, 2]), [1.0, 3.0], mode="an")
    assert_close(result, [[-0.339683, -1.019049, 1.358732]])


def test_all_null_completion_gets_zero_and_no_signal():
    # ch0 over {1, 3} -> [-1, 1]; ch1 over {0, 2} -> [-1, 1]; A = [-2, 2, 0]
    for mode, expected in (("na", [-2.0, 2.0, 0.0]), ("an", [-1.0, 1.0, 0.0])):
        mixed = compute_advantages(rewards_of([1, 3, NAN], [0, 2, NAN]), np.ones(2), mode=mode)
        assert_close(mixed.advantages, [expected])
        assert mixed.diagnostics.no_signal.tolist() == [[False, False, True]]
        assert mixed.diagnostics.review_reason.tolist() == [["", "", "no_signal"]]


def test_only_zero_weight_channels_present_is_no_signal():
    # completion 2 has only ch1, whose weight is 0 -> sum of present weights 0 -> 0, flagged
    mixed = compute_advantages(rewards_of([1, 3, NAN], [0, 2, 5]), np.array([1.0, 0.0]))
    assert_close(mixed.advantages, [[-1.0, 1.0, 0.0]])
    assert mixed.diagnostics.no_signal.tolist() == [[False, False, True]]


def test_inf_is_null_and_counted():
    # ch0 [1, inf, 3] -> over {1, 3}: [-1, -, 1]; ch1 [0, 1, 2] -> [-1.224745, 0, 1.224745]
    # A0 = -2.224745; A1 = (2/1) * 0 = 0; A2 = 2.224745
    mixed = compute_advantages(rewards_of([1, INF, 3], [0, 1, 2]), np.ones(2))
    assert_close(mixed.advantages, [[-2.224745, 0.0, 2.224745]])
    assert mixed.diagnostics.head_std.tolist() == [1.0, np.sqrt(2 / 3)]  # over the finite {1, 3} only
    negative = advantages(rewards_of([1, -INF, 3], [0, 1, 2]), np.ones(2))
    assert_close(negative, mixed.advantages)


# ---------------------------------------------------------------- degenerate groups


def test_zero_variance_channel_contributes_zero_but_keeps_its_weight():
    # ch0 constant -> z0 = 0 but it stays in S_j; A = (2/2)(0 + z1) = z1
    result = advantages(rewards_of([2, 2, 2], [1, 2, 3]), np.ones(2))
    assert_close(result, [[-Z3, 0.0, Z3]])


def test_constant_non_dyadic_group_is_exactly_zero():
    # mean of seven 1000000.1 is off by rounding; the plain formula gives 0.0115 here
    result = advantages(np.full((1, 7, 1), 1e6 + 0.1), [1.0])
    assert np.array_equal(result, np.zeros((1, 7)))


def test_eps_zero_with_constant_group_is_silent_and_zero(recwarn):
    result = advantages(np.array([[[1.0], [1.0]], [[0.0], [2.0]]]), [1.0], eps=0.0)
    assert_close(result, [[0.0, 0.0], [-1.0, 1.0]], tol=1e-12)
    assert not recwarn.list


def test_group_with_single_entry_is_zero():
    assert np.array_equal(advantages(np.array([[[5.0]]]), [1.0]), [[0.0]])
    assert_close(advantages(rewards_of([4, NAN]), [1.0], mode="an"), [[0.0, 0.0]])


def test_ragged_groups_via_valid():
    # group 0: valid [T,T,T,F], ch0 [1,2,3,100] -> z = [-1.224745, 0, 1.224745, 0 (invalid)]
    # group 1: [0,0,1,1] -> z = [-1,-1,1,1]; one channel of weight 2: A = (2/2) * 2 z = 2 z
    rewards = np.array([[1, 2, 3, 100], [0, 0, 1, 1]], dtype=float)[:, :, None]
    valid = np.array([[True, True, True, False], [True] * 4])
    for mode in ADVANTAGE_MODES:
        mixed = compute_advantages(rewards, np.array([2.0]), mode=mode, valid=valid)
        scale = 1.0 if mode in ("an", "single") else 2.0
        assert_close(mixed.advantages, scale * np.array([[-Z3, 0, Z3, 0], [-1, -1, 1, 1]]))
        assert not mixed.diagnostics.no_signal.any()


# ---------------------------------------------------------------- options


def test_batch_scope():
    # batch [0, 1, 2, 3]: mean 1.5, std sqrt(1.25) = 1.118034
    # z = [-1.341641, -0.447214, 0.447214, 1.341641]; group scope: [-1, 1, -1, 1]
    rewards = np.array([[0, 1], [2, 3]], dtype=float)[:, :, None]
    expected = [[-1.341641, -0.447214], [0.447214, 1.341641]]
    for mode in ADVANTAGE_MODES:
        assert_close(advantages(rewards, [1.0], mode=mode, scope="batch"), expected)
    assert_close(advantages(rewards, [1.0]), [[-1, 1], [-1, 1]])


def test_std_normalize_false_only_centres():
    # ch0 [1,2,3] -> [-1,0,1]; ch1 [0,0,3] (mean 1) -> [-1,-1,2]; NA: A = [-2,-1,3]
    # AN: s = [1,2,6], mean 3 -> [-2,-1,3]
    rewards = rewards_of([1, 2, 3], [0, 0, 3])
    assert_close(advantages(rewards, np.ones(2), std_normalize=False), [[-2, -1, 3]])
    assert_close(advantages(rewards, np.ones(2), mode="an", std_normalize=False), [[-2, -1, 3]])
    assert_close(advantages(rewards, [2.0, 0.0], mode="single", std_normalize=False), [[-1, 0, 1]])


def test_clip():
    # NA: z0 = [-1.224745, 0, 1.224745] -> [-1, 0, 1]; z1 of [0,0,1] = [-0.707107, -0.707107,
    # 1.414214] -> [-0.707107, -0.707107, 1]; A = [-1.707107, -0.707107, 2]
    rewards = rewards_of([1, 2, 3], [0, 0, 1])
    assert_close(advantages(rewards, np.ones(2), clip=1.0), [[-1.707107, -0.707107, 2.0]])
    # AN: s = [1, 2, 4], mean 7/3, std sqrt(42/27) = 1.247219
    # z = [-1.069045, -0.267261, 1.336306] -> clip 1: [-1, -0.267261, 1]
    assert_close(advantages(rewards, np.ones(2), mode="an", clip=1.0), [[-1.0, -0.267261, 1.0]])
    assert_close(advantages(rewards, np.ones(2), mode="single", clip=0.5), [[-0.5, 0.0, 0.5]])


def test_post_normalize():
    # group 0 [0, 1] -> [-1, 1]; group 1 [5, 5] constant -> [0, 0]
    # batch of [-1, 1, 0, 0]: mean 0, std sqrt(1/2) -> [-1.414214, 1.414214, 0, 0]
    rewards = np.array([[0, 1], [5, 5]], dtype=float)[:, :, None]
    result = advantages(rewards, [1.0], post_normalize=True)
    assert_close(result, [[-1.414214, 1.414214], [0.0, 0.0]])


def test_post_normalize_skips_no_signal_completions():
    # group 0 [0, 1, -] -> [-1, 1, 0 (no signal)]; group 1 [0, 3, 6] -> [-1.224745, 0, 1.224745]
    # over the 5 signal entries: mean 0, std sqrt((1 + 1 + 1.5 + 1.5) / 5) = 1 -> unchanged
    rewards = np.array([[0, 1, NAN], [0, 3, 6]], dtype=float)[:, :, None]
    assert_close(advantages(rewards, [1.0], post_normalize=True), [[-1, 1, 0], [-Z3, 0, Z3]])


def test_conditioned_gate_pass_fail_and_null():
    # gate ch0 [1, 1, 0, -]; ch1 [0.5, 1.0, 0.8, 0.7] -> gated [0.5, 1.0, 0 (fail), - (gate null)]
    # z0 over {1,1,0}: mean 2/3, std 0.471405 -> [0.707107, 0.707107, -1.414214, -]
    # gated ch1 over {0.5,1,0}: mean 0.5, std sqrt(1/6) = 0.408248 -> [0, 1.224745, -1.224745, -]
    # A = [0.707107, 1.931852, -2.638958, 0]; completion 3 has no channel -> no_signal
    rewards = rewards_of([1, 1, 0, NAN], [0.5, 1.0, 0.8, 0.7])
    mixed = compute_advantages(rewards, np.ones(2), mode="conditioned")
    assert_close(mixed.advantages, [[0.707107, 1.931852, -2.638958, 0.0]])
    assert mixed.diagnostics.no_signal.tolist() == [[False, False, False, True]]


def test_conditioned_gate_threshold():
    # gate 0.7 >= 0.5 passes: ch1 stays [2, 0 (fail: 0.2), 4]; ch0 [0.7, 0.2, 0.9]
    # ch1 gated [2, 0, 4]: mean 2, std 1.632993 -> [0, -1.224745, 1.224745]
    # ch0: mean 0.6, deviations [0.1, -0.4, 0.3], std sqrt(0.26/3) = 0.294392
    # z0 = [0.339683, -1.358732, 1.019049]; A = z0 + z1
    rewards = rewards_of([0.7, 0.2, 0.9], [2, 3, 4])
    result = advantages(rewards, np.ones(2), mode="conditioned", gate_threshold=0.5)
    assert_close(result, [[0.339683, -2.583477, 2.243794]])


# ---------------------------------------------------------------- diagnostics


def test_diagnostics_hand_example():
    # ch "correct" [1, 0, 1, -]: mean 2/3, std 0.471405; "format" [0.9, 0.2, 0.12, -]:
    # mean 0.406667, std 0.350365. Thresholds 0.5: completion 1 weak on both, shortfalls in
    # std units 0.5/0.471405 = 1.06 vs 0.3/0.350365 = 0.86 -> head 0; completion 2 weak on
    # format only -> head 1; completion 3 has no channel.
    rewards = rewards_of([1, 0, 1, NAN], [0.9, 0.2, 0.12, NAN])
    mixed = compute_advantages(
        rewards, np.ones(2), head_names=("correct", "format"), weak_thresholds=np.array([0.5, 0.5])
    )
    diagnostics = mixed.diagnostics
    assert_close(diagnostics.head_std, [0.471405, 0.350365])
    assert diagnostics.weak_heads[0].tolist() == [[0, 0], [1, 1], [0, 1], [0, 0]]
    assert diagnostics.review_head.tolist() == [[-1, 0, 1, -1]]
    assert diagnostics.review_reason.tolist() == [
        ["", "correct=0.00<0.50", "format=0.12<0.50", "no_signal"]
    ]
    assert diagnostics.head_names == ("correct", "format")


def test_diagnostics_zero_var_group_rate_and_defaults():
    # group 0: ch0 varies, ch1 constant; group 1: ch0 has one entry, ch1 varies
    rewards = np.array([[[0, 5], [1, 5]], [[3, 1], [NAN, 2]]], dtype=float)
    diagnostics = compute_advantages(rewards, np.ones(2)).diagnostics
    assert_close(diagnostics.head_zero_var_group_rate, [0.5, 0.5])
    assert diagnostics.head_names == ("h0", "h1")
    assert not diagnostics.weak_heads.any()
    assert diagnostics.review_head.tolist() == [[-1, -1], [-1, -1]]


def test_diagnostics_are_lazy_and_cached():
    mixed = compute_advantages(rewards_of([1, 2, 3]), np.ones(1))
    assert "diagnostics" not in vars(mixed)
    assert mixed.diagnostics is mixed.diagnostics


@pytest.mark.parametrize("mode", ADVANTAGE_MODES)
def test_inputs_are_not_modified(mode):
    # a transposed view whose channel-major transpose is already contiguous (no implicit copy)
    rewards = np.array([[1, NAN, 3, INF], [0, 1, NAN, 2]], dtype=float).T[None]
    before = rewards.copy()
    mixed = compute_advantages(rewards, np.ones(2), mode=mode, valid=np.ones((1, 4), bool))
    assert mixed.diagnostics.head_std[0] == 1.0  # reading the diagnostics must not touch the input either
    np.testing.assert_array_equal(rewards, before)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("rewards_shape", "weights", "kwargs", "message"),
    [
        ((2, 3), [1.0], {}, "3-D"),
        ((1, 0, 1), [1.0], {}, "m >= 1"),
        ((1, 3, 2), [[1.0, 1.0]], {}, "1-D"),
        ((1, 3, 2), [1.0], {}, "R=2"),
        ((1, 3, 2), [1.0, -1.0], {}, "non-negative"),
        ((1, 3, 2), [0.0, 0.0], {}, "positive"),
        ((1, 3, 2), [1.0, NAN], {}, "finite"),
        ((1, 3, 2), [1.0, INF], {}, "finite"),
        ((1, 3, 2), [1e308, 1e308], {}, "finite sum"),
        ((1, 3, 2), [1.0, 1.0], {"valid": np.ones((3, 1), bool)}, "valid"),
        ((1, 3, 2), [1.0, 1.0], {"mode": "mean"}, "mode"),
        ((1, 3, 2), [1.0, 1.0], {"scope": "global"}, "scope"),
        ((1, 3, 2), [1.0, 1.0], {"clip": 0.0}, "clip"),
        ((1, 3, 2), [1.0, 1.0], {"clip": -1.0}, "clip"),
        ((1, 3, 2), [1.0, 1.0], {"eps": -1.0}, "eps"),
        ((1, 3, 2), [1.0, 1.0], {"head_names": ["a"]}, "head_names"),
        ((1, 3, 2), [1.0, 1.0], {"weak_thresholds": np.zeros(3)}, "weak_thresholds"),
        ((1, 3, 2), [1.0, 1.0], {"gate_threshold": NAN}, "gate_threshold"),
    ],
)
def test_invalid_inputs_raise(rewards_shape, weights, kwargs, message):
    with pytest.raises(ValueError, match=message):
        compute_advantages(np.ones(rewards_shape), np.array(weights), **kwargs)


@pytest.mark.parametrize("values", [[1e200, -1e200, 0.0], [1e308, 1e308, 1e308]])
def test_overflowing_rewards_raise(values):
    with pytest.raises(ValueError, match="overflow"), np.errstate(over="ignore", invalid="ignore"):
        compute_advantages(rewards_of(values), np.ones(1))


# ---------------------------------------------------------------- properties

SHAPES = st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 4))
NOISY = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False), st.sampled_from([NAN, INF, -INF, 0.0, 1.0])
)
INTEGERS = st.integers(-20, 20).map(float)


ONE_CHANNEL = hnp.arrays(
    np.float64, st.tuples(st.integers(1, 5), st.integers(1, 6), st.just(1)), elements=INTEGERS
)


def weights_for(num_heads):
    """Non-negative weights, some possibly 0, never all 0."""
    element = st.one_of(st.just(0.0), st.floats(0.01, 10.0))
    return hnp.arrays(np.float64, num_heads, elements=element).filter(lambda w: w.sum() > 0)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), shape=SHAPES)
def test_advantages_always_finite(data, shape):
    rewards = data.draw(hnp.arrays(np.float64, shape, elements=NOISY))
    weights = data.draw(weights_for(shape[2]))
    valid = data.draw(hnp.arrays(bool, shape[:2]))
    thresholds = data.draw(hnp.arrays(np.float64, shape[2], elements=st.floats(-1e6, 1e6)))
    kwargs = data.draw(
        st.fixed_dictionaries(
            {
                "mode": st.sampled_from(ADVANTAGE_MODES),
                "scope": st.sampled_from(("group", "batch")),
                "std_normalize": st.booleans(),
                "clip": st.sampled_from((None, 1.0)),
                "post_normalize": st.booleans(),
            }
        )
    )
    mixed = compute_advantages(rewards, weights, valid=valid, weak_thresholds=thresholds, **kwargs)
    assert mixed.advantages.shape == shape[:2]
    assert np.isfinite(mixed.advantages).all()
    assert np.all(mixed.advantages[~valid] == 0)
    assert mixed.diagnostics.review_reason.shape == shape[:2]


def grpo(rewards_pm, eps=1e-8):
    """Plain GRPO (Shao et al. 2024): per-group (r - mean) / (std + eps)."""
    centred = rewards_pm - rewards_pm.mean(axis=1, keepdims=True)
    return centred / (rewards_pm.std(axis=1, keepdims=True) + eps)


@settings(max_examples=40, deadline=None)
@given(rewards=ONE_CHANNEL)
def test_one_channel_na_an_single_equal_grpo(rewards):
    # integer rewards: a constant group has an exact mean, so the plain formula is exactly 0 too
    expected = grpo(rewards[:, :, 0])
    for mode in ("na", "an", "single"):
        assert_close(advantages(rewards, [1.0], mode=mode), expected, tol=1e-9)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), shape=SHAPES)
def test_permuting_completions_permutes_advantages(data, shape):
    rewards = data.draw(hnp.arrays(np.float64, shape, elements=st.one_of(INTEGERS, st.just(NAN))))
    weights = data.draw(weights_for(shape[2]))
    mode = data.draw(st.sampled_from(ADVANTAGE_MODES))
    seed = data.draw(st.integers(0, 2**16))
    order = np.argsort(np.random.default_rng(seed).random(shape[:2]), axis=1)
    permuted = np.take_along_axis(rewards, order[:, :, None], axis=1)
    original = advantages(rewards, weights, mode=mode)
    assert_close(advantages(permuted, weights, mode=mode), np.take_along_axis(original, order, 1),
                 tol=1e-9)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), shape=SHAPES, factor=st.floats(0.1, 100.0))
def test_scaling_a_channel_leaves_na_unchanged(data, shape, factor):
    # integer rewards: a non-constant group has std >= 0.37, so the eps effect is < 1e-6
    rewards = data.draw(hnp.arrays(np.float64, shape, elements=st.one_of(INTEGERS, st.just(NAN))))
    weights = data.draw(weights_for(shape[2]))
    channel = data.draw(st.integers(0, shape[2] - 1))
    scaled = rewards.copy()
    scaled[:, :, channel] *= factor
    assert_close(advantages(scaled, weights), advantages(rewards, weights), tol=1e-5)


@settings(max_examples=30, deadline=None)
@given(factor=st.floats(2.0, 100.0), shift=INTEGERS)
def test_scaling_a_channel_changes_an(factor, shift):
    # s(c) = ch0 + c ch1 = [1 + 3c, 2 + c, 3 + 2c] is an increasing affine image of s(1) = [4, 3, 5]
    # only for c = 1 (solve a s(1) + b = s(c) componentwise), so the AN z-scores must move.
    rewards = rewards_of([1, 2, 3], [3, 1, 2]) + shift
    scaled = rewards.copy()
    scaled[:, :, 1] *= factor
    before, after = (advantages(r, np.ones(2), mode="an") for r in (rewards, scaled))
    assert np.abs(after - before).max() > 1e-3
    assert_close(advantages(scaled, np.ones(2)), advantages(rewards, np.ones(2)), tol=1e-6)


# ---------------------------------------------------------------- reference package


def test_matches_multireward_grpo_package():
    package = importlib.import_module("multireward_grpo.advantage")  # a dev dependency: never skipped
    rng = np.random.default_rng(1)
    rewards = np.concatenate(
        [rng.integers(0, 2, (64, 8, 1)), rng.random((64, 8, 1)), rng.normal(0, 10, (64, 8, 1))],
        axis=2,
    ).astype(float)
    weights = np.array([1.0, 0.5, 0.25])
    for mode in ("na", "an", "single"):
        expected = package.compute_advantage_batch(rewards, weights, mode)
        assert_close(advantages(rewards, weights, mode=mode), expected, tol=1e-9)
