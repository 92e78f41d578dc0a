"""Actor vs raw engine, measured interleaved: how much do Ray actors cost over the plain classes?

A ratio of two throughputs measured at different moments says more about the machine's noise than
about overhead. So each pair runs the same call twice, back to back, on the same inputs: once on a
Ray actor (the remote Generator / Learner, as a run uses them) and once on the same plain class in
this process (A B A B ...). Generation is seeded, so both sides sample the same tokens; both learners
take the same updates, so they stay on one trajectory. Per pair, throughput ratio = raw time /
actor time (same tokens on both sides); the report gives the median and the min-max spread.

``actor``: the actor's own call time (its span); ``driver``: the call as the driver sees it, Ray
serialisation and transport included.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from statistics import median
from typing import Any, Callable

import numpy as np
import ray
import torch

from mixgrpo.actors.clip_policy import ClipPolicy
from mixgrpo.actors.generator import Generator
from mixgrpo.actors.learner import Learner
from mixgrpo.batch import TrainBatch
from mixgrpo.config import Config
from mixgrpo.orchestrator.placement import remote_class
from mixgrpo.tasks import make_task
from mixgrpo.threads import fixed_threads

SPREAD_LIMIT = 0.10
"""A ratio whose (max - min) / median exceeds this is flagged as too noisy to read."""


@dataclass(frozen=True)
class PairedRatio:
    """actor throughput / raw throughput over interleaved pairs."""

    actor: list[float]
    """Per pair: raw seconds / the actor's own seconds."""
    driver: list[float]
    """Per pair: raw seconds / the seconds the driver waited (transport included)."""
    raw_tokens_per_s: float
    """Median raw throughput over the pairs (completion tokens per second)."""

    @property
    def median(self) -> float:
        """Median actor/raw ratio."""
        return median(self.actor)

    @property
    def driver_median(self) -> float:
        """Median driver-seen/raw ratio."""
        return median(self.driver)

    @property
    def spread(self) -> float:
        """(max - min) / median of the actor ratios."""
        return (max(self.actor) - min(self.actor)) / self.median

    def summary(self) -> dict[str, float]:
        """median, min, max, spread, driver median and raw tokens/s, for bench.json."""
        return {"median": self.median, "min": min(self.actor), "max": max(self.actor), "spread": self.spread,
                "driver_median": self.driver_median, "raw_tokens_per_s": self.raw_tokens_per_s,
                "pairs": len(self.actor)}


@dataclass(frozen=True)
class Baselines:
    """Generation and learning, actor vs raw."""

    generate: PairedRatio
    learn: PairedRatio

    def flags(self) -> list[str]:
        """One line per ratio too noisy to trust."""
        return [f"{name} actor/raw spread {ratio.spread:.0%} > {SPREAD_LIMIT:.0%}: the machine was too noisy "
                "for this figure; rerun on a quiet machine or with more pairs"
                for name, ratio in (("generation", self.generate), ("learner", self.learn))
                if ratio.spread > SPREAD_LIMIT]


def _paired(actor: Any, method: str, raw: Callable[..., Any], args: tuple[Any, ...]) -> tuple[Any, float, float, float]:
    """One pair: the actor call, then the raw call. Returns (raw result, actor own s, driver s, raw s)."""
    ray.get(actor.drain_spans.remote())
    started = time.monotonic()
    ray.get(getattr(actor, method).remote(*args))
    driver_s = time.monotonic() - started
    own = [end - start for name, start, end in ray.get(actor.drain_spans.remote()) if name == method]
    started = time.monotonic()
    result = raw(*args)
    raw_s = time.monotonic() - started
    return result, own[0], driver_s, raw_s


def _ratio(samples: list[tuple[float, float, float]], tokens: list[int]) -> PairedRatio:
    return PairedRatio(actor=[raw / own for own, _, raw in samples], driver=[raw / drv for _, drv, raw in samples],
                       raw_tokens_per_s=median(n / raw for n, (_, _, raw) in zip(tokens, samples)))


def _engines(config: Config) -> tuple[tuple[type, tuple, dict], tuple[type, tuple, dict]]:
    """(class, args, kwargs) of the generator and of the learner the run uses (a CLIP policy is both)."""
    if config.model.kind == "clip":
        policy = (ClipPolicy, (config.model, config.learner, config.algorithm.loss, config.generator, config.run.seed),
                  {"task": config.task})
        return policy, policy
    generator = (Generator, (config.model, config.learner.lora, config.generator, config.run.seed), {})
    learner = (Learner, (config.model, config.learner, config.algorithm.loss, config.generator.temperature,
                         config.run.seed), {"max_new_tokens": config.generator.max_new_tokens})
    return generator, learner


def interleaved_baselines(config: Config, steps: list[int], warmup: int) -> Baselines:
    """Generator and learner, actor vs raw, A B A B over the prompts of ``warmup`` + ``steps``.

    Needs Ray. The first ``warmup`` pairs are run and not measured. Threads on both sides are the
    config's (``generator.threads``, ``learner.threads``; auto: 1, as a disaggregated actor). A CLIP policy (model.kind clip) samples
    and learns itself: it is both sides' generator and learner (separate instances).
    """
    task = make_task(config.task, config.run.seed)
    (generator_class, generator_args, generator_kwargs), (learner_class, learner_args, learner_kwargs) = \
        _engines(config)
    generator_threads, learner_threads = fixed_threads(config.generator.threads), fixed_threads(config.learner.threads)
    remote_generator = remote_class(generator_class).options(num_cpus=generator_threads).remote(
        *generator_args, **generator_kwargs)
    remote_learner = remote_class(learner_class).options(num_cpus=learner_threads).remote(
        *learner_args, **learner_kwargs)
    previous_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(generator_threads)
        raw_generator = generator_class(*generator_args, **generator_kwargs)
        generated, batches, tokens = [], [], []
        for index, step in enumerate([*range(warmup), *steps]):
            rollouts, own, driver_s, raw_s = _paired(remote_generator, "generate", raw_generator.generate,
                                                     (task.sample(step), step))
            advantages = np.random.default_rng(step).normal(size=len(rollouts)).astype(np.float32)
            batches.append(TrainBatch(rollouts.prompt_token_ids, rollouts.completion_token_ids,
                                      rollouts.behaviour_logprobs, advantages))
            if index >= warmup:
                generated.append((own, driver_s, raw_s))
                tokens.append(int(rollouts.completion_lengths.sum()))
        del raw_generator
        torch.set_num_threads(learner_threads)
        raw_learner = learner_class(*learner_args, **learner_kwargs)
        learned = []
        for index, batch in enumerate(batches):
            _, own, driver_s, raw_s = _paired(remote_learner, "train_step", raw_learner.train_step, (batch,))
            if index >= warmup:
                learned.append((own, driver_s, raw_s))
        return Baselines(generate=_ratio(generated, tokens), learn=_ratio(learned, tokens))
    finally:
        torch.set_num_threads(previous_threads)
        for actor in (remote_generator, remote_learner):
            ray.kill(actor)
