"""Token arrays bypass the driver: views for the driver and the reward actors, token rows fetched by the ranks."""

from __future__ import annotations

import numpy as np
import pytest
import ray
from ray_helpers import start_local_ray

from mixgrpo.batch import RolloutBatch, TokenRows, TrainBatch, TrainOrder
from mixgrpo.config import load_config
from mixgrpo.orchestrator.driver import train
from mixgrpo.rundir import read_metrics


def _rollouts(n: int, first: int, source: int = 0) -> RolloutBatch:
    rng = np.random.default_rng(first)
    lengths = rng.integers(1, 6, size=n)
    return RolloutBatch(
        prompt_index=np.arange(n) // 2,
        prompt_token_ids=[np.arange(first + i, first + i + 3) for i in range(n)],
        completion_token_ids=[np.full(k, first + i) for i, k in enumerate(lengths)],
        behaviour_logprobs=[rng.normal(size=k).astype(np.float32) for k in lengths],
        completion_text=[f"c{first + i}" for i in range(n)],
        policy_version=np.zeros(n, np.int64),
        truncated=lengths == 5,
        source=np.full(n, source),
    )


def test_a_view_keeps_what_the_driver_reads_and_no_token_array():
    rollouts = _rollouts(6, 100)
    view = rollouts.view()
    assert view.completion_text == rollouts.completion_text
    assert view.completion_lengths.tolist() == rollouts.completion_lengths.tolist()
    assert view.truncated.tolist() == rollouts.truncated.tolist()
    assert not any(isinstance(v, list) and v and isinstance(v[0], np.ndarray) for v in vars(view).values())
    rows = np.array([4, 1])
    assert view.take(rows).completion_text == rollouts.take(rows).completion_text


def test_a_train_order_resolves_to_the_rows_of_the_whole_batch_fetching_only_the_parts_it_uses():
    parts = [_rollouts(4, 0, source=0), _rollouts(6, 50, source=1), _rollouts(2, 90, source=2)]
    store = {f"ref{k}": part for k, part in enumerate(parts)}
    views = [p.view() for p in parts]
    views = [type(v)(**{**vars(v), "tokens": TokenRows.whole(f"ref{k}", len(v))}) for k, v in enumerate(views)]
    whole_view = type(views[0]).concat(views, [0, 2, 5])
    whole = RolloutBatch.concat(parts, [0, 2, 5])
    advantages = np.linspace(-1, 1, len(whole))
    trained = np.array([9, 0, 3, 5, 7])  # rows of parts 0 and 1 only
    fetched: list[list[str]] = []

    def get(refs: list[str]) -> list[RolloutBatch]:
        fetched.append(list(refs))
        return [store[r] for r in refs]

    order = TrainOrder.from_rollouts(whole_view, advantages, trained)
    expected = TrainBatch.from_rollouts(whole, advantages, trained)
    for rank in range(2):
        mine = order.shard(rank, 2).resolve(get)
        wanted = expected.shard(rank, 2)
        for name in ("prompt_token_ids", "completion_token_ids", "behaviour_logprobs"):
            assert all(np.array_equal(a, b) for a, b in zip(getattr(mine, name), getattr(wanted, name), strict=True))
        assert mine.rows.tolist() == wanted.rows.tolist() and mine.total_rows == wanted.total_rows == 5
        assert mine.advantages.tolist() == wanted.advantages.tolist()
        assert mine.source.tolist() == wanted.source.tolist()
    assert fetched == [["ref0", "ref1"], ["ref0", "ref1"]]  # one get per rank, never the unused part 2
    assert order.tokens.parts == ["ref0", "ref1"] and order.shard(0, 2).tokens.parts == ["ref0", "ref1"]
    assert order.sampled_by(1).tokens.parts == ["ref1"]  # a rank's order names only the shards it reads
    assert [len(order.sampled_by(s)) for s in range(3)] == [2, 3, 0]


@pytest.fixture
def driver_pickling(monkeypatch):
    """Count, in this (the driver's) process, every pickling and unpickling of a token-carrying batch."""
    counts = {"RolloutBatch": 0, "TrainBatch": 0}
    for cls in (RolloutBatch, TrainBatch):
        get_state, set_state = cls.__getstate__, cls.__setstate__

        def counted_get(self, _get=get_state, _name=cls.__name__):
            counts[_name] += 1
            return _get(self)

        def counted_set(self, state, _set=set_state, _name=cls.__name__):
            counts[_name] += 1
            _set(self, state)

        monkeypatch.setattr(cls, "__getstate__", counted_get)
        monkeypatch.setattr(cls, "__setstate__", counted_set)
    start_local_ray(num_cpus=2)
    yield counts
    ray.shutdown()


@pytest.mark.parametrize("placement", [
    ["cluster.placement=disaggregated", "generator.replicas=2", "learner.ranks=2",
     "algorithm.filter_groups=zero_advantage", "task.oversample=until_full", "task.max_extra_rounds=1"],
    ["cluster.placement=colocated", "learner.ranks=2"],
], ids=["disaggregated-dynamic-sampling", "colocated"])
def test_the_driver_never_pickles_nor_unpickles_token_arrays(tmp_path, tiny_model_cache, driver_pickling,
                                                             placement):
    config = load_config(None, ["run.steps=3", "run.progress=false", "run.tensorboard=false",
                                "task.prompts_per_step=8", *placement])
    train(config, tmp_path / "run")
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert rows[-1]["policy_version"] >= 2  # the ranks trained on rows they fetched themselves
    assert all(r["learner/grad_norm"] > 0 for r in rows if "learner/grad_norm" in r)
    assert driver_pickling == {"RolloutBatch": 0, "TrainBatch": 0}
