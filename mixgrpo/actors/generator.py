"""Generator actor: samples m completions per prompt with the current LoRA adapter.

A plain class (the orchestrator makes it remote). The backend does the
sampling; the actor owns the adapter version and tags every completion with it.
Backends (``mixgrpo.actors.backends``): ``hf`` (a KV-cached sampling loop on the transformers model) and
``vllm``, behind one ``GenerationBackend`` protocol; ``make_backend`` picks one.
"""

from __future__ import annotations

import numpy as np
import torch

from mixgrpo.actors.backends import GenerationBackend, make_backend
from mixgrpo.actors.models import encode_prompts
from mixgrpo.batch import PromptBatch, RolloutBatch
from mixgrpo.builtin import resolve_model_path
from mixgrpo.config import GeneratorConfig, LoraConfig, ModelConfig
from mixgrpo.faults import failpoint
from mixgrpo.threads import fixed_threads


class Generator:
    """Samples groups of completions and tags them with the adapter version.

    Construct with the run's model, LoRA and generator settings; ``generate`` takes a
    shard of prompts and returns a RolloutBatch whose ``prompt_index`` refers to that shard.
    ``backend``: sample through this existing backend (colocated: one over the learner's
    model) instead of loading the model.
    """

    def __init__(self, model: ModelConfig, lora: LoraConfig, sampling: GeneratorConfig, seed: int,
                 replica: int = 0, backend: GenerationBackend | None = None) -> None:
        torch.set_num_threads(fixed_threads(sampling.threads))
        self.replica = replica
        self.model_config = model
        self.sampling = sampling
        self.seed = seed
        self.version = 0
        self.backend = backend or make_backend(resolve_model_path(model.path, seed), model, lora, sampling)

    def generate(self, prompts: PromptBatch, step: int, *, n: int | None = None, temperature: float | None = None,
                 max_new_tokens: int | None = None, seed: int | None = None) -> RolloutBatch:
        """m completions for each prompt of the shard, seeded by (run seed, step, first prompt id).

        The keyword options override the generator config for this call only (held-out eval):
        ``n`` samples per prompt instead of group_size, ``temperature`` (0 = greedy),
        ``max_new_tokens``, and ``seed`` instead of the run seed.
        """
        failpoint("generate", f"generator-{self.replica}", step)
        prompt_tokens = encode_prompts(self.backend.tokenizer, prompts.prompts, self.model_config.chat_template)
        first_id = int(prompts.prompt_ids[0]) if len(prompts) else 0
        m = n or self.sampling.group_size
        sample_seed = ((self.seed if seed is None else seed) * 1_000_003 + step * 7_919 + first_id) % 2**31
        sampled = self.backend.sample(
            prompt_tokens, m, seed=sample_seed,
            temperature=self.sampling.temperature if temperature is None else temperature,
            max_new_tokens=max_new_tokens or self.sampling.max_new_tokens,
        )
        return RolloutBatch(
            prompt_index=np.repeat(np.arange(len(prompts), dtype=np.int64), m),
            prompt_token_ids=[prompt_tokens[i // m] for i in range(len(prompts) * m)],
            completion_token_ids=sampled.token_ids,
            behaviour_logprobs=sampled.logprobs,
            completion_text=sampled.texts,
            policy_version=np.full(len(prompts) * m, self.version, dtype=np.int64),
            truncated=sampled.truncated,
            source=np.full(len(prompts) * m, self.replica, dtype=np.int64),
        )

    def load_adapter(self, tensors: dict[str, torch.Tensor], version: int, rollback: bool = False) -> int:
        """Switch to adapter ``version``; returns the version now served.

        Versions only move forward, except with ``rollback`` (the driver restoring a checkpoint).
        """
        if version < self.version and not rollback:
            raise ValueError(f"refusing adapter version {version}: already serving {self.version}")
        self.backend.load_adapter(tensors, version)
        self.version = version
        return self.version
