"""Tests of RewardWorker as a plain class: failures become nulls, counted per kind, logged once."""

import logging
import math
import sys
import time

import numpy as np
import pytest
import torch

from mixgrpo.actors.reward import MAX_ABS_REWARD, RewardWorker, sanitize, scoring_input
from mixgrpo.batch import PromptBatch, RolloutBatch
from mixgrpo.config import RewardChannelConfig

MODULE = "mixgrpo_test_worker_rewards"
SOURCE = '''
import time

MIXED = {"c0": None, "c1": float("nan"), "c2": float("inf"), "c3": "str",
         "c4": 1e300, "c5": True, "c6": 0.5, "c7": -2}

def raises(prompt, completion, metadata):
    raise RuntimeError("boom")

def raises_key(prompt, completion, metadata):
    raise KeyError("missing")

def raises_batch(prompts, completions, metadata):
    raise RuntimeError("boom")

def hangs(prompts, completions, metadata):
    time.sleep(3.0)
    return [1.0] * len(completions)

def mixed(prompt, completion, metadata):
    return MIXED[completion]

def wrong_length(prompts, completions, metadata):
    return [1.0] * (len(completions) - 1)

def answer_plus_length(prompt, completion, metadata):
    return float(metadata["answer"]) + len(completion)

def as_array(prompts, completions, metadata):
    import numpy as np
    return np.arange(len(completions), dtype=np.float32)
'''


@pytest.fixture(scope="module", autouse=True)
def user_module(tmp_path_factory):
    directory = tmp_path_factory.mktemp("worker_rewards")
    (directory / f"{MODULE}.py").write_text(SOURCE)
    sys.path.insert(0, str(directory))
    yield
    sys.path.remove(str(directory))
    sys.modules.pop(MODULE, None)


def worker(function: str, batched: bool = False, timeout_s: float = 5.0, name: str = "ch") -> RewardWorker:
    options = {"callable": f"{MODULE}:{function}", "batched": batched}
    return RewardWorker(RewardChannelConfig(name=name, kind="python", timeout_s=timeout_s, options=options))


def prompts_and_rollouts(completions: list[str] | None = None, m: int = 4) -> tuple[PromptBatch, RolloutBatch]:
    """P = 2 prompts, m completions each (group-major), completion i is "c<i>" unless given."""
    prompts = PromptBatch(
        prompt_ids=np.array([10, 11], dtype=np.int64),
        prompts=["1+2=", "3+4="],
        metadata=[{"answer": "3"}, {"answer": "7"}],
    )
    n = 2 * m
    texts = completions if completions is not None else [f"c{i}" for i in range(n)]
    rollouts = RolloutBatch(
        prompt_index=np.repeat(np.arange(2, dtype=np.int64), m),
        prompt_token_ids=[np.array([1, 5, 6, 7], dtype=np.int64) for _ in range(n)],
        completion_token_ids=[np.arange(i % 3 + 1, dtype=np.int64) for i in range(n)],
        behaviour_logprobs=[np.full(i % 3 + 1, -0.5, dtype=np.float32) for i in range(n)],
        completion_text=texts,
        policy_version=np.zeros(n, dtype=np.int64),
    )
    return prompts, rollouts


def test_scoring_input_expands_prompts_per_completion():
    prompts, rollouts = prompts_and_rollouts(m=2)
    view = scoring_input(prompts, rollouts)
    assert view.prompts == ["1+2=", "1+2=", "3+4=", "3+4="]
    assert view.metadata == [{"answer": "3"}, {"answer": "3"}, {"answer": "7"}, {"answer": "7"}]
    assert view.completions == ["c0", "c1", "c2", "c3"]
    assert view.completion_tokens == [1, 2, 3, 1]
    assert len(view) == 4


def test_good_channel_scores_every_completion():
    prompts, rollouts = prompts_and_rollouts(["", "a", "ab", "abc"], m=2)
    scores = worker("answer_plus_length", name="sum").score(prompts, rollouts)
    assert list(scores.values) == ["sum"]
    np.testing.assert_array_equal(scores.values["sum"], [3.0, 4.0, 9.0, 10.0])
    assert scores.values["sum"].dtype == np.float64
    assert scores.counters == {}
    assert scores.seconds >= 0.0


def test_builtin_channel_null_is_counted():
    prompts, rollouts = prompts_and_rollouts(["3", "it is 5", "none", "7"], m=2)
    config = RewardChannelConfig(name="closeness", kind="numeric_distance")
    scores = RewardWorker(config).score(prompts, rollouts)
    np.testing.assert_array_equal(scores.values["closeness"], [0.0, -2.0, np.nan, 0.0])
    assert scores.counters == {"null": 1}


def test_raising_batched_channel_gives_all_null_and_one_error():
    prompts, rollouts = prompts_and_rollouts()
    scores = worker("raises_batch", batched=True).score(prompts, rollouts)
    assert np.isnan(scores.values["ch"]).all()
    assert scores.values["ch"].shape == (8,)
    assert scores.counters == {"errors": 1}


