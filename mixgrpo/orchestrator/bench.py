"""``mixgrpo bench``: where does a step's time go, and how close are the actors to their raw engines?

A bench is a normal training run watched step by step: the driver's own stage
spans plus every actor call's span (events.py), aligned to the driver's clock.
From the measured steps (after warm-up) it derives throughput, each actor's busy
fraction, the step's critical stage and a verdict (rollout-, reward- or
learner-bound) with what to change, the learner's tokens/s with its MFU
(``mixgrpo.flops``) where the model's FLOPs and the GPU's peak are known, and the
memory of the run's process tree (PSS of the driver and the Ray processes it started).
Baselines (bench_baselines.py): the same Generator and Learner as actors and as
plain objects, timed in interleaved pairs.
"""

from __future__ import annotations

import itertools
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

from mixgrpo.builtin import resolve_model_path
from mixgrpo.config import Config, apply_overrides, config_from_dict
from mixgrpo.errors import InputError
from mixgrpo.flops import causal_lm_flops_per_token, lora_params, mfu, peak_flops
from mixgrpo.orchestrator.driver import Actors, train
from mixgrpo.orchestrator.events import Span, clock_offset
from mixgrpo.orchestrator.placement import reward_actors, tree_pss
from mixgrpo.orchestrator.step import StepLoop

DRIVER_STAGES = ("generate", "reward", "mixer", "learn", "broadcast")


@dataclass
class SpanCollector:
    """The StepObserver of a bench run: gathers every span of every step on the driver's clock."""

    spans: list[Span] = field(default_factory=list)
    step_metrics: list[dict[str, float]] = field(default_factory=list)
    tree_memory: list[tuple[int, float, int]] = field(default_factory=list)
    """(step, PSS of the driver's process tree in MiB, its processes) after every step."""
    own_time: list[tuple[float, float]] = field(default_factory=list)
    """(start, end) of every call of this observer on the driver's clock: the bench's own cost, which the
    training loop waits for (reading the tree's PSS and draining spans take tens of ms a step)."""
    _offsets: dict[str, float] = field(default_factory=dict)

    def __call__(self, step: int, metrics: dict[str, float], actors: Actors, loop: StepLoop) -> None:
        started = time.monotonic()
        try:
            self._collect(step, metrics, actors, loop)
        finally:
            self.own_time.append((started, time.monotonic()))

    def _collect(self, step: int, metrics: dict[str, float], actors: Actors, loop: StepLoop) -> None:
        import psutil

        pss, processes = tree_pss(psutil.Process())
        self.tree_memory.append((step, pss / 2**20, processes))
        lanes = actors.by_name(loop.config)
        if not self._offsets:
            self._offsets = {lane: clock_offset(actor) for lane, actor in lanes.items()}
        self.step_metrics.append({"step": step, **metrics})
        self.spans += [Span("driver", stage, start, end, step) for stage, start, end in loop.last_driver_spans]
        drained = ray.get([actor.drain_spans.remote() for actor in lanes.values()])
        for (lane, _), spans in zip(lanes.items(), drained):
            offset = self._offsets[lane]
            self.spans += [Span(lane, name, s + offset, e + offset, step) for name, s, e in spans
                           if name not in ("clock", "drain_spans", "placement")]


@dataclass(frozen=True)
class BenchFigures:
    """What a bench measured over its steps after warm-up."""

    steps: int
    wall_s: float
    samples_per_s: float
    rollout_tokens_per_s: float
    """Completion tokens / the driver's generate time (transport included; async: the actors' time)."""
    trained_tokens_per_s: float
    """Completion tokens / the driver's learn time."""
    actor_rollout_tokens_per_s: float
    """Completion tokens / the generator actors' own generate time (per actor)."""
    actor_trained_tokens_per_s: float
    """Completion tokens / learner rank 0's own train_step time."""
    stage_s: dict[str, float]
    """Mean driver seconds per step in each stage."""
    busy_fraction: dict[str, float]
    """Per actor lane: busy time / measured wall time."""
    lane_s_per_step: dict[str, float]
    """Per actor lane: busy seconds per step."""
    bound: str
    verdict: str
    learner: LearnerCompute
    tree_pss_mb: float
    """Peak PSS (MiB) of the driver's process tree over the measured steps: the driver and, when it started Ray
    here, every Ray process (actors included); shared pages are counted once."""
    processes: int
    """Processes in that tree at its peak."""

    def memory_summary(self) -> str:
        """One line for bench.md: the process tree's peak PSS and its processes."""
        return f"process tree (driver + Ray) peak PSS {self.tree_pss_mb:.0f} MiB in {self.processes} processes"


