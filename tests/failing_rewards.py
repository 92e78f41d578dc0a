"""Reward callables failing the way the reward-failure tests reproduce (imported inside reward actors as
failing_rewards:...)."""

from __future__ import annotations

import os
import time


def raises_on_nine(prompt: str, completion: str, metadata: dict) -> float:
    """Raises on a completion containing '9' (about one in ten of the tiny job's), else its length."""
    if "9" in completion:
        raise ValueError(f"cannot score {completion!r}")
    return float(len(completion))


def raises_on_nine_batched(prompts: list[str], completions: list[str], metadata: list[dict]) -> list[float]:
    """The same judge called once per batch: one completion with a '9' fails the whole call."""
    return [raises_on_nine(p, c, m) for p, c, m in zip(prompts, completions, metadata)]


def parts_raising_on_nine(prompt: str, completion: str, metadata: dict) -> dict[str, float]:
    """Two sub-channels (length, digits) per completion; raises on a '9' like raises_on_nine."""
    return {"length": raises_on_nine(prompt, completion, metadata), "digits": float(sum(c.isdigit() for c in completion))}


def exits_process(prompts: list[str], completions: list[str], metadata: list[dict]) -> list[float]:
    """Ends its own process on every call: a channel whose actor keeps dying."""
    os._exit(1)


def hangs_forever(prompts: list[str], completions: list[str], metadata: list[dict]) -> list[float]:
    """Never returns within any test (an hour), on every call."""
    time.sleep(3600)
    return [0.0] * len(completions)


def sleeps(prompts: list[str], completions: list[str], metadata: list[dict], seconds: float) -> list[float]:
    """Returns 1.0 for every completion after ``seconds``."""
    time.sleep(seconds)
    return [1.0] * len(completions)


calls = 0
"""Calls of exclusive_probe in this process."""
max_inside = 0
"""The most exclusive_probe calls that were ever running at the same time in this process."""
_inside = 0


def exclusive_probe(prompts: list[str], completions: list[str], metadata: list[dict],
                    first_seconds: float) -> list[float]:
    """Sleeps ``first_seconds`` on its first call only; records in max_inside how many calls overlapped."""
    global calls, max_inside, _inside
    calls += 1
    _inside += 1
    max_inside = max(max_inside, _inside)
    try:
        if calls == 1:
            time.sleep(first_seconds)
        return [1.0] * len(completions)
    finally:
        _inside -= 1


def process_probe(actor: object) -> tuple[int, float]:
    """Run inside an actor with ``__ray_call__``: its Python thread count and resident memory in MiB."""
    import threading

    import psutil

    return threading.active_count(), psutil.Process().memory_info().rss / 2**20
