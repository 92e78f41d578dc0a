"""``mixgrpo submit``: run a config as a job on an existing Ray cluster (Ray Job Submission API)."""

from __future__ import annotations

import argparse
import os
import sys

from mixgrpo.errors import InputError
from mixgrpo.orchestrator.commands.common import add_config_arguments

NAME = "submit"
HELP = "run a config as a job on an existing Ray cluster (its dashboard address)"
EPILOG = """\
examples:
  mixgrpo submit --address http://HEAD:8265 --config my.yaml --set cluster.gpus=8 --follow
  mixgrpo submit --address http://HEAD:8265 --set run.output_uri=s3://bucket/mixgrpo-runs

The job ships this checkout's mixgrpo package and the resolved config; the cluster provides the
dependencies (e.g. the infra/Dockerfile image). Outputs: $HOME/mixgrpo-runs/NAME on the node that runs
the driver (or run.out_dir), and a copy under run.output_uri when it is set.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """submit's options."""
    add_config_arguments(parser)
    parser.add_argument("--address", default=os.environ.get("RAY_API_SERVER_ADDRESS"),
                        help="the cluster's dashboard / job server, e.g. http://HEAD:8265 "
                             "(default $RAY_API_SERVER_ADDRESS)")
    parser.add_argument("--follow", action="store_true", help="stream the job's logs and wait for its end")
    parser.add_argument("--python", default="python", help="interpreter on the cluster (default: python)")


def run(args: argparse.Namespace) -> int:
    """Submit; with --follow, the job's outcome is the exit code."""
    from ray.exceptions import AuthenticationError

    from mixgrpo.orchestrator.launch.submit import submit

    if not args.address:
        raise InputError("--address http://HEAD:8265 is required (or set RAY_API_SERVER_ADDRESS)")
    try:
        return submit(args.address, args.config, args.overrides, args.follow, args.python)
    except AuthenticationError:
        print(f"mixgrpo: error: Ray job server at {args.address} wants the cluster's auth token: export "
              "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN=<token> (or put it in ~/.ray/auth_token)", file=sys.stderr)
        return 1
    except (ConnectionError, RuntimeError) as error:  # an unreachable job server, a refused submission
        print(f"mixgrpo: error: Ray job server at {args.address}: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
