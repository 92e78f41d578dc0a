"""What a generation engine provides to the Generator actor, and what it returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class SampledCompletions:
    """Token ids, behaviour log-probs and text of sampled completions, group-major."""

    token_ids: list[np.ndarray]
    logprobs: list[np.ndarray]
    texts: list[str]
    truncated: np.ndarray
    """(N,) bool: the completion hit max_new_tokens without EOS."""


class GenerationBackend(Protocol):
    """What a sampling engine provides to the Generator actor."""

    tokenizer: PreTrainedTokenizerBase
    """The model's tokenizer (prompts are encoded with it, with the chat template when there is one)."""

    def sample(self, prompt_token_ids: list[np.ndarray], group_size: int, seed: int, temperature: float,
               max_new_tokens: int) -> SampledCompletions:
        """m completions for each prompt, group-major; temperature 0 is greedy decoding."""

    def load_adapter(self, tensors: dict[str, torch.Tensor], version: int) -> None:
        """Serve every later request with these LoRA weights."""
