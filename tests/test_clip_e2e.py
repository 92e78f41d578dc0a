"""CLIP digits on the real loop (Ray, colocated ClipPolicy ranks, reward actor): it learns, it resumes, it warns."""

from __future__ import annotations

import json
import logging

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
import torch
from ray_helpers import start_local_ray

from mixgrpo.batch import TrainOrder
from mixgrpo.config import load_config
from mixgrpo.orchestrator.driver import train
from mixgrpo.orchestrator.cli import main
from mixgrpo.orchestrator.evaluation import evaluate_adapter
from mixgrpo.orchestrator.learner_group import LearnerGroup
from mixgrpo.orchestrator.rollouts import RolloutPipeline
from mixgrpo.rundir import read_metrics
from mixgrpo.tasks import make_task

CLIP_DIGITS = "configs/clip-digits.yaml"


@pytest.fixture(scope="module", autouse=True)
def local_ray(tiny_model_cache):
    start_local_ray(num_cpus=2)
    yield
    ray.shutdown()


def _eval_rows(run_dir):
    return [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]


def test_held_out_accuracy_rises_and_a_label_independent_channel_is_named(tmp_path, caplog, capsys):
    config = load_config(CLIP_DIGITS, [
        "run.steps=40", "eval.every=40", "run.tensorboard=false", "run.progress=false",
        # a second channel that scores every class name alike: its group advantages are all 0
        ("rewards=[{name: accuracy, kind: exact_match, options: {answer_key: label}},"
         " {name: is_digit, kind: regex, weight: 0.5, options: {pattern: '\\d'}}]"),
    ])
    with caplog.at_level(logging.WARNING, logger="mixgrpo.step"):
        outputs = train(config, tmp_path / "run")
    evaluations = _eval_rows(outputs.run_dir)
    assert [row["step"] for row in evaluations] == [0, 40]
    before, after = evaluations[0]["eval/accuracy"], evaluations[-1]["eval/accuracy"]
    assert before < 0.2, f"a random image tower starts near chance (0.1), got {before:.3f}"
    assert after - before >= 0.25, f"held-out accuracy {before:.3f} -> {after:.3f} after 40 steps"
    held_out = outputs.summary.split("held-out eval")[1]  # the summary table train prints, beside the channels
    assert f"{'accuracy':<14}{before:>10.3f}{after:>10.3f}" in held_out
    warnings = [r.getMessage() for r in caplog.records if "same value" in r.getMessage()]
    assert len(warnings) == 1 and "is_digit" in warnings[0]
    rows = read_metrics(outputs.run_dir)
    assert rows[-1]["zero_variance_groups/is_digit"] == 1.0
    table = pq.read_table(outputs.rollouts)
    assert table.num_rows == 40 * config.task.prompts_per_step * config.generator.group_size
    assert set(table.column("completion").to_pylist()) <= {str(d) for d in range(10)}
    assert "reward_accuracy" in table.column_names and "advantage" in table.column_names
    completions, labels = table.column("completion").to_pylist(), table.column("label").to_pylist()
    assert labels == [prompt.split("(label ")[1].rstrip(")") for prompt in table.column("prompt").to_pylist()]
    assert table.column("reward_accuracy").to_pylist() == [float(c == label) for c, label in zip(completions, labels)]
    assert (outputs.adapter / "trained.safetensors").is_file()
    assert outputs.eval_plot is not None and outputs.eval_plot.stat().st_size > 5_000
    again = evaluate_adapter(config, outputs.adapter)  # `mixgrpo eval RUN_DIR`: the saved policy, greedy again
    assert again["eval/accuracy"] == after
    capsys.readouterr()
    assert main(["explain", "--run", str(outputs.run_dir), "--images", "6"]) == 0
    right = int(capsys.readouterr().out.split("right on ")[1].split()[0])
    assert right >= 3  # 6 held-out images, accuracy after training well above chance
    assert (outputs.run_dir / "explain.png").stat().st_size > 10_000


def test_resume_continues_the_clip_run(tmp_path):
    overrides = ["run.tensorboard=false", "run.progress=false", "run.checkpoint_every=2", "eval.every=0"]
    run_dir = tmp_path / "run"
    train(load_config(CLIP_DIGITS, ["run.steps=3", *overrides]), run_dir)
    (run_dir / "checkpoints" / "latest").write_text("step-000002")  # died after step 3 was logged
    train(load_config(run_dir / "config.yaml", ["run.steps=5"]), run_dir, resume=True)
    rows = read_metrics(run_dir)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r["policy_version"] for r in rows] == [1, 2, 3, 4, 5]


def _decoded_image_ids(policy) -> list[int]:
    """Run inside a ClipPolicy rank (``__ray_call__``): the ids of the images it has decoded so far."""
    return sorted(policy.images._pixels)


def test_two_clip_ranks_each_train_on_the_rows_they_sampled():
    config = load_config(CLIP_DIGITS, ["learner.ranks=2", "task.prompts_per_step=6", "generator.group_size=2"])
    group = LearnerGroup(config, [{"num_cpus": 1}] * 2, colocated=True)
    try:
        prompts, rollouts = RolloutPipeline(group.actors, make_task(config.task, 0), colocated=True).collect(0)
        sampled = [set(ray.get(rank.__ray_call__.remote(_decoded_image_ids))) for rank in group.actors]
        image_ids = prompts.prompt_ids[rollouts.prompt_index]
        assert sampled == [set(image_ids[rollouts.source == rank].tolist()) for rank in range(2)]
        assert sampled[0] and sampled[1] and not sampled[0] & sampled[1]  # three images each
        advantages = np.linspace(-1.0, 1.0, len(rollouts))
        result = group.train_step(TrainOrder.from_rollouts(rollouts, advantages, np.arange(len(rollouts))))
        learned = [set(ray.get(rank.__ray_call__.remote(_decoded_image_ids))) for rank in group.actors]
        tensors = [ray.get(rank.adapter_tensors.remote()) for rank in group.actors]
    finally:
        group.shutdown()
    assert learned == sampled  # a rank given another rank's rows would have decoded that rank's images
    assert result.version == 1 and result.metrics["grad_norm"] > 0
    assert result.metrics["logprob_mismatch_max"] < 1e-5  # each row scored by the weights that sampled it
    assert all(torch.equal(tensors[0][name], tensors[1][name]) for name in tensors[0])  # one all-reduced update


@pytest.mark.parametrize("async_steps", [0, 1])
def test_separate_clip_generators_sample_with_the_weights_the_learner_sends(tmp_path, async_steps):
    config = load_config(CLIP_DIGITS, [
        "run.steps=4", "eval.every=0", "run.tensorboard=false", "run.progress=false", "task.prompts_per_step=8",
        f"algorithm.async_steps={async_steps}",
        "cluster.placement=disaggregated" if async_steps == 0 else "cluster.placement=auto",
    ])
    outputs = train(config, tmp_path / "run")
    rows = read_metrics(outputs.run_dir)
    assert [r["policy_version"] for r in rows] == [1, 2, 3, 4]
    versions = pq.read_table(outputs.rollouts, columns=["step", "policy_version"]).to_pydict()
    lags = {step - version for step, version in zip(versions["step"], versions["policy_version"])}
    if async_steps == 0:
        # the generator samples with exactly the tensors the learner trained: its log-probs are the learner's
        assert lags == {0}
        assert max(r["learner/logprob_mismatch_max"] for r in rows) < 1e-5
    else:
        assert lags <= {0, 1} and 1 in lags  # one step behind once the pipeline is full
        assert max(r["rollout_lag/max"] for r in rows) <= 1
