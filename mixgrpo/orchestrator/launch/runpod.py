"""``mixgrpo launch runpod``: the same config on a RunPod GPU pod, driven from a laptop.

In order, one progress line each: validate the config here (the errors of
``mixgrpo train``); look up the GPU type and its price; create the pod (a key
pair made for this launch, its public half as the pod's PUBLIC_KEY); wait for a
public SSH endpoint; ship the wheel built from this checkout plus the resolved
config; start ``mixgrpo train`` detached from SSH; follow its log; pull the run
directory back; terminate the pod. ``guarded`` terminates the pod on every way
out (success, failure, cap, Ctrl-C, an exception) unless ``--keep-pod``; a
guard script on the pod removes it at the cap should the laptop be gone.
"""

from __future__ import annotations

import datetime
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from mixgrpo.config import Config, load_config
from mixgrpo.errors import InputError
from mixgrpo.orchestrator.launch import LaunchError
from mixgrpo.orchestrator.launch.follow import Console, follow, guarded
from mixgrpo.orchestrator.launch.package import build_wheel, project_root, wheel_command
from mixgrpo.orchestrator.launch.pod import CLOUDS, PodSpec, RunPodApi, preview_request
from mixgrpo.orchestrator.launch.remote import RemoteJob, poll_command
from mixgrpo.orchestrator.launch.secrets import (
    HF_TOKEN,
    REDACTED,
    Redactor,
    check_env_value,
    lookup,
    require_api_key,
)
from mixgrpo.orchestrator.launch.ssh import SshTarget, generate_key
from mixgrpo.orchestrator.launch.staging import staged_config
from mixgrpo.orchestrator.launch.state import KEY, LaunchState, launch_dir

DEFAULT_IMAGE = "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04"
DEFAULT_REMOTE_ROOT = "/workspace/mixgrpo"


def _env_pairs(text: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in text.split() if "=" in item)


@dataclass(frozen=True)
class LaunchOptions:
    """Everything ``mixgrpo launch runpod`` was asked for."""

    gpu_type: str
    config_path: Path | None = None
    overrides: tuple[str, ...] = ()
    gpus: int = 1
    cloud: str = "secure"
    image: str = DEFAULT_IMAGE
    max_hours: float = 4.0
    max_cost: float | None = None
    volume_gb: int = 0
    disk_gb: int = 50
    detach: bool = False
    keep_pod: bool = False
    dry_run: bool = False
    out: Path | None = None
    extras: tuple[str, ...] | None = None
    """Wheel extras installed on the pod; None: from the config (vllm for generator.backend=vllm)."""
    start_timeout_s: float = 900.0
    pull_every_s: float = 300.0
    poll_s: float = 3.0
    guard_margin_s: float = 600.0
    """The pod's own guard fires this long after the cap (time for the laptop's last pull)."""
    dotenv: Path | None = None
    # For images that already hold the dependencies (and for the tests, whose "pod" is this machine):
    remote_python: str | None = field(default_factory=lambda: os.environ.get("MIXGRPO_LAUNCH_REMOTE_PYTHON"))
    remote_root: str = field(default_factory=lambda: os.environ.get("MIXGRPO_LAUNCH_REMOTE_ROOT", DEFAULT_REMOTE_ROOT))
    remote_env: dict[str, str] = field(
        default_factory=lambda: _env_pairs(os.environ.get("MIXGRPO_LAUNCH_REMOTE_ENV", "")))


@dataclass(frozen=True)
class PreparedJob:
    """The validated job and what is shipped with it."""

    config: Config
    config_yaml: str
    files: dict[str, Path | bytes]


def prepare_job(options: LaunchOptions) -> PreparedJob:
    """Load and check the config exactly as ``mixgrpo train`` would, with cluster.gpus = the pod's GPUs.

    A config that names no ``cluster.placement`` runs ``auto`` on the pod: colocated when the pod
    has fewer GPUs than a disaggregated plan needs (``--gpus 1``: one GPU per learner rank).
    """
    from mixgrpo.orchestrator.driver import preflight
    from mixgrpo.orchestrator.placement import plan_slots

    overrides = [*options.overrides, f"cluster.gpus={options.gpus}"]
    config = load_config(options.config_path, overrides)
    if "placement" not in config.cluster.model_fields_set:
        config = load_config(options.config_path, [*overrides, "cluster.placement=auto"])
    if config.cluster.address:
        raise InputError("cluster.address is set: a RunPod launch starts its own Ray on the pod (unset it)")
    local = {"model.path": config.model.path.removeprefix("local-dir:"), "model.pretrained": config.model.pretrained}
    for field_name, source in local.items():  # a CLIP checkpoint file or local-dir: folder stays here too
        if source and not source.startswith("builtin:") and Path(source).expanduser().exists():
            raise InputError(f"{field_name} {source!r} is a local path the pod cannot see: use a Hugging Face "
                             "Hub id (HF_TOKEN for gated ones; kind clip: an open_clip tag or hf-hub:) or an "
                             "--image that holds it")
    preflight(config, runs_here=False)  # the pod installs the extras the config needs (required_extras)
    plan_slots(config, total_cpus=1.0)  # cluster.gpus too small for the placement's GPU actors
    config_yaml, files = staged_config(config)
    return PreparedJob(config, config_yaml, files)


