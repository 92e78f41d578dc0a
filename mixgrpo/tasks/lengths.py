"""Prompts longer than the model can take: truncated on the left, dropped, or an error, once at load time.

The task holds the prompt pool, so the pool is fitted once when the run
starts and generators never see an overlong prompt. Token counts come from a
``PromptTokens`` (the generator's own encoding, chat template included), which
the orchestrator builds from the model's tokenizer; this module needs no model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from mixgrpo.batch import PromptBatch
from mixgrpo.errors import InputError

logger = logging.getLogger("mixgrpo.tasks")

OverlongPolicy = Literal["truncate_left", "drop", "error"]


class PromptTokens(Protocol):
    """How many tokens a prompt is fed as, and how to shorten it."""

    def count(self, prompts: list[str]) -> list[int]:
        """Tokens of each prompt as the generator encodes it (chat template included)."""

    def keep_last(self, prompt: str, tokens: int) -> str:
        """The prompt's text without its leading part, so that ``count([text])[0] <= tokens``."""


@dataclass(frozen=True)
class FitReport:
    """What fitting did to a pool."""

    limit: int
    """task.max_prompt_tokens in effect."""
    overlong_ids: list[int]
    """prompt_ids of the prompts over the limit."""
    longest: int
    """Tokens of the longest prompt before fitting."""
    policy: OverlongPolicy

    def metrics(self) -> dict[str, float]:
        """prompts/overlong_dropped or prompts/overlong_truncated (constant over the run)."""
        action = "truncated" if self.policy == "truncate_left" else "dropped"
        return {f"prompts/overlong_{action}": float(len(self.overlong_ids))}


def fit_prompts(pool: PromptBatch, limit: int, policy: OverlongPolicy, tokens: PromptTokens,
                source: str) -> tuple[PromptBatch, FitReport]:
    """``pool`` with every prompt at most ``limit`` tokens long; ``source`` names the prompts in messages.

    Raises InputError for policy ``error`` when a prompt is too long, and when nothing would remain.
    """
    lengths = np.asarray(tokens.count(pool.prompts), dtype=np.int64)
    over = np.flatnonzero(lengths > limit)
    report = FitReport(limit, pool.prompt_ids[over].tolist(), int(lengths.max(initial=0)), policy)
    if over.size == 0:
        return pool, report
    shown = ", ".join(f"id {pool.prompt_ids[i]}: {lengths[i]} tokens" for i in over[:5])
    summary = (f"{source}: {over.size} of {len(pool)} prompts exceed task.max_prompt_tokens={limit} "
               f"({shown}{', ...' if over.size > 5 else ''})")
    if policy == "error":
        raise InputError(f"{summary}; set task.overlong_prompts=drop or truncate_left")
    if policy == "drop":
        if over.size == len(pool):
            raise InputError(f"{summary}: no prompt left to train on")
        logger.warning("%s: dropped", summary)
        return pool.take(np.flatnonzero(lengths <= limit)), report
    prompts = list(pool.prompts)
    for i in over:
        prompts[i] = tokens.keep_last(prompts[i], limit)
    logger.warning("%s: cut to their last tokens", summary)
    return PromptBatch(pool.prompt_ids, prompts, pool.metadata), report
