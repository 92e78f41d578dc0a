"""Real scores on a language model: rollouts of a finished run, their rewards and projected score vectors.

``sample_run(run_dir, ...)`` loads the run's resolved ``config.yaml`` and its
final ``adapter/``, samples ``K`` groups of ``M`` completions for each of ``P``
prompts with the configured generator (the plain ``Generator`` class, so the
configured backend: HF or vLLM), scores them with the configured reward
channels (plain ``RewardWorker`` instances, nulls kept), and computes for each
completion the score ``s = grad_theta log pi(y | x)`` with respect to the LoRA
parameters ``theta``, ``log pi`` being the sum of the completion's token
log-probs at the sampling temperature (EOS included when sampled, as the
learner scores it). The ``n_lora``-dimensional score is mapped to ``D``
dimensions by a fixed Gaussian projection ``Pi`` ``(n_lora, D)`` with entries
``N(0, 1/D)``, so ``E||Pi^T s||^2 = ||s||^2`` (Johnson-Lindenstrauss) and every
quantity of Theorem 3 keeps its scale. Identical (prompt, completion) pairs
share one backward pass.

Everything is seeded: the projection by ``seed``, the sampling by the run's
seed and the generator steps ``STEP_OFFSET * (seed + 1) + k`` for group ``k``.
With ``top_p < 1`` the score is that of the untruncated softmax.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from peft import PeftModel
from safetensors.torch import load_file

from mixgrpo.actors.generator import Generator
from mixgrpo.actors.models import load_base_model
from mixgrpo.actors.reward import RewardWorker
from mixgrpo.analysis.thm3 import ScoreSample
from mixgrpo.batch import PromptBatch, RolloutBatch
from mixgrpo.builtin import resolve_model_path
from mixgrpo.config import Config, load_config
from mixgrpo.errors import InputError
from mixgrpo.tasks import make_task

STEP_OFFSET = 1_000_000
"""Generator steps used for sampling start past any training step, so the draws are fresh."""


@dataclass(frozen=True)
class RunSample:
    """A ScoreSample from a run, with what it was drawn from."""

    sample: ScoreSample
    weights: np.ndarray
    """(R,) the run's channel weights."""
    channel_names: list[str]
    prompts: list[str]
    lora_parameters: int
    """Dimension of the score before projection."""
    unique_sequences: int
    """Backward passes taken (distinct prompt + completion pairs)."""


def load_run(run_dir: Path, overrides: list[str]) -> tuple[Config, Path]:
    """The run's resolved config (with overrides) and its final adapter directory."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise InputError(f"--from-run {run_dir}: not a run directory (config.yaml missing)")
    adapter = run_dir / "adapter"
    if not (adapter / "adapter_model.safetensors").is_file():
        raise InputError(f"--from-run {run_dir}: no final adapter (adapter/adapter_model.safetensors missing)")
    return load_config(run_dir / "config.yaml", overrides), adapter


class SequenceScorer:
    """Projected per-sequence scores ``Pi^T grad log pi(y | x)`` of the LoRA parameters."""

    def __init__(self, config: Config, adapter_dir: Path, projection_dim: int, seed: int) -> None:
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        base = load_base_model(resolve_model_path(config.model.path, config.run.seed), config.model, self.device)
        self.model = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=True).eval()
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.size = sum(p.numel() for p in self.parameters)
        generator = torch.Generator().manual_seed(seed)
        self.projection = (torch.randn(self.size, projection_dim, generator=generator)
                           / math.sqrt(projection_dim)).to(self.device)
        self.temperature = config.generator.temperature
        self._cache: dict[bytes, np.ndarray] = {}

    def score(self, prompt_ids: np.ndarray, completion_ids: np.ndarray) -> np.ndarray:
        """``(D,)`` projected gradient of the completion's log-probability."""
        key = np.asarray(prompt_ids, np.int64).tobytes() + b"|" + np.asarray(completion_ids, np.int64).tobytes()
        if key not in self._cache:
            self._cache[key] = self._projected_gradient(prompt_ids, completion_ids)
        return self._cache[key]

    def _projected_gradient(self, prompt_ids: np.ndarray, completion_ids: np.ndarray) -> np.ndarray:
        ids = torch.as_tensor(np.concatenate([prompt_ids, completion_ids]), dtype=torch.long, device=self.device)
        logits = self.model(input_ids=ids[None]).logits[0].float()
        start = len(prompt_ids) - 1
        predicting = logits[start : start + len(completion_ids)] / self.temperature  # (T, V)
        targets = ids[len(prompt_ids) :, None]
        log_prob = torch.log_softmax(predicting, dim=-1).gather(1, targets).sum()
        gradients = torch.autograd.grad(log_prob, self.parameters)
        flat = torch.cat([g.reshape(-1) for g in gradients])
        return (flat @ self.projection).double().cpu().numpy()

    @property
    def unique_sequences(self) -> int:
        """Distinct sequences scored so far."""
        return len(self._cache)


def _prompts(config: Config, count: int) -> PromptBatch:
    """The first ``count`` prompts of the run's task pool (distinct for the toy task)."""
    pool = make_task(config.task, config.run.seed).pool
    if count > len(pool):
        raise InputError(f"--prompts {count}: the task has only {len(pool)} prompts")
    return pool.take(np.arange(count))


def _group_rows(rollouts: list[RolloutBatch], prompts: int, group_size: int) -> list[list[tuple[int, int]]]:
    """For each prompt, (group k, row) of its completions across the K generator calls, in order."""
    return [[(k, p * group_size + j) for k in range(len(rollouts)) for j in range(group_size)]
            for p in range(prompts)]


def sample_run(run_dir: Path, prompts: int, groups: int, group_size: int, projection_dim: int,
               seed: int, overrides: list[str] | None = None) -> RunSample:
    """``K = groups`` groups of ``group_size`` completions for ``prompts`` prompts, scored and projected.

    Returns a ScoreSample with rewards ``(P, K * M, R)`` and scores ``(P, K * M, D)``
    (no true gradient: the analysis uses the spread across groups).
    """
    config, adapter_dir = load_run(run_dir, [*(overrides or []), f"generator.group_size={group_size}"])
    batch = _prompts(config, prompts)
    generator = Generator(config.model, config.learner.lora, config.generator, config.run.seed)
    generator.load_adapter(load_file(str(adapter_dir / "adapter_model.safetensors")), version=1)
    rollouts = [generator.generate(batch, STEP_OFFSET * (seed + 1) + k) for k in range(groups)]
    del generator
    workers = [RewardWorker(channel) for channel in config.rewards]
    per_call = np.stack([
        np.stack([w.score(batch, r).values[c.name] for w, c in zip(workers, config.rewards)], axis=1)
        for r in rollouts
    ])  # (K, P * M, R)
    scorer = SequenceScorer(config, adapter_dir, projection_dim, seed)
    rows = _group_rows(rollouts, prompts, group_size)
    rewards = np.stack([[per_call[k, row] for k, row in prompt_rows] for prompt_rows in rows])
    scores = np.stack([
        [scorer.score(rollouts[k].prompt_token_ids[row], rollouts[k].completion_token_ids[row])
         for k, row in prompt_rows]
        for prompt_rows in rows
    ])
    return RunSample(
        sample=ScoreSample(rewards=rewards, scores=scores),
        weights=np.asarray(config.channel_weights, dtype=np.float64),
        channel_names=config.channel_names,
        prompts=list(batch.prompts),
        lora_parameters=scorer.size,
        unique_sequences=scorer.unique_sequences,
    )
