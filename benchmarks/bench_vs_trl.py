"""mixgrpo vs Hugging Face TRL's GRPOTrainer on one machine: step time, memory, learning, step time under load.

The same job on both sides: the default config (builtin:tiny-arith, the toy arithmetic prompts in the same
order, the four reward channels with their weights, P x m per step, LoRA on the same modules, lr, fp32,
no KL, clip 0.2 / 0.28, token-mean loss). mixgrpo runs as ``mixgrpo train`` (colocated, disaggregated
sync, disaggregated async_steps=1); TRL runs ``benchmarks/trl_grpo.py`` in its own venv (created here on
first use: TRL is never a dependency of mixgrpo). Runs are interleaved (A B C D A B C D ...), each a fresh
process tree whose PSS is sampled throughout; then each setup once more beside ``--load`` busy-looping
processes. Prints a table and writes results.json and results.md under ``--out``.

Run from the repository root: ``python -m benchmarks.bench_vs_trl [--steps 30] [--rounds 2] [--seeds 0]``
(``make bench-trl``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.proc_tree import CpuLoad, TreeRun, run_sampled
from mixgrpo.actors.models import encode_prompts, load_tokenizer
from mixgrpo.builtin import resolve_model_path
from mixgrpo.config import ClusterConfig, Config, load_config
from mixgrpo.rundir import read_metrics
from mixgrpo.tasks import make_task

REPO_ROOT = Path(__file__).resolve().parent.parent
TRL_PINS = ("torch==2.14.1", "trl==1.16.0", "peft", "pillow")
"""The TRL venv's packages (pillow: mixgrpo's reward-channel package imports it)."""
MIXGRPO_SETUPS: dict[str, list[str]] = {
    "mixgrpo in-driver": ["cluster.placement=colocated", "cluster.rank_in_driver=true"],
    "mixgrpo colocated": ["cluster.placement=colocated"],
    "mixgrpo disaggregated sync": ["cluster.placement=disaggregated"],
    "mixgrpo disaggregated async1": ["cluster.placement=disaggregated", "algorithm.async_steps=1"],
}
TRL = "trl"
RAY_START_TIMEOUT = "The current node timed out during startup"
"""Ray's start-up gives up after a fixed 30 s on a crowded machine: such a run is started again."""
RAY_START_ATTEMPTS = 3
DIFFERENCES = (
    ("advantages: TRL normalize_then_sum sums the weighted per-channel group z-scores with a null counting as 0 "
     "(weights not renormalised over the channels present) and then z-scores that sum over the whole batch; "
     "mixgrpo NA renormalises the weights over the present channels and does no batch re-normalisation"),
    ("z-scores: TRL uses the sample std (ddof=1) + 1e-4, mixgrpo the population std (ddof=0) + 1e-8 and calls a "
     "group constant up to rounding degenerate (0)"),
    ("PPO ratio: TRL (num_iterations=1) takes the ratio against its own detached log-probs (exactly 1); mixgrpo "
     "against the generator's sampled log-probs (1 up to float noise when sync, one version stale with async1)"),
    ("learner batches: mixgrpo accumulates micro-batches of learner.micro_batch_size; TRL does one pass over the "
     "P x m completions (same token-mean over the whole batch on both sides)"),
    ("processes and threads: TRL is one process with torch threads = --trl-threads; mixgrpo runs Ray (GCS, raylet, "
     "workers) with generator/learner/reward actors of their configured threads"),
    ("random streams: the same model, prompts and seed number, but each side samples with its own RNG, so the "
     "completions (and learning curves) are not identical draws"),
    ("step clock: mixgrpo's time/step is the driver's step; TRL's is on_step_end to on_step_end (includes its "
     "logging); both exclude start-up, which the command wall time includes"),
    ("mixgrpo-only extras left on (the default job): per-step Parquet rollouts, metrics and checkpoints; the "
     "correct channel's weak_threshold only feeds mixgrpo's review diagnostics"),
    ("TRL defaults changed to match mixgrpo: bf16=False (TRL: True), gradient_checkpointing=False (True), "
     "lr_scheduler_type=constant (linear decay), shuffle_dataset=False (prompts in mixgrpo's order), top_k=0"),
)


@dataclass
class Measured:
    """One run of one setup: the process tree's figures and the per-step series."""

    setup: str
    seed: int
    loaded: bool
    tree: TreeRun
    step_s: list[float] = field(default_factory=list)
    correct: list[float] = field(default_factory=list)
    attempts: int = 1
    """Starts needed (more than 1 only when Ray's start-up timed out)."""


