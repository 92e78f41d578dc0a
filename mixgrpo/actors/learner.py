"""Learner actor: one rank of the LoRA policy optimiser.

The policy is the base model with a PEFT LoRA adapter; the reference policy is
the same model with the adapter disabled (no second copy). A step runs
micro-batches with gradient accumulation, all-reduces gradients across ranks
(torch.distributed: gloo on CPU, NCCL on GPU), clips, steps AdamW with linear
warm-up, and returns metrics plus (rank 0) the new adapter tensors.

A train_step makes ``epochs`` x ``mini_batches`` optimizer steps (PPO epochs and
mini-batches: verl's ppo_epochs / ppo_mini_batch_size, TRL's num_iterations)
and returns once, after the last: the adapter version counts optimizer steps,
the driver broadcasts once per rollout batch. Every step's ratio is taken
against the same behaviour log-probs, so the PPO clip acts from the second
optimizer step on. Mini-batches are contiguous ranges of the whole batch's rows
(``TrainBatch.mini_batch_rows``), the same on every rank and in every epoch.

Micro-batch and rank losses are weighted by their share of the mini-batch's
global aggregation count (``loss.aggregation_count``: tokens, non-empty
sequences or sequences), so K ranks with any micro-batch size follow the same
trajectory as one rank on the whole batch. For Dr.GRPO's
seq-mean-token-sum-norm that needs a constant L: ``max_response_tokens``, by
default the generator's ``max_new_tokens``, never a micro-batch's longest
completion.
"""

from __future__ import annotations

import copy
import dataclasses
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
    aggregation_count,
    gather_token_logprobs,
    grpo_loss,
    token_entropy,
)
from mixgrpo.actors.models import load_base_model, wrap_lora
from mixgrpo.batch import TrainBatch
from mixgrpo.builtin import resolve_model_path
from mixgrpo.config import LearnerConfig, LossSettings, ModelConfig
from mixgrpo.faults import failpoint
from mixgrpo.threads import fixed_threads


@dataclass(frozen=True)
class LearnerResult:
    """What a learner step returns to the driver."""

    version: int
    """Adapter version after this step (the number of optimizer steps taken)."""
    metrics: dict[str, float]
    """Loss metrics averaged over ranks, plus grad_norm, lr and skipped."""
    adapter: dict[str, torch.Tensor] | None
    """LoRA tensors on CPU (rank 0 only; None on other ranks). The orchestrator's learner group hands on a
    reference to them instead, which the rollout pipeline forwards to the generators."""


@dataclass(frozen=True)
class _MicroBatch:
    input_ids: torch.Tensor  # (B, L) prompt + completion, right-padded
    attention_mask: torch.Tensor  # (B, L)
    target_positions: torch.Tensor  # (B, T) position whose logits predict completion token t
    completion_ids: torch.Tensor  # (B, T)
    response_mask: torch.Tensor  # (B, T)
    behaviour_logprobs: torch.Tensor  # (B, T)
    advantages: torch.Tensor  # (B,)
    proximal_logprobs: torch.Tensor | None  # (B, T) learner log-probs before the update, when precomputed

    def to(self, device: str) -> _MicroBatch:
        """The same micro-batch with every tensor on ``device`` (the model's: collation builds them on the CPU)."""
        tensors = (getattr(self, field.name) for field in dataclasses.fields(self))
        return _MicroBatch(*(None if t is None else t.to(device) for t in tensors))


def _right_padded(values: list[np.ndarray], lengths: np.ndarray, width: int, fill: float, dtype: type) -> np.ndarray:
    """(B, width): row b holds the next ``lengths[b]`` values of ``values`` (concatenated) from column 0, then ``fill``.

    Boolean-mask assignment fills the True cells in row-major order, the order of the concatenated
    values: one copy for the whole micro-batch instead of one per row.
    """
    out = np.full((len(lengths), width), fill, dtype=dtype)
    out[np.arange(width) < lengths[:, None]] = np.concatenate(values)
    return out


