"""mixgrpo compare: its definitions on hand-made numbers, and a real 2 modes x 2 seeds comparison on Ray."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
from ray_helpers import start_local_ray

from mixgrpo.analysis.compare_report import moving_average, steps_to_target
from mixgrpo.analysis.thm3 import channel_influence, group_advantages
from mixgrpo.config import default_config_path, load_config
from mixgrpo.orchestrator.cli import main
from mixgrpo.orchestrator.compare import parse_seeds, parse_target, plan_runs
from mixgrpo.tasks.nuisance import style_score

NUISANCE = str(default_config_path().with_name("local-tiny-nuisance.yaml"))


def test_moving_average_uses_full_windows_and_skips_nulls():
    values = np.array([0.0, 1.0, np.nan, 3.0, 5.0])
    np.testing.assert_allclose(moving_average(values, 2), [np.nan, 0.5, 1.0, 3.0, 4.0])


def test_steps_to_target_is_the_first_full_window_reaching_it():
    values = np.array([0.1, 0.9, 0.1, 0.5, 0.5, 0.6])
    assert steps_to_target(values, 0.5, window=1) == 2
    assert steps_to_target(values, 0.5, window=2) == 2  # (0.1 + 0.9) / 2
    assert steps_to_target(values, 0.55, window=2) == 6
    assert steps_to_target(values, 0.9, window=3) is None


def test_influence_is_weight_proportional_for_na_and_scale_driven_for_an():
    rng = np.random.default_rng(0)
    scales, weights = np.array([1.0, 1.0, 10.0]), np.array([1.0, 0.5, 0.25])
    rewards = rng.standard_normal((4000, 16, 3)) * scales  # independent channels
    na = channel_influence(rewards, group_advantages(rewards, weights, "na"))
    np.testing.assert_allclose(na, weights, atol=0.02)  # Cov(A, z_l) = w_l
    an = channel_influence(rewards, group_advantages(rewards, weights, "an"))
    expected = weights * scales / np.sqrt(((weights * scales) ** 2).sum())  # w_l sd_l / sd(w . r)
    np.testing.assert_allclose(an, expected, atol=0.02)
    assert an[2] / an.sum() > 0.6 and na[2] / na.sum() < 0.15  # weight share 0.25 / 1.75


def test_nuisance_channel_is_a_large_deterministic_reward():
    values = np.array([style_score("3+4=", f"{i}", {}) for i in range(2000)])
    assert style_score("3+4=", " 7 ", {}) == style_score("3+4=", "7", {})
    assert style_score("3+4=", "7", {}) != style_score("2+5=", "7", {})
    assert values.min() >= -10 and values.max() <= 10 and 5.4 < values.std() < 6.1


def test_plan_gives_each_mode_and_seed_its_run(tmp_path):
    config = load_config(NUISANCE)
    runs = plan_runs(config, ["na", "an"], parse_seeds("2", config.run.seed), tmp_path, steps=7)
    assert [(r.mode, r.seed, r.run_dir.name) for r in runs] == [
        ("na", 0, "na-seed0"), ("na", 1, "na-seed1"), ("an", 0, "an-seed0"), ("an", 1, "an-seed1")]
    assert all(r.config.run.steps == 7 and r.config.algorithm.mode == r.mode for r in runs)
    assert parse_seeds("3,5", 0) == [3, 5]
    assert parse_target("correct=0.45", config.channel_names).value == 0.45
    for bad in ["nope=1", "correct", "correct=high"]:
        with pytest.raises(ValueError, match="--target"):
            parse_target(bad, config.channel_names)
    with pytest.raises(ValueError, match="--modes"):
        plan_runs(config, ["na", "bogus"], [0], tmp_path)


TWO_CHANNELS = ("rewards=[{name: correct, kind: numeric_match},"
                " {name: style, kind: python, weight: 0.25, options: {callable: 'mixgrpo.tasks.nuisance:style_score'}}]")


@pytest.fixture(scope="module")
def compared(tiny_model_cache, tmp_path_factory):
    """A real comparison: 2 modes x 2 seeds x 3 steps of the nuisance job (correct + style), two runs at a time."""
    start_local_ray(num_cpus=8)  # room for two runs' placement groups: exercises the concurrent path
    out = tmp_path_factory.mktemp("compare")
    # The built model as a plain directory: the seeds share it (as with a hub model) and nothing more is built.
    args = ["compare", "--config", NUISANCE, "--modes", "na,an", "--seeds", "2", "--steps", "3",
            "--target", "correct=0.3", "--window", "2", "--out", str(out), "--set", TWO_CHANNELS,
            "--set", f"model.path={tiny_model_cache}",
            "--set", "run.tensorboard=false", "--set", "task.prompts_per_step=4", "--set", "generator.group_size=4"]
    assert main(args) == 0
    yield out, args
    ray.shutdown()


def test_compare_writes_every_output_with_a_row_per_mode(compared):
    out, _ = compared
    text = (out / "compare.md").read_text()
    for heading in ["## Final reward", "## Steps to reach correct >= 0.3", "## Influence", "## Wall time"]:
        assert heading in text
    for mode in ["na", "an"]:
        assert sum(line.startswith(f"| {mode} |") for line in text.splitlines()) == 4, text
    assert "| mode | correct | style |" in text
    assert "| *weight share* | 80.0 % | 20.0 % |" in text
    assert (out / "compare.png").stat().st_size > 20_000
    summary = json.loads((out / "compare.json").read_text())
    assert sorted((r["mode"], r["seed"]) for r in summary["runs"]) == [("an", 0), ("an", 1), ("na", 0), ("na", 1)]
    for run in summary["runs"]:
        assert abs(sum(run["influence"].values()) - 1) < 1e-6 and run["wall_seconds"] > 0


def test_modes_see_the_same_prompts_and_seeds_differ(compared):
    out, _ = compared
    def prompt_ids(label):
        return pq.read_table(out / label / "rollouts.parquet").column("prompt_id").to_pylist()
    assert prompt_ids("na-seed0") == prompt_ids("an-seed0")
    assert prompt_ids("na-seed1") == prompt_ids("an-seed1")
    assert prompt_ids("na-seed0") != prompt_ids("na-seed1")
    config = load_config(out / "an-seed1" / "config.yaml")
    assert (config.algorithm.mode, config.run.seed, config.run.steps) == ("an", 1, 3)


def test_rerun_reuses_finished_runs(compared):
    out, args = compared
    before = {p: p.stat().st_mtime for p in out.glob("*/metrics.jsonl")}
    first = json.loads((out / "compare.json").read_text())
    assert main(args) == 0
    assert {p: p.stat().st_mtime for p in out.glob("*/metrics.jsonl")} == before
    assert json.loads((out / "compare.json").read_text()) == first
