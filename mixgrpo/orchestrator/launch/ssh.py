"""Plain OpenSSH to the pod: a key pair per launch, commands, upload and pull with ``tar`` streams.

Only ``ssh`` and ``tar`` are needed on either side (no rsync, no sftp
subsystem). The user's ``~/.ssh/config`` is ignored (``-F /dev/null``) so a
launch behaves the same everywhere; the pod's host key is pinned on first use
in the run's own ``known_hosts``.
"""

from __future__ import annotations

import io
import shlex
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from mixgrpo.orchestrator.launch import LaunchError

# Staging names of checkpoint and Parquet writers: half-written, never pulled.
_PULL_EXCLUDES = (".writing-*", ".replaced-*", ".*.tmp")


class SshError(LaunchError):
    """An ssh command that failed or could not connect."""


def generate_key(path: Path) -> str:
    """Write a new ed25519 key pair at ``path`` (+ ``.pub``), private part 0600; returns the public key line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mixgrpo-launch", "-f", str(path)],
                   check=True, capture_output=True)
    path.chmod(0o600)
    return path.with_suffix(".pub").read_text().strip()


@dataclass(frozen=True)
class SshTarget:
    """One pod's SSH endpoint and the launch's key."""

    host: str
    port: int
    key: Path
    known_hosts: Path
    user: str = "root"

    def argv(self, command: str | None = None) -> list[str]:
        """The ssh command line (non-interactive, keep-alives, pinned host key) running ``command``."""
        options = ["IdentitiesOnly=yes", "BatchMode=yes", "StrictHostKeyChecking=accept-new",
                   f"UserKnownHostsFile={self.known_hosts}", "ConnectTimeout=15", "ServerAliveInterval=15",
                   "ServerAliveCountMax=4", "LogLevel=ERROR"]
        argv = ["ssh", "-F", "/dev/null", "-i", str(self.key), "-p", str(self.port)]
        for option in options:
            argv += ["-o", option]
        argv.append(f"{self.user}@{self.host}")
        return argv + ([command] if command is not None else [])

    def run(self, command: str, stdin: bytes | None = None, timeout_s: float = 120.0) -> str:
        """Run ``command`` on the pod; its stdout. SshError with ssh's last stderr line on failure."""
        return self.run_bytes(command, stdin, timeout_s).decode(errors="replace")

    def run_bytes(self, command: str, stdin: bytes | None = None, timeout_s: float = 120.0) -> bytes:
        """Like ``run``, stdout as bytes (log offsets are byte offsets)."""
        try:
            done = subprocess.run(self.argv(command), input=stdin, capture_output=True, timeout=timeout_s,
                                  stdin=None if stdin is not None else subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            raise SshError(f"ssh {self.host}:{self.port}: no answer within {timeout_s:g}s") from None
        if done.returncode != 0:
            lines = done.stderr.decode(errors="replace").strip().splitlines()
            raise SshError(f"ssh {self.host}:{self.port} ({done.returncode}): {lines[-1] if lines else 'failed'}")
        return done.stdout

    def wait_until_reachable(self, timeout_s: float, poll_s: float = 3.0) -> None:
        """Retry a no-op command until sshd accepts the key (it starts after the pod reports its port)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.run("true", timeout_s=30.0)
                return
            except SshError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(poll_s)

    def upload(self, files: dict[str, Path | bytes], remote_dir: str, timeout_s: float = 600.0) -> None:
        """Copy files (local paths or contents) into ``remote_dir`` as the given names, executable bits kept."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            for name, source in files.items():
                if isinstance(source, Path):
                    archive.add(str(source), arcname=name)
                else:
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime = len(source), time.time()
                    info.mode = 0o755 if name.endswith(".sh") else 0o644
                    archive.addfile(info, io.BytesIO(source))
        quoted = shlex.quote(remote_dir)
        self.run(f"mkdir -p {quoted} && tar -xf - -C {quoted}", stdin=buffer.getvalue(), timeout_s=timeout_s)

    def pull(self, remote_dir: str, local_dir: Path, timeout_s: float = 900.0) -> tuple[int, int]:
        """Copy ``remote_dir`` (recursively) into ``local_dir``; (files, bytes). Missing remote dir: (0, 0)."""
        quoted = shlex.quote(remote_dir)
        excludes = " ".join(f"--exclude={shlex.quote(p)}" for p in _PULL_EXCLUDES)
        # GNU tar exits 1 when a file grew while it was read (metrics.jsonl, the train log): still a good copy.
        command = (f"if [ -d {quoted} ]; then tar -C {quoted} -cf - --ignore-failed-read --warning=no-file-changed "
                   f"{excludes} . ; rc=$?; [ $rc -le 1 ]; else tar -cf - -T /dev/null; fi")
        local_dir.mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen(self.argv(command), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        files = size = 0
        failure = None
        try:
            with tarfile.open(fileobj=process.stdout, mode="r|") as archive:
                for member in archive:
                    archive.extract(member, local_dir, filter="data")
                    if member.isfile():
                        files, size = files + 1, size + member.size
            process.wait(timeout=timeout_s)
        except (tarfile.TarError, subprocess.TimeoutExpired, OSError) as error:
            failure = str(error)
            process.kill()
            process.wait()
        finally:
            process.stdout.close()
        stderr = process.stderr.read().decode(errors="replace").strip().splitlines()
        process.stderr.close()
        if failure is not None or process.returncode != 0:
            reason = stderr[-1] if stderr else failure or f"exit {process.returncode}"
            raise SshError(f"pull of {remote_dir} from {self.host}:{self.port} failed: {reason}")
        return files, size
