"""Learner actor: one rank of the LoRA policy optimiser.

The policy is the base model with a PEFT LoRA adapter; the reference policy is
the same model with the adapter disabled (no second copy). A step runs
micro-batches with gradient accumulation, all-reduces gradients across ranks
(torch.distributed: gloo on CPU, NCCL on GPU), clips, steps AdamW with linear
warm-up, and returns metrics plus (rank 0) the new adapter tensors.

Micro-batch and rank losses are weighted by their share of the global
aggregation count (tokens for token-mean, sequences otherwise), so K ranks with
any micro-batch size follow the same trajectory as one rank on the whole batch.
"""

from __future__ import annotations

import copy
import datetime
import math
import socket
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from peft import get_peft_model_state_dict, set_peft_model_state_dict

from mixgrpo.actors.loss import (
    LossConfig,
    LossInputs,
    LossOutput,
    gather_token_logprobs,
    grpo_loss,
    token_entropy,
)
from mixgrpo.actors.models import load_base_model, wrap_lora
from mixgrpo.batch import TrainBatch
from mixgrpo.builtin import resolve_model_path
from mixgrpo.config import LearnerConfig, LossSettings, ModelConfig
from mixgrpo.faults import failpoint


@dataclass(frozen=True)
class LearnerResult:
    """What a learner step returns to the driver."""

    version: int
    """Adapter version after this step (the number of optimizer steps taken)."""
    metrics: dict[str, float]
    """Loss metrics averaged over ranks, plus grad_norm, lr and skipped."""
    adapter: dict[str, torch.Tensor] | None
    """LoRA tensors on CPU (rank 0 only; None on other ranks)."""


@dataclass(frozen=True)
class _MicroBatch:
    input_ids: torch.Tensor  # (B, L) prompt + completion, right-padded
    attention_mask: torch.Tensor  # (B, L)
    target_positions: torch.Tensor  # (B, T) position whose logits predict completion token t
    completion_ids: torch.Tensor  # (B, T)
    response_mask: torch.Tensor  # (B, T)
    behaviour_logprobs: torch.Tensor  # (B, T)
    advantages: torch.Tensor  # (B,)


def _collate(batch: TrainBatch, rows: range, pad_id: int) -> _MicroBatch:
    rows = list(rows)
    full = [np.concatenate([batch.prompt_token_ids[i], batch.completion_token_ids[i]]) for i in rows]
    width = max(len(f) for f in full)
    t_max = max(max(len(batch.completion_token_ids[i]) for i in rows), 1)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    positions = torch.zeros((len(rows), t_max), dtype=torch.long)
    completion = torch.full((len(rows), t_max), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), t_max))
    behaviour = torch.zeros((len(rows), t_max))
    for row, i in enumerate(rows):
        n_prompt, n_completion = len(batch.prompt_token_ids[i]), len(batch.completion_token_ids[i])
        input_ids[row, : len(full[row])] = torch.tensor(full[row])
        attention[row, : len(full[row])] = 1
        positions[row, :n_completion] = torch.arange(n_prompt - 1, n_prompt - 1 + n_completion)
        completion[row, :n_completion] = torch.tensor(batch.completion_token_ids[i])
        mask[row, :n_completion] = 1.0
        behaviour[row, :n_completion] = torch.tensor(batch.behaviour_logprobs[i], dtype=torch.float32)
    return _MicroBatch(
        input_ids, attention, positions, completion, mask, behaviour,
        torch.as_tensor(batch.advantages[rows], dtype=torch.float32),
    )


def aggregation_count(response_mask: torch.Tensor, aggregation: str) -> float:
    """Denominator of the aggregation: masked tokens (token-mean) or non-empty sequences."""
    if aggregation == "token-mean":
        return float(response_mask.sum())
    return float((response_mask.sum(dim=1) > 0).sum())