@dataclass(frozen=True)
class LearnerCompute:
    """The learner's own throughput over the measured steps, and its MFU where it can be counted."""

    tokens_per_s: float
    """Mean of learner/tokens_per_s: non-padding positions per second of forward + backward + optimizer."""
    padding_frac: float
    """Mean of learner/padding_frac: padded positions / all positions the micro-batches computed."""
    mfu: float | None
    """tokens_per_s x model FLOPs per token / the device's dense peak; None when either is unknown."""
    note: str
    """How MFU was counted, or why it is not available."""

    def summary(self) -> str:
        """One line for bench.md: learner tokens/s, padding, MFU or why not."""
        shown = f"MFU {self.mfu:.1%} ({self.note})" if self.mfu is not None else f"MFU not available: {self.note}"
        return f"learner {self.tokens_per_s:.0f} tokens/s, padding {self.padding_frac:.0%}, {shown}"


def learner_device_name(config: Config) -> str | None:
    """The GPU the learner ranks run on, as the driver names it; None when they run on CPU."""
    if config.cluster.gpus == 0 or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(0)


def learner_compute(config: Config, measured: list[dict[str, float]], device_name: str | None) -> LearnerCompute:
    """Learner tokens/s, padding and MFU from the measured steps' learner metrics.

    FLOPs per token (``causal_lm_flops_per_token``) need the attention context T: the mean
    trained row length the learner reports (``learner/row_tokens_mean``). A token-weighted mean
    would be a little larger, so with rows of mixed length the attention term is a slight undercount.
    """
    trained = [m for m in measured if "learner/tokens_per_s" in m]
    if not trained:
        return LearnerCompute(0.0, 0.0, None, "no learner step in the measured steps")
    tokens_per_s = float(np.mean([m["learner/tokens_per_s"] for m in trained]))
    padding = float(np.mean([m["learner/padding_frac"] for m in trained]))

    def unavailable(why: str) -> LearnerCompute:
        return LearnerCompute(tokens_per_s, padding, None, why)

    if device_name is None:
        return unavailable("the learner runs on CPU (no peak to compare with)")
    peak = peak_flops(device_name, config.model.dtype)
    if peak is None:
        return unavailable(f"no dense {config.model.dtype} peak known for {device_name} (mixgrpo.flops)")
    if config.model.kind != "causal-lm":
        return unavailable(f"model.kind={config.model.kind} is not an HF causal LM")
    from transformers import AutoConfig

    try:
        hf_config = AutoConfig.from_pretrained(resolve_model_path(config.model.path, config.run.seed))
        lora = lora_params(hf_config, config.learner.lora.rank, config.learner.lora.target_modules)
    except (OSError, ValueError) as error:
        return unavailable(f"FLOPs per token unknown for {config.model.path}: {error}")
    length = float(np.mean([m["learner/row_tokens_mean"] for m in trained]))
    try:
        per_token = causal_lm_flops_per_token(hf_config, sequence_length=length,
                                              reference_forward=config.algorithm.loss.kl_coef > 0,
                                              trainable_params=lora)
    except ValueError as error:
        return unavailable(f"FLOPs per token unknown for {config.model.path}: {error}")
    return LearnerCompute(tokens_per_s, padding, mfu(tokens_per_s, per_token, peak),
                          f"{per_token / 1e9:.2f} GFLOP/token at T={length:.0f}, "
                          f"peak {peak / 1e12:.0f} TFLOP/s dense {config.model.dtype} on {device_name}")


def _overlap(start: float, end: float, intervals: list[tuple[float, float]]) -> float:
    """Seconds of [start, end] covered by the (disjoint) ``intervals``."""
    return sum(max(0.0, min(end, b) - max(start, a)) for a, b in intervals)


def analyse(collector: SpanCollector, config: Config, warmup: int, device_name: str | None = None) -> BenchFigures:
    """Throughput, busy fractions and the verdict from the steps after ``warmup``; ``device_name``:
    the learner's GPU (``learner_device_name``) for its MFU, None on CPU."""
    measured = [m for m in collector.step_metrics if m["step"] >= warmup]
    if not measured:
        raise InputError(f"no steps after the {warmup} warm-up steps: raise --steps")
    steps = {int(m["step"]) for m in measured}
    spans = [s for s in collector.spans if s.step in steps]
    window_start = min(s.start for s in spans if s.lane == "driver")
    window_end = max(s.end for s in spans if s.lane == "driver")
    wall = window_end - window_start - _overlap(window_start, window_end, collector.own_time)  # as if unwatched
    samples = len(measured) * config.task.prompts_per_step * config.generator.group_size
    tokens = sum(m["completion_tokens/mean"] for m in measured) * config.task.prompts_per_step * config.generator.group_size
    lane_busy: dict[str, float] = {}
    for span in spans:  # busy time while the observer ran is left out with it (async: a generator goes on)
        if span.lane != "driver":
            busy = span.end - span.start - _overlap(span.start, span.end, collector.own_time)
            lane_busy[span.lane] = lane_busy.get(span.lane, 0.0) + busy
    # generator lanes, or (colocated) the learner ranks' generate spans on their own lanes
    generating = sum(s.end - s.start for s in spans if s.lane != "driver" and s.stage == "generate")
    training = sum(s.end - s.start for s in spans if s.lane == "learner-0" and s.stage == "train_step")
    stage_s = {stage: float(np.mean([m.get(f"time/{stage}", 0.0) for m in measured])) for stage in DRIVER_STAGES}
    per_step = {lane: busy / len(measured) for lane, busy in lane_busy.items()}
    bound, verdict = _verdict(per_step, stage_s, config)
    _, tree_pss_mb, processes = max((m for m in collector.tree_memory if m[0] in steps), key=lambda m: m[1])
    return BenchFigures(
        steps=len(measured), wall_s=wall, samples_per_s=samples / wall,
        # In async mode the driver's generate stage is only the wait for generation that overlapped
        # the previous step, so rollout throughput is taken from the generators' own spans.
        rollout_tokens_per_s=tokens / max(generating if config.algorithm.async_steps else
                                          sum(m["time/generate"] for m in measured), 1e-9),
        trained_tokens_per_s=tokens / max(sum(m["time/learn"] for m in measured), 1e-9),
        actor_rollout_tokens_per_s=tokens / max(generating, 1e-9),
        actor_trained_tokens_per_s=tokens / max(training, 1e-9),
        stage_s=stage_s, busy_fraction={lane: busy / wall for lane, busy in lane_busy.items()},
        lane_s_per_step=per_step, bound=bound, verdict=verdict,
        learner=learner_compute(config, measured, device_name), tree_pss_mb=tree_pss_mb, processes=processes,
    )


