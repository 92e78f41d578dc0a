"""Tests of atomic checkpoints and of the run recorder (metrics.jsonl, rollouts.parquet, plots)."""

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from mixgrpo.orchestrator.checkpoint import load_latest_checkpoint, save_checkpoint
from mixgrpo.orchestrator.metrics import (
    RunRecorder,
    StageTimer,
    plot_rewards,
    summary_table,
)
from mixgrpo.rundir import read_metrics


def learner_state(value: float, version: int) -> dict:
    return {
        "adapter": {"layer.lora_A.weight": torch.full((2, 3), value), "layer.lora_B.weight": torch.zeros(3, 2)},
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]},
        "version": version,
    }


def test_no_checkpoint_gives_none(tmp_path):
    assert load_latest_checkpoint(tmp_path) is None
    (tmp_path / "checkpoints").mkdir()
    assert load_latest_checkpoint(tmp_path) is None


def test_save_then_load_latest_returns_the_newest(tmp_path):
    first = save_checkpoint(tmp_path, 10, learner_state(1.0, 10))
    second = save_checkpoint(tmp_path, 20, learner_state(2.0, 20))
    assert first == tmp_path / "checkpoints" / "step-000010"
    assert second == tmp_path / "checkpoints" / "step-000020"
    assert (tmp_path / "checkpoints" / "latest").read_text() == "step-000020"
    loaded = load_latest_checkpoint(tmp_path)
    assert loaded.next_step == 20
    assert loaded.path == second
    assert loaded.learner_state["version"] == 20
    assert torch.equal(loaded.learner_state["adapter"]["layer.lora_A.weight"], torch.full((2, 3), 2.0))
    assert loaded.learner_state["optimizer"] == {"state": {}, "param_groups": [{"lr": 0.1}]}
    # both checkpoints stay, no staging directory is left behind
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["latest", "step-000010", "step-000020"]


def test_saving_the_same_step_again_replaces_it(tmp_path):
    save_checkpoint(tmp_path, 5, learner_state(1.0, 5))
    save_checkpoint(tmp_path, 5, learner_state(3.0, 6))
    loaded = load_latest_checkpoint(tmp_path)
    assert loaded.next_step == 5
    assert loaded.learner_state["version"] == 6
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step-000005"]


def test_interrupted_write_leaves_previous_checkpoint_loadable(tmp_path):
    save_checkpoint(tmp_path, 10, learner_state(1.0, 10))
    root = tmp_path / "checkpoints"
    # a crash while writing step 20: half-written staging dir, and a complete step dir never pointed at
    staging = root / ".writing-xyz"
    staging.mkdir()
    (staging / "learner.pt").write_bytes(b"\x00garbage, truncated")
    (staging / "driver.json").write_text('{"next_st')
    (root / ".latest.abc").write_text("step-0000")
    loaded = load_latest_checkpoint(tmp_path)
    assert loaded.next_step == 10
    assert loaded.path == root / "step-000010"
    assert torch.equal(loaded.learner_state["adapter"]["layer.lora_A.weight"], torch.full((2, 3), 1.0))

    # the run resumes and checkpoints again; the leftovers do not get in the way
    save_checkpoint(tmp_path, 20, learner_state(2.0, 20))
    loaded = load_latest_checkpoint(tmp_path)
    assert loaded.next_step == 20
    assert loaded.learner_state["version"] == 20


def test_unreferenced_newer_checkpoint_is_ignored(tmp_path):
    save_checkpoint(tmp_path, 10, learner_state(1.0, 10))
    save_checkpoint(tmp_path, 20, learner_state(2.0, 20))
    # crash after the rename but before `latest` moved: the pointer still names step 10
    (tmp_path / "checkpoints" / "latest").write_text("step-000010")
    loaded = load_latest_checkpoint(tmp_path)
    assert loaded.next_step == 10
    assert loaded.learner_state["version"] == 10


# --- RunRecorder -------------------------------------------------------------------------------

CHANNELS = ["correct", "length"]


def rollouts(step: int, n: int = 3) -> pa.Table:
    return pa.table({
        "step": pa.array([step] * n, type=pa.int64()),
        "completion": [f"s{step}-{i}" for i in range(n)],
        "reward_correct": pa.array([1.0, None, 0.0][:n], type=pa.float64()),
    })


def metrics(step: int) -> dict:
    return {
        "reward/correct": 0.25 + 0.5 * step,
        "reward/length": -1.0,
        "null_rate/correct": 0.5,
        "null_rate/length": 0.0,
        "time/step": 2.0,
        "time/generate": 1.0,
        "time/learn": 0.5,
        "time/reward": 0.25,
        "time/mixer": 0.0,
        "time/broadcast": 0.125,
        "time/other": 0.125,
        "loss": float("nan"),
    }


