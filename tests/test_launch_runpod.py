"""`mixgrpo launch runpod` end to end against a fake RunPod API and a real sshd on this machine.

Everything is real apart from the remote machine: the official SDK talks HTTP to
a local GraphQL server, the launcher reaches the "pod" through OpenSSH, ships
the wheel it builds, runs `mixgrpo train` there detached, streams its log, pulls
the run directory and terminates the pod.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from launch_fakes import FakeRunPod, local_sshd, process_alive, stop_remote_jobs

from mixgrpo.orchestrator.cli import main
from mixgrpo.orchestrator.launch.runpod import LaunchOptions, launch_runpod
from mixgrpo.orchestrator.launch.secrets import Redactor, require_api_key
from mixgrpo.rundir import read_metrics

pytestmark = pytest.mark.skipif(not Path("/usr/sbin/sshd").exists(),
                                reason="needs openssh-server (.ci/run installs it)")

API_KEY = "rpa_TESTKEY_0123456789abcdef"
HF_SECRET = "hf_TESTTOKEN_fedcba9876543210"
H100 = "NVIDIA H100 80GB HBM3"
TINY = ["--set", "run.steps=3", "--set", "task.prompts_per_step=8", "--set", "run.tensorboard=false"]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    with local_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(scope="module")
def ray_tmp():
    """A short private Ray temp dir for the jobs "on the pod" (socket paths must stay short), removed at the end."""
    path = Path(tempfile.mkdtemp(prefix="mgl-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def pod_env(tmp_path, monkeypatch, sshd, tiny_model_cache, ray_tmp):
    """The launcher's environment: key, fake API, and a "pod" that is this machine with this venv."""
    remote_root = tmp_path / "pod"
    monkeypatch.setenv("RUNPOD_API_KEY", API_KEY)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("MIXGRPO_LAUNCH_REMOTE_PYTHON", sys.executable)
    monkeypatch.setenv("MIXGRPO_LAUNCH_REMOTE_ROOT", str(remote_root))
    monkeypatch.setenv("MIXGRPO_LAUNCH_REMOTE_ENV", " ".join([
        f"MIXGRPO_CACHE={os.environ['MIXGRPO_CACHE']}", "OMP_NUM_THREADS=1", f"RAY_TMPDIR={ray_tmp}"]))
    monkeypatch.chdir(tmp_path)
    yield remote_root
    stop_remote_jobs(remote_root)


def _api(sshd, pod_env: Path, **kwargs) -> FakeRunPod:
    return FakeRunPod(ssh_port=sshd.port, authorized_keys=sshd.authorized_keys, api_key=API_KEY,
                      remote_root=pod_env, **kwargs)


@pytest.fixture
def api(sshd, pod_env, monkeypatch):
    fake = _api(sshd, pod_env)
    monkeypatch.setenv("RUNPOD_API_BASE_URL", fake.url)
    yield fake
    fake.close()


def _launch(*args: str) -> int:
    return main(["launch", "runpod", "--gpu-type", H100, "--gpus", "2", "--start-timeout", "60", *args])


