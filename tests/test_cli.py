"""The command line: help text, and bad input rejected in one line before Ray starts."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from mixgrpo.orchestrator.cli import main


def test_train_help_documents_options_and_outputs(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for word in ["--config", "--set", "--out", "--resume", "metrics.jsonl", "rollouts.parquet", "adapter/", "tensorboard"]:
        assert word in text


def _prompt_file_without_prompt(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"question": ["1+1="], "answer": ["2"]}), path)
    return path


@pytest.mark.parametrize("overrides, message", [
    (["model.path=/no/such/model"], "model.path '/no/such/model'"),
    (["rewards.correct.kind=telepathy"], "unknown reward channel kind 'telepathy'"),
    (["algorithm.weights=[1, 2]"], "algorithm.weights has 2 values for 4 reward channels"),
    (["learner.lr=fast"], "config error at learner.lr"),
    (["generator.group_size=1"], "generator.group_size=1 leaves each group one sample"),
    (["rewards.format.options.pattern=("], "bad pattern"),
])
def test_bad_input_fails_before_ray_starts(overrides, message, tmp_path, capsys):
    args = ["train", "--out", str(tmp_path / "run")]
    for override in overrides:
        args += ["--set", override]
    assert main(args) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1, error
    assert not ray.is_initialized()
    assert not (tmp_path / "run").exists()


def test_prompt_file_without_prompt_column(tmp_path, capsys):
    path = _prompt_file_without_prompt(tmp_path)
    assert main(["train", "--set", "task.kind=file", "--set", f"task.path={path}", "--out", str(tmp_path / "r")]) == 2
    error = capsys.readouterr().err
    assert "no 'prompt' column (columns: question, answer)" in error and str(path) in error
    assert not ray.is_initialized()


def test_unknown_key_and_missing_config_file(tmp_path, capsys):
    assert main(["train", "--set", "learner.lora.rnk=4"]) == 2
    assert "config error at learner.lora.rnk: unknown key" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
