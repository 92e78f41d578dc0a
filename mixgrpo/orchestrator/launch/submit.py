"""``mixgrpo submit``: the same config as a job on an existing Ray cluster, through Ray's Job Submission API.

The job's runtime_env carries this checkout's ``mixgrpo`` package (``py_modules``)
and a working directory holding only the resolved ``config.yaml`` (plus the
data file of a ``task.kind: file`` or ``image-classes`` config); the cluster's image provides the
dependencies. The entrypoint is ``mixgrpo train`` run by the cluster's
``python``; inside a job ``RAY_ADDRESS`` is set, so the driver joins the cluster
and places its actors by placement group (``cluster.strategy``).
"""

from __future__ import annotations

import asyncio
import datetime
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mixgrpo
from mixgrpo.config import Config, load_config
from mixgrpo.orchestrator.launch.staging import staged_config

DONE = {"SUCCEEDED", "FAILED", "STOPPED"}


@dataclass(frozen=True)
class JobSpec:
    """What is submitted."""

    submission_id: str
    entrypoint: str
    runtime_env: dict[str, Any]
    run_dir: str
    """The run directory as the job sees it (on the node that runs the driver)."""
    output_uri: str | None


def prepare_submission(config_path: Path | None, overrides: list[str], staging: Path,
                       python: str = "python") -> JobSpec:
    """Validate the config as ``mixgrpo train`` would and stage the job's working directory in ``staging``."""
    from mixgrpo.orchestrator.driver import preflight

    config: Config = load_config(config_path, overrides)
    preflight(config, runs_here=False)  # the job runs in the cluster's environment, not this one
    name = f"{config.run.name}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    config_yaml, files = staged_config(config)
    for name, source in files.items():
        if isinstance(source, bytes):
            (staging / name).write_bytes(source)
        else:
            shutil.copy2(source, staging / name)
    (staging / "config.yaml").write_text(config_yaml)
    # The working directory is unpacked under Ray's session files: outputs go to a lasting place instead.
    run_dir = config.run.out_dir or f"$HOME/mixgrpo-runs/{name}"
    runtime_env = {"working_dir": str(staging), "py_modules": [str(Path(mixgrpo.__file__).parent)],
                   "env_vars": {"PYTHONUNBUFFERED": "1"}}
    entrypoint = f'{python} -m mixgrpo.orchestrator.cli train --config config.yaml --out "{run_dir}"'
    return JobSpec(f"mixgrpo-{name}", entrypoint, runtime_env, run_dir, config.run.output_uri)


def submit(address: str, config_path: Path | None, overrides: list[str], follow: bool,
           python: str = "python", timeout_s: float | None = None) -> int:
    """Submit the job; with ``follow`` stream its logs and return 0 when it SUCCEEDED (else 1)."""
    from ray.job_submission import JobSubmissionClient

    with tempfile.TemporaryDirectory(prefix="mixgrpo-job-") as scratch:
        spec = prepare_submission(config_path, overrides, Path(scratch), python)
        client = JobSubmissionClient(address)
        job_id = _submit_when_ready(client, spec)
    print(f"submitted   {job_id} to {address}", flush=True)
    status = str(client.get_job_status(job_id).value)
    if follow:
        try:
            asyncio.run(_stream_logs(client, job_id, timeout_s))
        except KeyboardInterrupt:
            print(f"\nstopped following; the job keeps running (ray job stop {job_id} --address {address})")
            return 130
        status = _wait_done(client, job_id)
    _print_where(address, job_id, status, spec)
    return 0 if not follow or status == "SUCCEEDED" else 1


def _submit_when_ready(client: Any, spec: JobSpec, timeout_s: float = 120.0) -> str:
    """Submit, retrying while a freshly started head has no job agent yet (its dashboard answers first)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return client.submit_job(entrypoint=spec.entrypoint, runtime_env=spec.runtime_env,
                                     submission_id=spec.submission_id)
        except RuntimeError as error:
            if "No available agent" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(2.0)


async def _stream_logs(client: Any, job_id: str, timeout_s: float | None) -> None:
    async def stream() -> None:
        async for chunk in client.tail_job_logs(job_id):
            print(chunk, end="", flush=True)

    await asyncio.wait_for(stream(), timeout=timeout_s)


def _wait_done(client: Any, job_id: str, timeout_s: float = 60.0) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        status = str(client.get_job_status(job_id).value)
        if status in DONE or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


def _print_where(address: str, job_id: str, status: str, spec: JobSpec) -> None:
    print(f"job         {job_id}: {status}")
    print(f"run dir     {spec.run_dir} on the node that ran the job's driver")
    if spec.output_uri:
        print(f"copied to   {spec.output_uri.rstrip('/')}/{Path(spec.run_dir).name}")
    print(f"logs        ray job logs {job_id} --address {address}")
    print(f"stop        ray job stop {job_id} --address {address}")
    print(f"dashboard   {address.rstrip('/')}/#/jobs/{job_id}")
