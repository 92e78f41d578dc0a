"""``mixgrpo compare``: the same job under several advantage modes and seeds, side by side.

Every (mode, seed) pair is an ordinary training run (:func:`driver.train`) in
``OUT/<mode>-seed<seed>`` with ``run.seed = seed`` and ``algorithm.mode = mode``.
The prompts of every step, the builtin model and the LoRA initialisation are
pure functions of the seed, so for one seed the modes see the same data and
start from the same weights; only the advantages differ.

All runs share one Ray session. They run concurrently when the cluster can
host several runs' placement groups at once (a run asks for the bundles
:func:`placement.plan_slots` gives it: on a machine with fewer CPUs than
actors one run takes them all, so the runs go one after another). A run
directory that already holds the same run is reused when finished and resumed
from its last checkpoint otherwise, so an interrupted comparison continues
where it stopped (a resumed run's wall time counts the resumed part only). The report (compare.md, compare.png,
compare.json) is defined in :mod:`mixgrpo.analysis.compare_report`.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import ray
import yaml

from mixgrpo.analysis.compare_report import (
    RunFigures,
    RunRecord,
    Target,
    markdown,
    plot_compare,
    run_figures,
    summary_json,
    write_json,
)
from mixgrpo.builtin import resolve_model_path
from mixgrpo.config import Config, ConfigError, config_from_dict
from mixgrpo.errors import InputError
from mixgrpo.orchestrator.driver import preflight, train
from mixgrpo.orchestrator.placement import plan_slots, start_ray
from mixgrpo.rewards.mixer import ADVANTAGE_MODES
from mixgrpo.rundir import read_metrics

logger = logging.getLogger("mixgrpo.compare")
WALL_FILE = "compare_wall.json"
"""Written into a run directory when its run finishes: the wall time compare measured."""


@dataclass(frozen=True)
class PlannedRun:
    """One run of the comparison."""

    mode: str
    seed: int
    config: Config
    run_dir: Path

    @property
    def label(self) -> str:
        """``<mode>-seed<seed>``, also the run directory's name."""
        return f"{self.mode}-seed{self.seed}"


@dataclass(frozen=True)
class CompareOutputs:
    """Where the comparison's outputs are."""

    out_dir: Path
    markdown: Path
    plot: Path
    summary: Path
    figures: list[RunFigures]


def parse_target(text: str, channel_names: list[str]) -> Target:
    """``CHANNEL=VALUE`` -> Target (ValueError naming the problem)."""
    channel, sep, value = text.partition("=")
    if not sep or not channel.strip():
        raise InputError(f"--target {text!r} is not CHANNEL=VALUE")
    if channel.strip() not in channel_names:
        raise InputError(f"--target {text!r}: no channel {channel.strip()!r}; channels: {channel_names}")
    try:
        return Target(channel.strip(), float(value))
    except ValueError:
        raise InputError(f"--target {text!r}: {value!r} is not a number") from None


def parse_seeds(text: str, base_seed: int) -> list[int]:
    """``3`` -> base_seed, base_seed + 1, base_seed + 2; ``0,5,7`` -> those seeds."""
    if "," in text:
        seeds = [int(v) for v in text.split(",") if v.strip()]
    else:
        if int(text) < 1:
            raise InputError(f"--seeds {text}: need at least one seed")
        seeds = [base_seed + i for i in range(int(text))]
    if len(set(seeds)) != len(seeds):
        raise InputError(f"--seeds {text}: repeated seed")
    return seeds


def plan_runs(config: Config, modes: list[str], seeds: list[int], out_dir: Path,
              steps: int | None = None) -> list[PlannedRun]:
    """One validated config per (mode, seed): run.seed, algorithm.mode (and run.steps) replaced."""
    unknown = [m for m in modes if m not in ADVANTAGE_MODES]
    if unknown or not modes or len(set(modes)) != len(modes):
        raise InputError(f"--modes {','.join(modes)}: give distinct modes among {list(ADVANTAGE_MODES)}")
    runs = []
    for mode in modes:
        for seed in seeds:
            data = config.model_dump(mode="json")
            data["run"].update(seed=seed, name=f"{config.run.name}-{mode}-seed{seed}", out_dir=None)
            data["run"]["steps"] = steps or config.run.steps
            data["algorithm"]["mode"] = mode
            runs.append(PlannedRun(mode, seed, config_from_dict(data), out_dir / f"{mode}-seed{seed}"))
    return runs


def concurrent_capacity(config: Config, runs: int) -> int:
    """How many runs' placement groups the connected cluster hosts at once (>= 1)."""
    resources = ray.cluster_resources()
    slots = plan_slots(config, total_cpus=resources.get("CPU", 1.0))
    cpus, gpus = sum(s.cpus for s in slots), sum(s.gpus for s in slots)
    fits = math.floor(resources.get("CPU", 1.0) / cpus + 1e-9) if cpus else runs
    if gpus:
        fits = min(fits, math.floor(resources.get("GPU", 0.0) / gpus))
    return max(1, min(fits, runs))