def export_job(config: Config, steps: int, threads: int) -> dict[str, Any]:
    """The job TRL runs: mixgrpo's resolved model, its exact prompt sequence and settings, as plain JSON."""
    model_path = resolve_model_path(config.model.path, config.run.seed)
    task = make_task(config.task, config.run.seed)
    batches = [task.sample(step) for step in range(steps)]
    prompts = [p for batch in batches for p in batch.prompts]
    tokenizer = load_tokenizer(model_path)
    token_ids = encode_prompts(tokenizer, prompts, config.model.chat_template)
    loss, lora = config.algorithm.loss, config.learner.lora
    return {
        "model_path": model_path, "seed": config.run.seed, "steps": steps, "threads": threads,
        "prompts_per_step": config.task.prompts_per_step, "prompts": prompts,
        "answers": [md["answer"] for batch in batches for md in batch.metadata],
        "prompt_token_ids": [ids.tolist() for ids in token_ids],
        "group_size": config.generator.group_size, "max_new_tokens": config.generator.max_new_tokens,
        "temperature": config.generator.temperature, "top_p": config.generator.top_p,
        "rewards": [{"name": r.name, "kind": r.kind, "weight": r.weight, "options": r.options}
                    for r in config.rewards],
        "lr": config.learner.lr, "weight_decay": config.learner.weight_decay,
        "max_grad_norm": config.learner.max_grad_norm, "kl_coef": loss.kl_coef,
        "eps_low": loss.eps_low, "eps_high": loss.eps_high,
        "lora": {"rank": lora.rank, "alpha": lora.alpha, "dropout": lora.dropout,
                 "target_modules": list(lora.target_modules)},
    }


def ensure_trl_venv(venv: Path) -> Path:
    """The TRL venv's python, creating the venv and installing TRL_PINS on first use."""
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if not marker.is_file() or marker.read_text() != "\n".join(TRL_PINS):
        if not python.is_file():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *TRL_PINS], check=True)
        marker.write_text("\n".join(TRL_PINS))
    return python


