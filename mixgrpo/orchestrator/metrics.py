"""What a run leaves behind and shows: metrics.jsonl, TensorBoard, rollouts.parquet, plots, progress.

Every step is flushed on its own: one JSON line, one TensorBoard event batch and
one Parquet file ``rollouts.parquet/step-000012.parquet`` (written to a
temporary name, then renamed), so a killed run leaves only readable outputs and
``pyarrow.parquet.read_table(RUN_DIR / "rollouts.parquet")`` reads them all.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mixgrpo.rundir import EVAL, EVAL_PLOT, METRICS, REWARD_PLOT, ROLLOUTS, metric_lines, read_eval, read_metrics
from mixgrpo.runtime import pyplot


class RunRecorder:
    """Writes one step's metrics and rollouts, and draws the console progress line."""

    def __init__(self, run_dir: Path, channel_names: list[str], total_steps: int,
                 tensorboard: bool = True, progress: bool = True, stream: TextIO = sys.stderr) -> None:
        self.run_dir = run_dir
        self.channel_names = channel_names
        self.total_steps = total_steps
        self.progress = progress
        self.stream = stream
        (run_dir / ROLLOUTS).mkdir(parents=True, exist_ok=True)
        self.tensorboard = tensorboard
        self.writer: Any = None
        """The TensorBoard SummaryWriter, opened by truncate_from or the first record."""

    def _open_writer(self, purge_step: int | None) -> None:
        """A new TensorBoard events file; with ``purge_step`` readers drop the older events at steps >= it."""
        from torch.utils.tensorboard import SummaryWriter

        if self.writer is not None:
            self.writer.close()
        self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=purge_step)

    def truncate_from(self, step: int) -> None:
        """Drop outputs of steps >= ``step`` (written after the checkpoint a resume starts from).

        TensorBoard events cannot be edited in place: a new events file starts with a purge
        marker at ``step`` (SessionLog START), so TensorBoard drops the older events from ``step`` on.
        """
        if self.tensorboard:
            self._open_writer(purge_step=step)
        metrics_path = self.run_dir / METRICS
        if metrics_path.is_file():
            kept = [json.dumps(row) for row in metric_lines(metrics_path) if row["step"] < step]
            metrics_path.write_text("".join(line + "\n" for line in kept))
        for part in (self.run_dir / ROLLOUTS).glob("step-*.parquet"):
            if int(part.stem.split("-")[1]) >= step:
                part.unlink()
        eval_path = self.run_dir / EVAL  # an eval after `step` steps used the adapter the resume starts from
        if eval_path.is_file():
            rows = [row for row in metric_lines(eval_path) if row["step"] <= step]
            eval_path.write_text("".join(json.dumps(row) + "\n" for row in rows))
            for row in rows if self.writer is not None else []:  # the purge marker hid the eval at `step`
                if row["step"] == step:
                    for key, value in row.items():
                        if key != "step" and value is not None:
                            self.writer.add_scalar(key, value, step)

    def record(self, step: int, metrics: dict[str, float], rollouts: pa.Table | None = None) -> None:
        """Persist one step (metrics line, TensorBoard scalars, and its rollouts part unless written already
        with ``write_rollouts``) and show progress."""
        line = json.dumps({"step": step, **{k: _jsonable(v) for k, v in metrics.items()}})
        with open(self.run_dir / METRICS, "a") as handle:
            handle.write(line + "\n")
        if rollouts is not None:
            self.write_rollouts(step, rollouts)
        if self.tensorboard:
            if self.writer is None:
                self._open_writer(purge_step=None)
            for key, value in metrics.items():
                if value is not None and math.isfinite(value):
                    self.writer.add_scalar(key, value, step)
            self.writer.flush()
        if self.progress:
            self.stream.write(self._progress_line(step, metrics) + "\n")
            self.stream.flush()

    def write_rollouts(self, step: int, rollouts: pa.Table) -> None:
        """Write the step's Parquet part (atomically: a temporary file renamed into place)."""
        part = self.run_dir / ROLLOUTS / f"step-{step:06d}.parquet"
        temporary = part.with_name(f".{part.name}.tmp")
        pq.write_table(rollouts, temporary)
        os.replace(temporary, part)

    def record_eval(self, steps_done: int, metrics: dict[str, float]) -> None:
        """Persist one held-out evaluation (an eval.jsonl line, TensorBoard scalars at ``steps_done``)."""
        line = json.dumps({"step": steps_done, **{k: _jsonable(v) for k, v in metrics.items()}})
        with open(self.run_dir / EVAL, "a") as handle:
            handle.write(line + "\n")
        if self.tensorboard:
            if self.writer is None:
                self._open_writer(purge_step=None)
            for key, value in metrics.items():
                if value is not None and math.isfinite(value):
                    self.writer.add_scalar(key, value, steps_done)
            self.writer.flush()
        if self.progress:
            shown = "  ".join(f"{n} {metrics.get(f'eval/{n}', float('nan')):+.3f}" for n in self.channel_names)
            self.stream.write(f"eval after {steps_done:>4} steps  {shown}\n")
            self.stream.flush()

    def _progress_line(self, step: int, metrics: dict[str, float]) -> str:
        done = step + 1
        filled = int(20 * done / self.total_steps)
        rewards = "  ".join(f"{n} {metrics.get(f'reward/{n}', float('nan')):+.3f}" for n in self.channel_names)
        return (f"step {done:>4}/{self.total_steps} [{'#' * filled}{'.' * (20 - filled)}] "
                f"{rewards}  | {metrics.get('time/step', float('nan')):.2f}s")

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self.writer is not None:
            self.writer.close()


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def plot_rewards(run_dir: Path, channel_names: list[str]) -> Path:
    """PNG of each channel's mean reward per step (one panel per channel); returns its path."""
    plt = pyplot()

    rows = read_metrics(run_dir)
    steps = [row["step"] for row in rows]
    figure, axes = plt.subplots(1, len(channel_names), figsize=(3.2 * len(channel_names), 2.8), squeeze=False)
    for axis, name in zip(axes[0], channel_names):
        values = [row.get(f"reward/{name}") for row in rows]
        values = [np.nan if v is None else v for v in values]
        axis.plot(steps, values, color="0.75", linewidth=1)
        axis.plot(steps, _moving_average(np.asarray(values, dtype=float), 5), color="tab:blue", linewidth=2)
        axis.set_title(name)
        axis.set_xlabel("step")
    axes[0][0].set_ylabel("mean reward")
    figure.tight_layout()
    path = run_dir / REWARD_PLOT
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_eval(run_dir: Path, channel_names: list[str]) -> Path | None:
    """PNG of each channel's held-out mean (and pass@n, dashed) over evaluations; None without eval."""
    rows = read_eval(run_dir)
    if not rows:
        return None
    plt = pyplot()
    steps = [row["step"] for row in rows]
    figure, axes = plt.subplots(1, len(channel_names), figsize=(3.2 * len(channel_names), 2.8), squeeze=False)
    for axis, name in zip(axes[0], channel_names):
        axis.plot(steps, [_or_nan(row.get(f"eval/{name}")) for row in rows], "o-", color="tab:green", label="mean")
        for key in sorted({k for row in rows for k in row if k.startswith(f"eval/{name}/pass@")}):
            axis.plot(steps, [_or_nan(row.get(key)) for row in rows], "s--", color="tab:purple",
                      label=key.rsplit("/", 1)[1])
        axis.set_title(name)
        axis.set_xlabel("training steps")
        axis.legend(fontsize=7)
    axes[0][0].set_ylabel("held-out reward")
    figure.tight_layout()
    path = run_dir / EVAL_PLOT
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _or_nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


