"""The RunPod API through the official ``runpod`` SDK (extra ``runpod``).

Every request goes through the SDK's GraphQL transport (``runpod.api.graphql``,
which posts to ``$RUNPOD_API_BASE_URL/graphql``, default https://api.runpod.io)
with the SDK's own query and mutation builders, so what ``--dry-run`` prints is
exactly what a launch sends. Errors become one-line ``LaunchError``s with the
secrets redacted.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mixgrpo.errors import InputError
from mixgrpo.orchestrator.launch import LaunchError
from mixgrpo.orchestrator.launch.secrets import REDACTED, Redactor

CLOUDS = {"secure": "SECURE", "community": "COMMUNITY"}
SSH_PORT = 22


@dataclass(frozen=True)
class GpuOffer:
    """A GPU type and what one GPU of it costs per hour in the chosen cloud."""

    id: str
    display_name: str
    memory_gb: int
    price_per_gpu_hr: float
    max_count: int


@dataclass(frozen=True)
class PodSpec:
    """What the pod is created with."""

    name: str
    image: str
    gpu_type_id: str
    gpu_count: int
    cloud: str
    """SECURE or COMMUNITY."""
    volume_gb: int
    disk_gb: int
    env: dict[str, str] = field(default_factory=dict)
    ports: str = f"{SSH_PORT}/tcp"

    def mutation(self) -> str:
        """The SDK's podFindAndDeployOnDemand mutation for this pod (public IP, SSH started)."""
        from runpod.api.mutations.pods import generate_pod_deployment_mutation

        return generate_pod_deployment_mutation(
            name=self.name, image_name=self.image, gpu_type_id=self.gpu_type_id, cloud_type=self.cloud,
            support_public_ip=True, start_ssh=True, gpu_count=self.gpu_count, volume_in_gb=self.volume_gb,
            container_disk_in_gb=self.disk_gb, ports=self.ports, env=self.env,
            volume_mount_path="/workspace" if self.volume_gb else None,
        )


@dataclass(frozen=True)
class SshEndpoint:
    """The pod's public SSH address."""

    host: str
    port: int


def api_url() -> str:
    """The GraphQL endpoint the SDK posts to."""
    return os.environ.get("RUNPOD_API_BASE_URL", "https://api.runpod.io") + "/graphql"


def preview_request(query: str, redact: Redactor) -> str:
    """The HTTP request the SDK sends for ``query``, as text, with the key and the HF token redacted."""
    return redact(f"POST {api_url()}\nAuthorization: Bearer {REDACTED}\n\n{query.strip()}")


