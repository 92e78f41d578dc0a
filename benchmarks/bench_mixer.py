"""Benchmark the advantage mixer against the reference package ``multireward-grpo``.

Times, on rewards ``(P, m, R) = (4096, 16, 5)`` with heterogeneous channel
scales, the package's vectorised ``compute_advantage_batch`` and its per-group
``compute_advantage`` loop against :func:`mixgrpo.rewards.mixer.compute_advantages`
without nulls, with 10 % nulls, and with 10 % nulls plus the diagnostics.
Prints best/median times, groups per second, the speed ratios (target:
package vectorised without nulls / ours with 10 % nulls >= 1.0, reported as
PASS/MISS) and the largest |difference| from the package without nulls for
``na``, ``an`` and ``single`` (target < 1e-9; the exit code is 1 if missed).

Run from the repository root::

    pip install multireward-grpo==0.1.1
    python -m benchmarks.bench_mixer [--repeats 30] [--groups 4096]

Timing: every case runs once per round, rounds interleaved so that load spikes
on a shared machine hit all cases alike; best-of-N is the headline figure.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable

import numpy as np

from mixgrpo.rewards.mixer import compute_advantages

WEIGHTS = np.array([1.0, 0.5, 0.25, 0.25, 0.1])
DIFF_TARGET = 1e-9
SPEED_TARGET = 1.0
INSTALL_HINT = "the reference package is missing: pip install multireward-grpo==0.1.1"


def make_rewards(groups: int, completions: int, seed: int) -> np.ndarray:
    """``(groups, completions, 5)`` rewards: {0,1}, U[0,1], N(0,10^2), a length, Student-t(2)."""
    rng = np.random.default_rng(seed)
    shape = (groups, completions)
    channels = [
        rng.integers(0, 2, shape).astype(np.float64),  # correctness
        rng.random(shape),  # a [0, 1] score
        rng.normal(0.0, 10.0, shape),  # a wide-scale judge
        rng.integers(20, 400, shape).astype(np.float64),  # a length in tokens
        rng.standard_t(2.0, shape),  # heavy-tailed
    ]
    return np.stack(channels, axis=2)


def with_nulls(rewards: np.ndarray, null_rate: float, seed: int) -> np.ndarray:
    """A copy of ``rewards`` with a random ``null_rate`` fraction of entries set to NaN."""
    rng = np.random.default_rng(seed + 1)
    nulled = rewards.copy()
    nulled[rng.random(rewards.shape) < null_rate] = np.nan
    return nulled


def per_group_loop(package, rewards: np.ndarray, mode: str) -> np.ndarray:
    """The package's one-group ``compute_advantage`` called for every group (reference only)."""
    return np.stack([package.compute_advantage(group, WEIGHTS, mode) for group in rewards])


def time_cases(cases: dict[str, Callable[[], object]], repeats: int) -> dict[str, np.ndarray]:
    """Seconds per call of every case: ``repeats`` interleaved rounds after one warm-up call."""
    for call in cases.values():
        call()
    seconds = {name: np.empty(repeats) for name in cases}
    for round_index in range(repeats):
        for name, call in cases.items():
            start = time.perf_counter()
            call()
            seconds[name][round_index] = time.perf_counter() - start
    return seconds


def print_table(seconds: dict[str, np.ndarray], groups: int) -> None:
    """One row per case: best and median milliseconds, groups per second at the best time."""
    print(f"{'case':44s} {'best ms':>9s} {'median ms':>10s} {'groups/s':>12s}")
    for name, values in seconds.items():
        best = values.min()
        median = np.median(values)
        print(f"{name:44s} {best * 1e3:9.3f} {median * 1e3:10.3f} {groups / best:12,.0f}")


def print_ratios(best: dict[str, float]) -> None:
    """Speed ratios (> 1: ours faster); the headline one is marked PASS or MISS."""
    for mode in ("na", "an"):
        headline = best[f"package vectorised {mode}, no nulls"] / best[f"ours {mode}, 10% nulls"]
        verdict = "PASS" if headline >= SPEED_TARGET else "MISS"
        rows = [
            (f"{mode}: package vectorised no nulls / ours 10% nulls", headline),
            (f"{mode}: package vectorised / ours, no nulls",
             best[f"package vectorised {mode}, no nulls"] / best[f"ours {mode}, no nulls"]),
            (f"{mode}: package loop / ours 10% nulls",
             best[f"package loop {mode}, no nulls"] / best[f"ours {mode}, 10% nulls"]),
        ]
        for index, (label, ratio) in enumerate(rows):
            suffix = ""
            if mode == "na" and index == 0:
                suffix = f"  (target >= {SPEED_TARGET}: {verdict})"
            print(f"{label:52s} {ratio:8.2f}{suffix}")


def max_differences(package, rewards: np.ndarray) -> dict[str, float]:
    """Largest |ours - package| over the batch without nulls, per mode."""
    return {
        mode: float(np.abs(
            compute_advantages(rewards, WEIGHTS, mode=mode).advantages
            - package.compute_advantage_batch(rewards, WEIGHTS, mode)
        ).max())
        for mode in ("na", "an", "single")
    }


def build_cases(package, rewards: np.ndarray, nulled: np.ndarray) -> dict[str, Callable]:
    """The timed calls, named for the table."""
    cases = {}
    for mode in ("na", "an"):
        cases[f"package vectorised {mode}, no nulls"] = (
            lambda mode=mode: package.compute_advantage_batch(rewards, WEIGHTS, mode)
        )
        cases[f"ours {mode}, no nulls"] = (
            lambda mode=mode: compute_advantages(rewards, WEIGHTS, mode=mode).advantages
        )
        cases[f"ours {mode}, 10% nulls"] = (
            lambda mode=mode: compute_advantages(nulled, WEIGHTS, mode=mode).advantages
        )
    cases["ours na, 10% nulls + diagnostics"] = (
        lambda: compute_advantages(nulled, WEIGHTS, mode="na").diagnostics
    )
    return cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=4096, help="P, groups per batch")
    parser.add_argument("--completions", type=int, default=16, help="m, completions per group")
    parser.add_argument("--null-rate", type=float, default=0.1, help="fraction of null rewards")
    parser.add_argument("--repeats", type=int, default=30, help="timed rounds per case")
    parser.add_argument("--loop-repeats", type=int, default=5, help="rounds for the slow loops")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        from multireward_grpo import advantage as package
    except ImportError:
        print(INSTALL_HINT, file=sys.stderr)
        return 2

    rewards = make_rewards(args.groups, args.completions, args.seed)
    nulled = with_nulls(rewards, args.null_rate, args.seed)
    print(f"rewards {rewards.shape}, weights {WEIGHTS.tolist()}, "
          f"nulls {np.isnan(nulled).mean():.1%}, repeats {args.repeats}")
    seconds = time_cases(build_cases(package, rewards, nulled), args.repeats)
    loops = {
        f"package loop {mode}, no nulls": (lambda mode=mode: per_group_loop(package, rewards, mode))
        for mode in ("na", "an")
    }
    seconds.update(time_cases(loops, args.loop_repeats))
    print_table(seconds, args.groups)
    print()
    print_ratios({name: float(values.min()) for name, values in seconds.items()})
    print()
    differences = max_differences(package, rewards)
    for mode, difference in differences.items():
        verdict = "PASS" if difference < DIFF_TARGET else "MISS"
        target = f"(target < {DIFF_TARGET:g}: {verdict})"
        print(f"max |ours - package| {mode:6s} {difference:.3e}  {target}")
    return 0 if max(differences.values()) < DIFF_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