def eval_table(row: dict[str, Any], channel_names: list[str], before: dict[str, Any] | None = None) -> str:
    """Held-out figures of an evaluation row per channel (mean, pass@n of the row, null %), after ``before``'s mean."""
    prompts = int(row.get("eval/prompts") or 0)
    first = [("step " + str(before["step"]), before)] if before else []
    columns = first + [("step " + str(row["step"]), row)]
    lines = [f"held-out eval ({prompts} prompts)",
             f"{'channel':<14}" + "".join(f"{label:>10}" for label, _ in columns) + f"{'pass@n':>10}{'null %':>9}"]
    for name in channel_names:
        passes = [v for k, v in row.items() if k.startswith(f"eval/{name}/pass@")]
        means = "".join(f"{_or_nan(values.get(f'eval/{name}')):>10.3f}" for _, values in columns)
        shown = f"{_or_nan(passes[0]):.3f}" if passes else "-"
        lines.append(f"{name:<14}{means}{shown:>10}{100 * _or_nan(row.get(f'eval/null_rate/{name}')):>9.1f}")
    return "\n".join(lines)


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    out = np.full_like(values, np.nan)
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1) : i + 1]
        chunk = chunk[np.isfinite(chunk)]
        if chunk.size:
            out[i] = chunk.mean()
    return out


def summary_table(run_dir: Path, channel_names: list[str], window: int = 10) -> str:
    """Per channel: mean reward over the first and last ``window`` steps, null rate, and the time split."""
    rows = read_metrics(run_dir)
    if not rows:
        return "(no steps recorded)"
    head, tail = rows[:window], rows[-window:]

    def mean(subset: list[dict[str, Any]], key: str) -> float:
        values = [row[key] for row in subset if row.get(key) is not None]
        return float(np.mean(values)) if values else float("nan")

    lines = [f"{'channel':<14}{'first ' + str(len(head)):>10}{'last ' + str(len(tail)):>10}{'change':>10}{'null %':>9}"]
    for name in channel_names:
        first, last = mean(head, f"reward/{name}"), mean(rows[-window:], f"reward/{name}")
        lines.append(f"{name:<14}{first:>10.3f}{last:>10.3f}{last - first:>+10.3f}"
                     f"{100 * mean(rows, f'null_rate/{name}'):>9.1f}")
    stages = [s for s in ("generate", "reward", "mixer", "learn", "broadcast", "other") if f"time/{s}" in rows[-1]]
    split = "  ".join(f"{s} {mean(rows, f'time/{s}'):.3f}s" for s in stages)
    lines.append(f"mean step time {mean(rows, 'time/step'):.3f}s = {split}")
    evaluations = read_eval(run_dir)
    if evaluations:
        lines += ["", eval_table(evaluations[-1], channel_names, evaluations[0] if len(evaluations) > 1 else None)]
    return "\n".join(lines)


class StageTimer:
    """Accumulates wall time per named stage of a step."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.seconds: dict[str, float] = {}
        self.spans: list[tuple[str, float, float]] = []
        """(stage, start, end) on the driver's monotonic clock, in order."""

    def add(self, stage: str, since: float) -> float:
        """Charge ``now - since`` to ``stage``; returns now."""
        now = time.monotonic()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - since
        self.spans.append((stage, since, now))
        return now

    def metrics(self) -> dict[str, float]:
        """time/<stage> for every stage, time/other for the rest, and time/step."""
        total = time.monotonic() - self.started
        out = {f"time/{k}": v for k, v in self.seconds.items()}
        out["time/other"] = max(0.0, total - sum(self.seconds.values()))
        out["time/step"] = total
        return out
