"""A grid of rendered completions from the first and the last step of a drawing run (``RUN_DIR/posters.png``).

Written at the end of a run with a channel that renders the completion
(``options.render: svg``): one row per step, ``per_row`` completions each,
taken round-robin over the step's groups (the first completion of every
prompt, then the second, ...), so a row is a sample of the policy rather than
its best. A completion that does not render is a grey tile. Each tile is
titled with the prompt's quoted text and style; each row with its step and how
many of its tiles render.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from mixgrpo.config import Config
from mixgrpo.rewards.images import render_svg
from mixgrpo.rundir import ROLLOUTS
from mixgrpo.runtime import pyplot

POSTER_GRID = "posters.png"
"""The grid's file name in the run directory."""
_ASKED = re.compile(r'displaying (".*") in an? (.*) font')


def renders_completions(config: Config) -> bool:
    """True when a reward channel of ``config`` renders the completion as SVG."""
    return any(channel.options.get("render") == "svg" for channel in config.rewards)


def sample_rows(completions: list[str], group_size: int, count: int) -> list[int]:
    """Indices of ``count`` completions of a group-major step, round-robin over its groups."""
    order = sorted(range(len(completions)), key=lambda i: (i % group_size, i // group_size))
    return order[:count]


def _caption(prompt: str) -> str:
    asked = _ASKED.search(prompt)
    return f"{asked.group(1)}\n{asked.group(2)}" if asked else prompt[:40]


def write_poster_grid(config: Config, run_dir: Path, per_row: int = 8, tile: int = 128) -> Path | None:
    """Render the first and the last step's sampled completions into ``run_dir/posters.png``; its path.

    None when no channel renders completions or no step was written.
    """
    parts = sorted((Path(run_dir) / ROLLOUTS).glob("step-*.parquet"))
    if not renders_completions(config) or not parts:
        return None
    plt = pyplot()
    steps = [parts[0], parts[-1]] if len(parts) > 1 else parts[:1]
    figure, axes = plt.subplots(len(steps), per_row, figsize=(1.45 * per_row, 1.75 * len(steps)), squeeze=False)
    for axis_row, part in zip(axes, steps):
        table = pq.read_table(part, columns=["step", "prompt", "completion"]).to_pydict()
        chosen = sample_rows(table["completion"], config.generator.group_size, per_row)
        images = [render_svg(table["completion"][i], tile) for i in chosen]
        for axis in axis_row:
            axis.set_xticks([])
            axis.set_yticks([])
        for axis, i, image in zip(axis_row, chosen, images):
            axis.imshow(np.full((tile, tile, 3), 200, np.uint8) if image is None else np.asarray(image))
            axis.set_title(_caption(table["prompt"][i]), fontsize=6)
        rendered = sum(image is not None for image in images)
        axis_row[0].set_ylabel(f"step {table['step'][0]}\n{rendered}/{len(images)} render", fontsize=7)
    figure.tight_layout()
    path = Path(run_dir) / POSTER_GRID
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
