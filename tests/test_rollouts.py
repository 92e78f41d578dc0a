"""The staleness filter of the async pipeline."""

from __future__ import annotations

import numpy as np

from mixgrpo.batch import PromptBatch, RolloutBatch
from mixgrpo.orchestrator.rollouts import drop_stale_groups


def _batch(versions_per_group: list[int], m: int = 2) -> tuple[PromptBatch, RolloutBatch]:
    p = len(versions_per_group)
    prompts = PromptBatch(np.arange(10, 10 + p), [f"q{i}" for i in range(p)], [{"i": i} for i in range(p)])
    n = p * m
    tokens = [np.array([i], dtype=np.int64) for i in range(n)]
    rollouts = RolloutBatch(
        prompt_index=np.repeat(np.arange(p), m), prompt_token_ids=tokens, completion_token_ids=tokens,
        behaviour_logprobs=[np.zeros(1, np.float32)] * n, completion_text=[f"c{i}" for i in range(n)],
        policy_version=np.repeat(np.array(versions_per_group), m),
    )
    return prompts, rollouts


def test_groups_older_than_the_allowed_lag_are_dropped_and_counted():
    prompts, rollouts = _batch([5, 3, 4, 2])
    kept_prompts, kept, dropped = drop_stale_groups(prompts, rollouts, learner_version=5, max_lag=1)
    assert dropped == 2
    assert kept_prompts.prompt_ids.tolist() == [10, 12]
    assert kept.prompt_index.tolist() == [0, 0, 1, 1]
    assert kept.completion_text == ["c0", "c1", "c4", "c5"]
    assert kept.policy_version.tolist() == [5, 5, 4, 4]


def test_nothing_dropped_when_fresh():
    prompts, rollouts = _batch([7, 7])
    kept_prompts, kept, dropped = drop_stale_groups(prompts, rollouts, learner_version=7, max_lag=0)
    assert dropped == 0 and kept is rollouts and kept_prompts is prompts
