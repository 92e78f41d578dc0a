"""What ``mixgrpo compare`` reports about a set of finished runs: compare.md, compare.png, compare.json.

Definitions (per run; the tables give the mean and std over seeds):

- **final reward** of a channel: mean of ``reward/<channel>`` over the run's
  last ``window`` steps.
- **steps to target** ``CHANNEL=VALUE``: the smallest ``s`` such that the
  trailing moving average of ``reward/CHANNEL`` over steps ``s - window + 1 ..
  s`` (full windows only, 1-based step counts) is ``>= VALUE``; "not reached"
  when no window of the run gets there.
- **influence** of channel ``l`` on the advantage (the ``multireward-grpo``
  package's ``influence_per_channel``, Prop. 1 of the paper): from
  ``rollouts.parquet``, within every group ``c_l = Cov_j(A_j, z_jl)`` with
  ``z`` the group z-score of the channel (a null counts as ``z = 0``, a
  constant channel has ``z = 0``), averaged over all groups of all steps, and
  reported as the share ``|c_l| / sum_k |c_k|``. For NA with uncorrelated
  channels ``c_l = w_l`` (the share is the weight share); for AN
  ``c_l = w_l sd_l / sd(w . r)``, so a high-variance channel takes the
  advantage whatever its weight.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from mixgrpo.analysis.thm3 import channel_influence
from mixgrpo.rundir import ROLLOUTS, read_metrics
from mixgrpo.runtime import pyplot

_MODE_COLOURS = {"na": "tab:blue", "an": "tab:red", "single": "tab:green", "conditioned": "tab:purple"}


@dataclass(frozen=True)
class Target:
    """A reward level to reach: ``channel`` >= ``value`` (moving average)."""

    channel: str
    value: float


@dataclass(frozen=True)
class RunRecord:
    """One finished run of the comparison."""

    mode: str
    seed: int
    run_dir: Path
    wall_seconds: float


@dataclass(frozen=True)
class RunFigures:
    """The per-run numbers the report aggregates."""

    record: RunRecord
    rewards: dict[str, np.ndarray]
    """channel -> (steps,) mean reward of each step (NaN where the channel was all null)."""
    final: dict[str, float]
    steps_to_target: int | None
    influence: np.ndarray
    """(R,) influence shares, summing to 1."""
    seconds_per_step: float


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over full windows ``(steps,)``: NaN for the first ``window - 1`` steps, NaNs skipped."""
    out = np.full(len(values), np.nan)
    for end in range(window, len(values) + 1):
        chunk = values[end - window : end]
        chunk = chunk[np.isfinite(chunk)]
        if chunk.size:
            out[end - 1] = chunk.mean()
    return out


def steps_to_target(values: np.ndarray, level: float, window: int) -> int | None:
    """1-based step count at which the trailing ``window``-step average first reaches ``level``."""
    reached = np.flatnonzero(moving_average(values, window) >= level)
    return int(reached[0]) + 1 if reached.size else None


