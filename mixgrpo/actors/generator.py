"""Generator actor: samples m completions per prompt with the current LoRA adapter.

A plain class (the orchestrator makes it remote). The backend does the
sampling; the actor owns the adapter version and tags every completion with it.
Backends: ``hf`` (transformers ``generate``) here; ``vllm`` (``vllm_backend.py``)
behind the same ``GenerationBackend`` protocol; ``make_backend`` picks one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from peft import set_peft_model_state_dict

from mixgrpo.actors.models import encode_prompts, load_base_model, load_tokenizer, pad_left, wrap_lora
from mixgrpo.batch import PromptBatch, RolloutBatch
from mixgrpo.config import GeneratorConfig, LoraConfig, ModelConfig
from mixgrpo.faults import failpoint
from mixgrpo.tasks.tiny_model import resolve_model_path


@dataclass(frozen=True)
class SampledCompletions:
    """Token ids, behaviour log-probs and text of sampled completions, group-major."""

    token_ids: list[np.ndarray]
    logprobs: list[np.ndarray]
    texts: list[str]


class GenerationBackend(Protocol):
    """What a sampling engine provides to the Generator actor."""

    def sample(self, prompt_token_ids: list[np.ndarray], group_size: int, seed: int) -> SampledCompletions:
        """m completions for each prompt, group-major."""

    def load_adapter(self, tensors: dict[str, torch.Tensor], version: int) -> None:
        """Serve every later request with these LoRA weights."""


class HFBackend:
    """transformers ``generate`` on a PEFT-wrapped model; adapters are set in memory."""

    def __init__(self, model_path: str, model: ModelConfig, lora: LoraConfig, sampling: GeneratorConfig) -> None:
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = load_tokenizer(model_path)
        self.model = wrap_lora(load_base_model(model_path, model, self.device), lora).eval()
        self.sampling = sampling

    @torch.no_grad()
    def sample(self, prompt_token_ids: list[np.ndarray], group_size: int, seed: int) -> SampledCompletions:
        """Sample with temperature/top-p; behaviour log-probs come from the processed scores."""
        torch.manual_seed(seed)
        ids, mask = pad_left(prompt_token_ids, self.tokenizer.pad_token_id)
        out = self.model.generate(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            do_sample=True,
            temperature=self.sampling.temperature,
            top_p=self.sampling.top_p,
            top_k=0,
            max_new_tokens=self.sampling.max_new_tokens,
            num_return_sequences=group_size,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            output_scores=True,
            return_dict_in_generate=True,
        )
        new_tokens = out.sequences[:, ids.shape[1] :].cpu()
        scores = torch.stack(out.scores, dim=1).float().cpu()  # (B*m, T, V) after temperature / top-p
        logprobs = torch.log_softmax(scores, dim=-1).gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
        lengths = _lengths_through_eos(new_tokens, self.tokenizer.eos_token_id)
        token_ids = [new_tokens[i, :n].numpy().astype(np.int64) for i, n in enumerate(lengths)]
        return SampledCompletions(
            token_ids=token_ids,
            logprobs=[logprobs[i, :n].numpy().astype(np.float32) for i, n in enumerate(lengths)],
            texts=self.tokenizer.batch_decode(token_ids, skip_special_tokens=True),
        )

    def load_adapter(self, tensors: dict[str, torch.Tensor], version: int) -> None:
        """Copy the LoRA tensors into the live model (no disk round trip)."""
        result = set_peft_model_state_dict(self.model, tensors)
        if result.unexpected_keys:
            raise ValueError(f"adapter has unexpected keys: {result.unexpected_keys[:3]}")


def _lengths_through_eos(tokens: torch.Tensor, eos_id: int) -> list[int]:
    """Length of each row up to and including its first EOS (the whole row when none)."""
    is_eos = tokens == eos_id
    first = torch.where(is_eos.any(dim=1), is_eos.float().argmax(dim=1) + 1, tokens.shape[1])
    return first.tolist()


def make_backend(model_path: str, model: ModelConfig, lora: LoraConfig, sampling: GeneratorConfig) -> GenerationBackend:
    """The configured backend: vllm, hf, or auto (vllm when ``import vllm`` works, else hf)."""
    from mixgrpo.actors.vllm_backend import VLLMBackend, vllm_available

    if sampling.backend == "vllm" or (sampling.backend == "auto" and vllm_available()):
        return VLLMBackend(model_path, model, lora, sampling)
    return HFBackend(model_path, model, lora, sampling)


class Generator:
    """Samples groups of completions and tags them with the adapter version.

    Construct with the run's model, LoRA and generator settings; ``generate`` takes a
    shard of prompts and returns a RolloutBatch whose ``prompt_index`` refers to that shard.
    """

    def __init__(self, model: ModelConfig, lora: LoraConfig, sampling: GeneratorConfig, seed: int,
                 replica: int = 0) -> None:
        torch.set_num_threads(sampling.threads)
        model_path = resolve_model_path(model.path, seed)
        self.replica = replica
        self.model_config = model
        self.sampling = sampling
        self.seed = seed
        self.version = 0
        self.backend = make_backend(model_path, model, lora, sampling)

    def generate(self, prompts: PromptBatch, step: int) -> RolloutBatch:
        """m completions for each prompt of the shard, seeded by (run seed, step, first prompt id)."""
        started = time.monotonic()
        failpoint("generate", f"generator-{self.replica}", step)
        prompt_tokens = encode_prompts(self.backend.tokenizer, prompts.prompts, self.model_config.chat_template)
        first_id = int(prompts.prompt_ids[0]) if len(prompts) else 0
        m = self.sampling.group_size
        sample_seed = (self.seed * 1_000_003 + step * 7_919 + first_id) % 2**31
        sampled = self.backend.sample(prompt_tokens, m, seed=sample_seed)
        return RolloutBatch(
            prompt_index=np.repeat(np.arange(len(prompts), dtype=np.int64), m),
            prompt_token_ids=[prompt_tokens[i // m] for i in range(len(prompts) * m)],
            completion_token_ids=sampled.token_ids,
            behaviour_logprobs=sampled.logprobs,
            completion_text=sampled.texts,
            policy_version=np.full(len(prompts) * m, self.version, dtype=np.int64),
            generate_seconds=time.monotonic() - started,
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