def recorded_run(tmp_path, steps: int = 2, **kwargs) -> RunRecorder:
    stream = io.StringIO()
    recorder = RunRecorder(tmp_path, CHANNELS, total_steps=4, tensorboard=False, stream=stream, **kwargs)
    for step in range(steps):
        recorder.record(step, metrics(step), rollouts(step))
    return recorder


def test_record_writes_metrics_lines_and_rollout_parts(tmp_path):
    recorder = recorded_run(tmp_path)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first == {
        "step": 0, "reward/correct": 0.25, "reward/length": -1.0, "null_rate/correct": 0.5,
        "null_rate/length": 0.0, "time/step": 2.0, "time/generate": 1.0, "time/learn": 0.5,
        "time/reward": 0.25, "time/mixer": 0.0, "time/broadcast": 0.125, "time/other": 0.125, "loss": None,
    }
    assert json.loads(lines[1])["reward/correct"] == 0.75
    parts = sorted(p.name for p in (tmp_path / "rollouts.parquet").iterdir())
    assert parts == ["step-000000.parquet", "step-000001.parquet"]
    table = pq.read_table(tmp_path / "rollouts.parquet").sort_by("completion")
    assert table.num_rows == 6
    assert table.column("completion").to_pylist() == ["s0-0", "s0-1", "s0-2", "s1-0", "s1-1", "s1-2"]
    assert table.column("reward_correct").to_pylist() == [1.0, None, 0.0, 1.0, None, 0.0]
    assert table.column("step").to_pylist() == [0, 0, 0, 1, 1, 1]
    assert [row["step"] for row in read_metrics(tmp_path)] == [0, 1]
    progress = recorder.stream.getvalue().splitlines()
    assert len(progress) == 2
    assert progress[0] == "step    1/4 [#####...............] correct +0.250  length -1.000  | 2.00s"
    assert progress[1].startswith("step    2/4 [##########..........] correct +0.750")


def test_progress_off_writes_nothing(tmp_path):
    recorder = recorded_run(tmp_path, steps=1, progress=False)
    assert recorder.stream.getvalue() == ""


def test_truncate_from_drops_later_steps(tmp_path):
    recorder = recorded_run(tmp_path, steps=3)
    recorder.truncate_from(1)
    assert [row["step"] for row in read_metrics(tmp_path)] == [0]
    assert sorted(p.name for p in (tmp_path / "rollouts.parquet").iterdir()) == ["step-000000.parquet"]
    assert pq.read_table(tmp_path / "rollouts.parquet").column("step").to_pylist() == [0, 0, 0]
    # the resumed run re-records step 1 without duplicates
    recorder.record(1, metrics(1), rollouts(1))
    assert [row["step"] for row in read_metrics(tmp_path)] == [0, 1]
    assert pq.read_table(tmp_path / "rollouts.parquet").num_rows == 6


def test_truncate_from_on_a_fresh_run_is_harmless(tmp_path):
    recorder = RunRecorder(tmp_path, CHANNELS, total_steps=2, tensorboard=False, progress=False)
    recorder.truncate_from(0)
    assert read_metrics(tmp_path) == []


def test_summary_table(tmp_path):
    recorded_run(tmp_path, steps=2)
    table = summary_table(tmp_path, CHANNELS, window=1)
    lines = table.splitlines()
    assert len(lines) == 4
    assert lines[0].split() == ["channel", "first", "1", "last", "1", "change", "null", "%"]
    assert lines[1].split() == ["correct", "0.250", "0.750", "+0.500", "50.0"]
    assert lines[2].split() == ["length", "-1.000", "-1.000", "+0.000", "0.0"]
    assert lines[3] == ("mean step time 2.000s = generate 1.000s  reward 0.250s  mixer 0.000s  learn 0.500s  "
                        "broadcast 0.125s  other 0.125s")
    assert summary_table(tmp_path / "nothing", CHANNELS) == "(no steps recorded)"


def test_plot_rewards_writes_a_png(tmp_path):
    recorded_run(tmp_path, steps=2)
    path = plot_rewards(tmp_path, CHANNELS)
    assert path == tmp_path / "rewards.png"
    data = path.read_bytes()
    assert len(data) > 1000
    assert data[:8] == b"\x89PNG\r\n\x1a\n"


def test_tensorboard_events_are_written(tmp_path):
    recorder = RunRecorder(tmp_path, CHANNELS, total_steps=2, tensorboard=True, progress=False)
    recorder.record(0, metrics(0), rollouts(0))
    recorder.close()
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    assert events[0].stat().st_size > 0


def test_stage_timer_accounts_for_the_whole_step():
    timer = StageTimer()
    now = timer.add("generate", timer.started)
    timer.add("generate", now)
    out = timer.metrics()
    assert set(out) == {"time/generate", "time/other", "time/step"}
    assert out["time/generate"] >= 0.0
    assert out["time/generate"] + out["time/other"] == pytest.approx(out["time/step"], abs=1e-3)
