"""The remote side of a RunPod launch, on this machine (imported by the launch tests, not a test file).

``FakeRunPod`` is a real HTTP server on 127.0.0.1 that answers the GraphQL
requests the ``runpod`` SDK sends (``RUNPOD_API_BASE_URL``) and records every
one. ``local_sshd`` is a real OpenSSH server on 127.0.0.1 at a free port with
its own host key; the fake API reports it as the pod's public SSH endpoint and,
like a RunPod image does with ``PUBLIC_KEY``, authorises the launch's key.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

SSHD = "/usr/sbin/sshd"

GPU_TYPES = [
    {"id": "NVIDIA H100 80GB HBM3", "displayName": "H100 80GB HBM3", "memoryInGb": 80,
     "securePrice": 2.99, "communityPrice": 1.99, "maxGpuCount": 8},
    {"id": "NVIDIA GeForce RTX 4090", "displayName": "RTX 4090", "memoryInGb": 24,
     "securePrice": 0.69, "communityPrice": 0.34, "maxGpuCount": 8},
]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Sshd:
    """A running test sshd."""

    port: int
    authorized_keys: Path
    process: subprocess.Popen


@contextmanager
def local_sshd(directory: Path) -> Iterator[Sshd]:
    """sshd on 127.0.0.1:<free port>, root login by key only (no PAM, StrictModes off), killed on exit."""
    directory.mkdir(parents=True, exist_ok=True)
    host_key = directory / "host_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    authorized = directory / "authorized_keys"
    authorized.touch()
    port = free_port()
    config = directory / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"PidFile {directory / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized}", "PermitRootLogin prohibit-password", "PubkeyAuthentication yes",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
        "AllowUsers root", "MaxStartups 100", "LogLevel ERROR", "",
    ]))
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation directory
    log = open(directory / "sshd.log", "wb")
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sshd did not start: {(directory / 'sshd.log').read_text()}")
                time.sleep(0.1)
        yield Sshd(port, authorized, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@dataclass
class FakeRunPod:
    """RunPod's GraphQL API for one test: GPU types, pods that run "on" the test sshd, every request recorded."""

    ssh_port: int
    authorized_keys: Path
    api_key: str
    cost_per_hr: float | None = None
    """A pod's costPerHr (default: the GPU price x count)."""
    fail_create: str | None = None
    """Answer the create mutation with this GraphQL error."""
    polls_before_running: int = 1
    """Pod queries answered "starting, no ports yet" before the pod runs."""
    remote_root: Path | None = None
    """Where launches put their files "on the pod": terminating the pod kills what runs there, as on RunPod."""
    requests: list[dict[str, Any]] = field(default_factory=list)
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                query = json.loads(body)["query"]
                with fake._lock:
                    fake.requests.append({"path": self.path, "headers": dict(self.headers), "query": query,
                                          "time": time.time()})
                    status, answer = fake.answer(self.headers.get("Authorization", ""), query)
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()

    def queries(self, word: str) -> list[str]:
        """Recorded queries that contain ``word``."""
        return [r["query"] for r in self.requests if word in r["query"]]

    def answer(self, authorization: str, query: str) -> tuple[int, dict[str, Any]]:
        """One GraphQL answer, RunPod-shaped."""
        if authorization != f"Bearer {self.api_key}":
            return 401, {"error": "unauthorized"}
        if "podFindAndDeployOnDemand" in query:
            return 200, self._create(query)
        if "podTerminate" in query:
            pod_id = re.search(r'podId: "([^"]+)"', query).group(1)
            if pod_id in self.pods:
                self.pods[pod_id]["terminated"] = True
                if self.remote_root is not None:
                    stop_remote_jobs(self.remote_root)
            return 200, {"data": {"podTerminate": None}}
        if "myself" in query:
            live = [self._record(p) for p in self.pods.values() if not p["terminated"]]
            return 200, {"data": {"myself": {"pods": live}}}
        if re.search(r"pod\(input", query):
            pod = self.pods.get(re.search(r'podId: "([^"]+)"', query).group(1))
            if pod is None or pod["terminated"]:
                return 200, {"data": {"pod": None}}
            pod["polls"] += 1
            return 200, {"data": {"pod": self._record(pod)}}
        if "gpuTypes(input" in query:
            wanted = re.search(r'id: "([^"]+)"', query).group(1)
            return 200, {"data": {"gpuTypes": [dict(g, lowestPrice={"uninterruptablePrice": g["securePrice"]})
                                               for g in GPU_TYPES if g["id"] == wanted]}}
        if "gpuTypes" in query:
            return 200, {"data": {"gpuTypes": [{k: g[k] for k in ("id", "displayName", "memoryInGb")}
                                               for g in GPU_TYPES]}}
        return 200, {"errors": [{"message": "fake RunPod: unsupported query"}]}

    def _create(self, query: str) -> dict[str, Any]:
        if self.fail_create:
            return {"errors": [{"message": self.fail_create}]}

        def field_of(name: str) -> str | None:
            found = re.search(rf'{name}: "?([^",\n]+)"?', query)
            return found.group(1).strip() if found else None

        env = dict(re.findall(r'\{ key: "([^"]*)", value: "([^"]*)" \}', query))
        gpu = next(g for g in GPU_TYPES if g["id"] == field_of("gpuTypeId"))
        count = int(field_of("gpuCount") or 1)
        pod_id = f"pod{len(self.pods) + 1:03d}"
        self.pods[pod_id] = {
            "id": pod_id, "name": field_of("name"), "imageName": field_of("imageName"), "gpu": gpu["id"],
            "gpuCount": count, "cloudType": field_of("cloudType"), "ports": field_of("ports"), "env": env,
            "startSsh": "startSsh: true" in query, "supportPublicIp": "supportPublicIp: true" in query,
            "costPerHr": self.cost_per_hr if self.cost_per_hr is not None else gpu["securePrice"] * count,
            "terminated": False, "polls": 0,
        }
        if "PUBLIC_KEY" in env:  # what a RunPod image's start script does with it
            with open(self.authorized_keys, "a") as handle:
                handle.write(env["PUBLIC_KEY"] + "\n")
        return {"data": {"podFindAndDeployOnDemand": {"id": pod_id, "imageName": field_of("imageName"),
                                                      "env": [], "machineId": "m1", "machine": {"podHostId": pod_id}}}}

    def _record(self, pod: dict[str, Any]) -> dict[str, Any]:
        running = pod["polls"] > self.polls_before_running
        ports = [{"ip": "127.0.0.1", "isIpPublic": True, "privatePort": 22, "publicPort": self.ssh_port,
                  "type": "tcp"}]
        return {"id": pod["id"], "name": pod["name"], "desiredStatus": "RUNNING" if running else "CREATED",
                "costPerHr": pod["costPerHr"], "gpuCount": pod["gpuCount"], "imageName": pod["imageName"],
                "runtime": {"ports": ports} if running else None, "machine": {"gpuDisplayName": pod["gpu"]}}


def stop_remote_jobs(remote_root: Path) -> list[int]:
    """Kill what a test's launches left running "on the pod" (their pid files), group by group; the pids killed."""
    killed = []
    for pid_file in list(remote_root.glob("*/job.pid")) + list(remote_root.glob("*/guard.pid")):
        try:
            pid = int(pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if pid_file.name.replace(".pid", ".sh").encode() in cmdline:
            try:
                os.killpg(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
    return killed


def process_alive(pid_file: Path, script: str) -> bool:
    """Whether the process in ``pid_file`` still runs ``script``."""
    try:
        pid = int(pid_file.read_text().strip())
        return script.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return False
