"""mixgrpo bench on the tiny config: timeline completeness, consistent stage times, sweeps, the verdict."""

from __future__ import annotations

import json

import pytest
import ray
from ray_helpers import start_local_ray

from mixgrpo.orchestrator.cli import main

SHORT = ["--set", "task.prompts_per_step=8", "--set", "run.progress=false"]


@pytest.fixture(scope="module", autouse=True)
def local_ray(tiny_model_cache):
    start_local_ray(num_cpus=2)
    yield
    ray.shutdown()


def _trace_spans(out):
    trace = json.loads((out / "trace.json").read_text())
    lanes = {e["tid"]: e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M"}
    return [(lanes[e["tid"]], e["name"], e["args"]["step"], e["ts"] / 1e6, e["dur"] / 1e6)
            for e in trace["traceEvents"] if e["ph"] == "X"]


def test_bench_timeline_has_every_stage_and_consistent_times(tmp_path):
    out = tmp_path / "bench"
    assert main(["bench", "--steps", "2", "--warmup", "1", "--out", str(out), *SHORT]) == 0
    report = json.loads((out / "bench.json").read_text())
    assert report["environment"]["torch"]
    for side in ("generate", "learn"):
        ratio = report["baselines"][side]
        assert ratio["pairs"] == 2 and ratio["raw_tokens_per_s"] > 0
        assert 0 < ratio["min"] <= ratio["median"] <= ratio["max"]
        assert ratio["driver_median"] <= ratio["median"] * 1.01  # the driver's wait includes the actor's own time
    spans = _trace_spans(out)
    steps_metrics = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    for metrics in steps_metrics:
        step = metrics["step"]
        driver = {name: dur for lane, name, s, _, dur in spans if lane == "driver" and s == step}
        assert set(driver) == {"generate", "reward", "mixer", "learn", "broadcast"}
        assert 0.8 * metrics["time/step"] <= sum(driver.values()) <= metrics["time/step"] + 1e-6
        actor_stages = {(lane.split("-")[0], name) for lane, name, s, _, _ in spans if lane != "driver" and s == step}
        assert {("generator", "generate"), ("reward", "score"), ("learner", "train_step")} <= actor_stages
    assert ("generator", "load_adapter") in {(lane.split("-")[0], name) for lane, name, *_ in spans}
    assert (out / "timeline.png").stat().st_size > 10_000
    report_md = (out / "bench.md").read_text()
    assert "| generation |" in report_md
    assert "tokens/s, padding" in report_md and "MFU not available: the learner runs on CPU" in report_md
    assert report["points"][0]["learner"]["tokens_per_s"] > 0
    # the default job's four rule channels: one reward actor, one lane; the run's process tree measured
    assert {lane for lane, *_ in spans if lane.startswith("reward-")} == {"reward-cpu-light"}
    point = report["points"][0]
    assert point["tree_pss_mb"] > 100 and point["processes"] >= 4  # driver, generator, reward actor, learner
    assert "process tree (driver + Ray) peak PSS" in report_md


def test_two_point_sweep(tmp_path):
    out = tmp_path / "sweep"
    args = ["bench", "--steps", "1", "--warmup", "1", "--no-baselines", "--out", str(out),
            "--sweep", "algorithm.async_steps=0,1", *SHORT]
    assert main(args) == 0
    points = json.loads((out / "bench.json").read_text())["points"]
    assert [p["setting"] for p in points] == [{"algorithm.async_steps": "0"}, {"algorithm.async_steps": "1"}]
    assert all(p["samples_per_s"] > 0 for p in points)
    assert (out / "sweep.png").is_file() and (out / "run-1" / "metrics.jsonl").is_file()


def test_verdict_names_a_slowed_channel(tmp_path):
    out = tmp_path / "slow"
    slow = ("rewards=[{name: correct, kind: numeric_match}, {name: sluggish, kind: python,"
            " options: {callable: 'hostile_rewards:slow_batch', batched: true, kwargs: {seconds: 2.0}}}]")
    assert main(["bench", "--steps", "2", "--warmup", "1", "--no-baselines", "--out", str(out),
                 "--set", slow, *SHORT]) == 0
    point = json.loads((out / "bench.json").read_text())["points"][0]
    assert point["bound"] == "reward"
    assert "'sluggish'" in point["verdict"]
    assert point["lane_s_per_step"]["reward-sluggish"] >= 2.0


def test_spread_flag_names_the_noisy_ratio():
    from mixgrpo.orchestrator.bench_baselines import Baselines, PairedRatio

    steady = PairedRatio(actor=[0.98, 1.0, 1.02], driver=[0.9, 0.92, 0.95], raw_tokens_per_s=100.0)
    noisy = PairedRatio(actor=[0.7, 1.0, 1.3], driver=[0.6, 0.9, 1.2], raw_tokens_per_s=100.0)
    assert steady.median == 1.0 and abs(steady.spread - 0.04) < 1e-9
    assert Baselines(generate=steady, learn=steady).flags() == []
    flags = Baselines(generate=steady, learn=noisy).flags()
    assert len(flags) == 1 and flags[0].startswith("learner actor/raw spread 60%")


def test_learner_mfu_from_the_step_metrics(tiny_model_cache):
    from transformers import AutoConfig

    from mixgrpo.config import load_config
    from mixgrpo.orchestrator.bench import learner_compute

    config = load_config(None, ["model.dtype=bfloat16", "task.prompts_per_step=8", "generator.group_size=8",
                                "learner.lora.target_modules=[q_proj, k_proj, v_proj, o_proj]"])
    # T = the learner's mean trained row length
    step = {"learner/tokens_per_s": 1000.0, "learner/padding_frac": 0.25, "learner/row_tokens_mean": 15.625}
    figures = learner_compute(config, [{"step": 2}, step], "NVIDIA H100 80GB HBM3")
    vocab = AutoConfig.from_pretrained(tiny_model_cache).vocab_size
    # tiny-arith: 2 layers, hidden 128, 2 heads of 64, gated MLP 256; LoRA r=8 on q, k, v, o
    n = 2 * (4 * 128 * 128 + 3 * 128 * 256) + vocab * 128
    attention = 4 * 2 * 2 * 64 * 15.625
    lora = 2 * 8 * 4 * (128 + 128)
    assert figures.tokens_per_s == 1000.0 and figures.padding_frac == 0.25
    assert figures.mfu == pytest.approx(1000.0 * (4 * n + 3 * attention + 6 * lora) / 989.5e12)
    assert figures.summary().startswith("learner 1000 tokens/s, padding 25%, MFU 0.0% (")
    on_cpu = learner_compute(config, [step], None)
    assert on_cpu.mfu is None and "MFU not available: the learner runs on CPU" in on_cpu.summary()
    fp32 = learner_compute(load_config(None, []), [step], "NVIDIA H100 80GB HBM3")
    assert fp32.mfu is None and "no dense float32 peak" in fp32.note


def test_bench_of_a_clip_run_pairs_the_policy_as_generator_and_learner(tmp_path):
    out = tmp_path / "clip"
    assert main(["bench", "--config", "configs/clip-digits.yaml", "--steps", "1", "--warmup", "1",
                 "--out", str(out), "--set", "task.prompts_per_step=16", "--set", "eval.every=0",
                 "--set", "task.eval_fraction=0", "--set", "run.progress=false"]) == 0
    report = json.loads((out / "bench.json").read_text())
    assert report["points"][0]["samples_per_s"] > 0
    for side in ("generate", "learn"):  # the same ClipPolicy class on a Ray actor and in this process
        assert report["baselines"][side]["pairs"] == 1 and report["baselines"][side]["median"] > 0
