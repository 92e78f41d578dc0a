"""``mixgrpo eval``: held-out evaluation of a finished run or of any PEFT adapter."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mixgrpo.config import load_config
from mixgrpo.errors import InputError
from mixgrpo.rundir import CONFIG

NAME = "eval"
HELP = "evaluate a run's adapter (or any PEFT adapter) on the held-out prompts"
EPILOG = """\
The run's config.yaml (with --set overrides) names the model, the reward channels and the
held-out prompts (task.eval_fraction or eval.path); generator and reward actors are started,
no learner. Prints eval/<channel>, pass@n for 0/1 channels and null rates.
examples:
  mixgrpo eval runs/20260101-120000
  mixgrpo eval runs/20260101-120000 --adapter other/adapter --set eval.n=8 --set eval.temperature=1.0
  mixgrpo eval runs/20260101-120000 --base          # the model without any adapter
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """eval's options."""
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory (its config.yaml is used)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--adapter", type=Path, default=None,
                       help="PEFT adapter directory (default RUN_DIR/adapter)")
    which.add_argument("--base", action="store_true", help="evaluate the base model, no adapter")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="dotted override of the run's config, repeatable: --set eval.n=8")
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON line instead of a table")


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the held-out table."""
    from mixgrpo.orchestrator.evaluation import evaluate_adapter
    from mixgrpo.orchestrator.metrics import eval_table

    if not (args.run_dir / CONFIG).is_file():
        raise InputError(f"{args.run_dir}: not a run directory ({CONFIG} missing)")
    config = load_config(args.run_dir / CONFIG, args.overrides)
    adapter = None if args.base else (args.adapter or args.run_dir / "adapter")
    row = evaluate_adapter(config, adapter)
    print(json.dumps(row) if args.json else eval_table(row, config.channel_names))
    return 0
