"""Prompt sources. ``make_task(config, seed)`` returns a Task whose ``sample(step)`` is deterministic."""

from __future__ import annotations

import numpy as np

from mixgrpo.batch import PromptBatch
from mixgrpo.config import TaskConfig
from mixgrpo.tasks.files import read_prompt_file
from mixgrpo.tasks.svg_poster import svg_poster_pool
from mixgrpo.tasks.toy import arithmetic_pool


class Task:
    """A pool of prompts walked in a fresh seeded permutation each epoch.

    The prompts of step s are a pure function of (seed, s): resuming at step s
    replays the same data order without saving any iterator state.
    """

    def __init__(self, pool: PromptBatch, prompts_per_step: int, seed: int) -> None:
        self.pool = pool
        self.prompts_per_step = prompts_per_step
        self.seed = seed

    def _epoch_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng((self.seed, epoch)).permutation(len(self.pool))

    def sample(self, step: int) -> PromptBatch:
        """The P prompts of ``step`` (0-based)."""
        size = len(self.pool)
        positions = np.arange(step * self.prompts_per_step, (step + 1) * self.prompts_per_step)
        rows = [self._epoch_order(int(p // size))[p % size] for p in positions]
        return self.pool.take(rows)


def make_task(config: TaskConfig, seed: int) -> Task:
    """Build the configured prompt source (file errors raise PromptFileError)."""
    if config.kind == "toy-arithmetic":
        pool = arithmetic_pool(config.num_prompts, seed)
    elif config.kind == "svg-poster":
        pool = svg_poster_pool(config.num_prompts, seed)
    else:
        pool = read_prompt_file(config.path)
    return Task(pool, config.prompts_per_step, seed)
