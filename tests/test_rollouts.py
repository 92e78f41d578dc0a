"""Group selection of the rollout pipeline (dynamic sampling): constant groups, taking and joining groups; how
rollout and train batches travel (pickled ragged columns)."""

from __future__ import annotations

import math
import pickle

import numpy as np

from mixgrpo.batch import PromptBatch, RolloutBatch, TrainBatch
from mixgrpo.orchestrator.dynamic_sampling import merge_scores
from mixgrpo.orchestrator.rollouts import concat_groups, constant_groups, take_groups
from mixgrpo.orchestrator.scoring import StepScores


def _batch(p: int, m: int = 2, first: int = 10) -> tuple[PromptBatch, RolloutBatch]:
    prompts = PromptBatch(np.arange(first, first + p), [f"q{i}" for i in range(p)], [{"i": i} for i in range(p)])
    n = p * m
    tokens = [np.array([i], dtype=np.int64) for i in range(n)]
    rollouts = RolloutBatch(
        prompt_index=np.repeat(np.arange(p), m), prompt_token_ids=tokens, completion_token_ids=tokens,
        behaviour_logprobs=[np.zeros(1, np.float32)] * n, completion_text=[f"c{first}-{i}" for i in range(n)],
        policy_version=np.repeat(np.arange(p), m),
    )
    return prompts, rollouts


def test_constant_groups_need_every_channel_constant_over_non_null_entries():
    nan = math.nan
    rewards = np.array([
        [[1.0, 0.5], [1.0, 0.5], [1.0, 0.5]],      # all equal: no signal
        [[1.0, 0.5], [0.0, 0.5], [1.0, 0.5]],      # channel 0 varies
        [[0.0, nan], [0.0, -1.0], [0.0, nan]],     # channel 1 present once: constant
        [[nan, nan], [nan, nan], [nan, nan]],      # all null: no signal
        [[0.0, nan], [0.0, -1.0], [0.0, -2.0]],    # channel 1 varies over its non-null entries
    ])
    assert constant_groups(rewards).tolist() == [True, False, True, True, False]


def test_take_groups_renumbers_prompt_index():
    prompts, rollouts = _batch(4)
    kept_prompts, kept = take_groups(prompts, rollouts, np.array([1, 3]))
    assert kept_prompts.prompt_ids.tolist() == [11, 13]
    assert kept.prompt_index.tolist() == [0, 0, 1, 1]
    assert kept.completion_text == ["c10-2", "c10-3", "c10-6", "c10-7"]


def test_concat_groups_joins_rounds_in_order():
    prompts, rollouts = concat_groups([_batch(2), _batch(3, first=20)])
    assert prompts.prompt_ids.tolist() == [10, 11, 20, 21, 22]
    assert rollouts.prompt_index.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert rollouts.completion_text[4] == "c20-0"


def test_merge_scores_stacks_rewards_and_sums_counters():
    a = StepScores(np.zeros((2, 1)), {"x": {"errors": 1}}, {"x": 0.5})
    b = StepScores(np.ones((3, 1)), {"x": {"errors": 2, "timeouts": 1}}, {"x": 0.25})
    merged = merge_scores([a, b])
    assert merged.rewards[:, 0].tolist() == [0, 0, 1, 1, 1]
    assert merged.counters == {"x": {"errors": 3, "timeouts": 1}}
    assert merged.seconds == {"x": 0.75}


def _out_of_band_buffers(value: object) -> tuple[object, int]:
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)  # as Ray serialises
    return pickle.loads(data, buffers=buffers), len(buffers)


def test_batches_travel_whole_with_a_few_buffers_whatever_their_size():
    small, large = _batch(2)[1], _batch(64)[1]
    rows = [np.arange(k, dtype=np.int64) for k in (0, 3, 1, 0)]  # empty completions too
    ragged = RolloutBatch(np.array([0, 0, 1, 1]), rows, rows[::-1], [r.astype(np.float32) for r in rows],
                          ["a", "b", "c", "d"], np.zeros(4, np.int64), truncated=np.array([0, 1, 0, 0], bool),
                          source=np.array([0, 0, 1, 1]))
    for batch in (small, large, ragged, TrainBatch.from_rollouts(ragged, np.arange(4.0), np.array([3, 1]))):
        back, buffers = _out_of_band_buffers(batch)
        assert buffers <= 12  # a few flat columns, not three small arrays per row
        for name, value in vars(batch).items():
            got = getattr(back, name)
            if isinstance(value, list):
                assert [np.asarray(v).tolist() for v in got] == [np.asarray(v).tolist() for v in value], name
                assert all(np.asarray(g).dtype == np.asarray(v).dtype for g, v in zip(got, value)), name
            else:
                assert np.asarray(got).tolist() == np.asarray(value).tolist(), name
    assert _out_of_band_buffers(small)[1] == _out_of_band_buffers(large)[1]
