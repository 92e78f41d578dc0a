"""A softmax bandit with R correlated reward channels: exact scores and exact gradients.

Each of P "prompts" is an independent bandit over Y actions with policy
``pi = softmax(theta)``, ``theta ~ N(0, 1)`` ``(Y,)``. Action ``y`` has mean
rewards ``mu[y] = signal * scale * u[y]`` ``(R,)`` (``u ~ N(0, 1)``), and a
sample adds Gaussian noise with covariance
``Sigma = diag(scale) (rho 11^T + (1 - rho) I) diag(scale)``: equicorrelated
channels of known correlation ``rho`` on very different scales.

The score of a sample is exact, ``s(y) = grad_theta log pi(y) = e_y - pi``
``(Y,)``, and so are the population quantities the estimators aim at::

    Cov(r)    = sum_y pi_y (mu_y - mu_bar)(mu_y - mu_bar)^T + Sigma          (R, R)
    Cov(r, s) = sum_y pi_y mu_y (e_y - pi)^T                                (R, Y)
    g_NA      = sum_l w_l Cov(r_l, s) / sd(r_l)
    g_AN      = w^T Cov(r, s) / sqrt(w^T Cov(r) w)

i.e. the policy gradient of ``E[A_pop]`` with the population z-scores (NA)
or the population z-score of ``w . r`` (AN); the group estimators converge to
them as ``m`` grows (their finite-``m`` bias is reported separately).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mixgrpo.analysis.thm3 import ScoreSample


@dataclass(frozen=True)
class Bandit:
    """P independent softmax bandits with R reward channels."""

    probs: np.ndarray
    """(P, Y) policy ``pi``."""
    mean_rewards: np.ndarray
    """(P, Y, R) mean reward of each action and channel."""
    noise_cov: np.ndarray
    """(R, R) covariance of the reward noise."""

    def reward_covariance(self) -> np.ndarray:
        """(P, R, R) population covariance of the rewards (action spread + noise)."""
        centred = self.mean_rewards - np.einsum("py,pyr->pr", self.probs, self.mean_rewards)[:, None, :]
        spread = np.einsum("py,pyr,pys->prs", self.probs, centred, centred)
        return spread + self.noise_cov

    def reward_correlation(self) -> np.ndarray:
        """(P, R, R) population correlation of the rewards."""
        cov = self.reward_covariance()
        sd = np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
        return cov / (sd[:, :, None] * sd[:, None, :])

    def score_variance(self) -> np.ndarray:
        """(P,) exact ``tau^2 = E||e_y - pi||^2 = 1 - ||pi||^2``."""
        return 1.0 - (self.probs**2).sum(axis=1)

    def true_gradients(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Population gradients ``(P, Y)`` of the NA and AN objectives (module docstring)."""
        weights = np.asarray(weights, dtype=np.float64)
        centred_probs = np.eye(self.probs.shape[1])[None] - self.probs[:, None, :]  # (P, Y, Y): e_y - pi
        reward_score = np.einsum("py,pyr,pyd->prd", self.probs, self.mean_rewards, centred_probs)  # (P, R, Y)
        cov = self.reward_covariance()
        sd = np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
        scalar_sd = np.sqrt(np.einsum("r,prs,s->p", weights, cov, weights))
        return {
            "na": np.einsum("r,pr,prd->pd", weights, 1.0 / sd, reward_score),
            "an": np.einsum("r,prd->pd", weights, reward_score) / scalar_sd[:, None],
        }

    def sample(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` i.i.d. rollouts per prompt: actions ``(P, n)`` int and rewards ``(P, n, R)``."""
        rng = np.random.default_rng(seed)
        num_prompts, num_actions, channels = self.mean_rewards.shape
        cumulative = np.cumsum(self.probs, axis=1)
        draws = rng.random((num_prompts, n, 1))
        actions = np.minimum((draws > cumulative[:, None, :]).sum(axis=2), num_actions - 1)
        noise = rng.multivariate_normal(np.zeros(channels), self.noise_cov, size=(num_prompts, n))
        means = np.take_along_axis(self.mean_rewards, actions[:, :, None], axis=1)
        return actions, means + noise


def equicorrelation(scales: np.ndarray, rho: float) -> np.ndarray:
    """``diag(scales) (rho 11^T + (1 - rho) I) diag(scales)`` ``(R, R)``; ValueError unless positive definite."""
    scales = np.asarray(scales, dtype=np.float64)
    channels = len(scales)
    if not (-1.0 / max(channels - 1, 1) < rho < 1.0):
        raise ValueError(f"rho={rho} is not a valid correlation for {channels} equicorrelated channels "
                         f"(need {-1.0 / max(channels - 1, 1):.3g} < rho < 1)")
    correlation = np.full((channels, channels), rho) + (1.0 - rho) * np.eye(channels)
    return correlation * np.outer(scales, scales)


def make_bandit(prompts: int, actions: int, scales: np.ndarray, rho: float, signal: float, seed: int) -> Bandit:
    """P random bandits (seeded): logits ~ N(0, 1), mean rewards ``signal * scale * N(0, 1)``."""
    rng = np.random.default_rng(seed)
    scales = np.asarray(scales, dtype=np.float64)
    logits = rng.standard_normal((prompts, actions))
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    means = signal * scales * rng.standard_normal((prompts, actions, len(scales)))
    return Bandit(probs, means, equicorrelation(scales, rho))


def bandit_sample(bandit: Bandit, weights: np.ndarray, n: int, seed: int) -> ScoreSample:
    """``n`` rollouts per prompt with their exact scores ``e_y - pi`` and the true gradients."""
    actions, rewards = bandit.sample(n, seed)
    num_actions = bandit.probs.shape[1]
    scores = np.eye(num_actions)[actions] - bandit.probs[:, None, :]
    return ScoreSample(rewards=rewards, scores=scores, true_gradients=bandit.true_gradients(weights))
