"""The ``http`` channel against a real HTTP judge on 127.0.0.1: order, nulls, retries, timeouts, the API key."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
from http_judge import start_judge

from mixgrpo.actors.reward import RewardWorker
from mixgrpo.batch import PromptBatch, RolloutBatch
from mixgrpo.config import RewardChannelConfig
from mixgrpo.rewards.channels import ScoringInput, build_channel

SECRET = "sk-test-0123456789abcdef"


@pytest.fixture(scope="module")
def judge():
    server, log, url = start_judge(expected_key=SECRET)
    yield log, url
    server.shutdown()


def batch(completions: list[str], metadata: dict | None = None) -> ScoringInput:
    return ScoringInput(prompts=[f"p{i}" for i in range(len(completions))], completions=completions,
                        metadata=[dict(metadata or {"k": i}) for i in range(len(completions))],
                        completion_tokens=[1] * len(completions))


def channel(url: str, **options):
    return build_channel("http", {"url": url, "backoff_s": 0.01, **options})


def test_scores_come_back_in_order_across_chunks(judge):
    log, url = judge
    texts = ["a", "bbb", "", "cc", "dddd", "e", "ffffff"]
    before = log.count("/score")
    values = channel(f"{url}/score", batch_size=2, concurrency=3)(batch(texts))
    assert values == [1.0, 3.0, None, 2.0, 4.0, 1.0, 6.0]
    assert log.count("/score") - before == 4  # ceil(7 / 2) requests
    sent = log.requests[-1]["items"][0]
    assert set(sent) == {"prompt", "completion", "metadata"}


def test_metadata_can_be_left_out_and_bytes_do_not_travel(judge):
    log, url = judge
    channel(f"{url}/score")(batch(["x"], metadata={"image": b"\x89PNG...", "answer": 3}))
    assert log.requests[-1]["items"][0]["metadata"] == {"image": None, "answer": 3}
    channel(f"{url}/score", include_metadata=False)(batch(["x"]))
    assert "metadata" not in log.requests[-1]["items"][0]


def test_server_errors_are_retried_with_backoff_then_succeed(judge):
    log, url = judge
    started = time.monotonic()
    values = channel(f"{url}/flaky/2", retries=2, backoff_s=0.1)(batch(["ab", "c"]))
    assert values == [2.0, 1.0]
    assert log.count("/flaky/2") == 3
    assert time.monotonic() - started >= 0.1 + 0.2  # backoff 0.1 s, then doubled


def test_persistent_server_error_gives_nulls_after_the_retries(judge):
    log, url = judge
    assert channel(f"{url}/status/500", retries=2)(batch(["a", "b"])) == [None, None]
    assert log.count("/status/500") == 3


def test_client_errors_are_not_retried(judge):
    log, url = judge
    assert channel(f"{url}/status/404", retries=3)(batch(["a"])) == [None]
    assert log.count("/status/404") == 1


def test_timeout_gives_nulls_quickly(judge):
    _, url = judge
    started = time.monotonic()
    assert channel(f"{url}/slow/2", request_timeout_s=0.3, retries=1)(batch(["a", "b"])) == [None, None]
    assert time.monotonic() - started < 1.5


def test_malformed_answers_give_nulls(judge):
    _, url = judge
    assert channel(f"{url}/garbage")(batch(["a", "b"])) == [None, None]
    assert channel(f"{url}/short")(batch(["a", "b"])) == [None, None]


def test_unreachable_judge_gives_nulls():
    closed = "http://127.0.0.1:9/score"  # the discard port: nothing listens
    assert channel(closed, retries=1, request_timeout_s=1)(batch(["a"])) == [None]


def test_api_key_is_sent_from_the_environment_and_never_logged(judge, monkeypatch, caplog):
    log, url = judge
    monkeypatch.setenv("JUDGE_KEY", SECRET)
    with caplog.at_level(logging.DEBUG):
        assert channel(f"{url}/auth", api_key_env="JUDGE_KEY")(batch(["abc"])) == [3.0]
        assert log.requests[-1]["headers"]["Authorization"] == f"Bearer {SECRET}"
        monkeypatch.setenv("JUDGE_KEY", "wrong-key-do-not-print")
        assert channel(f"{url}/auth", api_key_env="JUDGE_KEY")(batch(["abc"])) == [None]
    assert caplog.records, "the failed request is logged"
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert SECRET not in logged and "wrong-key-do-not-print" not in logged and "HTTP 401" in logged


def test_missing_key_variable_is_an_error_naming_the_variable_only(monkeypatch):
    monkeypatch.delenv("NO_SUCH_JUDGE_KEY", raising=False)
    with pytest.raises(ValueError, match="NO_SUCH_JUDGE_KEY"):
        channel("http://127.0.0.1:9/score", api_key_env="NO_SUCH_JUDGE_KEY")(batch(["a"]))


@pytest.mark.parametrize("options, message", [
    ({}, "^options.url: Field required$"),
    ({"url": "ftp://x"}, "^options.url: String should match pattern '\\^https\\?://'$"),
    ({"url": "http://x", "retries": -1}, "^options.retries: Input should be greater than or equal to 0$"),
    ({"url": "http://x", "concurrency": 0}, "^options.concurrency: Input should be greater than or equal to 1$"),
    ({"url": "http://x", "token": "abc"}, "^options.token: unknown option; allowed: api_key_env, "),
])
def test_bad_options_fail_at_build_time(options, message):
    with pytest.raises(ValueError, match=message):
        build_channel("http", options)


def test_worker_counts_the_nulls_of_a_dead_judge():
    prompts = PromptBatch(np.array([0]), ["p"], [{}])
    rollouts = RolloutBatch(np.zeros(3, dtype=np.int64), [np.arange(2)] * 3, [np.arange(1)] * 3,
                            [np.zeros(1, dtype=np.float32)] * 3, ["a", "b", "c"], np.zeros(3, dtype=np.int64))
    config = RewardChannelConfig(name="judge", kind="http",
                                 options={"url": "http://127.0.0.1:9/", "retries": 0, "request_timeout_s": 1})
    scores = RewardWorker(config).score(prompts, rollouts)
    assert np.isnan(scores.values["judge"]).all() and scores.counters == {"null": 3}