def _verdict(per_step: dict[str, float], stage_s: dict[str, float], config: Config) -> tuple[str, str]:
    """Name the stage that bounds the step, with the figures behind it and what to change."""
    def busiest(prefix: str) -> tuple[str, float]:
        lanes = {k: v for k, v in per_step.items() if k.startswith(prefix)}
        return max(lanes.items(), key=lambda item: item[1]) if lanes else (prefix, 0.0)

    candidates = {"rollout": busiest("generator-"), "reward": busiest("reward-"), "learner": busiest("learner-")}
    bound = max(candidates, key=lambda k: candidates[k][1])
    lane, seconds = candidates[bound]
    figures = ", ".join(f"{k} {v[1]:.3f}s ({v[0]})" for k, v in candidates.items())
    advice = {
        "rollout": "add generators (generator.replicas), use the vllm backend, or turn on algorithm.async_steps=1 "
                   "so generation overlaps learning",
        "reward": _reward_advice(lane.removeprefix("reward-"), config),
        "learner": "add learner ranks (learner.ranks), raise learner.micro_batch_size, or turn on "
                   "algorithm.async_steps=1 to hide generation behind learning",
    }[bound]
    if config.algorithm.async_steps == 0 and bound != "rollout" and candidates["rollout"][1] > 0.3 * seconds:
        advice += "; async_steps=1 would also overlap the rollout time"
    return bound, f"{bound}-bound: per step {figures}. Next: {advice}."


def _reward_advice(actor: str, config: Config) -> str:
    """What to change when reward actor ``actor`` (a lane name without ``reward-``) bounds the step."""
    hosted = next(([config.rewards[i].name for i in spec.channels] for spec in reward_actors(config.rewards)
                   if spec.name == actor), [])
    if len(hosted) > 1:
        return (f"reward actor {actor!r} (channels {', '.join(hosted)}) is the slowest: give its slowest channel "
                "(reward_seconds/<channel>) an actor of its own (actor: own), or a tighter timeout_s")
    return (f"channel {actor!r} is the slowest: give it its own GPU (device: gpu), replicas, a faster model, "
            "or a tighter timeout_s")


def sweep_points(sweeps: list[str]) -> list[dict[str, str]]:
    """``["a=1,2", "b=x,y"]`` -> the cartesian product as override dicts (one empty dict when none)."""
    axes = []
    for sweep in sweeps:
        key, sep, values = sweep.partition("=")
        if not sep or not key or not values:
            raise InputError(f"--sweep {sweep!r} is not of the form KEY=V1,V2")
        axes.append([(key, value) for value in values.split(",")])
    return [dict(point) for point in itertools.product(*axes)] if axes else [{}]


def bench_config(config: Config, steps: int, warmup: int, point: dict[str, str]) -> Config:
    """The config of one bench run: steps = warmup + steps, no checkpoints in between, sweep values set."""
    data = config.model_dump(mode="json")
    data["run"].update({"steps": warmup + steps, "checkpoint_every": warmup + steps, "tensorboard": False})
    return config_from_dict(apply_overrides(data, [f"{k}={v}" for k, v in point.items()]))


def run_bench(config: Config, run_dir: Path, warmup: int) -> tuple[SpanCollector, BenchFigures]:
    """One watched training run into ``run_dir``."""
    collector = SpanCollector()
    train(config, run_dir, observer=collector)
    return collector, analyse(collector, config, warmup, learner_device_name(config))


def environment() -> dict[str, Any]:
    """Library versions and hardware, for bench.json."""
    import peft
    import transformers

    info: dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(), "cpus": _cpu_count(),
        "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
        "ray": ray.__version__, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import vllm

        info["vllm"] = vllm.__version__
    except ImportError:
        info["vllm"] = None
    return info


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
