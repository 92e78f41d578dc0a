"""``mixgrpo launch runpod | status | attach | fetch | stop``: train on a RunPod GPU pod from this machine."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from mixgrpo.errors import InputError
from mixgrpo.orchestrator.commands.common import add_config_arguments

NAME = "launch"
HELP = "train on a RunPod GPU pod from here (launch runpod ...), and follow, fetch or stop it"
EPILOG = """\
examples:
  export RUNPOD_API_KEY=...            # or RUNPOD_API_KEY=... in ./.env
  mixgrpo launch runpod --gpu-type "NVIDIA GeForce RTX 4090" --gpus 1 --max-cost 2   # colocated on one GPU
  mixgrpo launch runpod --gpu-type "NVIDIA H100 80GB HBM3" --gpus 2 --max-cost 20
  mixgrpo launch runpod --config configs/local-tiny.yaml --gpu-type "NVIDIA GeForce RTX 4090" --dry-run
  mixgrpo launch status runs/NAME      # pod, cost so far, job, last log lines
  mixgrpo launch attach runs/NAME      # follow a --detach'ed launch to its end
  mixgrpo launch fetch runs/NAME       # pull the run directory now
  mixgrpo launch stop runs/NAME        # stop the job, pull, terminate the pod

The pod is terminated on every way out (done, failed, cap reached, Ctrl-C, an error) unless --keep-pod;
the run directory (metrics, rollouts, checkpoints, adapter) is pulled into runs/NAME first.
"""


def _add_runpod_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--gpu-type", required=True, help='RunPod GPU type id, e.g. "NVIDIA H100 80GB HBM3"')
    parser.add_argument("--gpus", type=int, default=1, help="GPUs on the pod; becomes cluster.gpus (default 1)")
    parser.add_argument("--cloud", choices=["secure", "community"], default="secure",
                        help="RunPod cloud (default secure)")
    parser.add_argument("--image", default=None, help="container image (default: a stock CUDA PyTorch image; the "
                                                      "wheel and its dependencies are installed on it)")
    parser.add_argument("--max-hours", type=float, default=4.0, help="wall-clock cap in hours (default 4)")
    parser.add_argument("--max-cost", type=float, default=None, metavar="USD", help="cost cap in dollars")
    parser.add_argument("--volume-gb", type=int, default=0, help="persistent volume at /workspace (default none)")
    parser.add_argument("--disk-gb", type=int, default=50, help="container disk (default 50)")
    parser.add_argument("--extras", default=None, help="wheel extras to install on the pod, comma-separated "
                                                       "(default: what the config needs: vllm for generator.backend=vllm, clip "
                                                       "for model.kind=clip or clipscore, rewards for image channels)")
    parser.add_argument("--out", type=Path, default=None, help="local run directory (default runs/NAME)")
    parser.add_argument("--pull-every", type=float, default=5.0, metavar="MIN",
                        help="pull the run directory every MIN minutes (default 5)")
    parser.add_argument("--start-timeout", type=float, default=900.0, metavar="S",
                        help="seconds to wait for the pod's SSH before giving up (default 900)")
    parser.add_argument("--detach", action="store_true", help="start the job and return; see launch attach")
    parser.add_argument("--keep-pod", action="store_true", help="do not terminate the pod at the end")
    parser.add_argument("--dry-run", action="store_true", help="print the API requests and commands; create nothing")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """launch's sub-commands and their options."""
    sub = parser.add_subparsers(dest="launch_command", required=True, metavar="{runpod,status,attach,fetch,stop}")
    _add_runpod_arguments(sub.add_parser("runpod", help="run a config on a new RunPod pod"))
    for name, text in [("status", "pod, cost so far, job state and last log lines"),
                       ("attach", "follow a detached launch to its end (log, pulls, cap, termination)"),
                       ("fetch", "pull the run directory from the pod now"),
                       ("stop", "stop the job, pull the run directory, terminate the pod")]:
        command = sub.add_parser(name, help=text)
        command.add_argument("run_dir", type=Path, metavar="RUN_DIR")


def run(args: argparse.Namespace) -> int:
    """Dispatch to the launch sub-command; a failed launch step is one line on stderr and exit code 1."""
    if importlib.util.find_spec("runpod") is None:
        raise InputError("mixgrpo launch needs the RunPod SDK: pip install 'mixgrpo[runpod]'")
    from mixgrpo.orchestrator.launch import LaunchError, manage
    from mixgrpo.orchestrator.launch.runpod import (
        DEFAULT_IMAGE,
        LaunchOptions,
        launch_runpod,
    )

    try:
        if args.launch_command == "runpod":
            extras = tuple(e for e in args.extras.split(",") if e) if args.extras is not None else None
            options = LaunchOptions(
                gpu_type=args.gpu_type, config_path=args.config, overrides=tuple(args.overrides), gpus=args.gpus,
                cloud=args.cloud, image=args.image or DEFAULT_IMAGE, max_hours=args.max_hours,
                max_cost=args.max_cost, volume_gb=args.volume_gb, disk_gb=args.disk_gb, detach=args.detach,
                keep_pod=args.keep_pod, dry_run=args.dry_run, out=args.out, extras=extras,
                start_timeout_s=args.start_timeout, pull_every_s=60.0 * args.pull_every)
            return launch_runpod(options)
        handler = {"status": manage.status, "attach": manage.attach, "fetch": manage.fetch, "stop": manage.stop}
        return handler[args.launch_command](args.run_dir)
    except LaunchError as error:
        print(f"mixgrpo: error: {error}", file=sys.stderr)
        return 1
