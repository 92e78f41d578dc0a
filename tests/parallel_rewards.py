"""Reward callables for the sub-channel and replica tests (imported inside reward actors as parallel_rewards:...)."""

from __future__ import annotations

import os
import time


def length_and_pid(prompts: list[str], completions: list[str], metadata: list[dict]) -> dict[str, list[float]]:
    """Sub-channels: ``length`` of each completion, and the ``pid`` of the process that scored it."""
    return {"length": [float(len(c)) for c in completions], "pid": [float(os.getpid())] * len(completions)}


def parts_per_completion(prompt: str, completion: str, metadata: dict) -> dict | None:
    """One dict per completion: ``a`` = length, ``b`` null for odd lengths; None (all null) for an empty one."""
    if not completion:
        return None
    return {"a": float(len(completion)), "b": None if len(completion) % 2 else 1.0, "extra": 5.0}


def lengths(prompts: list[str], completions: list[str], metadata: list[dict]) -> list[float]:
    """Plain values: the length of each completion."""
    return [float(len(c)) for c in completions]


def hangs_on_marked(prompts: list[str], completions: list[str], metadata: list[dict]) -> list[float]:
    """Hangs when its share of the batch holds a completion containing "hang"; else lengths."""
    if any("hang" in c for c in completions):
        time.sleep(30)
    return [float(len(c)) for c in completions]


def process_report(actor: object) -> dict:
    """Run inside an actor with ``__ray_call__``: its pid and which model libraries its process has imported."""
    import sys

    return {"pid": os.getpid(), "heavy": sorted(m for m in ("torch", "transformers", "open_clip") if m in sys.modules)}
