"""A user's first hour: honest errors, prompts longer than the context, output directories, input messages,
TensorBoard after a resume. Everything here fails (or is checked) before Ray starts."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from mixgrpo.config import load_config
from mixgrpo.errors import InputError
from mixgrpo.orchestrator.cli import main
from mixgrpo.orchestrator.metrics import RunRecorder
from mixgrpo.orchestrator.prompt_lengths import load_task

CLI = [sys.executable, "-m", "mixgrpo.orchestrator.cli"]


def _fails_early(args: list[str], capsys, expected: str) -> str:
    assert main(args) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and expected in error, error
    assert not ray.is_initialized()
    return error


# --- 15.3 honest errors --------------------------------------------------------------------------

BUG = """
import sys
import mixgrpo.orchestrator.prompt_lengths as lengths

def make_task(*args, **kwargs):
    raise ValueError("a bug deep inside")

lengths.make_task = make_task  # a ValueError that is nobody's input: the kind of bug 15.3 is about
from mixgrpo.orchestrator.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_bug_keeps_its_traceback_and_exits_1(tiny_model_cache, tmp_path):
    done = subprocess.run([sys.executable, "-c", BUG, "train", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback (most recent call last)" in done.stderr
    assert done.stderr.strip().splitlines()[-1] == "ValueError: a bug deep inside"
    assert "mixgrpo: error:" not in done.stderr


def test_input_error_is_one_line_and_debug_shows_its_traceback():
    plain = subprocess.run([*CLI, "train", "--set", "learner.lr=fast"], capture_output=True, text=True, timeout=300)
    assert plain.returncode == 2
    assert plain.stderr.strip().splitlines() == [
        "mixgrpo: error: config error at learner.lr: Input should be a valid number, got str 'fast'"]
    debug = subprocess.run([*CLI, "--debug", "train", "--set", "learner.lr=fast"],
                           capture_output=True, text=True, timeout=300)
    assert debug.returncode == 2
    assert "Traceback (most recent call last)" in debug.stderr and "ConfigError" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == plain.stderr.strip()


# --- 17.3 prompts longer than the context ---------------------------------------------------------

LONG = "1+2=" * 5000  # 20,000 characters


def _long_prompt_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    rows = [{"prompt": "3+4=", "answer": "7"}, {"prompt": LONG, "answer": "3"}, {"prompt": "1+1=", "answer": "2"}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _file_config_path(path: Path) -> Path:
    """A job on the prompt file ``path`` (every prompt trained on, 8 new tokens as in the default job)."""
    config = path.with_name("job.yaml")
    config.write_text(f"task: {{kind: file, path: {path}, prompts_per_step: 2}}\n"
                      "generator: {max_new_tokens: 8}\n"
                      "rewards:\n  - {name: correct, kind: numeric_match}\n")
    return config


def _file_config(path: Path, *overrides: str):
    return load_config(_file_config_path(path), list(overrides))


def test_overlong_prompt_is_dropped_counted_and_logged_with_its_id(tiny_model_cache, tmp_path, caplog):
    path = _long_prompt_file(tmp_path)
    with caplog.at_level(logging.WARNING, logger="mixgrpo.tasks"):
        task = load_task(_file_config(path))
    assert task.pool.prompt_ids.tolist() == [0, 2]
    assert task.pool.prompts == ["3+4=", "1+1="]
    assert task.metrics == {"prompts/overlong_dropped": 1.0}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    # the tiny model's context is 128 tokens, the default job generates up to 8: 120 tokens per prompt
    assert f"{path}: 1 of 3 prompts exceed task.max_prompt_tokens=120 (id 1: " in warnings[0]
    assert warnings[0].endswith("dropped")


def test_overlong_prompt_truncated_on_the_left_keeps_its_end(tiny_model_cache, tmp_path):
    task = load_task(_file_config(_long_prompt_file(tmp_path), "task.overlong_prompts=truncate_left",
                                  "task.max_prompt_tokens=50"))
    kept = task.pool.prompts[1]
    assert LONG.endswith(kept) and 0 < len(kept) < 200
    assert task.pool.prompts[0] == "3+4=" and task.metrics == {"prompts/overlong_truncated": 1.0}
    from mixgrpo.actors.models import encode_prompts, load_tokenizer

    assert len(encode_prompts(load_tokenizer(tiny_model_cache), [kept], "auto")[0]) <= 50


def test_overlong_prompt_with_policy_error_fails_before_ray(tiny_model_cache, tmp_path, capsys):
    path = _long_prompt_file(tmp_path)
    error = _fails_early(["train", "--config", str(_file_config_path(path)),
                          "--set", "task.overlong_prompts=error", "--out", str(tmp_path / "run")],
                         capsys, f"{path}: 1 of 3 prompts exceed task.max_prompt_tokens=120 (id 1: ")
    assert error.endswith("set task.overlong_prompts=drop or truncate_left")
    assert not (tmp_path / "run").exists()


def test_completion_budget_larger_than_the_context_is_an_input_error(tiny_model_cache):
    with pytest.raises(InputError, match="generator.max_new_tokens=200 leaves no room for a prompt"):
        load_task(load_config(None, ["generator.max_new_tokens=200"]))


# --- 17.5 output directories ---------------------------------------------------------------------

@pytest.fixture
def read_only_mount(tmp_path):
    """A real read-only filesystem (tmpfs mounted ro): permission bits do not stop root, this does."""
    mount_point = tmp_path / "ro"
    mount_point.mkdir()
    if shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount_point)], capture_output=True).returncode:
        pytest.skip("cannot mount a read-only tmpfs here (needs CAP_SYS_ADMIN)")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


