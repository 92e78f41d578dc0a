"""GRPO depth on the default job: PPO epochs / mini-batches and async depth, held-out accuracy and wall time.

Each (case, seed) pair is one full ``mixgrpo train`` of the default job (local Ray;
its eval section scores the held-out split greedily before training and at the end).
A case is a named set of overrides on top of the default job:

    base      today's defaults (1 epoch, 1 mini-batch, async_steps 0)
    epochs2   learner.epochs=2
    mini2     learner.mini_batches=2
    async1    algorithm.async_steps=1
    async2    algorithm.async_steps=2

Seeds are the outer loop, so load on a shared machine falls on every case alike.
Prints one line per run, then per case the mean and range over seeds of the held-out
greedy ``correct`` after training, the training ``reward/correct`` of the last 10
steps, the wall time and the optimizer steps, and the same as a Markdown table.
Run from the repository root::

    .venv/bin/python -m benchmarks.bench_grpo_depth [--cases base epochs2 async1 async2] [--seeds 0 1 2]
        [--set run.steps=60 ...]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

CASES: dict[str, list[str]] = {
    "base": [],
    "epochs2": ["learner.epochs=2"],
    "mini2": ["learner.mini_batches=2"],
    "async1": ["algorithm.async_steps=1"],
    "async2": ["algorithm.async_steps=2"],
}
LAST = 10
COLUMNS = [("held_out_before", "held-out greedy before"), ("held_out_after", "held-out greedy after"),
           ("train_last", f"train correct (last {LAST})"), ("wall_s", "wall s"), ("optimizer_steps", "optimizer steps")]


def run_case(name: str, seed: int, overrides: list[str], out: Path) -> dict[str, float]:
    """One default-job run of case ``name``: held-out greedy correct before/after, training correct, wall, steps."""
    from mixgrpo.config import load_config
    from mixgrpo.orchestrator.driver import train
    from mixgrpo.rundir import read_eval, read_metrics

    config = load_config(None, ["run.progress=false", "run.tensorboard=false", f"run.seed={seed}",
                                *overrides, *CASES[name]])
    started = time.monotonic()
    outputs = train(config, out / f"{name}-seed{seed}")
    wall = time.monotonic() - started
    rows, evaluations = read_metrics(outputs.run_dir), read_eval(outputs.run_dir)
    if not evaluations:
        raise SystemExit("the job has no held-out eval (eval.every=0 or task.eval_fraction=0): nothing to compare")
    return {
        "held_out_before": evaluations[0]["eval/correct"],
        "held_out_after": evaluations[-1]["eval/correct"],
        "train_last": statistics.fmean(r["reward/correct"] for r in rows[-LAST:]),
        "wall_s": wall,
        "optimizer_steps": sum(r.get("learner/optimizer_steps", 0.0) for r in rows),
    }


def summary(results: dict[str, list[dict[str, float]]]) -> list[str]:
    """A Markdown table: per case, mean (min..max) over seeds of every column."""
    lines = ["| case | seeds | " + " | ".join(title for _, title in COLUMNS) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]
    for name, runs in results.items():
        cells = []
        for key, _ in COLUMNS:
            values = [run[key] for run in runs]
            digits = 0 if key in ("wall_s", "optimizer_steps") else 3
            cells.append(f"{statistics.fmean(values):.{digits}f} ({min(values):.{digits}f}..{max(values):.{digits}f})")
        lines.append(f"| {name} ({', '.join(CASES[name]) or 'defaults'}) | {len(runs)} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    """Parse the arguments, run every case for every seed, print the runs and the summary table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=["base", "epochs2", "async1", "async2"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="an override for every run")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {name: [] for name in args.cases}
    with tempfile.TemporaryDirectory() as scratch:
        for seed in args.seeds:
            for name in args.cases:
                result = run_case(name, seed, args.overrides, Path(scratch))
                results[name].append(result)
                print(f"{name:>8} seed {seed}: held-out greedy correct {result['held_out_before']:.3f} -> "
                      f"{result['held_out_after']:.3f}, train correct last {LAST} {result['train_last']:.3f}, "
                      f"wall {result['wall_s']:.1f} s, {result['optimizer_steps']:.0f} optimizer steps", flush=True)
    print("\nmean (min..max) over seeds")
    print("\n".join(summary(results)))


if __name__ == "__main__":
    main()