def _gpu_plan(config: Config) -> str:
    """What runs on the pod's GPUs, e.g. "colocated: 1 learner rank(s) that also generate"."""
    from mixgrpo.orchestrator.placement import choose_placement

    placement, _ = choose_placement(config)
    if placement == "colocated":
        return f"colocated: {config.learner.ranks} learner rank(s) that also generate"
    return f"disaggregated: {config.generator.replicas} generator(s) + {config.learner.ranks} learner rank(s)"


def required_extras(config: Config) -> tuple[str, ...]:
    """The wheel extras the job needs: vllm for generator.backend=vllm, clip for a CLIP policy, and the
    extras of each reward channel kind (KIND_EXTRAS), sorted."""
    from mixgrpo.rewards.channels.base import KIND_EXTRAS

    needed = {"vllm"} if config.generator.backend == "vllm" else set()
    if config.model.kind == "clip":
        needed.add("clip")
    for channel in config.rewards:
        needed.update(KIND_EXTRAS.get(channel.kind, ()))
    return tuple(sorted(needed))


def remote_job(options: LaunchOptions, config: Config, name: str, wheel: str) -> RemoteJob:
    """How the job is installed and run on the pod (``--extras``, else ``required_extras``)."""
    extras = options.extras if options.extras is not None else required_extras(config)
    return RemoteJob(directory=f"{options.remote_root.rstrip('/')}/{name}", wheel=wheel,
                     python=options.remote_python or "python3", preinstalled=options.remote_python is not None,
                     extras=tuple(extras), env=dict(options.remote_env))


def launch_runpod(options: LaunchOptions) -> int:
    """Run a whole launch (or print it, with dry_run); the exit code (0 ok, 1 job failed, 3 cap, 130 Ctrl-C)."""
    if options.gpus < 1 or options.max_hours <= 0 or (options.max_cost is not None and options.max_cost <= 0):
        raise InputError("--gpus must be >= 1, --max-hours and --max-cost > 0")
    hf_token = lookup(HF_TOKEN, options.dotenv)
    if hf_token:
        check_env_value(HF_TOKEN, hf_token)
    api_key = None if options.dry_run else require_api_key(options.dotenv)
    redact = Redactor(api_key, hf_token)
    console = Console(redact)
    job = prepare_job(options)
    config = job.config
    console.step(1, f"config ok: {config.run.name}, {config.run.steps} steps, {_gpu_plan(config)} on "
                    f"{options.gpus} GPU(s)")
    name = f"{config.run.name}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    run_dir = (options.out or Path("runs") / name).resolve()
    if options.dry_run:
        return dry_run(options, job, name, hf_token is not None, redact, console)
    if run_dir.exists() and any(run_dir.iterdir()):
        raise InputError(f"{run_dir} already exists and is not empty; pass another --out")
    api = RunPodApi(api_key, redact)
    cloud = CLOUDS[options.cloud]
    offer = api.gpu_offer(options.gpu_type, options.gpus, cloud)
    state = LaunchState(name=name, run_dir=str(run_dir), gpu_type=offer.id, gpus=options.gpus, cloud=cloud,
                        image=options.image, price_per_hr=offer.price_per_gpu_hr * options.gpus,
                        max_hours=options.max_hours, max_cost=options.max_cost, keep_pod=options.keep_pod,
                        remote_dir=f"{options.remote_root.rstrip('/')}/{name}")
    console.step(2, f"GPU {offer.id} ({offer.memory_gb} GB), {options.cloud} cloud: ${offer.price_per_gpu_hr:.2f}"
                    f"/GPU/h x {options.gpus} = about ${state.price_per_hr:.2f}/h; cap ${state.cap_cost():.2f} "
                    f"({state.cap_seconds() / 3600:.2f} h)")
    state.save()
    public_key = generate_key(launch_dir(run_dir) / KEY)
    wheel = build_wheel(launch_dir(run_dir))
    env = {"PUBLIC_KEY": public_key, **({HF_TOKEN: hf_token} if hf_token else {})}
    spec = PodSpec(name=f"mixgrpo-{name}", image=options.image, gpu_type_id=offer.id, gpu_count=options.gpus,
                   cloud=cloud, volume_gb=options.volume_gb, disk_gb=options.disk_gb, env=env)
    remote = remote_job(options, config, name, wheel.name)
    return guarded(api, state, console, lambda: _create_and_run(api, state, spec, remote, job, wheel, options,
                                                                 console))


