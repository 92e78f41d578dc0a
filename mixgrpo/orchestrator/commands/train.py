"""``mixgrpo train``: run or resume a training job."""

from __future__ import annotations

import argparse
from pathlib import Path

from mixgrpo.config import load_config
from mixgrpo.errors import InputError
from mixgrpo.orchestrator.commands.common import add_config_arguments

NAME = "train"
HELP = "run a training job (default: the tiny CPU job)"
EPILOG = """\
outputs (in the run directory, default runs/<date-time>):
  config.yaml          the resolved config
  metrics.jsonl        one JSON line per step: reward/<channel>, null_rate/<channel>,
                       failures/..., reward_seconds/<channel>, learner/..., rollout_lag/...,
                       time/<stage>
  tensorboard/         TensorBoard events (tensorboard --logdir RUN_DIR/tensorboard)
  rollouts.parquet/    one Parquet file per step: prompt, completion, reward_<channel>
                       (nulls kept), advantage, weak_heads, review_reason, policy_version
  rewards.png          mean reward per channel over steps
  eval.jsonl, eval.png held-out evaluations (task.eval_fraction or eval.path): eval/<channel>,
                       eval/<channel>/pass@n, eval/null_rate/<channel>; step = steps done
  adapter/             final LoRA adapter (PeftModel.from_pretrained(base, RUN_DIR/adapter))
  checkpoints/         resumable checkpoints (--resume RUN_DIR)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """train's options."""
    add_config_arguments(parser)
    parser.add_argument("--out", type=Path, default=None, help="run directory (default runs/<date-time>)")
    parser.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                        help="continue RUN_DIR from its last checkpoint (uses RUN_DIR/config.yaml)")


def run(args: argparse.Namespace) -> int:
    """Train, then print the summary table and where every output is."""
    from mixgrpo.orchestrator.driver import train

    if args.resume is not None:
        if args.config is None and not (args.resume / "config.yaml").is_file():
            raise InputError(f"--resume {args.resume}: not a run directory (config.yaml missing)")
        config = load_config(args.config or args.resume / "config.yaml", args.overrides)
        outputs = train(config, args.resume, resume=True)
    else:
        config = load_config(args.config, args.overrides)
        outputs = train(config, args.out)
    print("\n" + outputs.summary)
    print(f"\nrun directory   {outputs.run_dir}")
    for label, path in [("metrics", outputs.metrics), ("tensorboard", outputs.tensorboard),
                        ("rollouts", outputs.rollouts), ("reward plot", outputs.reward_plot),
                        ("adapter", outputs.adapter), ("eval plot", outputs.eval_plot)]:
        if path is not None:
            print(f"  {label:<13} {path}")
    return 0