def test_per_completion_channel_raising_everywhere_counts_each_completion():
    prompts, rollouts = prompts_and_rollouts()
    scores = worker("raises").score(prompts, rollouts)
    assert np.isnan(scores.values["ch"]).all()
    assert scores.counters == {"item_errors": 8}


def test_hanging_channel_times_out_in_about_the_timeout():
    prompts, rollouts = prompts_and_rollouts()
    w = worker("hangs", batched=True, timeout_s=0.5)
    started = time.monotonic()
    scores = w.score(prompts, rollouts)
    elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 1.5
    assert np.isnan(scores.values["ch"]).all()
    assert scores.counters == {"timeouts": 1}


def test_bad_values_null_only_those_items_counted_by_kind():
    prompts, rollouts = prompts_and_rollouts()
    w = worker("mixed")
    scores = w.score(prompts, rollouts)
    expected = [np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, 0.5, -2.0]
    np.testing.assert_array_equal(scores.values["ch"], expected)
    assert scores.counters == {"null": 1, "non_finite": 2, "not_a_number": 2, "out_of_range": 1}
    assert w.score(prompts, rollouts).counters == scores.counters  # every call counts its own


def test_wrong_length_is_an_error_and_all_null():
    prompts, rollouts = prompts_and_rollouts()
    scores = worker("wrong_length", batched=True).score(prompts, rollouts)
    assert np.isnan(scores.values["ch"]).all()
    assert scores.counters == {"errors": 1}


def test_numpy_output_is_accepted():
    prompts, rollouts = prompts_and_rollouts()
    scores = worker("as_array", batched=True).score(prompts, rollouts)
    np.testing.assert_array_equal(scores.values["ch"], np.arange(8, dtype=np.float64))
    assert scores.counters == {}


def test_first_failure_of_each_kind_logged_once(caplog):
    prompts, rollouts = prompts_and_rollouts()
    w = worker("raises", name="buggy")
    with caplog.at_level(logging.WARNING, logger="mixgrpo.reward"):
        for _ in range(3):
            assert w.score(prompts, rollouts).counters == {"item_errors": 8}
    records = [r for r in caplog.records if r.name == "mixgrpo.reward"]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    message = records[0].getMessage()
    assert "'buggy'" in message and "RuntimeError" in message and "boom" in message

    # a different kind of failure is logged once more, on its own
    w.channel = worker("raises_key").channel
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mixgrpo.reward"):
        counted = [w.score(prompts, rollouts).counters for _ in range(2)]
    records = [r for r in caplog.records if r.name == "mixgrpo.reward"]
    assert len(records) == 1
    assert "KeyError" in records[0].getMessage()
    assert counted == [{"item_errors": 8}] * 2


def test_invalid_values_are_counted_not_logged(caplog):
    prompts, rollouts = prompts_and_rollouts()
    with caplog.at_level(logging.WARNING, logger="mixgrpo.reward"):
        worker("mixed").score(prompts, rollouts)
    assert [r for r in caplog.records if r.name == "mixgrpo.reward"] == []


def test_sanitize_values_and_counters():
    raw = [1, 2.5, None, float("-inf"), np.float32(0.25), np.int64(-3), False, [1.0], MAX_ABS_REWARD, -1e10, "1"]
    values, counters = sanitize(raw, len(raw))
    expected = [1.0, 2.5, np.nan, np.nan, 0.25, -3.0, np.nan, np.nan, MAX_ABS_REWARD, np.nan, np.nan]
    np.testing.assert_array_equal(values, expected)
    assert values.dtype == np.float64
    assert counters == {"null": 1, "non_finite": 1, "not_a_number": 3, "out_of_range": 1}


def test_sanitize_arrays_and_tensors():
    values, counters = sanitize(np.array([1.0, np.nan, np.inf]), 3)
    np.testing.assert_array_equal(values, [1.0, np.nan, np.nan])
    assert counters["non_finite"] == 2
    values, counters = sanitize(torch.tensor([0.5, -1.5]), 2)
    np.testing.assert_array_equal(values, [0.5, -1.5])
    assert sum(counters.values()) == 0
    values, _ = sanitize((3, 4), 2)
    np.testing.assert_array_equal(values, [3.0, 4.0])


@pytest.mark.parametrize(
    "raw, message",
    [
        ([1.0, 2.0], "channel returned 2 values for 3 completions"),
        ("abc", "channel returned str values for 3 completions"),
        (1.0, "channel returned float values for 3 completions"),
        (None, "channel returned NoneType values for 3 completions"),
        ((x for x in [1, 2, 3]), "channel returned generator values for 3 completions"),
    ],
)
def test_sanitize_rejects_wrong_shapes(raw, message):
    with pytest.raises(ValueError) as raised:
        sanitize(raw, 3)
    assert str(raised.value) == message


def test_sanitize_empty_batch():
    values, counters = sanitize([], 0)
    assert values.shape == (0,)
    assert not any(counters.values())
    assert math.isclose(MAX_ABS_REWARD, 1e9)
