"""Async (one step off-policy) vs synchronous step time on the default tiny job, and adapter broadcast cost.

Prints, for the same config and prompts:
  - sync step time, and its generate + learn (actor busy seconds per step),
  - async step time against max(generate, learn) (target <= 1.15x) and against generate + learn,
  - adapter broadcast latency (the driver's put + send, plus the generator's load) and its share of
    the step time (target <= 1 %).

Run from the repository root: ``python -m benchmarks.bench_async [--steps 20] [--warmup 3]``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import ray

from mixgrpo.config import load_config
from mixgrpo.orchestrator.bench import bench_config, run_bench
from mixgrpo.orchestrator.placement import start_ray


def _per_step(figures, prefix: str) -> float:
    return max((v for k, v in figures.lane_s_per_step.items() if k.startswith(prefix)), default=0.0)


def main() -> None:
    """Run both modes and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    base = load_config(None, ["run.progress=false", *args.overrides])
    start_ray(base.cluster)
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for mode in (0, 1):
            config = bench_config(base, args.steps, args.warmup, {"algorithm.async_steps": str(mode)})
            collector, figures = run_bench(config, Path(scratch) / f"async{mode}", args.warmup)
            results[mode] = figures
            if mode == 0:
                spans_sync = [s for s in collector.spans if s.step >= args.warmup]
    ray.shutdown()
    sync, asynchronous = results[0], results[1]
    step_sync = sum(sync.stage_s.values())
    step_async = asynchronous.wall_s / asynchronous.steps
    generate, learn = _per_step(asynchronous, "generator-"), _per_step(asynchronous, "learner-")
    loads = [s.end - s.start for s in spans_sync if s.stage == "load_adapter" and s.lane.startswith("generator-")]
    broadcast = sync.stage_s["broadcast"] + (sum(loads) / len(loads) if loads else 0.0)
    print(f"sync  step {sync.wall_s / sync.steps:.3f}s  (generate {_per_step(sync, 'generator-'):.3f}s, "
          f"learn {_per_step(sync, 'learner-'):.3f}s, reward {sync.stage_s['reward']:.3f}s)")
    print(f"async step {step_async:.3f}s  (generate {generate:.3f}s, learn {learn:.3f}s per step)")
    print(f"async / max(generate, learn) = {step_async / max(generate, learn):.2f}  (target <= 1.15)")
    print(f"async / (generate + learn)   = {step_async / (generate + learn):.2f}")
    print(f"async / sync                 = {step_async / (sync.wall_s / sync.steps):.2f}")
    print(f"adapter broadcast {broadcast * 1000:.1f} ms = {100 * broadcast / step_sync:.2f} % of the sync step "
          f"(target <= 1 %)")


if __name__ == "__main__":
    main()
