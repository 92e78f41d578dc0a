"""Columnar records that cross actor boundaries, and their Arrow form.

Shapes: P prompts per step, m completions per prompt, N = P * m completions,
R reward channels. Completions are stored group-major: the m completions of
prompt 0, then those of prompt 1, and so on; ``prompt_index`` says which.
Ragged token sequences are lists of 1-D numpy arrays (Arrow ``list<...>``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class PromptBatch:
    """P prompts with their metadata (gold answers, image paths, ...)."""

    prompt_ids: np.ndarray
    """(P,) int64 stable id of each prompt in its task's pool."""
    prompts: list[str]
    """(P,) prompt text as the task wrote it (chat template applied by the generator)."""
    metadata: list[dict[str, Any]]
    """(P,) per-prompt metadata columns, handed to the reward channels."""

    def __len__(self) -> int:
        return len(self.prompts)

    def take(self, rows: np.ndarray | list[int]) -> "PromptBatch":
        """The sub-batch of the given rows, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        return PromptBatch(
            prompt_ids=self.prompt_ids[rows],
            prompts=[self.prompts[i] for i in rows],
            metadata=[self.metadata[i] for i in rows],
        )


@dataclass(frozen=True)
class RolloutBatch:
    """N sampled completions with the behaviour log-probs of their tokens."""

    prompt_index: np.ndarray
    """(N,) int64 row of each completion's prompt in the step's PromptBatch."""
    prompt_token_ids: list[np.ndarray]
    """(N,) ragged int64 prompt tokens (after the chat template)."""
    completion_token_ids: list[np.ndarray]
    """(N,) ragged int64 sampled tokens (EOS included when sampled)."""
    behaviour_logprobs: list[np.ndarray]
    """(N,) ragged float32 log-prob of each sampled token under the sampling policy."""
    completion_text: list[str]
    """(N,) decoded completions, special tokens removed."""
    policy_version: np.ndarray
    """(N,) int64 adapter version that produced each completion."""

    def __len__(self) -> int:
        return len(self.completion_text)

    @property
    def completion_lengths(self) -> np.ndarray:
        """(N,) number of sampled tokens per completion."""
        return np.array([len(t) for t in self.completion_token_ids], dtype=np.int64)

    @staticmethod
    def concat(parts: list["RolloutBatch"], prompt_offsets: list[int]) -> "RolloutBatch":
        """Join shards; shard k's prompt_index is shifted by ``prompt_offsets[k]``."""
        return RolloutBatch(
            prompt_index=np.concatenate([p.prompt_index + off for p, off in zip(parts, prompt_offsets)]),
            prompt_token_ids=[t for p in parts for t in p.prompt_token_ids],
            completion_token_ids=[t for p in parts for t in p.completion_token_ids],
            behaviour_logprobs=[t for p in parts for t in p.behaviour_logprobs],
            completion_text=[t for p in parts for t in p.completion_text],
            policy_version=np.concatenate([p.policy_version for p in parts]),
        )

    def take(self, rows: np.ndarray) -> "RolloutBatch":
        """The completions at ``rows`` (prompt_index kept as is)."""
        return RolloutBatch(
            prompt_index=self.prompt_index[rows],
            prompt_token_ids=[self.prompt_token_ids[i] for i in rows],
            completion_token_ids=[self.completion_token_ids[i] for i in rows],
            behaviour_logprobs=[self.behaviour_logprobs[i] for i in rows],
            completion_text=[self.completion_text[i] for i in rows],
            policy_version=self.policy_version[rows],
        )


@dataclass(frozen=True)
class ChannelScores:
    """What one reward channel returned for a batch: values plus failure counters."""

    values: dict[str, np.ndarray]
    """channel (or sub-channel) name -> (N,) float64, NaN = null."""
    counters: dict[str, int] = field(default_factory=dict)
    """errors, timeouts, invalid values, ... for this batch."""
    seconds: float = 0.0
    """Wall time spent scoring."""


@dataclass(frozen=True)
class TrainBatch:
    """What the learner needs: tokens, behaviour log-probs and one advantage per sequence."""

    prompt_token_ids: list[np.ndarray]
    """(N,) ragged prompt tokens."""
    completion_token_ids: list[np.ndarray]
    """(N,) ragged completion tokens."""
    behaviour_logprobs: list[np.ndarray]
    """(N,) ragged behaviour log-probs, aligned with completion_token_ids."""
    advantages: np.ndarray
    """(N,) float32 advantage of each completion."""

    def __len__(self) -> int:
        return len(self.advantages)

    def shard(self, rank: int, world_size: int) -> "TrainBatch":
        """Rows rank, rank + world_size, ... (a strided split keeps shard sizes within one)."""
        rows = range(rank, len(self), world_size)
        return TrainBatch(
            prompt_token_ids=[self.prompt_token_ids[i] for i in rows],
            completion_token_ids=[self.completion_token_ids[i] for i in rows],
            behaviour_logprobs=[self.behaviour_logprobs[i] for i in rows],
            advantages=self.advantages[list(rows)],
        )


def rollout_table(
    step: int,
    prompts: PromptBatch,
    rollouts: RolloutBatch,
    rewards: np.ndarray,
    channel_names: list[str],
    advantages: np.ndarray,
    weak_heads: np.ndarray,
    review_reason: np.ndarray,
) -> pa.Table:
    """One step of rollouts as an Arrow table (one row per completion, nulls kept).

    rewards: (N, R) float64 with NaN = null; advantages: (N,); weak_heads: (N, R) bool;
    review_reason: (N,) str.
    """
    rows = rollouts.prompt_index
    columns: dict[str, Any] = {
        "step": pa.array(np.full(len(rollouts), step, dtype=np.int64)),
        "prompt_id": pa.array(prompts.prompt_ids[rows]),
        "prompt": pa.array([prompts.prompts[i] for i in rows]),
        "completion": pa.array(rollouts.completion_text),
        "completion_tokens": pa.array(rollouts.completion_lengths),
        "policy_version": pa.array(rollouts.policy_version),
        "advantage": pa.array(advantages.astype(np.float64)),
    }
    for r, name in enumerate(channel_names):
        values = rewards[:, r]
        columns[f"reward_{name}"] = pa.array(values, mask=np.isnan(values))
    columns["weak_heads"] = pa.array(
        [[channel_names[r] for r in np.flatnonzero(flags)] for flags in weak_heads],
        type=pa.list_(pa.string()),
    )
    columns["review_reason"] = pa.array([str(s) for s in review_reason])
    return pa.table(columns)