class Learner:
    """One rank of the LoRA learner group (``world_size`` = 1: a single learner)."""

    def __init__(
        self,
        model: ModelConfig,
        learner: LearnerConfig,
        loss: LossSettings,
        temperature: float,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        torch.set_num_threads(learner.threads)
        torch.manual_seed(seed)
        self.config = learner
        self.loss_config = LossConfig(**loss.model_dump())
        self.temperature = temperature
        self.rank, self.world_size = rank, world_size
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        base = load_base_model(resolve_model_path(model.path, seed), model, self.device)
        self.model = wrap_lora(base, learner.lora)
        self.pad_id = base.config.pad_token_id if base.config.pad_token_id is not None else 0
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=learner.lr, weight_decay=learner.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._warmup_factor)
        self.version = 0
        self.skipped_steps = 0
        self.calls = 0

    def rendezvous_address(self) -> str:
        """A ``tcp://host:port`` on this machine with a free port, for rank 0 to host the group."""
        with socket.socket() as probe:
            probe.bind(("", 0))
            port = probe.getsockname()[1]
        return f"tcp://{socket.gethostbyname(socket.gethostname())}:{port}"

    def join(self, init_method: str) -> int:
        """Join the process group (all ranks call this at once); returns this rank."""
        dist.init_process_group(
            "nccl" if self.device == "cuda" else "gloo",
            init_method=init_method,
            rank=self.rank,
            world_size=self.world_size,
            timeout=datetime.timedelta(seconds=self.config.collective_timeout_s),
        )
        return self.rank

    def _warmup_factor(self, optimizer_step: int) -> float:
        if self.config.warmup_steps == 0:
            return 1.0
        return min(1.0, (optimizer_step + 1) / self.config.warmup_steps)

    def _token_logprobs(self, micro: _MicroBatch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T) log-probs of the completion tokens at the sampling temperature, and entropy if needed."""
        logits = self.model(input_ids=micro.input_ids, attention_mask=micro.attention_mask).logits
        index = micro.target_positions.unsqueeze(-1).expand(-1, -1, logits.shape[-1])
        logits = logits.gather(1, index).float() / self.temperature  # (B, T, V)
        entropy = token_entropy(logits) if self.loss_config.entropy_coef > 0 else None
        return gather_token_logprobs(logits, micro.completion_ids), entropy

    def _reference_logprobs(self, micro: _MicroBatch) -> torch.Tensor | None:
        if self.loss_config.kl_coef == 0:
            return None
        with torch.no_grad(), self.model.disable_adapter():
            return self._token_logprobs(micro)[0]

    def _all_reduce_sums(self, values: dict[str, float]) -> dict[str, float]:
        """Sum every value over the ranks in one collective (keys sorted: the same order on every rank)."""
        if self.world_size == 1:
            return dict(values)
        keys = sorted(values)
        tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return dict(zip(keys, tensor.tolist()))

    def train_step(self, batch: TrainBatch) -> LearnerResult:
        """One optimizer step on this rank's shard of the step's batch."""
        self.model.train()
        micro_batches = [
            _collate(batch, range(start, min(start + self.config.micro_batch_size, len(batch))), self.pad_id)
            for start in range(0, len(batch), self.config.micro_batch_size)
        ]
        local_count = sum(aggregation_count(mb.response_mask, self.loss_config.aggregation) for mb in micro_batches)
        global_count = max(self._all_reduce_sums({"count": local_count})["count"], 1.0)
        poisoned = failpoint("loss", f"learner-{self.rank}", self.calls) == "corrupt"
        sums: dict[str, float] = {"time_forward": 0.0, "time_backward": 0.0}
        gap_sum, gap_max = 0.0, 0.0
        for micro in micro_batches:
            share = aggregation_count(micro.response_mask, self.loss_config.aggregation) / global_count
            started = time.monotonic()
            output, gap = self._micro_step(micro)
            forward_done = time.monotonic()
            (output.loss * (float("nan") if poisoned else share)).backward()
            sums["time_forward"] += (forward_done - started) / self.world_size
            sums["time_backward"] += (time.monotonic() - forward_done) / self.world_size
            for key, value in output.metrics.items():
                sums[key] = sums.get(key, 0.0) + value * share
            gap_sum, gap_max = gap_sum + float(gap.sum()), max(gap_max, float(gap.max()))
        failpoint("train_step", f"learner-{self.rank}", self.calls)
        self.calls += 1
        sums["tokens"] = sum(float(mb.response_mask.sum()) for mb in micro_batches)
        sums["gap"] = gap_sum
        metrics = self._all_reduce_sums(sums)
        tokens, gap_total = metrics.pop("tokens"), metrics.pop("gap")
        metrics["logprob_mismatch_mean"] = gap_total / max(tokens, 1.0)
        metrics["logprob_mismatch_max"] = gap_max
        started = time.monotonic()
        metrics.update(self._apply_gradients())
        metrics["time_optimizer"] = time.monotonic() - started
        self.model.eval()
        adapter = self.adapter_tensors() if self.rank == 0 else None
        return LearnerResult(version=self.version, metrics=metrics, adapter=adapter)

    def _micro_step(self, micro: _MicroBatch) -> tuple[LossOutput, torch.Tensor]:
        """Loss of one micro-batch, and its (B, T) |generator - learner| log-prob gap."""
        logprobs, entropy = self._token_logprobs(micro)
        gap = (logprobs.detach() - micro.behaviour_logprobs).abs() * micro.response_mask
        inputs = LossInputs(
            logprobs=logprobs,
            behaviour_logprobs=micro.behaviour_logprobs,
            advantages=micro.advantages,
            response_mask=micro.response_mask,
            ref_logprobs=self._reference_logprobs(micro),
            entropy=entropy,
            # The PPO ratio is taken against the generator's behaviour log-probs (off-policy
            # correct in async mode); with an off-policy correction the learner's own pre-update
            # log-probs become the proximal policy and the generator gap is reweighted instead.
            proximal_logprobs=logprobs.detach() if self.loss_config.uses_proximal else None,
        )
        return grpo_loss(inputs, self.loss_config), gap

    def _apply_gradients(self) -> dict[str, float]:
        """All-reduce, clip, and step unless the update is not finite (then skip, counted)."""
        if self.world_size > 1:
            for parameter in self.trainable:
                if parameter.grad is None:
                    parameter.grad = torch.zeros_like(parameter)
                dist.all_reduce(parameter.grad)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.trainable, self.config.max_grad_norm))
        finite = math.isfinite(grad_norm)  # any NaN/inf gradient makes the total norm non-finite
        if finite:
            self.optimizer.step()
            self.scheduler.step()
            self.version += 1
        else:
            self.skipped_steps += 1
        self.optimizer.zero_grad(set_to_none=True)
        return {
            "grad_norm": grad_norm if finite else float("nan"),
            "lr": self.scheduler.get_last_lr()[0],
            "skipped_steps": float(self.skipped_steps),
            "step_skipped": 0.0 if finite else 1.0,
        }

    def adapter_tensors(self) -> dict[str, torch.Tensor]:
        """The LoRA weights (PEFT state-dict keys) as detached CPU tensors."""
        return {k: v.detach().to("cpu").clone() for k, v in get_peft_model_state_dict(self.model).items()}

    def state(self) -> dict[str, Any]:
        """Everything a checkpoint needs: adapter, optimizer, scheduler, version."""
        return {
            "adapter": self.adapter_tensors(),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "scheduler": self.scheduler.state_dict(),
            "version": self.version,
            "skipped_steps": self.skipped_steps,
            "torch_rng": torch.get_rng_state(),
        }

    def load_state(self, state: dict[str, Any]) -> int:
        """Restore a checkpoint's state; returns the restored version."""
        set_peft_model_state_dict(self.model, state["adapter"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.version = int(state["version"])
        self.skipped_steps = int(state["skipped_steps"])
        torch.set_rng_state(state["torch_rng"])
        return self.version

    def save_adapter(self, directory: str) -> str:
        """Write the adapter in PEFT format (loadable with PeftModel.from_pretrained)."""
        self.model.save_pretrained(directory)
        return directory

    def shutdown(self) -> None:
        """Leave the process group (if any)."""
        if self.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()