def _collate(batch: TrainBatch, rows: np.ndarray, pad_id: int, proximal: list[np.ndarray] | None) -> _MicroBatch:
    """The micro-batch of ``rows`` (non-empty): prompt + completion right-padded to the longest, completions to T."""
    rows = [int(i) for i in rows]
    prompts = [batch.prompt_token_ids[i] for i in rows]
    completions = [batch.completion_token_ids[i] for i in rows]
    completion_lengths = np.array([len(c) for c in completions], dtype=np.int64)
    prompt_lengths = np.array([len(p) for p in prompts], dtype=np.int64)
    lengths = prompt_lengths + completion_lengths
    width, t_max = int(lengths.max()), max(int(completion_lengths.max()), 1)
    in_completion = np.arange(t_max) < completion_lengths[:, None]
    per_token = [(batch.behaviour_logprobs, "behaviour")] + ([(proximal, "proximal")] if proximal is not None else [])
    padded = {name: torch.from_numpy(_right_padded([ragged[i] for i in rows], completion_lengths, t_max, 0.0,
                                                   np.float32)) for ragged, name in per_token}
    return _MicroBatch(
        torch.from_numpy(_right_padded([part for pair in zip(prompts, completions) for part in pair], lengths, width,
                                       pad_id, np.int64)),  # row b: its prompt, then its completion
        torch.from_numpy((np.arange(width) < lengths[:, None]).astype(np.int64)),
        torch.from_numpy(np.where(in_completion, prompt_lengths[:, None] - 1 + np.arange(t_max), 0)),
        torch.from_numpy(_right_padded(completions, completion_lengths, t_max, pad_id, np.int64)),
        torch.from_numpy(in_completion.astype(np.float32)),
        padded["behaviour"],
        torch.as_tensor(batch.advantages[rows], dtype=torch.float32),
        padded.get("proximal"),
    )


