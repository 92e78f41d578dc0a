"""Prompt sources. ``make_task(config, seed)`` returns a Task whose ``sample(step)`` is deterministic."""

from __future__ import annotations

import numpy as np

from mixgrpo.batch import PromptBatch
from mixgrpo.config import TaskConfig
from mixgrpo.tasks.files import read_prompt_file
from mixgrpo.tasks.lengths import PromptTokens, fit_prompts
from mixgrpo.tasks.svg_poster import svg_poster_pool
from mixgrpo.tasks.toy import arithmetic_pool


class Task:
    """A pool of prompts walked in a fresh seeded permutation each epoch.

    The prompts of step s are a pure function of (seed, s): resuming at step s
    replays the same data order without saving any iterator state.
    """

    def __init__(self, pool: PromptBatch, prompts_per_step: int, seed: int,
                 metrics: dict[str, float] | None = None) -> None:
        self.pool = pool
        self.prompts_per_step = prompts_per_step
        self.seed = seed
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


def make_task(config: TaskConfig, seed: int, tokens: PromptTokens | None = None,
              context_limit: int | None = None) -> Task:
    """Build the configured prompt source (file errors raise PromptFileError).

    With ``tokens``, prompts over ``task.max_prompt_tokens`` (default ``context_limit``: the model's
    context minus generator.max_new_tokens) are handled by ``task.overlong_prompts``.
    """
    if config.kind == "toy-arithmetic":
        pool = arithmetic_pool(config.num_prompts, seed)
    elif config.kind == "svg-poster":
        pool = svg_poster_pool(config.num_prompts, seed)
    else:
        pool = read_prompt_file(config.path)
    limit = config.max_prompt_tokens or context_limit
    if tokens is None or limit is None:
        return Task(pool, config.prompts_per_step, seed)
    pool, report = fit_prompts(pool, limit, config.overlong_prompts, tokens, config.path or config.kind)
    return Task(pool, config.prompts_per_step, seed, report.metrics())
