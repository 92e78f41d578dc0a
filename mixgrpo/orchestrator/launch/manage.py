"""``mixgrpo launch status | attach | fetch | stop RUN_DIR``: a launched pod, found again from its state file."""

from __future__ import annotations

import datetime
import shlex
import time
from pathlib import Path

from mixgrpo.orchestrator.launch import LaunchError
from mixgrpo.orchestrator.launch.follow import Console, finish, follow, guarded, pull
from mixgrpo.orchestrator.launch.pod import RunPodApi
from mixgrpo.orchestrator.launch.remote import EXIT_CODE, LOG
from mixgrpo.orchestrator.launch.secrets import Redactor, require_api_key
from mixgrpo.orchestrator.launch.state import LaunchState


def _open(run_dir: Path, dotenv: Path | None) -> tuple[LaunchState, RunPodApi, Console]:
    state = LaunchState.load(run_dir)
    key = require_api_key(dotenv)
    redact = Redactor(key)
    return state, RunPodApi(key, redact), Console(redact)


def _when(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def status(run_dir: Path, dotenv: Path | None = None) -> int:
    """Print the pod's state, cost so far against the cap, the job's state and its last log lines."""
    state, api, console = _open(run_dir, dotenv)
    console.write(f"run       {state.run_dir} ({state.name}, launch {state.status})\n")
    record = api.pod(state.pod_id) if state.pod_id and not state.terminated else None
    if state.pod_id is None:
        pod = "never created"
    elif state.terminated or record is None:
        pod = f"{state.pod_id} gone (terminated)"
    else:
        pod = (f"{state.pod_id} {record.get('desiredStatus')}, {state.gpus} x {state.gpu_type}, "
               f"${state.price_per_hr:.2f}/h")
    console.write(f"pod       {pod}\n")
    console.write(f"cost      about ${state.cost_so_far():.2f} so far; cap ${state.cap_cost():.2f} at "
                  f"{_when(state.deadline())}\n")
    if record is not None and state.ssh_host is not None:
        directory = shlex.quote(state.remote_dir)
        try:
            out = state.ssh().run(f"cd {directory} && (cat {EXIT_CODE} 2>/dev/null || echo running) && "
                                  f"tail -n 3 {LOG}", timeout_s=60.0)
            head, _, tail = out.partition("\n")
            job = "running" if head.strip() == "running" else f"ended, exit code {head.strip()}"
            console.write(f"job       {job}\n" + "".join(f"  | {line}\n" for line in tail.splitlines()))
        except LaunchError as error:
            console.write(f"job       unknown ({error})\n")
    pulled = _when(state.last_pull) if state.last_pull else "never"
    console.write(f"local     last pull {pulled}\n")
    return 0


def fetch(run_dir: Path, dotenv: Path | None = None) -> int:
    """Pull the pod's run directory into ``run_dir`` now."""
    state = LaunchState.load(run_dir)
    console = Console(Redactor())
    if state.terminated:
        raise LaunchError(f"pod {state.pod_id} is terminated; {state.run_dir} holds the last pull")
    pull(state, state.ssh(), console, final=True)
    return 0


def stop(run_dir: Path, dotenv: Path | None = None) -> int:
    """Stop the job, pull the run directory, terminate the pod (also a --keep-pod or detached one)."""
    state, api, console = _open(run_dir, dotenv)
    if state.terminated:
        console.write(f"pod {state.pod_id} is already terminated\n")
        return 0
    if state.status in ("detached", "running", "starting", "creating"):
        state.status = "stopped"
    finish(api, state, console, keep_pod=False)
    return 0


def attach(run_dir: Path, poll_s: float = 3.0, pull_every_s: float = 300.0, dotenv: Path | None = None) -> int:
    """Follow a detached launch to its end as if it had never detached (log, pulls, cap, termination)."""
    state, api, console = _open(run_dir, dotenv)
    if state.terminated or state.pod_id is None:
        raise LaunchError(f"{run_dir}: pod {state.pod_id} is already terminated; nothing to attach to")
    ssh = state.ssh()
    state.status = "running"
    state.save()
    console.step(6, f"attached to pod {state.pod_id} ({time.time() - (state.created_at or time.time()):.0f}s old, "
                    f"about ${state.cost_so_far():.2f} so far); its log follows. Ctrl-C stops it, pulls, terminates")
    return guarded(api, state, console, lambda: follow(state, ssh, console, poll_s, pull_every_s))