def _same_run(path: Path, config: Config) -> bool:
    """Whether a run directory's config.yaml is ``config`` (up to the progress display and new defaults)."""
    try:
        theirs = config_from_dict(yaml.safe_load(path.read_text())).model_dump(mode="json")
    except ConfigError:
        return False
    ours = config.model_dump(mode="json")
    for data in (theirs, ours):
        data.get("run", {}).pop("progress", None)
    return theirs == ours


def _prior_state(run: PlannedRun) -> tuple[bool, float | None]:
    """(resume?, reused wall seconds) for a run directory that may hold this run already.

    Raises FileExistsError when it holds a different run (another config).
    """
    if not (run.run_dir / "config.yaml").is_file():
        return False, None
    if not _same_run(run.run_dir / "config.yaml", run.config):
        raise InputError(f"{run.run_dir} holds a different run (its config.yaml differs); use another --out")
    wall = run.run_dir / WALL_FILE
    if wall.is_file() and len(read_metrics(run.run_dir)) >= run.config.run.steps:
        return False, float(json.loads(wall.read_text())["seconds"])
    return (run.run_dir / "checkpoints").is_dir(), None


def _execute(run: PlannedRun) -> float:
    """Train (or resume) one run; returns its wall time in seconds."""
    resume, _ = _prior_state(run)
    verb = "resuming" if resume else "training"
    print(f"[compare] {run.label}: {verb} {run.config.run.steps} steps -> {run.run_dir}", file=sys.stderr)
    started = time.monotonic()
    train(run.config, run.run_dir, resume=resume)
    seconds = time.monotonic() - started
    (run.run_dir / WALL_FILE).write_text(json.dumps({"seconds": seconds}) + "\n")
    print(f"[compare] {run.label}: done in {seconds:.0f} s", file=sys.stderr)
    return seconds


def run_all(runs: list[PlannedRun], max_concurrent: int | None = None) -> list[RunRecord]:
    """Train every run in one Ray session, as many at once as the cluster hosts; records in plan order.

    Finished runs already in place are reused without starting Ray.
    """
    walls: dict[str, float] = {}
    for run in runs:
        preflight(run.config)
        reused = _prior_state(run)[1]
        if reused is not None:
            logger.info("%s: finished run found in %s, reused", run.label, run.run_dir)
            walls[run.label] = reused
    pending = [run for run in runs if run.label not in walls]
    if pending:
        walls.update(_train_pending(pending, max_concurrent))
    return [RunRecord(r.mode, r.seed, r.run_dir, walls[r.label]) for r in runs]


def _train_pending(runs: list[PlannedRun], max_concurrent: int | None) -> dict[str, float]:
    """Wall seconds of each run, trained in one Ray session with as many at once as fit."""
    base = runs[0].config
    for seed in sorted({r.seed for r in runs}):  # build builtin models here, not in racing threads
        resolve_model_path(base.model.path, seed)
    started_ray = start_ray(base.cluster)
    try:
        width = min(concurrent_capacity(base, len(runs)), max_concurrent or len(runs))
        if width > 1:
            logger.info("running %d runs, %d at a time", len(runs), width)
            runs = [_quiet(run) for run in runs]
        with ThreadPoolExecutor(max_workers=width) as pool:
            return dict(zip([r.label for r in runs], pool.map(_execute, runs)))
    finally:
        if started_ray:
            ray.shutdown()


def _quiet(run: PlannedRun) -> PlannedRun:
    """The run without per-step progress lines (they would interleave across concurrent runs)."""
    data = run.config.model_dump(mode="json")
    data["run"]["progress"] = False
    return PlannedRun(run.mode, run.seed, config_from_dict(data), run.run_dir)


def compare(config: Config, modes: list[str], seeds: list[int], out_dir: Path, steps: int | None = None,
            target: Target | None = None, window: int = 10, max_concurrent: int | None = None,
            title: str | None = None) -> CompareOutputs:
    """Run every (mode, seed), then write compare.md, compare.png and compare.json into ``out_dir``."""
    if window < 1:
        raise InputError(f"--window {window}: must be >= 1")
    runs = plan_runs(config, modes, seeds, out_dir, steps)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = run_all(runs, max_concurrent)
    names, weights = config.channel_names, config.channel_weights
    figures = [run_figures(r, names, config.generator.group_size, target, window) for r in records]
    text = markdown(figures, names, weights, target, window, title or config.run.name)
    (out_dir / "compare.md").write_text(text)
    plot = plot_compare(figures, names, weights, target, window, out_dir / "compare.png")
    summary = write_json(summary_json(figures, names, target, window), out_dir / "compare.json")
    return CompareOutputs(out_dir, out_dir / "compare.md", plot, summary, figures)
