"""Prompt sources. ``make_task(config, seed)`` returns a Task whose ``sample(step)`` is deterministic."""

from __future__ import annotations

import math

import numpy as np

from mixgrpo.batch import PromptBatch
from mixgrpo.config import TaskConfig
from mixgrpo.errors import InputError
from mixgrpo.tasks.files import read_prompt_file
from mixgrpo.tasks.image_classes import image_classes_pool
from mixgrpo.tasks.lengths import PromptTokens, fit_prompts
from mixgrpo.tasks.svg_poster import svg_poster_pool
from mixgrpo.tasks.toy import arithmetic_split


class Task:
    """A pool of prompts walked in a fresh seeded permutation each epoch.

    The prompts of step s are a pure function of (seed, s): resuming at step s
    replays the same data order without saving any iterator state.
    """

    def __init__(self, pool: PromptBatch, prompts_per_step: int, seed: int,
                 metrics: dict[str, float] | None = None, held_out: PromptBatch | None = None) -> None:
        self.pool = pool
        self.prompts_per_step = prompts_per_step
        self.seed = seed
        self.held_out = held_out if held_out is not None else pool.take([])
        """Prompts kept out of the pool for held-out evaluation (task.eval_fraction; empty without)."""
        self.metrics = dict(metrics or {})
        """Constant per-run counters added to every step's metrics (prompts/overlong_dropped, ...)."""

    def _epoch_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng((self.seed, epoch)).permutation(len(self.pool))

    def sample(self, step: int) -> PromptBatch:
        """The P prompts of ``step`` (0-based)."""
        size = len(self.pool)
        positions = np.arange(step * self.prompts_per_step, (step + 1) * self.prompts_per_step)
        rows = [self._epoch_order(int(p // size))[p % size] for p in positions]
        return self.pool.take(rows)

    def sample_extra(self, step: int, round_index: int, count: int) -> PromptBatch:
        """``count`` more prompts for extra generation round ``round_index`` >= 1 of ``step`` (oversampling).

        A seeded draw of distinct pool rows, a pure function of (seed, step, round) like ``sample``.
        """
        rng = np.random.default_rng((self.seed, step, round_index))
        return self.pool.take(rng.choice(len(self.pool), size=count, replace=count > len(self.pool)))


def split_held_out(pool: PromptBatch, fraction: float, seed: int) -> tuple[PromptBatch, PromptBatch]:
    """(training rows, held-out rows): a seeded ``fraction`` of the rows (at least one when > 0), ids kept."""
    held = max(1, round(len(pool) * fraction)) if fraction > 0 else 0
    if held >= len(pool):
        raise InputError(f"task.eval_fraction={fraction} leaves no training prompt out of {len(pool)}")
    order = np.random.default_rng((seed, 1)).permutation(len(pool))
    return pool.take(np.sort(order[: len(pool) - held])), pool.take(np.sort(order[len(pool) - held :]))


def make_task(config: TaskConfig, seed: int, tokens: PromptTokens | None = None,
              context_limit: int | None = None) -> Task:
    """Build the configured prompt source (file errors raise PromptFileError).

    With ``tokens``, prompts over ``task.max_prompt_tokens`` (default ``context_limit``: the model's
    context minus generator.max_new_tokens) are handled by ``task.overlong_prompts``.
    """
    per_step = config.prompts_per_step
    if isinstance(config.oversample, float):
        per_step = math.ceil(per_step * config.oversample)  # P trained on, the surplus dropped after filtering
    if config.kind == "toy-arithmetic":
        pool, held_out = arithmetic_split(config.num_prompts, seed, config.eval_fraction)
    elif config.kind == "svg-poster":
        pool, held_out = split_held_out(svg_poster_pool(config.num_prompts, seed), config.eval_fraction, seed)
    elif config.kind == "image-classes":
        pool, held_out = split_held_out(image_classes_pool(config), config.eval_fraction, seed)
    else:
        pool, held_out = split_held_out(read_prompt_file(config.path), config.eval_fraction, seed)
    limit = config.max_prompt_tokens or context_limit
    if tokens is None or limit is None:
        return Task(pool, per_step, seed, held_out=held_out)
    pool, report = fit_prompts(pool, limit, config.overlong_prompts, tokens, config.path or config.kind)
    if len(held_out):
        held_out, _ = fit_prompts(held_out, limit, config.overlong_prompts, tokens, config.path or config.kind)
    return Task(pool, per_step, seed, report.metrics(), held_out)
