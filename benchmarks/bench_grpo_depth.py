"""Does more learning per rollout batch pay? The default job with learner.epochs / learner.mini_batches varied.

For every case (epochs x mini_batches, default 1x1, 2x1, 1x2, 2x2) and seed, runs the
default job (``mixgrpo train`` with no config, local Ray) and prints the mean
``reward/correct`` of the last 10 steps, the wall time of the run and the optimizer
steps taken, then the mean and spread over seeds per case. Run from the repository root::

    .venv/bin/python -m benchmarks.bench_grpo_depth [--seeds 0 1 2] [--cases 1x1 2x1 1x2 2x2] [--steps 150]

Each run is a full training run (the default job: 150 steps of 32 x 8 completions), so
a case costs minutes per seed; use --steps and fewer seeds on a busy machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

LAST = 10


def run_case(epochs: int, mini_batches: int, seed: int, steps: int | None, out: Path) -> dict[str, float]:
    """One default-job run; its last-10-step correct reward, wall seconds and optimizer steps."""
    from mixgrpo.config import load_config
    from mixgrpo.orchestrator.driver import train
    from mixgrpo.rundir import read_metrics

    overrides = ["run.progress=false", "run.tensorboard=false", f"run.seed={seed}",
                 f"learner.epochs={epochs}", f"learner.mini_batches={mini_batches}"]
    if steps is not None:
        overrides.append(f"run.steps={steps}")
    config = load_config(None, overrides)
    started = time.monotonic()
    outputs = train(config, out / f"e{epochs}-m{mini_batches}-s{seed}")
    wall = time.monotonic() - started
    rows = read_metrics(outputs.run_dir)
    return {
        "correct_last": statistics.fmean(r["reward/correct"] for r in rows[-LAST:]),
        "wall_s": wall,
        "optimizer_steps": sum(r.get("learner/optimizer_steps", 0.0) for r in rows),
    }


def _case(text: str) -> tuple[int, int]:
    epochs, mini_batches = text.lower().split("x")
    return int(epochs), int(mini_batches)


def main() -> None:
    """Parse the arguments, run every case and seed, print one line per run and a summary per case."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cases", type=_case, nargs="+", default=[(1, 1), (2, 1), (1, 2), (2, 2)],
                        help="epochs x mini_batches, e.g. 2x1")
    parser.add_argument("--steps", type=int, default=None, help="run.steps (default: the default job's)")
    args = parser.parse_args()
    results: dict[tuple[int, int], list[dict[str, float]]] = {case: [] for case in args.cases}
    print(f"{'case':>6} {'seed':>4} {'correct last ' + str(LAST):>16} {'wall s':>8} {'opt steps':>9}")
    with tempfile.TemporaryDirectory() as scratch:
        for seed in args.seeds:
            for epochs, mini_batches in args.cases:
                result = run_case(epochs, mini_batches, seed, args.steps, Path(scratch))
                results[(epochs, mini_batches)].append(result)
                print(f"{epochs}x{mini_batches:<4} {seed:>4} {result['correct_last']:>16.3f} "
                      f"{result['wall_s']:>8.1f} {result['optimizer_steps']:>9.0f}", flush=True)
    print("\nper case over seeds: correct last 10 mean (min..max), wall s mean")
    for (epochs, mini_batches), runs in results.items():
        correct = [r["correct_last"] for r in runs]
        print(f"{epochs}x{mini_batches}: {statistics.fmean(correct):.3f} ({min(correct):.3f}..{max(correct):.3f}), "
              f"{statistics.fmean(r['wall_s'] for r in runs):.1f} s")


if __name__ == "__main__":
    main()
