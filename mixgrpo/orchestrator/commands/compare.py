"""``mixgrpo compare``: the same job under several advantage modes and seeds, side by side."""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

from mixgrpo.config import load_config
from mixgrpo.errors import InputError
from mixgrpo.orchestrator.commands.common import add_config_arguments

NAME = "compare"
HELP = "run the same job per advantage mode and seed; plot and tabulate the rewards side by side"
EPILOG = """\
every (mode, seed) is an ordinary run in OUT/<mode>-seed<seed> (run.seed = seed, algorithm.mode = mode),
all in one Ray session, concurrently when the cluster has room; finished runs in OUT are reused.
outputs (in --out, default runs/compare-<date-time>):
  compare.md    final reward per channel, steps to --target, influence of each channel
                on the advantage, wall time (mean ± std over seeds)
  compare.png   per channel: moving-average reward per step, mean and ±1 std band over
                seeds, one colour per mode; last panel: influence shares against weight shares
  compare.json  the same numbers per run
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """compare's options."""
    add_config_arguments(parser)
    parser.add_argument("--modes", default="na,an,single",
                        help="comma-separated advantage modes (na, an, conditioned, single); default na,an,single")
    parser.add_argument("--seeds", default="3",
                        help="a count N (seeds run.seed .. run.seed + N - 1) or a comma-separated list; default 3")
    parser.add_argument("--steps", type=int, default=None, help="steps per run (default: the config's run.steps)")
    parser.add_argument("--target", default=None, metavar="CHANNEL=VALUE",
                        help="report the first step whose moving average of CHANNEL reaches VALUE")
    parser.add_argument("--window", type=int, default=10,
                        help="moving-average window in steps for the target, final rewards and curves (default 10)")
    parser.add_argument("--max-concurrent", type=int, default=None,
                        help="at most this many runs at once (default: as many as the cluster hosts)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default runs/compare-<date-time>)")


def run(args: argparse.Namespace) -> int:
    """Run the comparison and print where its outputs are."""
    from mixgrpo.orchestrator.compare import compare, parse_seeds, parse_target

    config = load_config(args.config, args.overrides)
    if args.steps is not None and args.steps < 1:
        raise InputError(f"--steps {args.steps}: must be >= 1")
    target = parse_target(args.target, config.channel_names) if args.target else None
    seeds = parse_seeds(args.seeds, config.run.seed)
    out = args.out or Path("runs") / datetime.datetime.now().strftime("compare-%Y%m%d-%H%M%S")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    outputs = compare(config, modes, seeds, out, steps=args.steps, target=target, window=args.window,
                      max_concurrent=args.max_concurrent)
    print("\n" + outputs.markdown.read_text())
    print(f"comparison in {outputs.out_dir}: {outputs.markdown.name}, {outputs.plot.name}, {outputs.summary.name}")
    return 0
