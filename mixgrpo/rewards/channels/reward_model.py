"""``reward_model``: a transformers sequence-classification model scoring prompt + completion.

The value is the logit of ``label`` (default 0: the single output of a reward
model head). ``input`` says how prompt and completion are shown to the model:
``pair`` (tokenizer text pair, the default), ``concat`` (prompt + completion as one
text) or ``chat`` (the tokenizer's chat template, user = prompt, assistant =
completion). Batches of ``batch_size``, truncated to ``max_length`` tokens, on
the actor's GPU for ``device: gpu`` channels.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from mixgrpo.rewards.channels.base import ChannelOptions, ChannelOptionsError, ScoringInput, register
from mixgrpo.runtime import pick_device, torch_dtype


class RewardModelOptions(ChannelOptions):
    model: str = Field(min_length=1)
    """A local directory (with config.json) or a Hugging Face hub id of a sequence-classification model."""
    batch_size: int = Field(default=16, ge=1)
    """Sequences per forward pass."""
    max_length: int = Field(default=512, ge=1)
    """Tokens per sequence; longer ones are truncated."""
    device: str = "auto"
    """auto (the actor's GPU when it has one), cpu or cuda."""
    input: Literal["pair", "concat", "chat"] = "pair"
    """How prompt and completion are shown: tokenizer text pair, one concatenated text, or the chat template."""
    label: int = Field(default=0, ge=0)
    """Output logit used as the reward (0: a reward head's single output)."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Parameter dtype of the model."""
    trust_remote_code: bool = False
    """Let transformers run the model repository's own code."""


class RewardModelChannel:
    """Sequence-classification scores for a batch; the model loads once per actor (``setup``)."""

    def __init__(self, options: RewardModelOptions) -> None:
        path = options.model
        if path.startswith((".", "/", "~")) and not (Path(path).expanduser() / "config.json").is_file():
            raise ChannelOptionsError.of("model", f"no config.json in {path}")
        self.opts, self.model, self._lock = options, None, threading.Lock()

    def setup(self) -> None:
        """Load tokenizer and model (idempotent)."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        with self._lock:
            if self.model is not None:
                return
            source = os.path.expanduser(self.opts.model)
            trust = self.opts.trust_remote_code
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust)
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            tokenizer.padding_side = "right"
            self.device = pick_device(self.opts.device)
            model = AutoModelForSequenceClassification.from_pretrained(
                source, dtype=torch_dtype(self.opts.dtype), trust_remote_code=trust)
            model.config.pad_token_id = tokenizer.pad_token_id
            if self.opts.label >= model.config.num_labels:
                raise ValueError(f"options.label={self.opts.label} but the model has {model.config.num_labels} labels")
            self.tokenizer, self.model = tokenizer, model.to(self.device).eval()

    def encode(self, prompts: list[str], completions: list[str]) -> dict[str, Any]:
        """Token tensors of one chunk, as ``input`` says."""
        common = {"truncation": True, "max_length": self.opts.max_length, "padding": True,
                  "return_tensors": "pt"}
        if self.opts.input == "pair":
            encoded = self.tokenizer(prompts, completions, **common)
        elif self.opts.input == "concat":
            encoded = self.tokenizer([p + c for p, c in zip(prompts, completions)], **common)
        else:
            texts = [self.tokenizer.apply_chat_template(
                [{"role": "user", "content": p}, {"role": "assistant", "content": c}], tokenize=False)
                for p, c in zip(prompts, completions)]
            encoded = self.tokenizer(texts, add_special_tokens=False, **common)
        return {k: v.to(self.device) for k, v in encoded.items()}

    def __call__(self, batch: ScoringInput) -> list[float]:
        import torch

        self.setup()
        size, values = self.opts.batch_size, []
        with torch.no_grad():
            for start in range(0, len(batch), size):
                encoded = self.encode(batch.prompts[start:start + size], batch.completions[start:start + size])
                logits = self.model(**encoded).logits.float()  # (B, num_labels)
                values += logits[:, self.opts.label].cpu().tolist()
        return values


@register("reward_model", RewardModelOptions)
def reward_model_channel(options: RewardModelOptions) -> RewardModelChannel:
    """Reward-model channel: a sequence-classification logit of prompt + completion."""
    return RewardModelChannel(options)
