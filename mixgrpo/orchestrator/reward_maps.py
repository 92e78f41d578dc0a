"""Reward-map overlays in a run's outputs: where the image channels found their reward.

At the end of a run with a ``clipscore`` or ``ocr`` channel, the last step's
best-scored rollouts of each such channel are explained by that channel's own
reward actor (model already loaded, on its device) and written as heat-map
overlays under ``RUN_DIR/reward_maps/``, with ``index.jsonl`` saying which
prompt, completion and reward each image shows. A map that cannot be made is
logged and skipped: explanations never fail a finished run.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import ray

from mixgrpo.config import Config, RewardChannelConfig
from mixgrpo.orchestrator.scoring import DRIVER_GRACE_S, group_workers
from mixgrpo.rewards.channels import ScoringInput
from mixgrpo.rewards.maps import overlay

logger = logging.getLogger("mixgrpo.reward_maps")

MAP_KINDS = ("clipscore", "ocr")
MAPS_DIR = "reward_maps"


def _last_step(run_dir: Path) -> Any:
    parts = sorted((run_dir / "rollouts.parquet").glob("step-*.parquet"))
    return pq.read_table(parts[-1]).to_pylist() if parts else []


def _best_rows(rows: list[dict[str, Any]], column: str, limit: int) -> list[dict[str, Any]]:
    scored = [r for r in rows if r.get(column) is not None and math.isfinite(r[column])]
    return sorted(scored, key=lambda r: r[column], reverse=True)[:limit]


def _explain_channel(channel: RewardChannelConfig, worker: Any, rows: list[dict[str, Any]],
                     metadata_by_id: dict[int, dict[str, Any]], out: Path) -> list[dict[str, Any]]:
    batch = ScoringInput(
        prompts=[r["prompt"] for r in rows], completions=[r["completion"] for r in rows],
        metadata=[metadata_by_id.get(r["prompt_id"], {}) for r in rows],
        completion_tokens=[int(r["completion_tokens"]) for r in rows],
    )
    maps = ray.get(worker.reward_maps.remote(channel.name, batch), timeout=channel.timeout_s + DRIVER_GRACE_S)
    written = []
    for rank, (row, item) in enumerate(zip(rows, maps)):
        if item is None:
            continue
        path = out / f"{channel.name}-{rank}.png"
        overlay(item[0], item[1]).save(path)
        column = f"reward_{channel.head_names[0]}"
        written.append({"file": path.name, "channel": channel.name, "step": row["step"], "reward": row[column],
                        "prompt": row["prompt"], "completion": row["completion"]})
    return written


def write_reward_overlays(config: Config, task: Any, reward_workers: list[Any], run_dir: Path,
                          limit: int = 3) -> list[Path]:
    """Overlays of the last step's ``limit`` best rollouts per clipscore/ocr channel; the PNG paths."""
    channels = [(c, group[0]) for c, group in zip(config.rewards, group_workers(reward_workers, config.rewards))
                if c.kind in MAP_KINDS]
    rows = _last_step(run_dir) if channels else []
    if not rows:
        return []
    out = run_dir / MAPS_DIR
    out.mkdir(exist_ok=True)
    metadata_by_id = {int(i): md for i, md in zip(task.pool.prompt_ids, task.pool.metadata)}
    index: list[dict[str, Any]] = []
    for channel, worker in channels:
        best = _best_rows(rows, f"reward_{channel.head_names[0]}", limit)
        if not best:
            continue
        try:
            index += _explain_channel(channel, worker, best, metadata_by_id, out)
        except Exception as error:  # an explanation must not fail a finished run
            logger.warning("reward maps of channel %r skipped: %s", channel.name, str(error).splitlines()[0])
    (out / "index.jsonl").write_text("".join(json.dumps(entry) + "\n" for entry in index))
    if index:
        logger.info("reward-map overlays: %d in %s", len(index), out)
    return [out / entry["file"] for entry in index]
