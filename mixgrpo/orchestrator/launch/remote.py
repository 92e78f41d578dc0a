"""What runs on the pod: the job script, the cap guard, and the commands that start, poll and stop them.

Layout of one launch on the pod (``REMOTE_ROOT/<name>/``): the shipped wheel,
``config.yaml``, ``job.sh``, ``guard.sh``, ``train.log``, ``job.pid``,
``guard.pid``, ``exit_code`` (written when the job ends) and ``run/`` (the run
directory that is pulled back). The job runs in its own session (``setsid
nohup``), so a dropped SSH connection does not stop it. No secret is ever on a
command line: the HF token reaches the job through the environment only.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

RUN = "run"
LOG = "train.log"
EXIT_CODE = "exit_code"

_POD_ENV = """\
from_pod_env() {  # RunPod hands the pod's env to PID 1, not to SSH sessions
  local name=$1 line
  [ -n "${!name:-}" ] && return 0
  [ -r /proc/1/environ ] || return 0
  line=$(tr '\\0' '\\n' 2>/dev/null < /proc/1/environ | grep -m1 "^$name=") || return 0
  export "$name=${line#*=}"
}
"""


@dataclass(frozen=True)
class RemoteJob:
    """How the job is installed and started on the pod."""

    directory: str
    """This launch's directory on the pod."""
    wheel: str
    """File name of the shipped wheel."""
    python: str = "python3"
    """Interpreter on the pod."""
    preinstalled: bool = False
    """True: ``python`` already has the dependencies; install the wheel alone into ./site (no network)."""
    extras: tuple[str, ...] = ()
    """Wheel extras to install with it (e.g. vllm)."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra (non-secret) environment of the job."""

    def _exports(self) -> str:
        return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in self.env.items())

    def _install(self) -> str:
        py, wheel = shlex.quote(self.python), shlex.quote(self.wheel)
        if self.preinstalled:
            return (f"{py} -m pip install --quiet --no-deps --no-index --target site {wheel} && "
                    'export PYTHONPATH="$PWD/site${PYTHONPATH:+:$PYTHONPATH}"')
        target = shlex.quote(f"./{self.wheel}[{','.join(self.extras)}]" if self.extras else f"./{self.wheel}")
        return f"{py} -m pip install --quiet --no-input --root-user-action=ignore {target}"

    def job_script(self) -> str:
        """job.sh: install the wheel, run ``mixgrpo train``, record the exit code."""
        return (
            "#!/usr/bin/env bash\n# Written by `mixgrpo launch runpod`.\n"
            'cd "$(dirname "$0")"\necho $$ > job.pid\nexport PYTHONUNBUFFERED=1\n'
            f"{self._exports()}{_POD_ENV}from_pod_env HF_TOKEN\n"
            "run_job() {\n"
            f'  echo "mixgrpo launch: installing {self.wheel} on the pod"\n'
            f"  {self._install()} || return 90\n"
            f"  {shlex.quote(self.python)} -m mixgrpo.orchestrator.cli train --config config.yaml --out {RUN}\n"
            "}\n"
            f"run_job\nstatus=$?\necho $status > {EXIT_CODE}.tmp && mv {EXIT_CODE}.tmp {EXIT_CODE}\nexit $status\n"
        )

    def guard_script(self, seconds: int) -> str:
        """guard.sh: the pod's own cap. After ``seconds`` stop the job and remove the pod (runpodctl)."""
        return (
            "#!/usr/bin/env bash\n# Written by `mixgrpo launch runpod`: the cap, enforced on the pod itself in\n"
            "# case the laptop that launched it is gone.\n"
            f'cd "$(dirname "$0")"\necho $$ > guard.pid\n{self._exports()}{_POD_ENV}sleep {int(seconds)}\n'
            f'echo "mixgrpo launch: cap reached on the pod; stopping the job and removing the pod" >> {LOG}\n'
            f"{_kill_job(grace_s=10)}\n"
            "from_pod_env RUNPOD_POD_ID\nfrom_pod_env RUNPOD_API_KEY\n"
            'if command -v runpodctl >/dev/null && [ -n "${RUNPOD_POD_ID:-}" ]; then\n'
            '  runpodctl remove pod "$RUNPOD_POD_ID" >> guard.log 2>&1\nfi\n'
        )

    def start_command(self, script: str) -> str:
        """Start ``script`` in its own session, detached from SSH; prints its pid."""
        pid = "job.pid" if script == "job.sh" else "guard.pid"
        output = LOG if script == "job.sh" else "guard.log"
        return (f"cd {shlex.quote(self.directory)} && rm -f {pid} && "
                f"(setsid nohup bash {script} >> {output} 2>&1 < /dev/null &) && "
                f"for i in $(seq 100); do [ -s {pid} ] && break; sleep 0.1; done && cat {pid}")


def _kill_guard() -> str:
    # Only a live process that still runs our script: a stale pid may belong to someone else by now.
    return ('if [ -s guard.pid ]; then p=$(cat guard.pid)\n'
            '  grep -qs guard.sh /proc/$p/cmdline && kill -TERM -- -$p 2>/dev/null; fi; true')


def _kill_job(grace_s: int = 20) -> str:
    """SIGINT to the job's process group (a clean stop), SIGKILL after ``grace_s``."""
    return ('if [ -s job.pid ]; then p=$(cat job.pid)\n'
            '  if grep -qs job.sh /proc/$p/cmdline; then kill -INT -- -$p 2>/dev/null\n'
            f'    for i in $(seq {10 * grace_s}); do grep -qs job.sh /proc/$p/cmdline || break; sleep 0.1; done\n'
            '    kill -KILL -- -$p 2>/dev/null; fi; fi; true')


def poll_command(directory: str, offset: int) -> str:
    """First line: ``running`` or the job's exit code; then its log from byte ``offset`` on."""
    return (f"cd {shlex.quote(directory)} && (cat {EXIT_CODE} 2>/dev/null || echo running) && "
            f"(tail -c +{offset + 1} {LOG} 2>/dev/null || true)")


def stop_command(directory: str) -> str:
    """Stop the guard and the job (SIGINT, SIGKILL after 20 s); succeeds when nothing runs."""
    return f"cd {shlex.quote(directory)} 2>/dev/null || exit 0\n{_kill_guard()}\n{_kill_job()}"


def freeze_command(directory: str) -> str:
    """Stop the guard and freeze the job (SIGSTOP): an instant, consistent snapshot before the pod is terminated."""
    return (f"cd {shlex.quote(directory)} 2>/dev/null || exit 0\n{_kill_guard()}\n"
            'if [ -s job.pid ]; then p=$(cat job.pid)\n'
            '  grep -qs job.sh /proc/$p/cmdline && kill -STOP -- -$p 2>/dev/null; fi; true')
