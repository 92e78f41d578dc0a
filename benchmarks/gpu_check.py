"""GPU check: one GRPO batch of a Qwen2-0.5B-shaped model through the plain actor classes, no Ray, no vLLM.

On one CUDA device in bf16 it builds a model with random weights from a config (no
download; hidden 896, 24 layers, 14 heads, 2 KV heads, MLP 4864, vocab 151936, tied
embeddings) and the builtin tiny-arith tokenizer recipe, then runs what a training step
runs, in this process:

- ``Generator`` with the HF backend samples ``--group-size`` completions of ``--prompts``
  toy prompts (``--max-new-tokens`` each; random weights rarely sample EOS, so nearly every
  completion is full length), ``--generate-chunk`` prompts per call;
- ``RewardWorker`` scores them with a rule channel (regex: the decoded text has an even
  number of characters; about half the completions score 1 even on random text, so the
  advantages and the gradients are not all zero); ids past the tokenizer's 288 tokens
  decode to nothing;
- ``compute_advantages`` (the NA mixer) turns the rewards into advantages;
- ``Learner`` (LoRA r=8 on q, k, v, o) runs ``--steps`` GRPO steps on that batch;
- ``Generator.load_adapter`` takes the learner's adapter tensors, and the generator's LoRA
  weights are compared with the learner's.

It prints generation tokens/s, learner tokens/s (non-padding positions per second of
forward + backward + optimizer, the learner's own metric; mean over the steps after the
first) and MFU (``mixgrpo.flops``: model FLOPs per token against the device's dense 16-bit
peak), peak GPU memory and the adapter load time. Needs only torch, transformers, peft,
numpy, pyarrow, pyyaml, pydantic and this package. From the repository root::

    python -m benchmarks.gpu_check                      # one H100/H200: a few minutes
    python -m benchmarks.gpu_check --max-new-tokens 256 --steps 5
    python -m benchmarks.gpu_check --allow-cpu --shape tiny --threads 1   # CPU smoke run (tests)

Without CUDA it refuses in one line (exit 2) unless ``--allow-cpu``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SHAPES: dict[str, dict[str, Any]] = {
    "qwen2-0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                       intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, vocab_size=512, tie_word_embeddings=True, max_position_embeddings=256),
}
"""Model shapes (transformers Qwen2Config fields); tiny: a CPU smoke run of the whole script."""
EVEN_LENGTH = r"(?s)(..)*"
"""The rule reward: full match of an even number of characters (any characters, newlines too)."""


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen2-0.5b")
    parser.add_argument("--prompts", type=int, default=None, help="prompts (default 64; tiny: 4)")
    parser.add_argument("--group-size", type=int, default=None, help="completions per prompt (default 8; tiny: 4)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="tokens per completion (default 128; tiny: 8)")
    parser.add_argument("--generate-chunk", type=int, default=16,
                        help="prompts per Generator.generate call (default 16)")
    parser.add_argument("--micro-batch-size", type=int, default=32, help="learner rows per forward (default 32)")
    parser.add_argument("--steps", type=int, default=3, help="GRPO steps on the batch (default 3; the first warms up)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="torch CPU threads (default: all this process may use)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--allow-cpu", action="store_true", help="run on CPU when there is no CUDA (a smoke run)")
    args = parser.parse_args(argv)
    tiny = args.shape == "tiny"
    args.prompts = args.prompts or (4 if tiny else 64)
    args.group_size = args.group_size or (4 if tiny else 8)
    args.max_new_tokens = args.max_new_tokens or (8 if tiny else 128)
    if min(args.prompts, args.group_size, args.max_new_tokens, args.generate_chunk, args.micro_batch_size,
           args.steps, args.threads) < 1:
        parser.error("counts must be >= 1")
    return args


def build_model(directory: Path, shape: dict[str, Any], dtype: Any, device: str, seed: int) -> None:
    """A Qwen2 of ``shape`` with random weights and the tiny-arith tokenizer, saved with save_pretrained."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from mixgrpo.builtin.tiny_arith import train_tokenizer
    from mixgrpo.tasks.toy import warm_start_corpus

    tokenizer = train_tokenizer(warm_start_corpus(seed))
    config = Qwen2Config(**shape, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    with torch.device(device):  # initialise on the GPU: seconds instead of a minute on the CPU
        model = Qwen2ForCausalLM(config).to(dtype)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def _peak_gib(device: str) -> float:
    """Peak GPU memory allocated since the last call, GiB (and reset it); 0 on CPU."""
    import torch

    if device != "cuda":
        return 0.0
    peak = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    return peak


def _after_first(count: int) -> str:
    """The steps the learner figures average over: all but the first (warm-up) when there are several."""
    return "step 1" if count == 1 else "step 2" if count == 2 else f"steps 2-{count}"


def _synchronised(device: str) -> float:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def run(args: argparse.Namespace) -> int:
    """Build the model in a scratch directory (kept until the end: PEFT reads its config) and measure."""
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        return measure(args, Path(scratch))


def measure(args: argparse.Namespace, scratch: Path) -> int:
    """The check itself (see the module docstring); prints one ``name: value  (details)`` line per figure.

    Exit status 1 when the generator does not serve exactly the learner's adapter after loading it.
    """
    import torch
    from peft import get_peft_model_state_dict

    from mixgrpo.actors.generator import Generator
    from mixgrpo.actors.learner import Learner
    from mixgrpo.actors.reward import RewardWorker
    from mixgrpo.batch import RolloutBatch, TrainBatch
    from mixgrpo.config import GeneratorConfig, LearnerConfig, LoraConfig, LossSettings, ModelConfig, \
        RewardChannelConfig
    from mixgrpo.flops import causal_lm_flops_per_token, matmul_params, mfu, peak_flops
    from mixgrpo.rewards.mixer import compute_advantages
    from mixgrpo.tasks.toy import arithmetic_pool

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype_name = "bfloat16" if device == "cuda" else "float32"  # CPU: a smoke run, fp32 is the fast path there
    device_name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    build_model(scratch, SHAPES[args.shape], getattr(torch, dtype_name), device, args.seed)
    built = time.perf_counter()
    model = ModelConfig(path=str(scratch), dtype=dtype_name, chat_template="never")
    lora = LoraConfig()
    sampling = GeneratorConfig(backend="hf", group_size=args.group_size, max_new_tokens=args.max_new_tokens,
                               threads=args.threads)
    loss = LossSettings()
    generator = Generator(model, lora, sampling, args.seed)
    learner = Learner(model, LearnerConfig(micro_batch_size=args.micro_batch_size, threads=args.threads, lora=lora),
                      loss, sampling.temperature, args.seed, max_new_tokens=args.max_new_tokens)
    loaded = time.perf_counter()
    print(f"gpu_check: {device_name}, {dtype_name}, shape {args.shape} "
          f"({matmul_params(learner.model.config) / 1e6:.1f} M matmul weights), {args.prompts} prompts x "
          f"{args.group_size}, max_new_tokens {args.max_new_tokens}; model built in {built - started:.1f} s, "
          f"loaded twice in {loaded - built:.1f} s", flush=True)

    prompts = arithmetic_pool(args.prompts, args.seed)
    generator.generate(prompts.take([0]), step=0, n=1, max_new_tokens=2)  # warm-up: kernels, allocator
    parts, offsets = [], list(range(0, args.prompts, args.generate_chunk))
    begin = _synchronised(device)
    for offset in offsets:
        parts.append(generator.generate(prompts.take(range(offset, min(offset + args.generate_chunk, args.prompts))),
                                        step=1 + offset))
    generate_s = _synchronised(device) - begin
    generate_peak = _peak_gib(device)
    rollouts = RolloutBatch.concat(parts, offsets)
    tokens = int(rollouts.completion_lengths.sum())
    print(f"generation tokens/s: {tokens / generate_s:.1f}  ({tokens} tokens in {generate_s:.2f} s, "
          f"calls: {len(offsets)} of up to {args.generate_chunk} prompts x {args.group_size}; "
          f"{rollouts.truncated.mean():.0%} hit max_new_tokens)", flush=True)

    channel = RewardChannelConfig(name="even_length", kind="regex",
                                  options={"pattern": EVEN_LENGTH, "fullmatch": True, "strip": False})
    scores = RewardWorker(channel).score(prompts, rollouts)
    rewards = scores.values["even_length"].reshape(args.prompts, args.group_size, 1)
    advantages = compute_advantages(rewards, np.ones(1)).advantages.reshape(-1)
    batch = TrainBatch.from_rollouts(rollouts, advantages, np.arange(len(rollouts)))
    print(f"reward: even_length mean {np.nanmean(rewards):.2f} in {scores.seconds * 1e3:.1f} ms; "
          f"advantage |mean| {np.abs(advantages).mean():.2f}", flush=True)

    _peak_gib(device)  # resets the peak: the learner's own from here
    lengths = np.array([len(p) + len(c) for p, c in zip(batch.prompt_token_ids, batch.completion_token_ids)])
    steps, walls = [], []
    for index in range(args.steps):
        begin = _synchronised(device)
        result = learner.train_step(batch)
        wall = _synchronised(device) - begin
        steps.append(result.metrics)
        walls.append(wall)
        print(f"learner step {index + 1}/{args.steps}: {wall:.2f} s wall, {result.metrics['tokens_per_s']:.1f} "
              f"tokens/s, padding {result.metrics['padding_frac']:.0%}, loss {result.metrics.get('loss', 0.0):+.4f}",
              flush=True)
    timed = slice(1, None) if len(steps) > 1 else slice(None)
    learner_tokens_per_s = float(np.mean([m["tokens_per_s"] for m in steps[timed]]))
    print(f"learner tokens/s: {learner_tokens_per_s:.1f}  (non-padding positions / forward + backward + optimizer "
          f"seconds, mean of {_after_first(len(steps))}; over the whole train_step's wall clock "
          f"{lengths.sum() / np.mean(walls[timed]):.1f}; micro-batches of {args.micro_batch_size})", flush=True)

    context = float((lengths ** 2).sum() / lengths.sum())  # token-weighted mean row length
    lora_count = sum(p.numel() for p in learner.trainable)
    per_token = causal_lm_flops_per_token(learner.model.config, sequence_length=context,
                                          reference_forward=loss.kl_coef > 0, trainable_params=lora_count)
    peak = peak_flops(device_name, dtype_name)
    counted = (f"{per_token / 1e9:.4g} GFLOP/token = 4N + 3 x attention at T={context:.0f} + 6 x {lora_count} LoRA "
               f"parameters{', + reference forward' if loss.kl_coef > 0 else ''}")
    if peak is None:
        why = "cpu: no peak to compare with" if device == "cpu" else f"no dense {dtype_name} peak known for {device_name}"
        print(f"MFU: n/a  ({why}; {counted})", flush=True)
    else:
        print(f"MFU: {mfu(learner_tokens_per_s, per_token, peak):.4f}  ({counted}; peak {peak / 1e12:.1f} TFLOP/s "
              f"dense {dtype_name}, {device_name})", flush=True)
    if device == "cuda":
        learn_peak = _peak_gib(device)
        print(f"peak GPU memory GiB: {max(generate_peak, learn_peak):.2f}  (allocated, both models resident: "
              f"generation {generate_peak:.2f}, learner steps {learn_peak:.2f}; reserved "
              f"{torch.cuda.max_memory_reserved() / 2**30:.2f})", flush=True)
    else:
        print("peak GPU memory GiB: n/a  (cpu)", flush=True)

    begin = _synchronised(device)
    generator.load_adapter(result.adapter, result.version)
    load_ms = (_synchronised(device) - begin) * 1e3
    served = get_peft_model_state_dict(generator.backend.model)
    gap = max(float((served[k].float().cpu() - v.float()).abs().max()) for k, v in result.adapter.items())
    largest = max(float(v.float().abs().max()) for k, v in result.adapter.items() if "lora_B" in k)
    print(f"adapter load ms: {load_ms:.2f}  (Generator.load_adapter of {len(result.adapter)} tensors, {lora_count} "
          f"parameters, version {result.version}; served minus trained: max |diff| {gap:g}, max |lora_B| {largest:.3g})",
          flush=True)
    print(f"total s: {time.perf_counter() - started:.1f}", flush=True)
    return 0 if gap == 0 else 1


def main(argv: list[str] | None = None) -> int:
    """Refuse without CUDA (unless --allow-cpu), else run the check."""
    args = _arguments(argv)
    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        print("gpu_check: no CUDA device (torch.cuda.is_available() is False); "
              "--allow-cpu --shape tiny smoke-runs it on CPU", file=sys.stderr)
        return 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