def child_env(threads: int | None) -> dict[str, str]:
    """This environment with the repository first on PYTHONPATH (Ray workers too) and, if given, OMP threads."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def run_mixgrpo(setup: str, config_args: list[str], seed: int, steps: int, work: Path, loaded: bool) -> Measured:
    """``mixgrpo train`` for one setup in a fresh process; step times and correct rewards from metrics.jsonl."""
    run_dir = work / "run"
    command = [sys.executable, "-c", "import sys; from mixgrpo.orchestrator.cli import main; sys.exit(main())",
               "train", "--out", str(run_dir)]
    for item in [*config_args, *MIXGRPO_SETUPS[setup], f"run.seed={seed}", f"run.steps={steps}",
                 "run.progress=false"]:
        command += ["--set", item]
    for attempt in range(1, RAY_START_ATTEMPTS + 1):
        shutil.rmtree(run_dir, ignore_errors=True)
        tree = run_sampled(command, work / "log.txt", child_env(None), REPO_ROOT)
        if tree.returncode == 0 or RAY_START_TIMEOUT not in (work / "log.txt").read_text():
            break
    rows = read_metrics(run_dir)
    return Measured(setup, seed, loaded, tree, [r["time/step"] for r in rows], [r["reward/correct"] for r in rows],
                    attempt)


def run_trl(python: Path, job: dict[str, Any], threads: int, work: Path, loaded: bool) -> Measured:
    """``trl_grpo.py`` on the exported job in the TRL venv, in a fresh process."""
    job_path, result_path = work / "job.json", work / "result.json"
    job_path.write_text(json.dumps(job))
    command = [str(python), str(REPO_ROOT / "benchmarks" / "trl_grpo.py"), str(job_path), str(result_path)]
    tree = run_sampled(command, work / "log.txt", child_env(threads), REPO_ROOT)
    result = json.loads(result_path.read_text()) if result_path.is_file() else {"step_s": [], "reward": {}}
    return Measured(TRL, job["seed"], loaded, tree, result["step_s"], result["reward"].get("correct", []))


def median_after(values: list[float], warmup: int) -> float:
    """Median of ``values[warmup:]`` (NaN when there are none)."""
    rest = values[warmup:]
    return statistics.median(rest) if rest else float("nan")


def mean(values: list[float]) -> float:
    """Arithmetic mean (NaN for none)."""
    return sum(values) / len(values) if values else float("nan")


def summarise(runs: list[Measured], setups: list[str], warmup: int, window: int) -> list[dict[str, Any]]:
    """One row per setup: idle and loaded step time, steps/s vs TRL, peak PSS, processes, wall, learning."""
    rows = []
    for setup in setups:
        idle = [r for r in runs if r.setup == setup and not r.loaded and r.tree.returncode == 0]
        loaded = [r for r in runs if r.setup == setup and r.loaded and r.tree.returncode == 0]
        step = statistics.median([median_after(r.step_s, warmup) for r in idle]) if idle else float("nan")
        under_load = statistics.median([median_after(r.step_s, warmup) for r in loaded]) if loaded else float("nan")
        by_seed = {}
        for seed in sorted({r.seed for r in idle}):
            of_seed = [r for r in idle if r.seed == seed]
            by_seed[seed] = (mean([mean(r.correct[:window]) for r in of_seed]),
                             mean([mean(r.correct[-window:]) for r in of_seed]))
        rows.append({
            "setup": setup, "runs_ok": len(idle), "runs_failed": sum(1 for r in runs if r.setup == setup
                                                                       and r.tree.returncode != 0),
            "step_s": step, "steps_per_s": 1 / step,
            "step_s_loaded": under_load, "loaded_over_idle": under_load / step,
            "max_pss_mb": max((r.tree.max_pss_mb for r in idle), default=float("nan")),
            "max_processes": max((r.tree.max_processes for r in idle), default=0),
            "wall_s": statistics.median([r.tree.wall_s for r in idle]) if idle else float("nan"),
            "correct_first_last": by_seed,
        })
    trl = next((row for row in rows if row["setup"] == TRL), None)
    for row in rows:
        row["speed_vs_trl"] = row["steps_per_s"] / trl["steps_per_s"] if trl else float("nan")
        row["pss_vs_trl"] = row["max_pss_mb"] / trl["max_pss_mb"] if trl else float("nan")
    return rows


def _fmt(value: float, spec: str, suffix: str = "") -> str:
    """``value`` formatted, or "-" when it was not measured (NaN)."""
    return "-" if math.isnan(value) else f"{value:{spec}}{suffix}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The summary rows as a Markdown table."""
    lines = [("| setup | runs ok/failed | step s (idle) | steps/s | vs TRL | step s (loaded) | loaded/idle | PSS MB "
              "| vs TRL | procs | wall s | correct first-N -> last-N (per seed) |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        learning = "; ".join(f"s{seed}: {a:.3f} -> {b:.3f}" for seed, (a, b) in r["correct_first_last"].items())
        lines.append(
            f"| {r['setup']} | {r['runs_ok']}/{r['runs_failed']} | {_fmt(r['step_s'], '.3f')} "
            f"| {_fmt(r['steps_per_s'], '.2f')} | {_fmt(r['speed_vs_trl'], '.2f', 'x')} "
            f"| {_fmt(r['step_s_loaded'], '.3f')} | {_fmt(r['loaded_over_idle'], '.2f', 'x')} "
            f"| {_fmt(r['max_pss_mb'], '.0f')} | {_fmt(r['pss_vs_trl'], '.2f', 'x')} | {r['max_processes']} "
            f"| {_fmt(r['wall_s'], '.1f')} | {learning} |")
    return "\n".join(lines)


def load_line(runs: list[Measured]) -> str:
    """The 1-minute load average range over the starts and ends of the idle and the loaded runs."""
    parts = []
    for loaded in (False, True):
        values = [v for r in runs if r.loaded == loaded for v in (r.tree.loadavg_start[0], r.tree.loadavg_end[0])]
        if values:
            parts.append(f"{'loaded' if loaded else 'idle'} runs {min(values):.1f}-{max(values):.1f}")
    return "1-min load average at run start/end: " + ", ".join(parts)


def parse_args() -> argparse.Namespace:
    """Command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="first steps left out of the median step time")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved idle rounds (A B C D per round)")
    parser.add_argument("--seeds", default="0", help="comma-separated; round i uses seed i mod len(seeds)")
    parser.add_argument("--window", type=int, default=10, help="steps averaged at the start and end (learning)")
    parser.add_argument("--load", type=int, default=2, help="busy-looping processes beside the loaded runs (0: skip)")
    parser.add_argument("--setups", default=",".join([*MIXGRPO_SETUPS, TRL]), help="comma-separated subset")
    parser.add_argument("--trl-threads", type=int, default=2)
    parser.add_argument("--trl-venv", type=Path, default=REPO_ROOT / ".venv-trl")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="mixgrpo config override")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / f"bench-vs-trl-{time.strftime('%Y%m%d-%H%M%S')}")
    return parser.parse_args()


def available_setups(requested: list[str]) -> tuple[list[str], list[str]]:
    """(setups to run, notes): colocated needs ``cluster.placement``, which older checkouts lack."""
    unknown = [s for s in requested if s not in MIXGRPO_SETUPS and s != TRL]
    if unknown:
        raise SystemExit(f"unknown setups {unknown}; known: {[*MIXGRPO_SETUPS, TRL]}")
    if "rank_in_driver" in ClusterConfig.model_fields:
        return requested, []
    if "placement" in ClusterConfig.model_fields:
        return [s for s in requested if s != "mixgrpo in-driver"], ["mixgrpo in-driver skipped: no cluster.rank_in_driver"]
    kept = [s for s in requested if s not in ("mixgrpo colocated", "mixgrpo in-driver")]
    for setup in kept:
        MIXGRPO_SETUPS[setup] = [o for o in MIXGRPO_SETUPS[setup] if not o.startswith("cluster.placement")]
    return kept, ["mixgrpo colocated skipped: this checkout has no cluster.placement"]


def main() -> None:
    """Run every setup interleaved, then under load; print and write the table."""
    args = parse_args()
    setups, notes = available_setups([s.strip() for s in args.setups.split(",") if s.strip()])
    seeds = [int(s) for s in args.seeds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    python = ensure_trl_venv(args.trl_venv) if TRL in setups else None
    jobs = {seed: export_job(load_config(None, [*args.overrides, f"run.seed={seed}"]), args.steps, args.trl_threads)
            for seed in seeds}
    plan = [(setup, seeds[i % len(seeds)], False) for i in range(max(args.rounds, len(seeds))) for setup in setups]
    plan += [(setup, seeds[0], True) for setup in setups] if args.load else []
    runs: list[Measured] = []
    for index, (setup, seed, loaded) in enumerate(plan):
        work = args.out / f"{index:02d}-{setup.replace(' ', '-')}-s{seed}{'-loaded' if loaded else ''}"
        work.mkdir()
        with CpuLoad(args.load if loaded else 0):
            measured = (run_trl(python, jobs[seed], args.trl_threads, work, loaded) if setup == TRL
                        else run_mixgrpo(setup, args.overrides, seed, args.steps, work, loaded))
        runs.append(measured)
        print(f"[{index + 1}/{len(plan)}] {setup} seed {seed}{' loaded' if loaded else ''}: "
              f"rc {measured.tree.returncode}, "
              f"median step {median_after(measured.step_s, args.warmup):.3f}s, wall {measured.tree.wall_s:.1f}s, "
              f"PSS {measured.tree.max_pss_mb:.0f} MB, load {measured.tree.loadavg_start[0]:.1f}->"
              f"{measured.tree.loadavg_end[0]:.1f}, starts {measured.attempts}", flush=True)
        write_results(args, runs, setups, seeds, notes, final=index + 1 == len(plan))


def write_results(args: argparse.Namespace, runs: list[Measured], setups: list[str], seeds: list[int],
                  notes: list[str], final: bool) -> None:
    """results.md and results.json under ``--out`` (after every run, so a cut-short bench keeps its figures)."""
    rows = summarise(runs, setups, args.warmup, args.window)
    header = (f"{args.steps} steps/run, warm-up {args.warmup}, {args.rounds} idle rounds, seeds {seeds}, "
              f"{args.load} busy processes beside the loaded runs, TRL threads {args.trl_threads}, "
              f"{os.cpu_count()} CPUs, learning window {args.window} steps"
              + ("" if final else f", PARTIAL: {len(runs)} runs so far"))
    text = "\n\n".join([header, markdown_table(rows), load_line(runs), *notes,
                        "What differs:\n" + "\n".join(f"- {d}" for d in DIFFERENCES)])
    if final:
        print("\n" + text)
    (args.out / "results.md").write_text(text + "\n")
    (args.out / "results.json").write_text(json.dumps(
        {"header": header, "rows": rows, "runs": [asdict(r) for r in runs], "notes": notes,
         "differences": list(DIFFERENCES)}, indent=1, default=str))


if __name__ == "__main__":
    main()
