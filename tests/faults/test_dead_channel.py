"""A reward channel whose actor keeps dying (its callable calls os._exit(1)) and one that hangs on every call:
once Ray's restarts (cluster.max_actor_restarts) are used up the channel is disabled for the rest of the run, or,
with on_dead: stop, the run stops with one line naming it after writing a checkpoint and the adapter."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from mixgrpo.config import load_config
from mixgrpo.orchestrator.cli import main
from mixgrpo.orchestrator.driver import train
from mixgrpo.rundir import read_metrics

pytestmark = pytest.mark.faults

SMALL = ["task.prompts_per_step=4", "generator.group_size=4", "generator.max_new_tokens=4",
         "run.tensorboard=false", "run.progress=false", "cluster.max_actor_restarts=1",
         "task.eval_fraction=0", "eval.every=0"]  # no eval: every call of the channel is a training step's


def channels(callable_: str, extra: str = "") -> str:
    return (f"rewards=[{{name: correct, kind: numeric_match}}, {{name: dying, kind: python, timeout_s: 1{extra},"
            f" options: {{callable: 'failing_rewards:{callable_}', batched: true}}}}]")


@pytest.fixture(scope="module", autouse=True)
def plan(ray_with_faults):
    ray_with_faults.arm()
    return ray_with_faults


def test_channel_whose_actor_keeps_dying_is_disabled_and_the_run_finishes(tmp_path, caplog):
    config = load_config(None, [*SMALL, "run.steps=4", channels("exits_process")])
    with caplog.at_level(logging.WARNING, logger="mixgrpo.scoring"):
        outputs = train(config, tmp_path / "run")
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert all(r["null_rate/dying"] == 1.0 for r in rows)
    # step 0: it dies, Ray restarts it (1 of 1); step 1: it dies for good; then it is not called any more
    assert [r.get("failures/dying/actor_errors", 0) for r in rows] == [1, 1, 0, 0]
    assert [r.get("failures/dying/disabled", 0) for r in rows] == [0, 0, 1, 1]
    assert all(r["null_rate/correct"] == 0.0 and np.isfinite(r["learner/loss"]) for r in rows)
    disabled = [r for r in caplog.records if r.levelno == logging.ERROR and "DISABLED" in r.getMessage()]
    assert len(disabled) == 1 and "'dying'" in disabled[0].getMessage()
    assert "\n" not in disabled[0].getMessage()
    assert (outputs.adapter / "adapter_config.json").is_file()


def test_channel_hanging_on_every_call_is_restarted_until_its_restarts_are_used_up(tmp_path):
    config = load_config(None, [*SMALL, "run.steps=6", channels("hangs_forever")])
    train(config, tmp_path / "run")
    rows = read_metrics(tmp_path / "run")
    counted = [{k.rsplit("/", 1)[1]: v for k, v in r.items() if k.startswith("failures/dying/")} for r in rows]
    # a timeout, then still stuck at the next call: restart (1 of 1); again; then Ray has no restart left
    assert counted == [{"timeouts": 1}, {"stuck": 1}, {"timeouts": 1}, {"stuck": 1},
                       {"disabled": 1}, {"disabled": 1}], counted
    assert all(r["null_rate/dying"] == 1.0 for r in rows)


def test_on_dead_stop_checkpoints_saves_the_adapter_and_stops_with_one_line(tmp_path, capsys):
    run_dir = tmp_path / "run"
    overrides = [*SMALL, "run.steps=6", "run.checkpoint_every=100", channels("exits_process", ", on_dead: stop")]
    code = main(["train", "--out", str(run_dir), *[arg for o in overrides for arg in ("--set", o)]])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(error) == 1 and "reward channel 'dying' is dead" in error[0] and "on_dead" in error[0], error
    assert str(run_dir) in error[0]
    # step 1 found it dead for good: only step 0 is recorded, and resuming reruns step 1
    assert [r["step"] for r in read_metrics(run_dir)] == [0]
    latest = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip()
    assert json.loads((latest / "driver.json").read_text())["next_step"] == 1
    assert (run_dir / "adapter" / "adapter_config.json").is_file()
