"""The transformers backend: ``generate`` on a PEFT-wrapped model, adapters set in memory."""

from __future__ import annotations

import numpy as np
import torch
from peft import PeftModel, get_peft_model_state_dict
from transformers import PreTrainedTokenizerBase

from mixgrpo.actors.backends.base import SampledCompletions
from mixgrpo.actors.models import load_base_model, load_tokenizer, pad_left, wrap_lora
from mixgrpo.config import GeneratorConfig, LoraConfig, ModelConfig


class HFBackend:
    """transformers ``generate`` on a PEFT-wrapped model; adapters are set in memory."""

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
        self._adapter_slots: dict[str, torch.Tensor] | None = None
        """Adapter key -> the live tensor it is copied into (found once: PEFT's key matching took ~2 ms a load)."""

    @torch.no_grad()
    def sample(self, prompt_token_ids: list[np.ndarray], group_size: int, seed: int, temperature: float,
               max_new_tokens: int) -> SampledCompletions:
        """Sample with temperature/top-p (temperature 0: greedy); log-probs come from the processed scores."""
        torch.manual_seed(seed)
        ids, mask = pad_left(prompt_token_ids, self.tokenizer.pad_token_id)
        decoding = (dict(do_sample=True, temperature=temperature, top_p=self.sampling.top_p, top_k=0)
                    if temperature > 0 else dict(do_sample=False, temperature=None, top_p=None, top_k=None))
        out = self.model.generate(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            **decoding,
            max_new_tokens=max_new_tokens,
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


def _lengths_through_eos(tokens: torch.Tensor, eos_id: int) -> list[int]:
    """Length of each row up to and including its first EOS (the whole row when none)."""
    is_eos = tokens == eos_id
    first = torch.where(is_eos.any(dim=1), is_eos.float().argmax(dim=1) + 1, tokens.shape[1])
    return first.tolist()
