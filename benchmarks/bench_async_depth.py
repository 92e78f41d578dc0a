"""Async depth on the default job: held-out greedy accuracy and wall time for async_steps 0, 1, 2 over seeds.

Each (async_steps, seed) pair is one full ``mixgrpo train`` of the default job (its eval section:
greedy held-out accuracy before training and at the end). Prints one line per run and the mean
per depth.

Run from the repository root: ``python -m benchmarks.bench_async_depth [--depths 0,1,2] [--seeds 0,1]
[--set run.steps=60 ...]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import ray

from mixgrpo.config import load_config
from mixgrpo.orchestrator.driver import train
from mixgrpo.orchestrator.placement import start_ray
from mixgrpo.rundir import read_eval


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main() -> None:
    """Train every (depth, seed) and print held-out accuracy and wall time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=_ints, default=[0, 1, 2])
    parser.add_argument("--seeds", type=_ints, default=[0, 1])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    base = load_config(None, ["run.progress=false", "run.tensorboard=false", *args.overrides])
    start_ray(base.cluster)
    results: dict[int, list[tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for depth in args.depths:
            for seed in args.seeds:
                config = load_config(None, ["run.progress=false", "run.tensorboard=false", *args.overrides,
                                            f"algorithm.async_steps={depth}", f"run.seed={seed}"])
                started = time.monotonic()
                outputs = train(config, Path(scratch) / f"depth{depth}-seed{seed}")
                wall = time.monotonic() - started
                evaluations = read_eval(outputs.run_dir)
                before, after = evaluations[0]["eval/correct"], evaluations[-1]["eval/correct"]
                results.setdefault(depth, []).append((before, after, wall))
                print(f"async_steps={depth} seed={seed}: held-out greedy correct {before:.3f} -> {after:.3f}, "
                      f"wall {wall:.1f} s ({config.run.steps} steps)", flush=True)
    ray.shutdown()
    for depth, rows in results.items():
        before, after, wall = np.mean(rows, axis=0)
        print(f"async_steps={depth}: mean held-out correct {before:.3f} -> {after:.3f}, mean wall {wall:.1f} s "
              f"over {len(rows)} seeds")


if __name__ == "__main__":
    main()
