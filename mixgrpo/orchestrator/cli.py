"""The ``mixgrpo`` command line: subcommands are the modules of ``mixgrpo.orchestrator.commands``.

Exit codes: 0 done; 2 bad input (an ``InputError``: one line, the traceback only with ``--debug``);
1 anything else, with its traceback (a bug, never dressed up as a user mistake), except a run stopped
by a dead reward channel (``on_dead: stop``: one line, after its checkpoint and adapter); 130 / 143 a run
stopped by Ctrl-C / SIGTERM after its checkpoint.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
import traceback
from types import ModuleType

from mixgrpo.errors import InputError
from mixgrpo.orchestrator import commands
from mixgrpo.orchestrator.dead_channel import RewardChannelDead
from mixgrpo.orchestrator.interrupt import TrainingInterrupted


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
    parser.add_argument("--debug", action="store_true", help="show the traceback of input errors too")
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
    except InputError as error:
        if args.debug:
            traceback.print_exc()
        print(f"mixgrpo: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    except TrainingInterrupted as stopped:
        print(f"mixgrpo: {stopped}", file=sys.stderr)
        return stopped.exit_code
    except RewardChannelDead as dead:  # on_dead: stop, after the checkpoint and the adapter were written
        print(f"mixgrpo: error: {dead}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # outside a run's step loop (which handles the signal itself)
        print("mixgrpo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
