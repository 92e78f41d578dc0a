"""How each stage of a step grows with the work: a scaling table of the disaggregated default job.

One axis at a time, everything else the default job: prompts per step 32 / 128 / 512 (group 8), reward
channels 2 / 8 / 16 cheap rule channels (they share the cpu-light actor) and 2 / 8 / 16 slow http channels
(a local judge that answers after ``--http-delay`` s; each its own actor), generator replicas 1 / 2 and
learner ranks 1 / 2 (the default job is the 32 / 4 rule / 1 / 1 point). Every point is a watched ``mixgrpo bench`` run (``orchestrator.bench.run_bench``) in
this process; the table gives the mean step time and its stage split (driver stages from metrics.jsonl),
samples per second, the process tree's peak PSS, and the driver's own RSS after the point (the driver
holds every rollout of a step: does it grow with the batch?). Writes scaling.md and scaling.json.

Run from the repository root: ``python -m benchmarks.bench_scaling [--steps 5] [--warmup 4] [--out DIR]``.
Four warm-up steps: with 16 http channel actors on 2 cores the first three steps still scored in 1.1 s
(the processes settling), against 0.07 s after.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import psutil
import ray

from benchmarks.bench_http_channels import start_judge
from mixgrpo.config import Config, config_from_dict, load_config
from mixgrpo.orchestrator import bench
from mixgrpo.orchestrator.placement import start_ray

RULES = [("numeric_match", {}), ("regex", {"pattern": r"-?\d+"}), ("length", {"max_tokens": 3}),
         ("numeric_distance", {"cap": 10})]
"""The default job's rule channels, cycled to make N of them."""
STAGES = bench.DRIVER_STAGES


def rule_channels(count: int) -> list[dict[str, Any]]:
    """``count`` cheap rule channels, the default job's four kinds in turn (weight 1 each)."""
    return [{"name": f"{kind}-{i}", "kind": kind, "weight": 1.0, "options": options}
            for i, (kind, options) in ((i, RULES[i % len(RULES)]) for i in range(count))]


def http_channels(count: int, url: str) -> list[dict[str, Any]]:
    """The default job's correct channel plus ``count - 1`` http channels against the judge at ``url``."""
    return [rule_channels(1)[0]] + [{"name": f"judge-{i}", "kind": "http", "weight": 0.1, "timeout_s": 30.0,
                                     "options": {"url": url}} for i in range(count - 1)]


def points(base: Config, judge_url: str) -> list[tuple[str, Config]]:
    """(label, config) for every point of every axis."""
    data = base.model_dump(mode="json")

    def with_(label: str, section: str, key: str, value: Any) -> tuple[str, Config]:
        changed = json.loads(json.dumps(data))
        if section:
            changed[section][key] = value
        else:
            changed[key] = value
        return label, config_from_dict(changed)

    out = [("default (32 prompts, 4 rule channels, 1 generator, 1 rank)", base)]
    out += [with_(f"prompts_per_step={p}", "task", "prompts_per_step", p) for p in (128, 512)]
    out += [with_(f"{n} rule channels", "", "rewards", rule_channels(n)) for n in (2, 8, 16)]
    out += [with_(f"{n} http channels", "", "rewards", http_channels(n, judge_url)) for n in (2, 8, 16)]
    out += [with_("generator.replicas=2", "generator", "replicas", 2), with_("learner.ranks=2", "learner", "ranks", 2)]
    return out


def parse_args() -> argparse.Namespace:
    """Command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="measured steps per point")
    parser.add_argument("--warmup", type=int, default=4, help="steps run before measuring")
    parser.add_argument("--http-delay", type=float, default=0.05, help="seconds the local judge takes per request")
    parser.add_argument("--out", type=Path, default=Path("runs") / f"bench-scaling-{time.strftime('%Y%m%d-%H%M%S')}")
    return parser.parse_args()


def main() -> None:
    """Run every point and write the table."""
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    judge = start_judge(args.http_delay)
    base = load_config(None, ["run.progress=false", "eval.every=0"])
    start_ray(base.cluster)
    rows: list[dict[str, Any]] = []
    try:
        for index, (label, config) in enumerate(points(base, f"http://127.0.0.1:{judge.server_port}/score")):
            config = bench.bench_config(config, args.steps, args.warmup, {})
            _, figures = bench.run_bench(config, args.out / f"run-{index:02d}", args.warmup)
            row = {"point": label, "step_s": figures.wall_s / figures.steps,
                   **{stage: figures.stage_s.get(stage, 0.0) for stage in STAGES},
                   "samples_per_s": figures.samples_per_s, "tree_pss_mb": figures.tree_pss_mb,
                   "driver_rss_mb": psutil.Process().memory_info().rss / 2**20, "load": os.getloadavg()[0]}
            rows.append(row)
            print(f"[{index + 1}] {label}: step {row['step_s']:.3f}s, " +
                  ", ".join(f"{s} {row[s]:.3f}" for s in STAGES) + f", load {row['load']:.1f}", flush=True)
            (args.out / "scaling.json").write_text(json.dumps(rows, indent=1))
    finally:
        ray.shutdown()
        judge.shutdown()
    table = ["| point | step s | " + " | ".join(STAGES) + " | samples/s | tree PSS MB | driver RSS MB | load |",
             "|---" * (len(STAGES) + 6) + "|"]
    table += [f"| {r['point']} | {r['step_s']:.3f} | " + " | ".join(f"{r[s]:.3f}" for s in STAGES) +
              f" | {r['samples_per_s']:.0f} | {r['tree_pss_mb']:.0f} | {r['driver_rss_mb']:.0f} | {r['load']:.1f} |"
              for r in rows]
    (args.out / "scaling.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    print(f"scaling table in {args.out / 'scaling.md'}")


if __name__ == "__main__":
    main()
