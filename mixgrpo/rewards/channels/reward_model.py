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
from typing import Any

import torch

from mixgrpo.rewards.channels.base import ScoringInput, pop_options, register
from mixgrpo.runtime import pick_device

_DEFAULTS = {
    "model": None, "batch_size": 16, "max_length": 512, "device": "auto", "input": "pair", "label": 0,
    "dtype": "float32", "trust_remote_code": False,
}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class RewardModelChannel:
    """Sequence-classification scores for a batch; the model loads once per actor (``setup``)."""

    def __init__(self, options: dict[str, Any]) -> None:
        opts = pop_options(options, "reward_model", _DEFAULTS)
        if not opts["model"]:
            raise ValueError("channel kind 'reward_model' needs options.model (a local directory or a hub id)")
        path = str(opts["model"])
        if path.startswith((".", "/", "~")) and not (Path(path).expanduser() / "config.json").is_file():
            raise ValueError(f"channel kind 'reward_model': no config.json in {path}")
        if opts["input"] not in ("pair", "concat", "chat") or opts["dtype"] not in _DTYPES:
            raise ValueError("channel kind 'reward_model': options.input is pair|concat|chat, "
                             f"options.dtype one of {sorted(_DTYPES)}")
        if int(opts["batch_size"]) < 1 or int(opts["max_length"]) < 1 or int(opts["label"]) < 0:
            raise ValueError("channel kind 'reward_model': batch_size and max_length >= 1, label >= 0")
        self.opts, self.model, self._lock = opts, None, threading.Lock()

    def setup(self) -> None:
        """Load tokenizer and model (idempotent)."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        with self._lock:
            if self.model is not None:
                return
            source = os.path.expanduser(str(self.opts["model"]))
            trust = bool(self.opts["trust_remote_code"])
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust)
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            tokenizer.padding_side = "right"
            self.device = pick_device(str(self.opts["device"]))
            model = AutoModelForSequenceClassification.from_pretrained(
                source, dtype=_DTYPES[self.opts["dtype"]], trust_remote_code=trust)
            model.config.pad_token_id = tokenizer.pad_token_id
            if int(self.opts["label"]) >= model.config.num_labels:
                raise ValueError(f"options.label={self.opts['label']} but the model has {model.config.num_labels} labels")
            self.tokenizer, self.model = tokenizer, model.to(self.device).eval()

    def encode(self, prompts: list[str], completions: list[str]) -> dict[str, torch.Tensor]:
        """Token tensors of one chunk, as ``input`` says."""
        common = {"truncation": True, "max_length": int(self.opts["max_length"]), "padding": True,
                  "return_tensors": "pt"}
        if self.opts["input"] == "pair":
            encoded = self.tokenizer(prompts, completions, **common)
        elif self.opts["input"] == "concat":
            encoded = self.tokenizer([p + c for p, c in zip(prompts, completions)], **common)
        else:
            texts = [self.tokenizer.apply_chat_template(
                [{"role": "user", "content": p}, {"role": "assistant", "content": c}], tokenize=False)
                for p, c in zip(prompts, completions)]
            encoded = self.tokenizer(texts, add_special_tokens=False, **common)
        return {k: v.to(self.device) for k, v in encoded.items()}

    @torch.no_grad()
    def __call__(self, batch: ScoringInput) -> list[float]:
        self.setup()
        size, label, values = int(self.opts["batch_size"]), int(self.opts["label"]), []
        for start in range(0, len(batch), size):
            encoded = self.encode(batch.prompts[start:start + size], batch.completions[start:start + size])
            logits = self.model(**encoded).logits.float()  # (B, num_labels)
            values += logits[:, label].cpu().tolist()
        return values


@register("reward_model")
def reward_model_channel(options: dict[str, Any]) -> RewardModelChannel:
    """Reward-model channel (options: model, input, label, batch_size, max_length, device, dtype)."""
    return RewardModelChannel(options)