@pytest.fixture
def immutable_dir(tmp_path):
    """A directory nobody, root included, may write in (chattr +i)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode:
        pytest.skip("chattr +i is not supported on this filesystem")
    yield locked
    subprocess.run(["chattr", "-i", str(locked)], check=True)


def test_out_on_a_read_only_filesystem(read_only_mount, capsys):
    out = read_only_mount / "runs" / "a"
    _fails_early(["train", "--out", str(out)], capsys,
                 f"run directory {out}: cannot write in {read_only_mount} (Read-only file system)")


def test_out_in_a_directory_without_write_permission(immutable_dir, capsys):
    out = immutable_dir / "run"
    _fails_early(["train", "--out", str(out)], capsys,
                 f"run directory {out}: cannot write in {immutable_dir} (Operation not permitted)")


def test_out_that_is_an_existing_file(tmp_path, capsys):
    out = tmp_path / "run"
    out.write_text("not a directory")
    _fails_early(["train", "--out", str(out)], capsys, f"run directory {out} exists and is not a directory")
    _fails_early(["train", "--out", str(out / "sub")], capsys,
                 f"run directory {out / 'sub'} is inside {out}, which exists and is not a directory")


def test_resume_of_a_directory_that_is_not_a_run(tmp_path, capsys):
    _fails_early(["train", "--resume", str(tmp_path)], capsys, f"--resume {tmp_path}: not a run directory")


# --- 17.6 TensorBoard after a resume -------------------------------------------------------------

def tensorboard_scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of ``tag`` as TensorBoard shows them (EventAccumulator honours purge markers)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


def test_tensorboard_drops_the_steps_a_resume_replaces(tmp_path):
    def write(start: int, stop: int, offset: float) -> None:
        recorder = RunRecorder(tmp_path, ["a"], total_steps=30, tensorboard=True, progress=False)
        recorder.truncate_from(start)
        for step in range(start, stop):
            recorder.record(step, {"reward/a": step + offset}, pa.table({"step": [step]}))
        recorder.close()

    write(0, 25, offset=0.0)  # a run killed after step 24, last checkpoint at step 20
    write(20, 30, offset=1000.0)  # --resume from that checkpoint: steps 20-24 again, then on
    scalars = tensorboard_scalars(tmp_path, "reward/a")
    assert [step for step, _ in scalars] == list(range(30))
    assert [value for _, value in scalars] == [float(s) for s in range(20)] + [s + 1000.0 for s in range(20, 30)]


# --- 17.7 input messages -------------------------------------------------------------------------

def test_prompt_row_of_the_wrong_type_names_line_column_and_type(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "1+1="}\n\n{"prompt": 3}\n')
    _fails_early(["train", "--set", "task.kind=file", "--set", f"task.path={path}"], capsys,
                 f"{path}: line 3: 'prompt' must be a non-empty string, got int")
    path.write_text('{"prompt": "1+1="}\n{"prompt": null}\n')
    _fails_early(["train", "--set", "task.kind=file", "--set", f"task.path={path}"], capsys,
                 f"{path}: line 2: 'prompt' must be a non-empty string, got null")


def test_parquet_prompt_of_the_wrong_type_names_row_and_arrow_type(tmp_path, capsys):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"prompt": pa.array([1.5, 2.5])}), path)
    _fails_early(["train", "--set", "task.kind=file", "--set", f"task.path={path}"], capsys,
                 f"{path}: 'prompt' must be a non-empty string, got Arrow type double")
    pq.write_table(pa.table({"prompt": ["1+1=", ""]}), path)
    _fails_early(["train", "--set", "task.kind=file", "--set", f"task.path={path}"], capsys,
                 f"{path}: row index 1: 'prompt' must be a non-empty string, got an empty string")


def test_empty_config_file_and_a_directory_as_config(tmp_path, capsys):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    _fails_early(["train", "--config", str(empty)], capsys, f"config file {empty} is empty")
    _fails_early(["train", "--config", str(tmp_path)], capsys, f"config file {tmp_path} is a directory")


def test_numbers_in_the_config_are_strict(tmp_path, capsys):
    config = tmp_path / "quoted.yaml"
    config.write_text("rewards:\n  - {name: correct, kind: numeric_match, weight: '2'}\n")
    _fails_early(["train", "--config", str(config)], capsys,
                 "config error at rewards.0.weight: Input should be a valid number, got str '2'")
    _fails_early(["train", "--set", "run.steps='40'"], capsys, "config error at run.steps")
    assert load_config(None, ["rewards.correct.weight=2"]).rewards[0].weight == 2.0  # --set values are YAML
    assert load_config(None, ["learner.lr=2e-5"]).learner.lr == 2e-5
