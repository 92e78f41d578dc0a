"""``mixgrpo bench``: rollout vs learning throughput, with a timeline and a verdict."""

from __future__ import annotations

import argparse
from pathlib import Path

from mixgrpo.config import load_config
from mixgrpo.errors import InputError
from mixgrpo.orchestrator.commands.common import add_config_arguments

NAME = "bench"
HELP = "measure where a step's time goes (timeline, throughput, verdict, actor vs raw engines)"
EPILOG = """\
outputs in --out DIR: bench.json (figures, config, versions, hardware), bench.md (a table to paste, with the
learner's tokens/s and, on a GPU whose dense peak is known, its MFU: see mixgrpo/flops.py),
timeline.png (one lane per actor, coloured by stage), trace.json (chrome://tracing / ui.perfetto.dev),
sweep.png (with --sweep), run*/ (the watched training runs)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """bench's options."""
    add_config_arguments(parser)
    parser.add_argument("--steps", type=int, default=10, help="measured steps (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="steps run first and not measured (default 2)")
    parser.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                        help="repeat the bench over settings, repeatable (cartesian product)")
    parser.add_argument("--no-baselines", action="store_true", help="skip the actor-vs-raw pairs")
    parser.add_argument("--out", type=Path, default=Path("bench"), help="output directory (default ./bench)")


def run(args: argparse.Namespace) -> int:
    """Run every sweep point, then the raw baselines, and write the report."""
    import ray

    from mixgrpo.orchestrator import bench, bench_report
    from mixgrpo.orchestrator.bench_baselines import interleaved_baselines
    from mixgrpo.orchestrator.driver import preflight
    from mixgrpo.orchestrator.placement import start_ray

    if args.steps < 1 or args.warmup < 0:
        raise InputError("--steps must be >= 1 and --warmup >= 0")
    base = load_config(args.config, args.overrides)
    settings = bench.sweep_points(args.sweep)
    configs = [bench.bench_config(base, args.steps, args.warmup, setting) for setting in settings]
    for config in configs:
        preflight(config)
    args.out.mkdir(parents=True, exist_ok=True)
    started_ray = start_ray(base.cluster)
    points, spans = [], []
    try:
        for index, (setting, config) in enumerate(zip(settings, configs)):
            label = ", ".join(f"{k}={v}" for k, v in setting.items()) or "config"
            print(f"bench {index + 1}/{len(configs)}: {label}", flush=True)
            run_dir = args.out / (f"run-{index}" if len(configs) > 1 else "run")
            collector, figures = bench.run_bench(config, run_dir, args.warmup)
            points.append({"setting": setting, "figures": figures})
            spans = spans or collector.spans
        baselines = None
        if not args.no_baselines:
            print("actor vs raw, interleaved pairs on the same prompts", flush=True)
            baselines = interleaved_baselines(configs[0], list(range(args.warmup, args.warmup + args.steps)),
                                              args.warmup)
    finally:
        if started_ray:
            ray.shutdown()
    bench_report.write_json(args.out / "bench.json", points, baselines, bench.environment(),
                            configs[0].model_dump(mode="json"))
    bench_report.write_trace(args.out / "trace.json", spans)
    bench_report.timeline_png(args.out / "timeline.png", spans)
    if len(points) > 1:
        bench_report.sweep_png(args.out / "sweep.png", points)
    report = bench_report.markdown(points, baselines)
    (args.out / "bench.md").write_text(report)
    print("\n" + report)
    print(f"bench outputs in {args.out}: bench.json bench.md timeline.png trace.json"
          + (" sweep.png" if len(points) > 1 else ""))
    return 0