class RunPodApi:
    """The few RunPod calls a launch needs."""

    def __init__(self, api_key: str, redact: Redactor) -> None:
        self._api_key = api_key
        self._redact = redact

    def query(self, text: str) -> dict[str, Any]:
        """Run one GraphQL query or mutation; its ``data``, or LaunchError with a one-line message."""
        import requests
        from runpod import error
        from runpod.api.graphql import run_graphql_query

        try:
            return run_graphql_query(text, api_key=self._api_key)["data"]
        except error.AuthenticationError:
            raise LaunchError("RunPod API: the API key was rejected (401); check RUNPOD_API_KEY") from None
        except error.QueryError as failure:
            message = " ".join(str(failure).split())
            raise LaunchError(f"RunPod API: {self._redact(message)}") from None
        except (requests.RequestException, KeyError, TypeError, ValueError) as failure:
            message = " ".join(f"{type(failure).__name__}: {failure}".split())
            raise LaunchError(f"RunPod API at {api_url()} failed: {self._redact(message)}") from None

    def gpu_offer(self, gpu_type: str, count: int, cloud: str) -> GpuOffer:
        """Look up ``gpu_type`` (id or display name) and its price; ValueError when unknown or not offered."""
        from runpod.api.queries import gpus

        known = self.query(gpus.QUERY_GPU_TYPES)["gpuTypes"] or []
        wanted = gpu_type.strip().lower()
        match = next((g for g in known if wanted in (g["id"].lower(), str(g.get("displayName", "")).lower())), None)
        if match is None:
            names = ", ".join(sorted(g["id"] for g in known)) or "none"
            raise InputError(f"unknown GPU type {gpu_type!r}; RunPod offers: {names}")
        detail = (self.query(gpus.generate_gpu_query(match["id"], count))["gpuTypes"] or [None])[0]
        if detail is None:
            raise InputError(f"GPU type {match['id']!r} has no offer right now")
        price = detail.get("securePrice" if cloud == "SECURE" else "communityPrice") or 0.0
        if price <= 0:
            raise InputError(f"{match['id']} is not offered in the {cloud.lower()} cloud; try --cloud "
                             f"{'community' if cloud == 'SECURE' else 'secure'}")
        max_count = int(detail.get("maxGpuCount") or count)
        if count > max_count:
            raise InputError(f"--gpus {count}: a {match['id']} pod has at most {max_count} GPUs")
        return GpuOffer(match["id"], detail.get("displayName") or match["id"], int(detail.get("memoryInGb") or 0),
                        float(price), max_count)

    def create(self, spec: PodSpec) -> str:
        """Create the pod; its id."""
        created = self.query(spec.mutation())["podFindAndDeployOnDemand"]
        if not created or not created.get("id"):
            raise LaunchError("RunPod API: no pod was created (no machine with that GPU type is free right now)")
        return str(created["id"])

    def find_pod(self, name: str) -> str | None:
        """The id of this account's pod called ``name``, if any (best effort: None when the API fails)."""
        from runpod.api.queries.pods import QUERY_POD

        try:
            pods = (self.query(QUERY_POD).get("myself") or {}).get("pods") or []
        except LaunchError:
            return None
        return next((str(p["id"]) for p in pods if p.get("name") == name), None)

    def pod(self, pod_id: str) -> dict[str, Any] | None:
        """The pod's record (status, cost per hour, ports), or None once it is gone."""
        from runpod.api.queries.pods import generate_pod_query

        return self.query(generate_pod_query(pod_id))["pod"]

    def wait_for_ssh(self, pod_id: str, timeout_s: float, poll_s: float = 5.0,
                     on_wait: Callable[[float], None] | None = None) -> tuple[SshEndpoint, float]:
        """Poll until the pod runs with a public SSH port; (endpoint, cost per hour). LaunchError on timeout."""
        started = time.monotonic()
        while True:
            record = self.pod(pod_id)
            if record is None:
                raise LaunchError(f"pod {pod_id} disappeared while starting")
            endpoint = public_ssh(record)
            if record.get("desiredStatus") == "RUNNING" and endpoint is not None:
                return endpoint, float(record.get("costPerHr") or 0.0)
            waited = time.monotonic() - started
            if waited >= timeout_s:
                raise LaunchError(f"pod {pod_id} had no public SSH endpoint after {timeout_s:g}s "
                                  f"(status {record.get('desiredStatus')})")
            if on_wait is not None:
                on_wait(waited)
            time.sleep(min(poll_s, max(0.1, timeout_s - waited)))

    def terminate(self, pod_id: str, attempts: int = 3) -> None:
        """Terminate the pod, retrying transient failures; LaunchError when every attempt failed."""
        from runpod.api.mutations.pods import generate_pod_terminate_mutation

        for attempt in range(attempts):
            try:
                self.query(generate_pod_terminate_mutation(pod_id))
                return
            except LaunchError:
                if attempt == attempts - 1:
                    raise
                time.sleep(2.0 * (attempt + 1))


def public_ssh(record: dict[str, Any]) -> SshEndpoint | None:
    """The public TCP mapping of the pod's port 22, if it has one yet."""
    runtime = record.get("runtime") or {}
    for port in runtime.get("ports") or []:
        if port.get("privatePort") == SSH_PORT and port.get("isIpPublic") and port.get("type") == "tcp":
            return SshEndpoint(str(port["ip"]), int(port["publicPort"]))
    return None
