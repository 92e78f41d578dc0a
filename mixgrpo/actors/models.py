"""Loading the base model, its tokenizer and the LoRA wrapper, shared by generator and learner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from mixgrpo.builtin import BUILTIN_PREFIX, check_builtin_name
from mixgrpo.config import LoraConfig, ModelConfig
from mixgrpo.errors import InputError
from mixgrpo.runtime import torch_dtype


def check_model_path(path: str) -> None:
    """Fail early (before Ray starts) on a local-looking model path that does not exist."""
    if path.startswith(BUILTIN_PREFIX):
        check_builtin_name(path)
        return
    looks_local = path.startswith((".", "/", "~")) or Path(path).expanduser().exists()
    if looks_local and not (Path(path).expanduser() / "config.json").is_file():
        raise InputError(f"model.path {path!r}: no such model directory (config.json missing)")


def load_tokenizer(model_path: str) -> PreTrainedTokenizerBase:
    """The tokenizer, with a pad token (EOS when the checkpoint has none)."""
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(model_path: str, config: ModelConfig, device: str = "cpu") -> PreTrainedModel:
    """The causal LM in the configured dtype, in eval mode, on ``device``."""
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype(config.dtype))
    return model.to(device).eval()


def wrap_lora(model: PreTrainedModel, lora: LoraConfig) -> PeftModel:
    """Attach a fresh LoRA adapter (B = 0, so the wrapped model starts equal to the base)."""
    peft_config = PeftLoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_config)


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: list[str], chat_template: str) -> list[np.ndarray]:
    """Token ids of each prompt: the chat template when available and allowed, else BOS + text."""
    use_template = chat_template == "auto" and getattr(tokenizer, "chat_template", None)
    encoded = []
    for prompt in prompts:
        if use_template:
            ids = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
            )
            ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        else:
            ids = tokenizer(prompt, add_special_tokens=False).input_ids
            if tokenizer.bos_token_id is not None:
                ids = [tokenizer.bos_token_id, *ids]
        encoded.append(np.asarray(ids, dtype=np.int64))
    return encoded


def pad_left(sequences: list[np.ndarray], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) left-padded ids and their attention mask."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq) :] = torch.from_numpy(np.asarray(seq, dtype=np.int64))
        mask[row, width - len(seq) :] = 1
    return ids, mask
