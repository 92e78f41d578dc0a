"""The TRL comparison benchmark's own parts: the exported job, TRL-side rewards, process-tree PSS, the summary.

TRL itself is not installed here (it lives in the benchmark's own venv); these parts run in mixgrpo's venv.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time

import psutil

from benchmarks.bench_vs_trl import TRL, Measured, export_job, summarise
from benchmarks.proc_tree import CpuLoad, TreeRun, run_sampled, tree_pss
from benchmarks.trl_rewards import reward_function, trl_prompts
from mixgrpo.actors.models import load_tokenizer
from mixgrpo.config import load_config
from mixgrpo.tasks import make_task


def test_exported_job_is_the_default_jobs_prompt_sequence_and_trl_tokenizes_it_the_same():
    config = load_config(None, ["run.seed=0"])
    job = export_job(config, steps=2, threads=2)
    task = make_task(config.task, 0)
    expected = [p for step in range(2) for p in task.sample(step).prompts]
    assert job["prompts"] == expected and len(expected) == 2 * config.task.prompts_per_step
    assert [r["name"] for r in job["rewards"]] == ["correct", "format", "length", "closeness"]
    tokenizer = load_tokenizer(job["model_path"])
    assert all(ids[0] == tokenizer.bos_token_id for ids in job["prompt_token_ids"])
    prompts = trl_prompts(tokenizer, job)
    assert [tokenizer(text=p)["input_ids"] for p in prompts] == job["prompt_token_ids"]


def test_trl_reward_functions_score_with_mixgrpo_channels_and_keep_nulls():
    job = export_job(load_config(None, []), steps=1, threads=2)
    channels = {c["name"]: c for c in job["rewards"]}
    means: list[float] = []
    closeness = reward_function(channels["closeness"], means)
    values = closeness(prompts=["3+4=", "3+4="], completions=["9", "hmm"], completion_ids=[[1, 2], [1, 2, 3]],
                       answer=["7", "7"])
    assert closeness.__name__ == "closeness" and values == [-2.0, None] and means == [-2.0]
    length = reward_function(channels["length"], [])
    assert length(prompts=["a"] * 2, completions=["7", "7 7"], completion_ids=[[5, 2], [5] * 5],
                  answer=["7", "7"]) == [0.0, -2.0]


def test_tree_pss_counts_a_grandchild_and_cpu_load_processes_end():
    script = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import time; time.sleep(30)'])"
    parent = psutil.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 20
        while len(parent.children(recursive=True)) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        pss, count = tree_pss(parent)
        assert count == 2 and pss > 0
    finally:
        for child in parent.children(recursive=True):
            child.kill()
        parent.kill()
        parent.wait()
    with CpuLoad(2) as load:
        pids = [p.pid for p in load.processes]
        assert all(psutil.Process(pid).is_running() for pid in pids)
    assert all(p.poll() is not None for p in load.processes)


def test_run_sampled_reports_exit_status_and_a_peak(tmp_path):
    run = run_sampled([sys.executable, "-c", "import time; x = bytearray(50 * 2**20); time.sleep(1.5)"],
                      tmp_path / "log.txt", env={}, cwd=tmp_path, every_s=0.1)
    assert run.returncode == 0 and run.max_pss_mb > 50 and run.max_processes == 1
    failed = run_sampled([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "log.txt", env={}, cwd=tmp_path)
    assert failed.returncode == 3


def _measured(setup: str, step_s: list[float], pss_mb: float, loaded: bool = False) -> Measured:
    tree = TreeRun(0, 10.0, pss_mb, 3, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0))
    return Measured(setup, 0, loaded, tree, step_s, [0.0] * 5 + [1.0] * 5)


def test_summary_uses_median_after_warmup_and_ratios_against_trl():
    runs = [
        _measured("mixgrpo colocated", [9.0, 0.2, 0.2, 0.2], 1500.0),
        _measured("mixgrpo colocated", [9.0, 0.4, 0.4, 0.4], 1200.0),
        _measured("mixgrpo colocated", [9.0, 0.6, 0.6, 0.6], 1200.0, loaded=True),
        _measured(TRL, [9.0, 0.1, 0.1, 0.1], 1000.0),
    ]
    rows = {r["setup"]: r for r in summarise(runs, ["mixgrpo colocated", TRL], warmup=1, window=5)}
    ours = rows["mixgrpo colocated"]
    assert math.isclose(ours["step_s"], 0.3) and math.isclose(ours["speed_vs_trl"], 1 / 3)
    assert math.isclose(ours["loaded_over_idle"], 2.0) and math.isclose(ours["pss_vs_trl"], 1.5)
    assert ours["correct_first_last"] == {0: (0.0, 1.0)} and math.isnan(rows[TRL]["step_s_loaded"])
    failed = subprocess.run([sys.executable, "-m", "benchmarks.bench_vs_trl", "--setups", "nope"],
                            capture_output=True, text=True, check=False)
    assert failed.returncode != 0 and "unknown setups ['nope']" in failed.stderr
