"""`mixgrpo submit` against a real Ray head started here (dashboard on 127.0.0.1 only), outputs to a file URI."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from launch_fakes import free_port

from mixgrpo.orchestrator.cli import main
from mixgrpo.orchestrator.outputs import push_outputs
from mixgrpo.rundir import read_metrics

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def ray_head(tiny_model_cache):
    """`ray start --head --block` with its own temp dir (so no other ray.init() on this machine finds it)."""
    temp_dir = tempfile.mkdtemp(prefix="mgs-", dir="/tmp")
    port, dashboard, agent = free_port(), free_port(), free_port()  # the agent's default port may be taken
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", OMP_NUM_THREADS="1",
               RAY_TMPDIR=temp_dir, RAY_AUTH_MODE="disabled")  # a private test cluster on 127.0.0.1
    log = open(Path(temp_dir) / "head.log", "wb")
    head = subprocess.Popen(
        [str(VENV_BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard), "--include-dashboard", "true",
         "--dashboard-agent-listen-port", str(agent),
         "--num-cpus", "2", "--num-gpus", "0", "--temp-dir", temp_dir, "--disable-usage-stats"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2).read()
                break
            except urllib.error.HTTPError:  # 401 without Ray's auth token: up and answering
                break
            except OSError:
                assert head.poll() is None and time.monotonic() < deadline, (Path(temp_dir) / "head.log").read_text()
                time.sleep(0.5)
        yield address
    finally:
        head.terminate()  # `ray start --block` stops its own processes on SIGTERM
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        log.close()
        subprocess.run(["rm", "-rf", temp_dir], check=False)


def test_submit_runs_the_tiny_job_and_copies_outputs_to_the_uri(ray_head, tmp_path, capfd):
    code = main(["submit", "--address", ray_head, "--follow", "--python", sys.executable,
                 "--set", "run.steps=2", "--set", "task.prompts_per_step=4", "--set", "run.tensorboard=false",
                 "--set", f"run.out_dir={tmp_path / 'head-disk' / 'tiny'}",
                 "--set", f"run.output_uri=file://{tmp_path / 'shared'}"])
    out, err = capfd.readouterr()
    assert code == 0, out + err
    assert "SUCCEEDED" in out and "step    2/2" in out + err
    copied = tmp_path / "shared" / "tiny"
    assert f"copied to   file://{tmp_path / 'shared'}/tiny" in out
    assert [r["step"] for r in read_metrics(copied)] == [0, 1]
    assert (copied / "adapter" / "adapter_config.json").is_file()
    assert (copied / "checkpoints" / "latest").is_file() and (copied / "config.yaml").is_file()


def test_submit_runs_a_clip_classifier_job(ray_head, tmp_path, capfd):
    run_dir = tmp_path / "head-disk" / "clip"
    code = main(["submit", "--address", ray_head, "--follow", "--python", sys.executable,
                 "--config", "configs/clip-digits.yaml", "--set", "run.steps=2", "--set", "task.prompts_per_step=4",
                 "--set", "eval.every=0", "--set", "run.tensorboard=false", "--set", f"run.out_dir={run_dir}"])
    out, err = capfd.readouterr()
    assert code == 0, out + err
    assert "SUCCEEDED" in out
    assert [r["step"] for r in read_metrics(run_dir)] == [0, 1]
    assert (run_dir / "adapter" / "trained.safetensors").is_file()  # the CLIP policy's full fine-tune


def test_submit_to_nowhere_is_one_line(tmp_path, capfd, tiny_model_cache):
    code = main(["submit", "--address", f"http://127.0.0.1:{free_port()}", "--set", "run.steps=1"])
    err = capfd.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Ray job server at http://127.0.0.1:" in err


def test_push_outputs_copies_what_changed_and_never_half_written_files(tmp_path):
    run = tmp_path / "run-7"
    (run / "checkpoints" / ".writing-abc").mkdir(parents=True)
    (run / "checkpoints" / ".writing-abc" / "learner.pt").write_bytes(b"half")
    (run / "rollouts.parquet").mkdir()
    (run / "rollouts.parquet" / ".step-000001.parquet.tmp").write_bytes(b"half")
    (run / "rollouts.parquet" / "step-000000.parquet").write_bytes(b"part")
    (run / "metrics.jsonl").write_text('{"step": 0}\n')
    uri = f"file://{tmp_path / 'bucket'}"
    assert push_outputs(run, uri) == 2
    assert push_outputs(run, uri) == 0  # nothing changed
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 1}\n')
    assert push_outputs(run, str(tmp_path / "bucket")) == 1  # a plain path works too
    copied = tmp_path / "bucket" / "run-7"
    assert sorted(p.relative_to(copied).as_posix() for p in copied.rglob("*") if p.is_file()) == [
        "metrics.jsonl", "rollouts.parquet/step-000000.parquet"]
    assert (copied / "metrics.jsonl").read_text().count("\n") == 2
    assert push_outputs(run, None) == 0
    with pytest.raises(ValueError, match="run.output_uri"):
        push_outputs(run, "nosuchscheme://x/y")
