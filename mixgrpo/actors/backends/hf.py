"""The transformers backend: a KV-cached sampling loop on a PEFT-wrapped model, adapters set in memory."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch
from peft import PeftModel, get_peft_model_state_dict
from transformers import PreTrainedTokenizerBase

from mixgrpo.actors.backends.base import SampledCompletions
from mixgrpo.actors.models import load_base_model, load_tokenizer, pad_left, wrap_lora
from mixgrpo.config import GeneratorConfig, LoraConfig, ModelConfig


class HFBackend:
    """A transformers model with a PEFT adapter, sampled by ``decode``; adapters are set in memory."""

    def __init__(self, model_path: str, model: ModelConfig, lora: LoraConfig, sampling: GeneratorConfig) -> None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        policy = wrap_lora(load_base_model(model_path, model, device), lora).eval()
        self._serve(policy, load_tokenizer(model_path), sampling, device)

    @classmethod
    def over_model(cls, policy: PeftModel, tokenizer: PreTrainedTokenizerBase, sampling: GeneratorConfig) -> HFBackend:
        """A backend sampling from an existing PEFT model (a learner's, colocated): no copy, no adapter
        to load; it serves whatever adapter weights the model holds when ``sample`` runs."""
        backend = cls.__new__(cls)
        backend._serve(policy, tokenizer, sampling, str(next(policy.parameters()).device))
        return backend

    def _serve(self, policy: PeftModel, tokenizer: PreTrainedTokenizerBase, sampling: GeneratorConfig,
               device: str) -> None:
        self.device, self.tokenizer, self.model, self.sampling = device, tokenizer, policy, sampling
        forward = inspect.signature(policy.get_base_model().forward).parameters
        self._cache_arg = "cache" if "cache" in forward else "past_key_values"  # transformers >= 5.2x: cache
        self._last_logits = {"logits_to_keep": 1} if "logits_to_keep" in forward else {}
        """Prefill computes the logits of the last prompt position only, where the model can."""
        self._adapter_slots: dict[str, torch.Tensor] | None = None
        """Adapter key -> the live tensor it is copied into (found once: PEFT's key matching took ~2 ms a load)."""

    @torch.no_grad()
    def sample(self, prompt_token_ids: list[np.ndarray], group_size: int, seed: int, temperature: float,
               max_new_tokens: int) -> SampledCompletions:
        """m completions per prompt from a KV-cached decoding loop (``decode``), group-major."""
        ids, mask = pad_left(prompt_token_ids, self.tokenizer.pad_token_id)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        new_tokens, logprobs = decode(
            self.model, ids.to(self.device), mask.to(self.device), group_size=group_size,
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=self.sampling.top_p, generator=generator,
            eos_id=self.tokenizer.eos_token_id, pad_id=self.tokenizer.pad_token_id, cache_arg=self._cache_arg,
            prefill_options=self._last_logits)
        new_tokens, logprobs = new_tokens.cpu(), logprobs.cpu()
        lengths = _lengths_through_eos(new_tokens, self.tokenizer.eos_token_id)
        token_ids = [new_tokens[i, :n].numpy().astype(np.int64) for i, n in enumerate(lengths)]
        return SampledCompletions(
            token_ids=token_ids,
            logprobs=[logprobs[i, :n].numpy().astype(np.float32) for i, n in enumerate(lengths)],
            texts=self.tokenizer.batch_decode([t.tolist() for t in token_ids], skip_special_tokens=True),
            truncated=~(new_tokens == self.tokenizer.eos_token_id).any(dim=1).numpy(),  # no EOS in the cap
        )

    @torch.no_grad()
    def load_adapter(self, tensors: dict[str, torch.Tensor], version: int) -> None:
        """Copy the LoRA tensors into the live model's own (no disk round trip, no new tensors).

        ``tensors`` are keyed as ``get_peft_model_state_dict`` names them (what the learner sends);
        that function's values share storage with the model's parameters, so one in-place copy each
        sets the adapter. Every key must be present, with its shape.
        """
        if self._adapter_slots is None:
            self._adapter_slots = _live_adapter_tensors(self.model)
        slots = self._adapter_slots
        if tensors.keys() != slots.keys():
            unexpected, missing = sorted(tensors.keys() - slots.keys()), sorted(slots.keys() - tensors.keys())
            raise ValueError(f"adapter keys do not match the model's: unexpected keys {unexpected[:3]}, "
                             f"missing keys {missing[:3]}")
        for key, value in tensors.items():
            if value.shape != slots[key].shape:
                raise ValueError(f"adapter tensor {key} has the wrong shape {tuple(value.shape)}; the model's is "
                                 f"{tuple(slots[key].shape)}")
            slots[key].copy_(value)


def _live_adapter_tensors(model: PeftModel) -> dict[str, torch.Tensor]:
    """The adapter's tensors keyed as ``get_peft_model_state_dict`` names them, each the model's own storage."""
    tensors = get_peft_model_state_dict(model)
    live = {p.data_ptr() for p in model.parameters()}
    if not all(t.data_ptr() in live for t in tensors.values()):
        raise RuntimeError("this PEFT version's adapter state dict copies the parameters: in-place loading "
                           "would not reach the model")
    return tensors


def decode(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, *, group_size: int, max_new_tokens: int,
           temperature: float, top_p: float, generator: torch.Generator, eos_id: int, pad_id: int,
           cache_arg: str = "past_key_values", prefill_options: dict[str, Any] | None = None,
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``group_size`` continuations of each left-padded prompt; ids, mask: (P, L).

    Each prompt is prefilled once and its KV cache repeated for its m rows (``Cache.batch_repeat_interleave``),
    then one token per step for all P x m rows until every row has sampled EOS or ``max_new_tokens``.
    Rows that finished sample ``pad_id``. Returns tokens (P*m, T) and their log-probs (P*m, T) under the
    processed distribution (``processed_logprobs``), T <= max_new_tokens. Drawing is inverse-CDF with one
    uniform per row from ``generator`` (``torch.multinomial`` took 1.8 ms per (256, 320) draw on a CPU core,
    this 0.1 ms). The loop is what ``transformers`` ``generate`` does for sampling without its
    logits-processor machinery: temperature and top-p are applied here, nothing from the model's
    generation_config (a repetition penalty there would be invisible to the learner). ``cache_arg``: the
    forward's name for the KV cache (``past_key_values``; ``cache`` in recent transformers).
    """
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: the first real token is position 0
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **(prefill_options or {}))
    cache = getattr(out, cache_arg)
    cache.batch_repeat_interleave(group_size)
    logits = out.logits[:, -1].repeat_interleave(group_size, dim=0)
    mask, last = mask.repeat_interleave(group_size, dim=0), positions[:, -1].repeat_interleave(group_size)
    rows = len(logits)
    tokens, logprobs = [], []
    finished = torch.zeros(rows, dtype=torch.bool, device=ids.device)
    for step in range(max_new_tokens):
        scores = processed_logprobs(logits.float(), temperature, top_p)
        chosen = scores.argmax(-1) if temperature == 0 else _inverse_cdf(scores.exp(), generator)
        chosen = chosen.masked_fill(finished, pad_id)
        tokens.append(chosen)
        logprobs.append(scores.gather(1, chosen.unsqueeze(1)).squeeze(1))
        finished |= chosen == eos_id
        if step + 1 == max_new_tokens or bool(finished.all()):
            break
        mask, last = torch.cat([mask, mask.new_ones(rows, 1)], dim=1), last + 1
        out = model(input_ids=chosen.unsqueeze(1), attention_mask=mask, position_ids=last.unsqueeze(1),
                    use_cache=True, **{cache_arg: cache})
        cache, logits = getattr(out, cache_arg), out.logits[:, -1]
    return torch.stack(tokens, dim=1), torch.stack(logprobs, dim=1)


def processed_logprobs(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """(R, V) log-softmax of the logits after temperature and top-p (temperature 0: the raw logits, greedy).

    Top-p keeps the most likely tokens whose mass reaches ``top_p`` (at least one), as transformers'
    ``TopPLogitsWarper`` does: sorted ascending, a token goes when the mass up to it is <= 1 - top_p.
    """
    if temperature > 0:
        logits = logits / temperature
        if top_p < 1.0:
            ascending, order = torch.sort(logits, dim=-1)
            drop = ascending.softmax(dim=-1).cumsum(dim=-1) <= 1 - top_p
            drop[:, -1] = False
            logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return torch.log_softmax(logits, dim=-1)


def _inverse_cdf(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(R,) one draw per row of ``probs`` (R, V): the first token whose cumulative mass exceeds a uniform."""
    cumulative = probs.cumsum(dim=-1)
    uniform = torch.rand(len(probs), 1, generator=generator, device=probs.device) * cumulative[:, -1:]
    # right=True: a token of zero mass (top-p filtered) never has a cumulative mass above the uniform first
    return torch.searchsorted(cumulative, uniform, right=True).squeeze(1).clamp_(max=probs.shape[-1] - 1)


def _lengths_through_eos(tokens: torch.Tensor, eos_id: int) -> list[int]:
    """Length of each row up to and including its first EOS (the whole row when none)."""
    is_eos = tokens == eos_id
    first = torch.where(is_eos.any(dim=1), is_eos.float().argmax(dim=1) + 1, tokens.shape[1])
    return first.tolist()