def group_arrays(run_dir: Path, channel_names: list[str], group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Rewards ``(G, m, R)`` (NaN = null) and advantages ``(G, m)`` of every group in rollouts.parquet.

    Rows are group-major within each step file; a group whose rows do not share
    one prompt id means the layout is not what we assume, and raises.
    """
    columns = ["prompt_id", "advantage", *[f"reward_{n}" for n in channel_names]]
    rewards, advantages = [], []
    for part in sorted((run_dir / ROLLOUTS).glob("step-*.parquet")):
        table = pq.read_table(part, columns=columns)
        if table.num_rows % group_size:
            raise ValueError(f"{part}: {table.num_rows} rows are not whole groups of {group_size}")
        ids = np.asarray(table.column("prompt_id").to_numpy()).reshape(-1, group_size)
        if (ids != ids[:, :1]).any():
            raise ValueError(f"{part}: rows are not grouped by prompt")
        values = [table.column(f"reward_{n}").to_numpy(zero_copy_only=False) for n in channel_names]
        rewards.append(np.stack(values, axis=1).astype(np.float64).reshape(-1, group_size, len(channel_names)))
        advantages.append(table.column("advantage").to_numpy().reshape(-1, group_size))
    if not rewards:
        raise FileNotFoundError(f"{run_dir / ROLLOUTS}: no rollouts")
    return np.concatenate(rewards), np.concatenate(advantages)


def influence_shares(run_dir: Path, channel_names: list[str], group_size: int) -> np.ndarray:
    """(R,) share of each channel in ``sum_l |Cov(A, z_l)|`` over all groups of the run (module docstring)."""
    rewards, advantages = group_arrays(run_dir, channel_names, group_size)
    magnitude = np.abs(channel_influence(rewards, advantages))
    total = magnitude.sum()
    return magnitude / total if total > 0 else magnitude


def run_figures(record: RunRecord, channel_names: list[str], group_size: int,
                target: Target | None, window: int) -> RunFigures:
    """Read one run's metrics and rollouts into the numbers of the report."""
    rows = read_metrics(record.run_dir)
    if not rows:
        raise FileNotFoundError(f"{record.run_dir}: no metrics recorded")
    rewards = {n: np.array([np.nan if r.get(f"reward/{n}") is None else r[f"reward/{n}"] for r in rows])
               for n in channel_names}
    final = {n: float(np.nanmean(v[-window:])) if np.isfinite(v[-window:]).any() else float("nan")
             for n, v in rewards.items()}
    reached = steps_to_target(rewards[target.channel], target.value, window) if target else None
    step_times = [r["time/step"] for r in rows if r.get("time/step") is not None]
    return RunFigures(record, rewards, final, reached, influence_shares(record.run_dir, channel_names, group_size),
                      float(np.mean(step_times)) if step_times else float("nan"))


def _mean_std(values: list[float], digits: int = 3) -> str:
    values = [v for v in values if np.isfinite(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def _by_mode(figures: list[RunFigures]) -> dict[str, list[RunFigures]]:
    grouped: dict[str, list[RunFigures]] = {}
    for fig in figures:
        grouped.setdefault(fig.record.mode, []).append(fig)
    return grouped


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def markdown(figures: list[RunFigures], channel_names: list[str], weights: list[float],
             target: Target | None, window: int, title: str) -> str:
    """compare.md: final rewards, steps to target, influence shares and wall time, per mode."""
    grouped = _by_mode(figures)
    seeds = sorted({f.record.seed for f in figures})
    steps = max(len(next(iter(f.rewards.values()))) for f in figures)
    lines = [f"# mixgrpo compare: {title}", "",
             (f"{steps} steps; modes {', '.join(grouped)}; seeds {', '.join(map(str, seeds))} "
              f"(one run each, `<mode>-seed<seed>/`). Cells are mean ± std over seeds."), "",
             f"## Final reward (mean of the last {window} steps)", ""]
    lines += _table(["mode", *channel_names], [
        [mode, *[_mean_std([f.final[n] for f in runs]) for n in channel_names]] for mode, runs in grouped.items()])
    if target is not None:
        lines += ["", f"## Steps to reach {target.channel} >= {target.value:g}", "",
                  (f"First step whose trailing {window}-step moving average of `reward/{target.channel}` "
                   f"reaches {target.value:g}; `-` = not within {steps} steps."), ""]
        rows = []
        for mode, runs in grouped.items():
            by_seed = {f.record.seed: f.steps_to_target for f in runs}
            hits = [v for v in by_seed.values() if v is not None]
            rows.append([mode, *[("-" if by_seed.get(s) is None else str(by_seed[s])) for s in seeds],
                         f"{np.mean(hits):.1f}" if hits else "-", f"{len(hits)}/{len(runs)}"])
        lines += _table(["mode", *[f"seed {s}" for s in seeds], "mean (reached)", "reached"], rows)
    total = float(sum(weights))
    lines += ["", "## Influence of each channel on the advantage", "",
              ("Share of `|Cov(A, z_l)|` within groups (z_l: the channel's group z-score), averaged over "
               "every group of every step; NA keeps it near the weight share, AN hands it to high-variance "
               "channels."), ""]
    rows = [[mode, *[_mean_std([100 * f.influence[i] for f in runs], 1) + " %" for i in range(len(channel_names))]]
            for mode, runs in grouped.items()]
    rows.append(["*weight share*", *[f"{100 * w / total:.1f} %" for w in weights]])
    lines += _table(["mode", *channel_names], rows)
    lines += ["", "## Wall time", ""]
    rows = []
    for mode, runs in grouped.items():
        by_seed = {f.record.seed: f for f in runs}
        rows.append([mode, *[f"{by_seed[s].record.wall_seconds:.0f} s" if s in by_seed else "-" for s in seeds],
                     _mean_std([f.seconds_per_step for f in runs], 3)])
    lines += _table(["mode", *[f"seed {s}" for s in seeds], "s/step"], rows)
    return "\n".join(lines) + "\n"


def summary_json(figures: list[RunFigures], channel_names: list[str], target: Target | None,
                 window: int) -> dict[str, Any]:
    """compare.json: every run's figures (machine-readable twin of compare.md)."""
    return {
        "window": window,
        "target": None if target is None else {"channel": target.channel, "value": target.value},
        "channels": channel_names,
        "runs": [{"mode": f.record.mode, "seed": f.record.seed, "run_dir": str(f.record.run_dir),
                  "wall_seconds": f.record.wall_seconds, "seconds_per_step": f.seconds_per_step,
                  "final": f.final, "steps_to_target": f.steps_to_target,
                  "influence": dict(zip(channel_names, f.influence.round(6).tolist()))} for f in figures],
    }


def write_json(summary: dict[str, Any], path: Path) -> Path:
    """Write compare.json (NaN as null)."""
    text = json.dumps(summary, indent=1, default=float).replace("NaN", "null")
    path.write_text(text + "\n")
    return path


def plot_compare(figures: list[RunFigures], channel_names: list[str], weights: list[float],
                 target: Target | None, window: int, path: Path) -> Path:
    """compare.png: per channel, mean ± std over seeds of the moving-average reward, one colour per mode;
    last panel: influence shares per mode against the weight shares."""
    plt = pyplot()

    grouped = _by_mode(figures)
    panels = len(channel_names) + 1
    columns = min(panels, 3)
    rows = -(-panels // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 2.7 * rows), squeeze=False)
    flat = axes.ravel()
    for axis, name in zip(flat, channel_names):
        for index, (mode, runs) in enumerate(grouped.items()):
            colour = _MODE_COLOURS.get(mode, f"C{index}")
            curves = np.stack([moving_average(f.rewards[name], window) for f in runs])
            steps = np.arange(1, curves.shape[1] + 1)
            with warnings.catch_warnings():  # steps before the first full window are all NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                mean, std = np.nanmean(curves, axis=0), np.nanstd(curves, axis=0)
            axis.plot(steps, mean, color=colour, linewidth=1.6, label=mode)
            axis.fill_between(steps, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
        if target is not None and target.channel == name:
            axis.axhline(target.value, color="k", linestyle=":", linewidth=1, label=f"target {target.value:g}")
        axis.set_title(name, fontsize=10)
        axis.set_xlabel("step", fontsize=8)
        axis.tick_params(labelsize=7)
    flat[0].set_ylabel(f"reward ({window}-step mean)", fontsize=8)
    flat[0].legend(fontsize=7)
    _influence_panel(flat[len(channel_names)], grouped, channel_names, weights)
    for axis in flat[panels:]:
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def _influence_panel(axis: Any, grouped: dict[str, list[RunFigures]], channel_names: list[str],
                     weights: list[float]) -> None:
    width = 0.8 / max(len(grouped), 1)
    positions = np.arange(len(channel_names))
    for index, (mode, runs) in enumerate(grouped.items()):
        shares = np.stack([f.influence for f in runs]).mean(axis=0)
        axis.bar(positions + (index - (len(grouped) - 1) / 2) * width, 100 * shares, width,
                 color=_MODE_COLOURS.get(mode, f"C{index}"), label=mode)
    weight_share = 100 * np.asarray(weights) / sum(weights)
    axis.plot(positions, weight_share, "k_", markersize=14, markeredgewidth=2, label="weight share")
    axis.set_xticks(positions, channel_names, fontsize=7, rotation=30)
    axis.set_ylabel("% of influence", fontsize=8)
    axis.set_title("influence on the advantage", fontsize=10)
    axis.tick_params(labelsize=7)
    axis.legend(fontsize=7)