class _CmdlineWatch:
    """Scans every process's command line while a launch runs: no secret may ever be on one."""

    def __init__(self, *secrets: str) -> None:
        self.secrets, self.seen, self.scans = [s.encode() for s in secrets], [], 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    text = cmdline.read_bytes()
                except OSError:
                    continue
                self.seen += [cmdline.parent.name for s in self.secrets if s in text]
            self.scans += 1
            time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _files_containing(root: Path, secret: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_whole_launch_runs_the_job_pulls_the_run_dir_and_terminates_the_pod(pod_env, api, capfd, monkeypatch,
                                                                             tmp_path):
    monkeypatch.setenv("HF_TOKEN", HF_SECRET)
    watch = _CmdlineWatch(API_KEY, HF_SECRET)
    try:
        code = _launch("--image", "example/mixgrpo:1", "--cloud", "secure", "--out", "runs/tiny", *TINY)
    finally:
        watch.stop()
    out, err = capfd.readouterr()
    assert code == 0, out + err
    for number in range(1, 9):
        assert f"[{number}/8]" in out
    assert "step    3/3" in out + err  # the job's own progress, streamed from the pod
    (pod,) = api.pods.values()
    assert pod["gpu"] == H100 and pod["gpuCount"] == 2 and pod["imageName"] == "example/mixgrpo:1"
    assert pod["cloudType"] == "SECURE" and pod["ports"] == "22/tcp" and pod["startSsh"] and pod["supportPublicIp"]
    assert pod["env"]["PUBLIC_KEY"].startswith("ssh-ed25519 ") and pod["env"]["HF_TOKEN"] == HF_SECRET
    assert pod["terminated"]
    assert all(r["headers"]["Authorization"] == f"Bearer {API_KEY}" for r in api.requests)
    run_dir = tmp_path / "runs" / "tiny"
    assert [r["step"] for r in read_metrics(run_dir)] == [0, 1, 2]
    assert pq.read_table(run_dir / "rollouts.parquet").num_rows == 3 * 8 * 8
    assert (run_dir / "adapter" / "adapter_config.json").is_file()
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step-000003"
    shipped = (run_dir / "config.yaml").read_text()
    assert "gpus: 2" in shipped  # cluster.gpus = the pod's GPUs
    state = json.loads((run_dir / "launch" / "state.json").read_text())
    assert state["pod_id"] == pod["id"] and state["terminated"] and state["status"] == "finished"
    # The secrets: in the API request only, nowhere else.
    assert watch.scans > 10 and watch.seen == []
    for secret in (API_KEY, HF_SECRET):
        assert secret not in out + err
        assert _files_containing(run_dir, secret) == []
        assert _files_containing(pod_env, secret) == []
    assert list(pod_env.glob("*/site/mixgrpo/__init__.py"))  # the job ran the shipped wheel


def test_dry_run_prints_the_request_and_creates_nothing(pod_env, api, capfd, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", HF_SECRET)
    assert _launch("--dry-run", *TINY) == 0
    out, err = capfd.readouterr()
    assert api.requests == [] and api.pods == {}
    assert "podFindAndDeployOnDemand" in out and f'gpuTypeId: "{H100}"' in out and "gpuCount: 2" in out
    assert 'key: "HF_TOKEN", value: "<redacted>"' in out and "Bearer <redacted>" in out
    assert "setsid nohup bash job.sh" in out and "podTerminate" in out
    assert API_KEY not in out + err and HF_SECRET not in out + err
    assert not (tmp_path / "runs").exists()


def test_unknown_gpu_type_fails_before_anything_is_created(pod_env, api, capfd, tmp_path):
    code = main(["launch", "runpod", "--gpu-type", "NVIDIA Imaginary 1TB", "--gpus", "2", *TINY])
    err = capfd.readouterr().err
    assert code == 2
    assert err.strip().count("\n") == 0 and "unknown GPU type 'NVIDIA Imaginary 1TB'" in err and H100 in err
    assert api.queries("podFindAndDeployOnDemand") == [] and api.pods == {}
    assert not (tmp_path / "runs").exists()


def test_config_errors_are_the_ones_of_train_and_come_before_the_api(pod_env, api, capfd):
    assert _launch("--set", "learner.lora.rnk=4") == 2
    assert "config error at learner.lora.rnk: unknown key" in capfd.readouterr().err
    # disaggregated on purpose: one generator + one learner rank need two GPUs
    assert _launch("--gpus", "1", "--set", "cluster.placement=disaggregated") == 2
    assert "cluster.gpus=1 but the run needs 2 GPUs" in capfd.readouterr().err
    assert api.requests == []


def test_one_gpu_dry_run_plans_one_colocated_gpu(pod_env, api, capfd, tmp_path):
    code = main(["launch", "runpod", "--gpu-type", H100, "--gpus", "1", "--dry-run", *TINY])
    out, err = capfd.readouterr()
    assert code == 0, err
    assert "colocated: 1 learner rank(s) that also generate on 1 GPU(s)" in out
    assert "gpuCount: 1" in out and api.requests == [] and api.pods == {}
    assert "placement: auto" in out  # the shipped config leaves the choice to the pod's GPUs


def test_one_gpu_vllm_dry_run_plans_a_colocated_engine_even_where_vllm_is_not_installed(pod_env, api, capfd):
    code = main(["launch", "runpod", "--gpu-type", H100, "--gpus", "1", "--dry-run", *TINY,
                 "--set", "generator.backend=vllm"])  # vLLM does not import in the main venv; the pod installs it
    out, err = capfd.readouterr()
    assert code == 0, err
    assert "colocated: 1 learner rank(s) that also generate on 1 GPU(s)" in out and "gpuCount: 1" in out
    assert "vllm" in out and api.requests == []


def test_api_error_at_creation_is_one_line_and_leaves_no_pod(pod_env, sshd, capfd, monkeypatch):
    fake = _api(sshd, pod_env,
                fail_create="There are no longer any instances available with the requested specifications.")
    monkeypatch.setenv("RUNPOD_API_BASE_URL", fake.url)
    try:
        code = _launch(*TINY)
    finally:
        fake.close()
    err = capfd.readouterr().err
    assert code == 1
    assert err.strip() == ("mixgrpo: error: RunPod API: There are no longer any instances available with the "
                           "requested specifications.")
    assert fake.pods == {} and fake.queries("myself")  # it looked for a pod the failed request might have made
    assert fake.queries("podTerminate") == []


def test_pod_without_ssh_endpoint_times_out_and_is_terminated(pod_env, sshd, capfd, monkeypatch):
    fake = _api(sshd, pod_env, polls_before_running=10**6)
    monkeypatch.setenv("RUNPOD_API_BASE_URL", fake.url)
    try:
        code = main(["launch", "runpod", "--gpu-type", H100, "--gpus", "2", "--start-timeout", "2", *TINY])
    finally:
        fake.close()
    err = capfd.readouterr().err
    assert code == 1 and "had no public SSH endpoint after 2s" in err
    (pod,) = fake.pods.values()
    assert pod["terminated"]


def test_sigint_stops_the_job_pulls_and_terminates_the_pod(pod_env, api, tmp_path):
    env = dict(os.environ, RUNPOD_API_BASE_URL=api.url, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "mixgrpo.orchestrator.cli", "launch", "runpod", "--gpu-type", H100, "--gpus", "2",
         "--out", "runs/interrupted", "--set", "run.steps=1000"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while not any("[6/8]" in line for line in lines) and time.monotonic() < deadline:
        assert process.poll() is None, "".join(lines)
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the launcher and its ssh children alike
    code = process.wait(timeout=120)
    reader.join(timeout=10)
    output = "".join(lines)
    assert code == 130, output
    assert "interrupted" in output and "[7/8] pulled the run directory" in output and "[8/8]" in output
    (pod,) = api.pods.values()
    assert pod["terminated"]
    state = json.loads((tmp_path / "runs" / "interrupted" / "launch" / "state.json").read_text())
    assert state["status"] == "interrupted" and state["terminated"] and state["last_pull"] is not None
    assert not process_alive(next(pod_env.glob("*/job.pid")), "job.sh")
    assert not process_alive(next(pod_env.glob("*/guard.pid")), "guard.sh")


def test_detach_status_then_attach_stops_at_the_cost_cap_after_pulling(pod_env, sshd, capfd, monkeypatch,
                                                                        tmp_path):
    fake = _api(sshd, pod_env, cost_per_hr=360.0)  # $0.10 a second
    monkeypatch.setenv("RUNPOD_API_BASE_URL", fake.url)
    run_dir = tmp_path / "runs" / "capped"
    try:
        assert _launch("--detach", "--max-cost", "2.5", "--out", "runs/capped", "--set", "run.steps=1000") == 0
        out = capfd.readouterr().out
        assert f"mixgrpo launch attach {run_dir}" in out and "The pod removes itself at the cap ($2.50" in out
        (pod,) = fake.pods.values()
        assert not pod["terminated"]
        assert json.loads((run_dir / "launch" / "state.json").read_text())["status"] == "detached"
        assert main(["launch", "status", str(run_dir)]) == 0
        status = capfd.readouterr().out
        assert f"pod       {pod['id']} RUNNING" in status and "job       running" in status
        code = main(["launch", "attach", str(run_dir)])
    finally:
        fake.close()
    out, err = capfd.readouterr()
    assert code == 3, out + err
    assert "cap reached" in out and "mixgrpo launch: installing" in out  # the log, re-streamed from its start
    assert pod["terminated"]
    state = json.loads((run_dir / "launch" / "state.json").read_text())
    assert state["status"] == "capped" and state["terminated"]
    assert (run_dir / "config.yaml").is_file()  # pulled before the pod went away
    terminated_at = next(r["time"] for r in fake.requests if "podTerminate" in r["query"])
    assert state["last_pull"] < terminated_at
    assert terminated_at - state["created_at"] < 25 + 10  # $2.50 at $0.10/s, plus the last pull
    assert not process_alive(next(pod_env.glob("*/job.pid")), "job.sh")
    assert not process_alive(next(pod_env.glob("*/guard.pid")), "guard.sh")


def test_the_pod_enforces_the_cap_itself_when_the_laptop_is_gone(pod_env, api, tmp_path, capfd):
    fakebin = tmp_path / "fakebin"
    fakebin.mkdir()
    record = tmp_path / "runpodctl.calls"
    (fakebin / "runpodctl").write_text(f'#!/bin/sh\necho "$@" >> {record}\n')
    (fakebin / "runpodctl").chmod(0o755)
    env = dict(LaunchOptions(gpu_type=H100).remote_env, RUNPOD_POD_ID="pod001",
               PATH=f"{fakebin}:/usr/local/bin:/usr/bin:/bin")
    options = LaunchOptions(gpu_type=H100, gpus=2, detach=True, max_hours=3 / 3600, guard_margin_s=0.0,
                            overrides=("run.steps=1000",), out=Path("runs/gone"), remote_env=env)
    assert launch_runpod(options) == 0  # the laptop leaves here
    deadline = time.monotonic() + 60
    while not record.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert record.read_text().split() == ["remove", "pod", "pod001"]
    assert not process_alive(next(pod_env.glob("*/job.pid")), "job.sh")
    assert "cap reached on the pod" in next(pod_env.glob("*/train.log")).read_text()


def test_api_key_comes_from_a_dotenv_file_and_a_missing_one_is_named_not_shown(tmp_path, monkeypatch):
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="RUNPOD_API_KEY is not set") as missing:
        require_api_key()
    assert "rpa_" not in str(missing.value)
    (tmp_path / ".env").write_text(f"# keys\nexport RUNPOD_API_KEY='{API_KEY}'\nHF_TOKEN=\n")
    assert require_api_key() == API_KEY
    assert Redactor(API_KEY)(f"Bearer {API_KEY}!") == "Bearer <redacted>!"


def test_clip_weights_on_this_machine_are_refused_before_the_api(tmp_path):
    from mixgrpo.errors import InputError
    from mixgrpo.orchestrator.launch.runpod import prepare_job

    weights = tmp_path / "vit-b-32.safetensors"
    weights.write_bytes(b"")
    cases = {("model.path=ViT-B-32", f"model.pretrained={weights}"): "model.pretrained",
             (f"model.path=local-dir:{tmp_path}",): "model.path"}
    for overrides, field_name in cases.items():
        options = LaunchOptions(gpu_type=H100, config_path=Path("configs/clip-digits.yaml"), overrides=overrides)
        with pytest.raises(InputError, match=rf"^{field_name} '.+' is a local path the pod cannot see"):
            prepare_job(options)


def test_the_pod_installs_the_extras_the_config_needs():
    from mixgrpo.config import load_config
    from mixgrpo.orchestrator.launch.runpod import required_extras

    assert required_extras(load_config(None)) == ()  # rule channels, HF backend: the bare wheel
    assert required_extras(load_config("configs/clip-digits.yaml")) == ("clip",)
    assert required_extras(load_config("configs/svg-poster.yaml")) == ("clip", "rewards")
    assert required_extras(load_config(None, ["generator.backend=vllm"])) == ("vllm",)


def test_the_job_script_installs_the_wheel_with_its_extras():
    from mixgrpo.orchestrator.launch.remote import RemoteJob

    script = RemoteJob(directory="/workspace/x", wheel="mixgrpo-0.1.0-py3-none-any.whl",
                       extras=("clip", "rewards")).job_script()
    assert "pip install --quiet --no-input --root-user-action=ignore './mixgrpo-0.1.0-py3-none-any.whl[clip,rewards]'" \
        in script
