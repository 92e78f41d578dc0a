"""Held-out evaluation and dynamic sampling in real runs on Ray (the builtin tiny model)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import ray
import torch
from peft import PeftModel
from ray_helpers import start_local_ray
from transformers import AutoModelForCausalLM, AutoTokenizer

from mixgrpo.actors.models import encode_prompts, pad_left
from mixgrpo.builtin import resolve_model_path
from mixgrpo.config import load_config
from mixgrpo.orchestrator.cli import main
from mixgrpo.orchestrator.driver import train
from mixgrpo.rundir import read_eval, read_metrics
from mixgrpo.tasks import make_task

SHORT = ["run.tensorboard=false", "run.progress=false", "run.steps=4", "task.prompts_per_step=8",
         "task.eval_fraction=0.2"]


@pytest.fixture(scope="module", autouse=True)
def local_ray(tiny_model_cache):
    start_local_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def eval_run(tmp_path_factory) -> Path:
    """A 4-step run evaluated before training, every 2 steps and at the end."""
    run_dir = tmp_path_factory.mktemp("eval") / "run"
    train(load_config(None, [*SHORT, "eval.every=2"]), run_dir)
    return run_dir


def _greedy_accuracy(config, adapter: Path) -> float:
    """Held-out greedy accuracy computed here with transformers + PEFT, one prompt at a time."""
    path = resolve_model_path(config.model.path, config.run.seed)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(path), str(adapter)).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    held_out = make_task(config.task, config.run.seed).held_out
    right = 0
    for prompt, metadata in zip(held_out.prompts, held_out.metadata):
        ids, mask = pad_left(encode_prompts(tokenizer, [prompt], config.model.chat_template), tokenizer.pad_token_id)
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                 max_new_tokens=config.generator.max_new_tokens, pad_token_id=tokenizer.pad_token_id)
        text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        numbers = re.findall(r"-?\d+(?:\.\d+)?", text.replace(",", ""))  # numeric_match: the first number
        right += bool(numbers) and float(numbers[0]) == float(metadata["answer"])
    return right / len(held_out)


def test_eval_rows_metrics_and_hand_computed_accuracy(eval_run):
    config = load_config(eval_run / "config.yaml")
    rows = read_eval(eval_run)
    assert [r["step"] for r in rows] == [0, 2, 4]
    assert [r["eval/policy_version"] for r in rows] == [0, 2, 4]
    for row in rows:
        assert row["eval/prompts"] == 20
        for name in config.channel_names:
            assert f"eval/{name}" in row and f"eval/null_rate/{name}" in row
        assert row["eval/correct/pass@1"] == pytest.approx(row["eval/correct"])  # greedy, no nulls
        assert "eval/format/pass@1" in row
    assert rows[-1]["eval/correct"] == pytest.approx(_greedy_accuracy(config, eval_run / "adapter"))
    assert (eval_run / "eval.png").stat().st_size > 5_000


def test_held_out_prompts_never_reach_training(eval_run):
    config = load_config(eval_run / "config.yaml")
    held_out = make_task(config.task, config.run.seed).held_out
    trained = pq.read_table(eval_run / "rollouts.parquet")
    assert not set(held_out.prompt_ids.tolist()) & set(trained.column("prompt_id").to_pylist())
    assert not set(held_out.prompts) & set(trained.column("prompt").to_pylist())


def test_mixgrpo_eval_on_a_finished_run_repeats_its_greedy_eval(eval_run, capsys):
    assert main(["eval", str(eval_run), "--json"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    final = read_eval(eval_run)[-1]
    for key, value in final.items():
        if key.startswith("eval/") and key not in ("eval/seconds", "eval/policy_version"):
            assert again[key] == pytest.approx(value), key
    assert main(["eval", str(eval_run)]) == 0
    assert "held-out eval (20 prompts)" in capsys.readouterr().out


def test_eval_does_not_change_training(eval_run, tmp_path):
    """The same run with one eval at the end only: every training metric and completion is the same."""
    only_at_end = tmp_path / "run"
    train(load_config(None, [*SHORT, "eval.every=0"]), only_at_end)
    assert [r["step"] for r in read_eval(only_at_end)] == [4]
    for with_evals, without in zip(read_metrics(eval_run), read_metrics(only_at_end)):
        for key, value in with_evals.items():
            if not any(mark in key for mark in ("time", "seconds", "per_s")):  # wall-clock figures differ
                assert without[key] == value, key
    completions = [pq.read_table(run / "rollouts.parquet").column("completion").to_pylist()
                   for run in (eval_run, only_at_end)]
    assert completions[0] == completions[1]


def test_dynamic_sampling_keeps_p_groups_and_logs_every_generated_one(tmp_path):
    config = load_config(None, [*SHORT, "run.steps=3", "algorithm.filter_groups=zero_advantage",
                                "task.oversample=until_full", "task.max_extra_rounds=2", "algorithm.async_steps=2"])
    train(config, tmp_path / "run")
    rows = read_metrics(tmp_path / "run")
    assert [r["rollout_lag/max"] for r in rows] == [0, 1, 2]
    table = pq.read_table(tmp_path / "run" / "rollouts.parquet")
    m = config.generator.group_size
    for row in rows:
        part = table.filter(pc.equal(table.column("step"), row["step"]))
        dropped = np.array(part.column("dropped").to_pylist()).reshape(-1, m)[:, 0]
        groups = part.num_rows // m
        assert groups == 8 * (1 + row["filter/extra_rounds"])
        assert (dropped == "").sum() == row["filter/trained_groups"] <= 8
        assert (dropped == "zero_advantage").sum() == row["filter/dropped_groups"]
        assert (dropped == "surplus").sum() == row["filter/surplus_groups"]
        if row["filter/extra_rounds"] < 2:
            assert row["filter/trained_groups"] == 8  # filled before the round cap
        correct = np.array(part.column("reward_correct").to_pylist(), dtype=float).reshape(-1, m)
        varies = correct.max(axis=1) != correct.min(axis=1)
        assert not (varies & (dropped == "zero_advantage")).any()  # a dropped group had constant rewards
