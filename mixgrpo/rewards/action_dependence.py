"""Which reward heads ignore the sampled action: their group advantages are then zero everywhere.

Pure numpy. A one-step policy (the CLIP classifier) samples m actions per input; a
head that scores every action of a group alike (the seed recipe's "soft" reward
p(correct | image), which depends on the image but not on the sampled label) has
zero variance in every group, so NA/AN group normalisation gives it advantage 0
(Shao et al. 2024, eq. 3: A = (r - mean) / std within the group) and it trains nothing.
"""

from __future__ import annotations

import numpy as np


def action_independent_heads(rewards: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """(R,) bool: heads whose non-null rewards are equal within every group that sampled two different actions.

    rewards: (P, m, R) float64, NaN = null; actions: (P, m) int. A head is flagged only when at
    least one group has two different actions with non-null rewards (else there is no evidence).
    """
    if rewards.ndim != 3 or actions.shape != rewards.shape[:2]:
        raise ValueError(f"need rewards (P, m, R) and actions (P, m), got {rewards.shape}, {actions.shape}")
    flags = np.zeros(rewards.shape[2], dtype=bool)
    for head in range(rewards.shape[2]):
        evidence, varies = False, False
        for group_rewards, group_actions in zip(rewards[:, :, head], actions):
            present = ~np.isnan(group_rewards)
            if len(np.unique(group_actions[present])) < 2:
                continue
            evidence = True
            if np.ptp(group_rewards[present]) > 0:
                varies = True
                break
        flags[head] = evidence and not varies
    return flags
