"""Bad input: one line naming the field or file, before any actor (or Ray) starts."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from mixgrpo.orchestrator.cli import main

pytestmark = pytest.mark.faults


def _fails_early(args: list[str], capsys, expected: str) -> None:
    assert main(["train", *args]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and expected in error, error
    assert not ray.is_initialized()


def test_malformed_yaml(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("run:\n  steps: [1,\n")
    _fails_early(["--config", str(path)], capsys, f"malformed YAML in {path}")


def test_unknown_key_and_wrong_type(capsys):
    _fails_early(["--set", "learner.lora.rnk=4"], capsys, "config error at learner.lora.rnk: unknown key")
    _fails_early(["--set", "run.steps=many"], capsys, "config error at run.steps")


def test_weights_that_do_not_match_the_channels(capsys):
    _fails_early(["--set", "algorithm.weights=[1]"], capsys, "algorithm.weights has 1 values for 4 reward channels")


@pytest.mark.parametrize("name, content, expected", [
    ("missing.jsonl", None, "prompt file not found"),
    ("empty.jsonl", "", "no prompts"),
    ("prompts.csv", "prompt\n1+1=\n", "must be .jsonl or .parquet"),
    ("rows.jsonl", '{"prompt": "1+1="}\n{"answer": "2"}\n', "rows.jsonl: line 2: no 'prompt' column"),
    ("broken.jsonl", '{"prompt": "1+1="\n', "broken.jsonl:1: not JSON"),
])
def test_prompt_files(tmp_path, capsys, name, content, expected):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    _fails_early(["--set", "task.kind=file", "--set", f"task.path={path}"], capsys, expected)


def test_parquet_without_prompt_column(tmp_path, capsys):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"question": ["1+1="]}), path)
    _fails_early(["--set", "task.kind=file", "--set", f"task.path={path}"], capsys, "no 'prompt' column (columns: question)")


def test_model_path_callable_and_group_size(capsys):
    _fails_early(["--set", "model.path=./no/such/dir"], capsys, "model.path './no/such/dir'")
    _fails_early(["--set", "rewards.format.kind=python", "--set", "rewards.format.options={callable: 'nope.mod:f'}"],
                 capsys, "rewards.format.options.callable: callable 'nope.mod:f': cannot import 'nope.mod'")
    _fails_early(["--set", "generator.group_size=1"], capsys, "generator.group_size=1 leaves each group one sample")
