"""Benchmark: memory of a rule-channel reward actor, and what torch would add to it.

Starts local Ray, creates one RewardWorker actor per rule channel kind, scores a
batch, and prints the actor process's RSS and PSS (psutil ``memory_full_info``;
PSS splits shared pages among the processes that map them, so it is the figure
that adds up across actors), which heavy libraries it has loaded, and the same
figures after the actor imports torch (what every reward actor paid when the
channel registry imported all kinds at start).

Run from the repository root::

    python -m benchmarks.bench_reward_memory [--kinds numeric_match regex]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np
import ray

from mixgrpo.actors.reward import RewardWorker
from mixgrpo.batch import PromptBatch, RolloutBatch
from mixgrpo.config import RewardChannelConfig

HEAVY = ("torch", "transformers", "open_clip")
OPTIONS = {"regex": {"pattern": r"-?\d+"}, "length": {"max_tokens": 3}, "numeric_match": {},
           "numeric_distance": {"cap": 10}, "exact_match": {}}


class MeasuredWorker(RewardWorker):
    """A RewardWorker that reports on its own process."""

    def memory(self) -> dict[str, Any]:
        """RSS and PSS in MiB (PSS None where the platform has none) and the heavy modules loaded."""
        import psutil

        info = psutil.Process().memory_full_info()
        pss = getattr(info, "pss", None)
        return {"rss": info.rss / 2**20, "pss": None if pss is None else pss / 2**20,
                "heavy": [name for name in HEAVY if name in sys.modules]}

    def import_torch(self) -> dict[str, Any]:
        """Import torch here (as every reward actor did before the lazy registry) and measure again."""
        import torch

        torch.set_num_threads(1)
        return self.memory()


def batch(n_prompts: int = 8, m: int = 8) -> tuple[PromptBatch, RolloutBatch]:
    """P prompts "i+1=" with gold answers, m completions each."""
    prompts = PromptBatch(prompt_ids=np.arange(n_prompts), prompts=[f"{i}+1=" for i in range(n_prompts)],
                          metadata=[{"answer": str(i + 1)} for i in range(n_prompts)])
    n = n_prompts * m
    rollouts = RolloutBatch(
        prompt_index=np.repeat(np.arange(n_prompts), m),
        prompt_token_ids=[np.array([1, 2, 3], dtype=np.int64)] * n,
        completion_token_ids=[np.array([4, 5], dtype=np.int64)] * n,
        behaviour_logprobs=[np.array([-0.5, -0.5], dtype=np.float32)] * n,
        completion_text=[str(i % 10) for i in range(n)],
        policy_version=np.zeros(n, dtype=np.int64),
    )
    return prompts, rollouts


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} MiB"


def main() -> None:
    """Print one line per kind: memory after scoring, then after importing torch."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=["numeric_match", "regex"], choices=sorted(OPTIONS))
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for kind in args.kinds:
            config = RewardChannelConfig(name=kind, kind=kind, options=OPTIONS[kind])
            actor = ray.remote(MeasuredWorker).options(num_cpus=0.5).remote(config)
            ray.get(actor.score.remote(*batch()))
            lean, heavy = ray.get(actor.memory.remote()), ray.get(actor.import_torch.remote())
            print(f"{kind:<16} scored: rss {_mib(lean['rss'])}, pss {_mib(lean['pss'])}, "
                  f"heavy modules {lean['heavy'] or 'none'} | after import torch: "
                  f"rss {_mib(heavy['rss'])}, pss {_mib(heavy['pss'])}")
            ray.kill(actor)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
