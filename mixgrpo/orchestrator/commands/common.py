"""Arguments and output shared by several subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path

from mixgrpo.config import default_config_path


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """--config PATH and repeatable --set KEY=VALUE."""
    parser.add_argument("--config", type=Path, default=None,
                        help=f"YAML config (default: the packaged {default_config_path().name}, the tiny CPU job)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="dotted override, repeatable: --set learner.lr=2e-5 --set rewards.correct.weight=2")
