"""``mixgrpo thm3-check``: does the Theorem-3 gradient-noise law hold, on a bandit or on a run's rollouts?"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path
from mixgrpo.errors import InputError

NAME = "thm3-check"
HELP = "check the Theorem-3 gradient-MSE law (synthetic bandit, a finished run, or a reward tensor)"
EPILOG = """\
sources (default --synthetic):
  --synthetic          softmax bandit, R channels of noise correlation --rho on scales --scales;
                       exact scores and exact true gradients
  --from-run RUN_DIR   the run's final adapter, generator and reward channels on the tiny model;
                       LoRA scores through a fixed random projection (--projection-dim)
  --rewards FILE.npy   a (P, K, m, R) reward tensor: the multireward-grpo package's analysis
                       (N(0,1) scores from --score-seed)

K = --groups groups of the largest m per prompt; smaller m cut the same samples into more groups.
outputs (in --out, default runs/thm3-<date-time>):
  thm3.json   per m: realized MSE, predicted (tau^2/m) w^T C w, their ratio, the fitted slope
  thm3.png    predicted against realized (NA and AN, y = x) and MSE against m
"""


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _ints(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 2:
        raise argparse.ArgumentTypeError(f"group sizes must be integers >= 2; got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """thm3-check's options."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--synthetic", action="store_true", help="the softmax bandit (default)")
    source.add_argument("--from-run", type=Path, metavar="RUN_DIR", help="a finished run directory")
    source.add_argument("--rewards", type=Path, metavar="FILE.npy", help="a (P, K, m, R) reward tensor")
    parser.add_argument("--rho", type=float, default=0.5, help="synthetic: correlation of the reward noise")
    parser.add_argument("--signal", type=float, default=0.3,
                        help="synthetic: spread of the actions' mean rewards, in noise standard deviations")
    parser.add_argument("--scales", type=_floats, default=[1.0, 10.0, 0.1], help="synthetic: channel scales")
    parser.add_argument("--weights", type=_floats, default=None,
                        help="channel weights (synthetic default 1,0.5,0.25; --rewards: required)")
    parser.add_argument("--actions", type=int, default=6, help="synthetic: actions per bandit")
    parser.add_argument("--prompts", type=int, default=8, help="P: prompts (bandits)")
    parser.add_argument("--groups", type=int, default=None,
                        help="K: groups of the largest m per prompt (synthetic 2000, --from-run 16)")
    parser.add_argument("--group-sizes", type=_ints, default=[4, 8, 16, 32], help="m values, comma-separated (default 4,8,16,32)")
    parser.add_argument("--projection-dim", type=int, default=64, help="--from-run: projected score dimension")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bandits / projection and sampling")
    parser.add_argument("--score-seed", type=int, default=0, help="seed of the N(0,1) scores (package analysis)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="--from-run: override the run's config (e.g. generator.temperature=0.7)")
    parser.add_argument("--out", type=Path, default=None, help="output directory")


def run(args: argparse.Namespace) -> int:
    """Run the check, write thm3.json and thm3.png, print the table."""
    from mixgrpo.analysis import thm3_report as report

    out = args.out or Path("runs") / datetime.datetime.now().strftime("thm3-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    if args.rewards is not None:
        if args.weights is None:
            raise InputError("--rewards needs --weights (one per channel)")
        figures, result = report.rewards_file_check(args.rewards, args.weights, args.score_seed)
        report.plot_random_scores(result, out / report.PLOT_NAME, f"Theorem 3, N(0,1) scores: {args.rewards.name}")
        scores = figures["random_scores"]
        print(f"realized/predicted (means over prompts): NA {scores['ratio_na']:.3f}  AN {scores['ratio_an']:.3f}")
    elif args.from_run is not None:
        figures, analysis = report.from_run_check(args.from_run, args.prompts, args.groups or 16, args.group_sizes,
                                                  args.projection_dim, args.seed, args.overrides)
        title = (f"Theorem 3 on run {args.from_run.name}: {args.prompts} prompts, LoRA scores projected to "
                 f"{args.projection_dim} dims, variance across groups")
        report.plot_real_scores(analysis, out / report.PLOT_NAME, title)
        print(report.summary_table(analysis))
    else:
        weights = args.weights or [1.0, 0.5, 0.25]
        figures, analysis = report.synthetic_check(args.prompts, args.groups or 2000, args.group_sizes, args.rho,
                                                   args.signal, args.scales, weights, args.actions, args.seed,
                                                   args.score_seed)
        title = (f"Theorem 3 on a softmax bandit: rho={args.rho}, signal={args.signal}, scales={args.scales}, "
                 f"w={weights}; MSE against the exact gradient")
        report.plot_real_scores(analysis, out / report.PLOT_NAME, title)
        print(report.summary_table(analysis))
    path = report.write_json(figures, out)
    print(f"\nwrote {path} and {out / report.PLOT_NAME}")
    return 0
