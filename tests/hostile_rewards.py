"""User reward callables used by the tests (imported inside reward actors as hostile_rewards:...)."""

from __future__ import annotations

import time


def always_raises(prompt: str, completion: str, metadata: dict) -> float:
    """A buggy channel."""
    raise RuntimeError("boom")


def null_for_odd_answers(prompt: str, completion: str, metadata: dict) -> float | None:
    """Null where the gold answer is odd, else 1.0."""
    return None if int(metadata["answer"]) % 2 else 1.0


def garbage(prompt: str, completion: str, metadata: dict) -> object:
    """A mix of unusable values keyed on the prompt's first digit."""
    choices = [float("nan"), float("inf"), "three", 1e300, None, -float("inf"), 0.5, 1.0, [1], 2.0]
    return choices[int(prompt[0])]


def hangs(prompt: str, completion: str, metadata: dict) -> float:
    """Longer than any test timeout."""
    time.sleep(30)
    return 1.0


def slow_batch(prompts: list[str], completions: list[str], metadata: list[dict], seconds: float = 0.4) -> list[float]:
    """A correct but slow batched channel (``seconds`` per batch): makes a step reward-bound."""
    time.sleep(seconds)
    return [float(len(c) % 2) for c in completions]


def always_none(prompt: str, completion: str, metadata: dict) -> None:
    """A channel that never applies."""
    return None


def record_pid(prompt: str, completion: str, metadata: dict, path: str) -> float:
    """Appends the scoring process id to ``path``."""
    import os

    with open(path, "a") as handle:
        handle.write(f"{os.getpid()}\n")
    return 1.0


_flaky_rng = None


def flaky(prompts: list[str], completions: list[str], metadata: list[dict]) -> list[float]:
    """A batched judge that raises on about 10 % of calls and hangs past a 0.5 s timeout on about 2 %."""
    import random

    global _flaky_rng
    if _flaky_rng is None:
        _flaky_rng = random.Random(1234)
    draw = _flaky_rng.random()
    if draw < 0.10:
        raise RuntimeError("judge unavailable")
    if draw < 0.12:
        time.sleep(1.5)
    return [float(len(c) % 3) for c in completions]


def blocks_once_gated(prompt: str, completion: str, metadata: dict, gate: str) -> float:
    """1.0 until the file ``gate`` exists; then marks ``gate + '.entered'`` and blocks for a minute."""
    import os

    if os.path.exists(gate):
        open(gate + ".entered", "w").close()
        time.sleep(60)
    return 1.0


def length_logging_calls(prompts: list[str], completions: list[str], metadata: list[dict], path: str) -> list[float]:
    """Each completion's length; appends the number of completions of every call to ``path``."""
    with open(path, "a") as handle:
        handle.write(f"{len(completions)}\n")
    return [float(len(c)) for c in completions]
