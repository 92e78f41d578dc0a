"""Ctrl-C and SIGTERM sent to a real ``mixgrpo train`` process, and TensorBoard after a resume.

The first signal finishes the step, writes a checkpoint, prints one line and exits 130 (SIGINT) or
143 (SIGTERM); a second one exits at once. The resumed run matches an uninterrupted one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
from harness import kill
from ray_helpers import TESTS_DIR
from test_driver_kill import SETS, _train
from test_first_hour import tensorboard_scalars

from mixgrpo.orchestrator.checkpoint import load_latest_checkpoint
from mixgrpo.rundir import read_metrics

pytestmark = pytest.mark.faults

LONG_RUN = [*SETS, "run.steps=300"]  # later overrides win


def _start(run_dir: Path, extra_sets: tuple[str, ...] = (), stderr=subprocess.PIPE) -> subprocess.Popen:
    """``mixgrpo train`` of 300 steps in its own session (a terminal's Ctrl-C reaches the whole group)."""
    command = [sys.executable, "-m", "mixgrpo.orchestrator.cli", "train", "--out", str(run_dir)]
    for item in [*LONG_RUN, *extra_sets]:
        command += ["--set", item]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, text=True,
                            start_new_session=True, env=env)  # PYTHONPATH: the reward actors import hostile_rewards


def _wait_for(condition, process: subprocess.Popen, failure: str, timeout_s: float = 120) -> None:
    """Poll ``condition`` while ``process`` runs (two SIGINTs sent back to back reach Python as one)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert process.poll() is None, failure
        assert time.monotonic() < deadline, failure
        time.sleep(0.05)


def _wait_for_steps(process: subprocess.Popen, run_dir: Path, count: int, stderr_path: Path | None = None) -> None:
    """Poll until ``count`` steps are recorded (generous deadline: the machine is shared)."""
    deadline = time.monotonic() + 600
    while len(read_metrics(run_dir)) < count:
        if process.poll() is not None:
            stderr = stderr_path.read_text() if stderr_path else process.communicate()[1]
            raise AssertionError(f"the run ended with {process.returncode}: {stderr[-3000:]}")
        assert time.monotonic() < deadline, "the run recorded too few steps in 10 minutes"
        time.sleep(0.2)


def _rows_by_step(run_dir: Path) -> dict[int, list[int]]:
    table = pq.read_table(run_dir / "rollouts.parquet")
    rows: dict[int, list[int]] = {}
    for step, prompt_id in zip(table.column("step").to_pylist(), table.column("prompt_id").to_pylist()):
        rows.setdefault(step, []).append(prompt_id)
    return rows


def test_ctrl_c_checkpoints_prints_one_line_exits_130_and_resumes_like_an_uninterrupted_run(
        fault_plan, tiny_model_cache, tmp_path):
    fault_plan.arm()
    run_dir = tmp_path / "run"
    process = _start(run_dir)
    _wait_for_steps(process, run_dir, 3)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 130, stderr[-3000:]
    stopped_at = len(read_metrics(run_dir))
    assert stderr.strip().splitlines()[-1] == (
        f"mixgrpo: interrupted at step {stopped_at}; resume with: mixgrpo train --resume {run_dir}")
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert load_latest_checkpoint(run_dir).next_step == stopped_at

    total = stopped_at + 2
    resumed = _train(["--resume", str(run_dir)], extra_sets=(f"run.steps={total}",))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    reference_dir = tmp_path / "uninterrupted"
    reference = _train(["--out", str(reference_dir)], extra_sets=(f"run.steps={total}",))
    assert reference.returncode == 0, reference.stderr[-3000:]

    rows, expected = read_metrics(run_dir), read_metrics(reference_dir)
    assert [r["step"] for r in rows] == [r["step"] for r in expected] == list(range(total))
    assert [r["policy_version"] for r in rows] == [r["policy_version"] for r in expected]
    assert _rows_by_step(run_dir) == _rows_by_step(reference_dir)  # same prompts, same order, every step


def test_sigterm_checkpoints_and_exits_143(fault_plan, tiny_model_cache, tmp_path):
    fault_plan.arm()
    run_dir = tmp_path / "run"
    process = _start(run_dir)
    _wait_for_steps(process, run_dir, 2)
    process.terminate()  # SIGTERM to the driver only, as a scheduler or `kill` sends it
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 143, stderr[-3000:]
    stopped_at = len(read_metrics(run_dir))
    assert stderr.strip().splitlines()[-1].startswith(f"mixgrpo: interrupted at step {stopped_at}; resume with:")
    assert load_latest_checkpoint(run_dir).next_step == stopped_at


def test_a_second_ctrl_c_exits_at_once_and_leaves_no_ray_process(fault_plan, tiny_model_cache, tmp_path):
    fault_plan.arm()
    run_dir, gate = tmp_path / "run", tmp_path / "gate"
    gated = ("rewards=[{name: correct, kind: numeric_match}, {name: gate, kind: python, timeout_s: 300,"
             f" options: {{callable: 'hostile_rewards:blocks_once_gated', kwargs: {{gate: '{gate}'}}}}}}]")
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("w") as stderr_file:
        process = _start(run_dir, (gated,), stderr=stderr_file)
        _wait_for_steps(process, run_dir, 2, stderr_path)
        children = psutil.Process(process.pid).children(recursive=True)
        assert children  # Ray's processes: GCS, raylet, workers
        gate.touch()  # the next scoring call blocks: the step in flight cannot end before the second signal
        _wait_for(lambda: Path(f"{gate}.entered").exists(), process, "the gated reward call never started")
        os.killpg(process.pid, signal.SIGINT)
        _wait_for(lambda: "stopping after the current step" in stderr_path.read_text(), process,
                  "the first SIGINT was never acknowledged")
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=120)
    stderr = stderr_path.read_text()
    assert process.returncode == 130, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == "mixgrpo: SIGINT again: exiting now, without a checkpoint"
    _, alive = psutil.wait_procs(children, timeout=60)  # they share the driver's fate
    assert alive == [], [p.name() for p in alive]


def test_tensorboard_after_a_resume_holds_each_step_once(fault_plan, tiny_model_cache, tmp_path):
    run_dir = tmp_path / "run"
    fault_plan.arm(kill("driver", at="step_end", step=2))  # steps 0-2 recorded, checkpoint at 2
    killed = _train(["--out", str(run_dir)], extra_sets=("run.tensorboard=true",))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = _train(["--resume", str(run_dir)], extra_sets=("run.tensorboard=true",))  # replays step 2
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    for tag in ("reward/correct", "policy_version"):
        assert [step for step, _ in tensorboard_scalars(run_dir, tag)] == list(range(6)), tag
    versions = [value for _, value in tensorboard_scalars(run_dir, "policy_version")]
    assert versions == [r["policy_version"] for r in read_metrics(run_dir)]
