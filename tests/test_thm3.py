"""Theorem-3 harness: the package's numbers, the bandit's exact quantities, the law itself, and a run's rollouts."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
import ray
from ray_helpers import start_local_ray

from mixgrpo.analysis.bandit import bandit_sample, make_bandit
from mixgrpo.analysis.thm3 import (
    analyze_random_scores,
    analyze_real_scores,
    sample_correlation,
)
from mixgrpo.config import load_config
from mixgrpo.orchestrator.cli import main
from mixgrpo.orchestrator.driver import train

WEIGHTS = np.array([1.0, 0.5, 0.25])


def _reward_tensor(seed: int = 1) -> np.ndarray:
    """(P=6, K=20, m=8, R=3): a 0/1 channel and two continuous channels of very different scales."""
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(6, 20, 8, 3)) * [1.0, 5.0, 0.1]
    rewards[..., 0] = (rewards[..., 0] > 0.3).astype(float)
    rewards[..., 2] += 0.5 * rewards[..., 1]
    return rewards


def test_random_scores_reproduce_the_package():
    package = importlib.import_module("multireward_grpo.analysis")  # a dev dependency: never skipped
    rewards = _reward_tensor()
    theirs, ours = package.analyze(rewards, WEIGHTS, score_seed=3), analyze_random_scores(rewards, WEIGHTS, 3)
    for field in ["realized_an", "realized_na", "predicted_per_prompt", "predicted_pooled",
                  "influence_an", "influence_na", "pooled_C"]:
        np.testing.assert_allclose(getattr(ours, field), getattr(theirs, field), rtol=1e-10, atol=1e-13,
                                   err_msg=field)


def test_random_scores_known_values():
    """N(0,1) scores: Var(g_hat) = E[mean_j A_j^2] / m, which is 1/m for AN and w^T C_hat w / m for NA."""
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(3, 4000, 8, 3)) * [1.0, 10.0, 0.1]
    result = analyze_random_scores(rewards, WEIGHTS, score_seed=0)
    np.testing.assert_allclose(result.realized_an, 1 / 8, rtol=0.06)
    np.testing.assert_allclose(result.realized_na, result.predicted_per_prompt, rtol=0.06)
    np.testing.assert_allclose(np.diag(result.pooled_C), 1.0, atol=1e-5)  # eps / var for the 0.1 scale
    np.testing.assert_allclose(result.influence_na, WEIGHTS, atol=0.02)  # uncorrelated channels


def test_bandit_true_gradient_is_the_derivative_of_the_objective():
    """g_NA = grad_theta sum_l w_l E_pi[r_l] / sd_l (sd held fixed), checked by central differences."""
    bandit = make_bandit(prompts=2, actions=5, scales=np.array([1.0, 10.0, 0.1]), rho=0.5, signal=0.7, seed=3)
    truth = bandit.true_gradients(WEIGHTS)["na"]
    sd = np.sqrt(np.diagonal(bandit.reward_covariance(), axis1=1, axis2=2))
    logits = np.log(bandit.probs)

    def objective(theta, p):
        probs = np.exp(theta - theta.max()) / np.exp(theta - theta.max()).sum()
        return float(probs @ bandit.mean_rewards[p] @ (WEIGHTS / sd[p]))

    for p in range(2):
        step = 1e-6 * np.eye(5)
        numeric = [(objective(logits[p] + e, p) - objective(logits[p] - e, p)) / 2e-6 for e in step]
        np.testing.assert_allclose(truth[p], numeric, atol=1e-7)


def test_bandit_measured_correlation_and_score_variance_match_the_known_ones():
    bandit = make_bandit(prompts=4, actions=6, scales=np.array([1.0, 10.0, 0.1]), rho=0.6, signal=0.0, seed=0)
    sample = bandit_sample(bandit, WEIGHTS, 20_000, seed=1)
    measured = sample_correlation(sample.rewards.reshape(4, -1, 32, 3)).mean(axis=1)
    np.testing.assert_allclose(measured, bandit.reward_correlation(), atol=0.03)
    np.testing.assert_allclose(bandit.reward_correlation()[:, 0, 1], 0.6)
    tau2 = ((sample.scores - sample.scores.mean(axis=1, keepdims=True)) ** 2).sum(axis=2).mean(axis=1)
    np.testing.assert_allclose(tau2, bandit.score_variance(), rtol=0.02)


@pytest.mark.parametrize("signal, low, high", [(0.0, 0.96, 1.04), (0.3, 0.92, 1.02)])
def test_bandit_mse_follows_the_law(signal, low, high):
    """Real scores: measured/predicted about 1 at every m, slope of log MSE against log m about -1."""
    bandit = make_bandit(prompts=8, actions=6, scales=np.array([1.0, 10.0, 0.1]), rho=0.5, signal=signal, seed=0)
    analysis = analyze_real_scores(bandit_sample(bandit, WEIGHTS, 1500 * 32, seed=1), WEIGHTS, [4, 8, 16, 32])
    for check in analysis.checks:
        for mode, estimator in check.estimators.items():
            assert low < estimator.ratio < high, (signal, check.m, mode, estimator.ratio)
    for mode in ["na", "an"]:
        assert abs(analysis.slope(mode) + 1) < 0.05, (mode, analysis.slope(mode))


def test_synthetic_cli_writes_json_and_png(tmp_path, capsys):
    out = tmp_path / "thm3"
    assert main(["thm3-check", "--synthetic", "--rho", "0.3", "--groups", "300", "--out", str(out)]) == 0
    report = json.loads((out / "thm3.json").read_text())
    assert [e["m"] for e in report["real_scores"]["per_m"]] == [4, 8, 16, 32]
    assert all(0.85 < e[mode]["ratio"] < 1.1 for e in report["real_scores"]["per_m"] for mode in ["na", "an"])
    assert sorted(report["random_scores"]) == ["16", "32", "4", "8"]
    assert (out / "thm3.png").stat().st_size > 20_000
    assert "slope of log MSE vs log m" in capsys.readouterr().out
    np.save(tmp_path / "rewards.npy", _reward_tensor())
    assert main(["thm3-check", "--rewards", str(tmp_path / "rewards.npy"), "--weights", "1,0.5,0.25",
                 "--out", str(tmp_path / "file")]) == 0
    from_file = json.loads((tmp_path / "file" / "thm3.json").read_text())["random_scores"]
    expected = analyze_random_scores(_reward_tensor(), WEIGHTS, 0)
    np.testing.assert_allclose(from_file["realized_na"], expected.realized_na, rtol=1e-8)
    assert (tmp_path / "file" / "thm3.png").stat().st_size > 10_000


@pytest.fixture(scope="module")
def finished_run(tiny_model_cache, tmp_path_factory):
    """A tiny finished run (2 steps, two channels, one of them null for answers without a number)."""
    start_local_ray(num_cpus=2)
    config = load_config(None, [
        "run.steps=2", "run.tensorboard=false", "run.progress=false", "task.prompts_per_step=4",
        "generator.group_size=4",
        "rewards=[{name: correct, kind: numeric_match}, {name: closeness, kind: numeric_distance, weight: 0.5}]",
    ])
    outputs = train(config, tmp_path_factory.mktemp("thm3run") / "run")
    ray.shutdown()
    return outputs.run_dir


def test_from_run_analyses_the_runs_rollouts_reproducibly(finished_run, tmp_path):
    reports = []
    for name in ["a", "b"]:
        args = ["thm3-check", "--from-run", str(finished_run), "--prompts", "3", "--groups", "4",
                "--group-sizes", "4,8", "--projection-dim", "16", "--out", str(tmp_path / name)]
        assert main(args) == 0
        reports.append(json.loads((tmp_path / name / "thm3.json").read_text()))
    first, second = reports
    assert first["real_scores"] == second["real_scores"]  # seeded sampling and projection
    assert first["run"]["channels"] == ["correct", "closeness"] and first["run"]["lora_parameters"] > 1000
    per_m = first["real_scores"]["per_m"]
    assert [(e["m"], e["groups"]) for e in per_m] == [(4, 8), (8, 4)]
    for entry in per_m:
        for mode in ["na", "an"]:
            assert entry[mode]["measured"] > 0 and entry[mode]["predicted"] > 0
            assert 0.1 < entry[mode]["ratio"] < 10
    assert (tmp_path / "a" / "thm3.png").stat().st_size > 20_000


def test_from_run_rejects_a_directory_without_an_adapter(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text("run: {steps: 1}\n")
    assert main(["thm3-check", "--from-run", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "adapter" in capsys.readouterr().err
