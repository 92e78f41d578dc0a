"""The ``mixgrpo`` command line: subcommands are the modules of ``mixgrpo.orchestrator.commands``."""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from types import ModuleType

from mixgrpo.config import ConfigError
from mixgrpo.orchestrator import commands

_EXPECTED_ERRORS = (ConfigError, ValueError, FileNotFoundError, FileExistsError)


def _command_modules() -> list[ModuleType]:
    found = []
    for info in pkgutil.iter_modules(commands.__path__):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "run"):
            found.append(module)
    return sorted(found, key=lambda m: m.NAME)


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, ModuleType]]:
    """The argument parser of every subcommand, and the modules by command name."""
    parser = argparse.ArgumentParser(prog="mixgrpo", description="Multi-reward GRPO on Ray.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for module in _command_modules():
        sub = subparsers.add_parser(module.NAME, help=module.HELP, epilog=getattr(module, "EPILOG", None),
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        modules[module.NAME] = module
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mixgrpo`` console script; bad input is one line on stderr and exit code 2."""
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return modules[args.command].run(args)
    except _EXPECTED_ERRORS as error:
        print(f"mixgrpo: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
