"""The ``mixgrpo`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mixgrpo.config import ConfigError, default_config_path, load_config

_TRAIN_EPILOG = """\
outputs (in the run directory, default runs/<date-time>):
  config.yaml          the resolved config
  metrics.jsonl        one JSON line per step: reward/<channel>, null_rate/<channel>,
                       failures/..., learner/..., time/<stage>
  tensorboard/         TensorBoard events (tensorboard --logdir RUN_DIR/tensorboard)
  rollouts.parquet/    one Parquet file per step: prompt, completion, reward_<channel>
                       (nulls kept), advantage, weak_heads, review_reason, policy_version
  rewards.png          mean reward per channel over steps
  adapter/             final LoRA adapter (PeftModel.from_pretrained(base, RUN_DIR/adapter))
  checkpoints/         resumable checkpoints (--resume RUN_DIR)
"""


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None,
                        help=f"YAML config (default: {default_config_path().name}, the tiny CPU job)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="dotted override, repeatable: --set learner.lr=2e-5 --set rewards.correct.weight=2")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="mixgrpo", description="Multi-reward GRPO on Ray.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="run a training job", epilog=_TRAIN_EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_config_arguments(train)
    train.add_argument("--out", type=Path, default=None, help="run directory (default runs/<date-time>)")
    train.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                       help="continue RUN_DIR from its last checkpoint (uses RUN_DIR/config.yaml)")
    return parser


def _train(args: argparse.Namespace) -> int:
    from mixgrpo.orchestrator.driver import train

    if args.resume is not None:
        config_path = args.config or args.resume / "config.yaml"
        config = load_config(config_path, args.overrides)
        outputs = train(config, args.resume, resume=True)
    else:
        config = load_config(args.config, args.overrides)
        outputs = train(config, args.out)
    print("\n" + outputs.summary)
    print(f"\nrun directory   {outputs.run_dir}")
    print(f"  metrics       {outputs.metrics}")
    print(f"  tensorboard   {outputs.tensorboard}")
    print(f"  rollouts      {outputs.rollouts}")
    print(f"  reward plot   {outputs.reward_plot}")
    print(f"  adapter       {outputs.adapter}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mixgrpo`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return {"train": _train}[args.command](args)
    except (ConfigError, ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"mixgrpo: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
