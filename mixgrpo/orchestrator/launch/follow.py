"""Following a launched job (log, periodic pulls, the cap) and ending a launch (stop, pull, terminate).

``guarded`` is the one place that ends a launch: whatever way its body leaves
(return, exception, Ctrl-C, SIGTERM, SIGHUP), ``finish`` stops the job if it
still runs, pulls the run directory and terminates the pod; a second Ctrl-C
skips the pull, never the termination.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from mixgrpo.orchestrator.launch import LaunchError
from mixgrpo.orchestrator.launch.pod import RunPodApi
from mixgrpo.orchestrator.launch.remote import (
    RUN,
    freeze_command,
    poll_command,
    stop_command,
)
from mixgrpo.orchestrator.launch.secrets import Redactor
from mixgrpo.orchestrator.launch.ssh import SshError, SshTarget
from mixgrpo.orchestrator.launch.state import LOG, LaunchState, launch_dir

STEPS = 8
CONSOLE_URL = "https://www.runpod.io/console/pods"


class Console:
    """Progress lines (``[3/8] ...``), notes and the streamed log, every one redacted."""

    def __init__(self, redact: Redactor, stream: TextIO | None = None) -> None:
        self.redact = redact
        self.stream = stream

    def step(self, number: int, text: str) -> None:
        """A numbered progress line."""
        self.write(f"[{number}/{STEPS}] {text}\n")

    def note(self, text: str) -> None:
        """An indented line under the current step."""
        self.write(f"      {text}\n")

    def write(self, text: str) -> None:
        """Raw text (the remote log), redacted, flushed."""
        stream = self.stream or sys.stdout
        stream.write(self.redact(text))
        stream.flush()


def follow(state: LaunchState, ssh: SshTarget, console: Console, poll_s: float, pull_every_s: float,
           lost_after_s: float = 600.0) -> int:
    """Stream the job's log until it ends or the cap is near; 0 finished, 1 failed, 3 capped (status set)."""
    local_log = launch_dir(Path(state.run_dir)) / LOG
    next_pull, last_pull_s, lost_since = time.monotonic() + pull_every_s, 0.0, None
    while True:
        reserve = min(0.1 * state.cap_seconds(), 30.0 + last_pull_s)  # leave time for the last pull
        if time.time() + reserve >= state.deadline():
            state.status = "capped"
            console.note(f"cap reached (about ${state.cost_so_far():.2f} of ${state.cap_cost():.2f}): "
                         "stopping the job, pulling the run directory, terminating the pod")
            return 3
        try:
            raw = ssh.run_bytes(poll_command(state.remote_dir, state.log_offset), timeout_s=60.0)
        except SshError as error:
            lost_since = lost_since or time.monotonic()
            if time.monotonic() - lost_since > lost_after_s:
                raise LaunchError(f"no SSH contact with the pod for {lost_after_s:.0f}s: {error}") from None
            console.note(f"{error}; retrying")
            time.sleep(max(poll_s, 5.0))
            continue
        lost_since = None
        head, _, chunk = raw.partition(b"\n")
        if chunk:
            text = console.redact(chunk.decode(errors="replace"))
            console.write(text)
            with open(local_log, "a") as handle:
                handle.write(text)
            state.log_offset += len(chunk)
        status = head.decode(errors="replace").strip()
        if status != "running":
            state.exit_code = int(status) if status.lstrip("-").isdigit() else -1
            state.status = "finished" if state.exit_code == 0 else "failed"
            state.save()
            if state.exit_code != 0:
                console.note(f"the job failed on the pod (exit code {state.exit_code}); its log: {local_log}")
            return 0 if state.exit_code == 0 else 1
        if time.monotonic() >= next_pull:
            last_pull_s = pull(state, ssh, console)
            next_pull = time.monotonic() + pull_every_s
        state.save()
        time.sleep(poll_s)


def pull(state: LaunchState, ssh: SshTarget, console: Console, final: bool = False) -> float:
    """Copy the pod's run directory into the local one; seconds it took."""
    started = time.monotonic()
    files, size = ssh.pull(f"{state.remote_dir}/{RUN}", Path(state.run_dir))
    state.last_pull = time.time()
    state.save()
    took = time.monotonic() - started
    text = f"pulled the run directory into {state.run_dir} ({files} files, {size / 1e6:.1f} MB, {took:.0f}s)"
    if final:
        console.step(7, text)
    else:
        console.note(f"{text}; about ${state.cost_so_far():.2f} so far")
    return took


def finish(api: RunPodApi, state: LaunchState, console: Console, keep_pod: bool | None = None) -> None:
    """Stop the job if it still runs, pull the run directory, terminate the pod (not when detached / kept)."""
    if state.pod_id is None or state.terminated or state.status == "detached":
        return
    keep = state.keep_pod if keep_pod is None else keep_pod
    if state.ssh_host is not None:
        ssh = state.ssh()
        try:
            if state.status not in ("finished", "failed"):
                # A pod about to be terminated only needs its writers frozen for the last pull; a kept one is
                # stopped for good.
                ssh.run(stop_command(state.remote_dir) if keep else freeze_command(state.remote_dir), timeout_s=90.0)
                console.note("job stopped on the pod" if keep else "job frozen on the pod for the last pull")
            pull(state, ssh, console, final=True)
        except KeyboardInterrupt:
            console.note("pull skipped (interrupted again); terminating the pod")
        except LaunchError as error:
            console.note(f"could not pull the run directory: {error}")
    if keep:
        console.step(8, f"pod {state.pod_id} left running (--keep-pod, about ${state.price_per_hr:.2f}/h); "
                        f"`mixgrpo launch stop {state.run_dir}` terminates it")
        return
    terminate(api, state, console)


def terminate(api: RunPodApi, state: LaunchState, console: Console) -> None:
    """Terminate the pod with Ctrl-C ignored; LaunchError saying how to do it by hand when the API refuses."""
    ignoring = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if ignoring else None
    try:
        api.terminate(state.pod_id)
    except LaunchError as error:
        raise LaunchError(f"pod {state.pod_id} was NOT terminated and may still be billing ({error}); retry "
                          f"`mixgrpo launch stop {state.run_dir}` or remove it at {CONSOLE_URL}") from None
    finally:
        if ignoring:
            signal.signal(signal.SIGINT, previous)
    state.terminated, state.ended_at = True, time.time()
    state.save()
    console.step(8, f"pod {state.pod_id} terminated; about ${state.cost_so_far():.2f} in all")


def guarded(api: RunPodApi, state: LaunchState, console: Console, body: Callable[[], int]) -> int:
    """Run ``body``; on every way out ``finish`` stops the job, pulls, and terminates the pod."""
    previous = _signals_as_interrupts()
    try:
        return body()
    except KeyboardInterrupt:
        state.status = "interrupted"
        console.note("interrupted: stopping the job, pulling the run directory, terminating the pod")
        return 130
    except BaseException:
        if state.status not in ("finished", "failed", "capped"):
            state.status = "error"
        raise
    finally:
        state.save()
        try:
            finish(api, state, console)
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)


def _signals_as_interrupts() -> dict[int, object]:
    """SIGTERM and SIGHUP (a closed terminal) end a launch the way Ctrl-C does; the handlers replaced."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {number: signal.signal(number, _raise_interrupt) for number in (signal.SIGTERM, signal.SIGHUP)}


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)