def _create_and_run(api: RunPodApi, state: LaunchState, spec: PodSpec, remote: RemoteJob, job: PreparedJob,
                    wheel: Path, options: LaunchOptions, console: Console) -> int:
    state.status, state.created_at = "creating", time.time()
    state.save()
    try:
        state.pod_id = api.create(spec)
    except LaunchError:
        state.pod_id = api.find_pod(spec.name)  # the request may have gone through after all
        raise
    finally:
        state.save()
    state.status = "starting"
    state.save()
    console.step(3, f"pod {state.pod_id} created: {spec.gpu_count} x {spec.gpu_type_id}, image {spec.image}")
    started = time.monotonic()
    endpoint, cost_per_hr = api.wait_for_ssh(state.pod_id, options.start_timeout_s, poll_s=min(5.0, options.poll_s * 2))
    state.ssh_host, state.ssh_port = endpoint.host, endpoint.port
    state.price_per_hr = cost_per_hr or state.price_per_hr
    state.save()
    ssh = state.ssh()
    ssh.wait_until_reachable(max(30.0, options.start_timeout_s - (time.monotonic() - started)))
    console.step(4, f"pod running after {time.monotonic() - started:.0f}s: ssh -i {ssh.key} -p {ssh.port} "
                    f"root@{ssh.host}; ${state.price_per_hr:.2f}/h")
    guard_s = max(0.0, state.deadline() - time.time()) + options.guard_margin_s
    files: dict[str, Path | bytes] = {wheel.name: wheel, "config.yaml": job.config_yaml.encode(),
                                      "job.sh": remote.job_script().encode(),
                                      "guard.sh": remote.guard_script(int(guard_s)).encode(), **job.files}
    ssh.upload(files, remote.directory)
    console.step(5, f"shipped {wheel.name} and config.yaml to {remote.directory}")
    pid = ssh.run(remote.start_command("job.sh")).strip()
    if not options.keep_pod:
        ssh.run(remote.start_command("guard.sh"))
    state.status = "running"
    state.save()
    if options.detach:
        state.status = "detached"
        state.save()
        _print_detached(state, console)
        return 0
    console.step(6, f"training started on the pod (pid {pid}); its log follows. Ctrl-C stops it, pulls the run "
                    "directory and terminates the pod")
    return follow(state, ssh, console, options.poll_s, options.pull_every_s)


def _print_detached(state: LaunchState, console: Console) -> None:
    deadline = datetime.datetime.fromtimestamp(state.deadline())
    console.step(6, f"training started; detached. The pod removes itself at the cap (${state.cap_cost():.2f}, "
                    f"{deadline:%Y-%m-%d %H:%M}) unless you stop it first.")
    for what, command in [("follow", "attach"), ("status", "status"), ("results", "fetch"), ("stop", "stop")]:
        console.note(f"{what:<8} mixgrpo launch {command} {state.run_dir}")


def dry_run(options: LaunchOptions, job: PreparedJob, name: str, with_hf_token: bool, redact: Redactor,
            console: Console) -> int:
    """Print the API requests, the files and the commands of a launch; create nothing."""
    from runpod.api.mutations.pods import generate_pod_terminate_mutation
    from runpod.api.queries import gpus
    from runpod.api.queries.pods import generate_pod_query

    env = {"PUBLIC_KEY": "<ssh-ed25519 public key generated for this launch>",
           **({HF_TOKEN: REDACTED} if with_hf_token else {})}
    cloud = CLOUDS[options.cloud]
    spec = PodSpec(name=f"mixgrpo-{name}", image=options.image, gpu_type_id=options.gpu_type, gpu_count=options.gpus,
                   cloud=cloud, volume_gb=options.volume_gb, disk_gb=options.disk_gb, env=env)
    remote = remote_job(options, job.config, name, "mixgrpo-<version>-py3-none-any.whl")
    ssh = SshTarget("<pod ip>", 0, Path("runs") / name / "launch" / KEY, Path("runs") / name / "launch" / "known_hosts")
    root = project_root()
    sections = [
        ("look up the GPU type and its price", preview_request(gpus.QUERY_GPU_TYPES, redact) + "\n\n"
         + preview_request(gpus.generate_gpu_query(options.gpu_type, options.gpus), redact)),
        ("create the pod", preview_request(spec.mutation(), redact)),
        ("wait for RUNNING with a public port 22", preview_request(generate_pod_query("<pod id>"), redact)),
        ("build the wheel", " ".join(wheel_command(root, Path("runs") / name / "launch"))),
        ("ship wheel, config.yaml, job.sh, guard.sh", " ".join(ssh.argv(f"mkdir -p {remote.directory} && tar -xf - -C "
                                                                       f"{remote.directory}")) + " < files.tar"),
        ("start the job and the cap guard", " ".join(ssh.argv(remote.start_command("job.sh")))),
        ("follow the log (every few seconds)", " ".join(ssh.argv(poll_command(remote.directory, 0)))),
        ("pull the run directory (every few minutes and at the end)",
         " ".join(ssh.argv(f"tar -C {remote.directory}/run -cf - .")) + f" | tar -xf - -C runs/{name}"),
        ("terminate the pod", preview_request(generate_pod_terminate_mutation("<pod id>"), redact)),
        ("config.yaml", job.config_yaml.strip()),
        ("job.sh", remote.job_script().strip()),
    ]
    print("dry run: nothing is created. A launch would:")
    for number, (title, body) in enumerate(sections, 1):
        print(f"\n--- {number}. {title}\n{redact(body)}")
    sys.stdout.flush()
    return 0

