"""The files of a run directory and how to read them back (shared by the recorder, compare and analysis)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CONFIG = "config.yaml"
"""The resolved config (what --resume reads)."""
METRICS = "metrics.jsonl"
"""One JSON line of metrics per step."""
ROLLOUTS = "rollouts.parquet"
"""A folder with one Parquet file per step."""
REWARD_PLOT = "rewards.png"
"""Mean reward per channel over steps."""
EVAL = "eval.jsonl"
"""One JSON line per held-out evaluation; its ``step`` is the number of training steps done."""
EVAL_PLOT = "eval.png"
"""Held-out mean (and pass@n) per channel over evaluations."""


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """All metric lines of a run, in step order (a line cut short by a killed process is skipped)."""
    path = Path(run_dir) / METRICS
    return sorted(metric_lines(path), key=lambda row: row["step"]) if path.is_file() else []


def read_eval(run_dir: Path) -> list[dict[str, Any]]:
    """All held-out evaluation lines of a run, in step order (empty without eval)."""
    path = Path(run_dir) / EVAL
    return sorted(metric_lines(path), key=lambda row: row["step"]) if path.is_file() else []


def metric_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a metrics file in file order, skipping any that do not parse (a cut-off last line)."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