def plan_micro_batches(lengths: np.ndarray, rows: np.ndarray, max_rows: int,
                       max_tokens: int | None = None) -> list[np.ndarray]:
    """Cut ``rows`` into micro-batches; lengths: (N,) prompt + completion tokens of every row of the batch.

    Without a token budget: runs of ``max_rows`` rows in the given order. With one: the rows
    sorted by length (longest first, stable), packed greedily while (rows in it) x (its longest
    row) <= ``max_tokens`` and rows <= ``max_rows``; a row longer than the budget gets a
    micro-batch of its own. The padded rectangle is what a forward computes, so sorting keeps
    rows of similar length together and padding out of the compute. The gradient is the same
    either way (each micro-batch is weighted by its share of the mini-batch's count).
    """
    rows = np.asarray(rows, dtype=np.int64)
    if max_tokens is None:
        return [rows[start:start + max_rows] for start in range(0, len(rows), max_rows)]
    ordered = rows[np.argsort(-lengths[rows], kind="stable")]
    plan: list[np.ndarray] = []
    start = 0
    while start < len(ordered):
        longest = int(lengths[ordered[start]])  # descending order: the first row is the longest
        count = max(1, min(max_rows, max_tokens // max(longest, 1), len(ordered) - start))
        plan.append(ordered[start:start + count])
        start += count
    return plan


def _response_masks(batch: TrainBatch) -> torch.Tensor:
    """(N, T) 0/1 mask of every row's completion tokens, for the aggregation counts."""
    lengths = torch.tensor([len(c) for c in batch.completion_token_ids], dtype=torch.long)
    horizon = max(int(lengths.max()) if len(lengths) else 0, 1)
    return (torch.arange(horizon).unsqueeze(0) < lengths.unsqueeze(1)).float()


def _with_constant_length(loss: LossSettings, max_new_tokens: int | None) -> LossSettings:
    """The loss settings with Dr.GRPO's constant L resolved: max_response_tokens, else max_new_tokens."""
    length = loss.max_response_tokens or max_new_tokens
    if length is None and loss.aggregation == "seq-mean-token-sum-norm":
        raise ValueError("algorithm.loss.aggregation=seq-mean-token-sum-norm needs a constant length: set "
                         "algorithm.loss.max_response_tokens or give the Learner max_new_tokens")
    return loss.model_copy(update={"max_response_tokens": length})


def _loss_metric_names(config: LossConfig) -> list[str]:
    """The metric names grpo_loss reports for the inputs the learner gives it (every rank reduces all of them,
    also a rank whose shard is empty)."""
    one = torch.zeros(1, 1)
    inputs = LossInputs(logprobs=one, behaviour_logprobs=one, advantages=torch.zeros(1), response_mask=one + 1,
                        ref_logprobs=one if config.kl_coef > 0 else None,
                        entropy=one if config.entropy_coef > 0 else None,
                        proximal_logprobs=one if config.uses_proximal else None)
    return sorted(grpo_loss(inputs, config).metrics)


class Learner:
    """One rank of the LoRA learner group (``world_size`` = 1: a single learner).

    ``max_new_tokens`` (the generator's completion cap) is Dr.GRPO's constant L
    when ``loss.max_response_tokens`` is None; seq-mean-token-sum-norm needs one of them.
    """

    def __init__(
        self,
        model: ModelConfig,
        learner: LearnerConfig,
        loss: LossSettings,
        temperature: float,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        *,
        max_new_tokens: int | None = None,
    ) -> None:
        torch.set_num_threads(fixed_threads(learner.threads))
        torch.manual_seed(seed)
        self.config = learner
        self.loss_config: LossConfig = _with_constant_length(loss, max_new_tokens)
        self.loss_metric_names = _loss_metric_names(self.loss_config)
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
        self.publishes_adapter = rank == 0
        """Whether ``train_step`` returns the adapter (rank 0, unless nothing reads it: a colocated rank)."""

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

    def _token_logprobs(self, micro: _MicroBatch, with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T) log-probs of the completion tokens at the sampling temperature, and entropy if asked."""
        logits = self.model(input_ids=micro.input_ids, attention_mask=micro.attention_mask).logits
        index = micro.target_positions.unsqueeze(-1).expand(-1, -1, logits.shape[-1])
        logits = logits.gather(1, index).float() / self.temperature  # (B, T, V)
        entropy = token_entropy(logits) if with_entropy else None
        return gather_token_logprobs(logits, micro.completion_ids), entropy

    def _reference_logprobs(self, micro: _MicroBatch) -> torch.Tensor | None:
        if self.loss_config.kl_coef == 0:
            return None
        with torch.no_grad(), self.model.disable_adapter():
            return self._token_logprobs(micro)[0]

    @torch.no_grad()
    def _proximal_logprobs(self, batch: TrainBatch) -> list[np.ndarray]:
        """(N,) ragged: this learner's log-probs of every completion before the update.

        The proximal policy of the off-policy correction must stay the pre-update
        policy through all optimizer steps of the batch, so it is computed once, first.
        """
        ragged: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(batch)
        for rows in self._micro_batches(batch, np.arange(len(batch))):
            micro = _collate(batch, rows, self.pad_id, None).to(self.device)
            logprobs = self._token_logprobs(micro)[0].cpu().numpy()
            for row, i in enumerate(rows):
                ragged[i] = logprobs[row, : len(batch.completion_token_ids[i])]
        return ragged

    def _micro_batches(self, batch: TrainBatch, rows: np.ndarray) -> list[np.ndarray]:
        """``rows`` cut by micro_batch_size and, when set, max_tokens_per_micro_batch (plan_micro_batches)."""
        lengths = np.array([len(p) + len(c) for p, c in zip(batch.prompt_token_ids, batch.completion_token_ids)])
        return plan_micro_batches(lengths, rows, self.config.micro_batch_size, self.config.max_tokens_per_micro_batch)

    def _all_reduce_sums(self, values: dict[str, float]) -> dict[str, float]:
        """Sum every value over the ranks in one collective (keys sorted: the same order on every rank)."""
        if self.world_size == 1:
            return dict(values)
        keys = sorted(values)
        tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return dict(zip(keys, tensor.tolist()))

    def train_step(self, batch: TrainBatch) -> LearnerResult:
        """``epochs`` x ``mini_batches`` optimizer steps on this rank's shard of the step's batch.

        Metrics: the loss metrics averaged over the optimizer steps (clip_frac/last: the
        last one's), optimizer_steps taken, grad_norm averaged over them, and the
        generator/learner log-prob gap measured in the first step (before any update).
        """
        self.model.train()
        aggregation = self.loss_config.aggregation
        masks = _response_masks(batch)
        mini_batches = batch.mini_batch_rows(self.config.mini_batches)
        counts = self._all_reduce_sums({f"count/{j:04d}": aggregation_count(masks[rows], aggregation)
                                        for j, rows in enumerate(mini_batches)})
        plan = [(rows, counts[f"count/{j:04d}"]) for j, rows in enumerate(mini_batches)
                if counts[f"count/{j:04d}"] > 0] * self.config.epochs
        several = len(plan) > 1
        proximal = self._proximal_logprobs(batch) if self.loss_config.uses_proximal and several else None
        poisoned = failpoint("loss", f"learner-{self.rank}", self.calls) == "corrupt"
        totals = dict.fromkeys(["time_forward", "time_backward", "time_optimizer", *self.loss_metric_names], 0.0)
        grad_norms: list[float] = []
        first, last = {}, {}
        for index, (rows, count) in enumerate(plan):
            sums = self._accumulate(batch, rows, count, proximal, poisoned)
            if index == 0:
                failpoint("train_step", f"learner-{self.rank}", self.calls)
                first = sums
            for key in ("time_forward", "time_backward", "positions", "padding", "rows"):
                totals[key] = totals.get(key, 0.0) + sums.pop(key)
            for key, value in sums["loss_metrics"].items():
                totals[key] = totals.get(key, 0.0) + value / len(plan)
            last = sums["loss_metrics"]
            started = time.monotonic()
            grad_norms.append(self._apply_gradients())
            totals["time_optimizer"] += (time.monotonic() - started) / self.world_size  # summed over ranks: the mean
        self.calls += 1
        totals.update({"clip_frac/last": last.get("clip_frac", 0.0), "tokens": first.get("tokens", 0.0),
                       "gap": first.get("gap", 0.0)})
        metrics = self._all_reduce_sums(totals)
        tokens, gap_total = metrics.pop("tokens"), metrics.pop("gap")
        positions, padding, rows = metrics.pop("positions"), metrics.pop("padding"), metrics.pop("rows")
        metrics["padding_frac"] = padding / max(positions, 1.0)
        metrics["row_tokens_mean"] = (positions - padding) / max(rows, 1.0)  # prompt + completion per trained row
        compute_s = metrics["time_forward"] + metrics["time_backward"] + metrics["time_optimizer"]
        metrics["tokens_per_s"] = (positions - padding) / compute_s if compute_s > 0 else 0.0  # all ranks
        metrics["logprob_mismatch_mean"] = gap_total / max(tokens, 1.0)
        metrics["logprob_mismatch_max"] = first.get("gap_max", 0.0)
        metrics.update(self._optimizer_metrics(grad_norms))
        self.model.eval()
        adapter = self.adapter_tensors() if self.publishes_adapter else None
        return LearnerResult(version=self.version, metrics=metrics, adapter=adapter)

    def _accumulate(self, batch: TrainBatch, rows: np.ndarray, global_count: float,
                    proximal: list[np.ndarray] | None, poisoned: bool) -> dict[str, Any]:
        """Forward and backward over this rank's rows of one mini-batch, micro-batch by micro-batch.

        Each micro-batch's loss (and metrics) is weighted by its share of the mini-batch's
        aggregation count over all ranks, so the accumulated gradient, summed over the
        ranks, is the gradient of the whole mini-batch's loss. Returns the weighted loss
        metrics, forward/backward seconds, completion tokens and the |generator - learner|
        log-prob gap (sum and max).
        """
        result: dict[str, Any] = {"time_forward": 0.0, "time_backward": 0.0, "tokens": 0.0, "gap": 0.0,
                                  "gap_max": 0.0, "positions": 0.0, "padding": 0.0, "rows": 0.0, "loss_metrics": {}}
        for micro_rows in self._micro_batches(batch, rows):
            micro = _collate(batch, micro_rows, self.pad_id, proximal).to(self.device)
            result["positions"] += float(micro.attention_mask.numel())
            result["rows"] += float(len(micro_rows))
            result["padding"] += float(micro.attention_mask.numel() - micro.attention_mask.sum())
            share = aggregation_count(micro.response_mask, self.loss_config.aggregation) / global_count
            started = time.monotonic()
            output, gap = self._micro_step(micro)
            forward_done = time.monotonic()
            (output.loss * (float("nan") if poisoned else share)).backward()
            result["time_forward"] += (forward_done - started) / self.world_size
            result["time_backward"] += (time.monotonic() - forward_done) / self.world_size
            for key, value in output.metrics.items():
                result["loss_metrics"][key] = result["loss_metrics"].get(key, 0.0) + value * share
            result["tokens"] += float(micro.response_mask.sum())
            result["gap"] += float(gap.sum())
            result["gap_max"] = max(result["gap_max"], float(gap.max()))
        return result

    def _micro_step(self, micro: _MicroBatch) -> tuple[LossOutput, torch.Tensor]:
        """Loss of one micro-batch, and its (B, T) |generator - learner| log-prob gap."""
        logprobs, entropy = self._token_logprobs(micro, with_entropy=self.loss_config.entropy_coef > 0)
        gap = (logprobs.detach() - micro.behaviour_logprobs).abs() * micro.response_mask
        proximal = micro.proximal_logprobs
        if proximal is None and self.loss_config.uses_proximal:
            proximal = logprobs.detach()  # one optimizer step: the current weights are the pre-update ones
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
            proximal_logprobs=proximal,
        )
        return grpo_loss(inputs, self.loss_config), gap

    def _apply_gradients(self) -> float:
        """All-reduce (one fused collective), clip, and step unless the update is not finite.

        Returns the gradient norm before clipping (NaN when the step was skipped, counted).
        """
        if self.world_size > 1:
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.trainable]
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            for parameter, reduced in zip(self.trainable, flat.split([g.numel() for g in grads])):
                parameter.grad = reduced.view_as(parameter)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.trainable, self.config.max_grad_norm))
        finite = math.isfinite(grad_norm)  # any NaN/inf gradient makes the total norm non-finite
        if finite:
            self.optimizer.step()
            self.scheduler.step()
            self.version += 1
        else:
            self.skipped_steps += 1
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm if finite else float("nan")

    def _optimizer_metrics(self, grad_norms: list[float]) -> dict[str, float]:
        """grad_norm (mean over the applied steps), lr, optimizer_steps, skipped_steps (all time), step_skipped."""
        applied = [g for g in grad_norms if math.isfinite(g)]
        return {
            "grad_norm": float(np.mean(applied)) if applied else float("nan"),
            "lr": self.scheduler.get_last_lr()[0],
            "optimizer_steps": float(len(applied)),
            "skipped_steps": float(self.skipped_steps),
            "step_skipped": 0.0 if applied else 1.0,  # the adapter did not change: nothing to broadcast
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
        self._load_trained(state["adapter"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.version = int(state["version"])
        self.skipped_steps = int(state["skipped_steps"])
        torch.set_rng_state(state["torch_rng"])
        return self.version

    def _load_trained(self, tensors: dict[str, torch.Tensor]) -> None:
        """Put a checkpoint's trained tensors (``adapter_tensors``) back into the model."""
        set_peft_model_state_dict(self.model, tensors)

    def save_adapter(self, directory: str) -> str:
        """Write the adapter in PEFT format (loadable with PeftModel.from_pretrained)."""
        self.model.save_pretrained(directory)
        return directory

    def shutdown(self) -> None:
        """Leave the process group (if any)."""
        if self.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()
