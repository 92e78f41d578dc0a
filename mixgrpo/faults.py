"""Failpoints: deliberate crashes at named points, for the fault-injection tests.

Production code calls ``failpoint(point, who, step)`` at a few places (before
generation, while scoring, inside the learner step, while writing a
checkpoint, between steps). Nothing happens unless the environment variable
``MIXGRPO_FAILPOINTS`` names a JSON file with a plan, a list of::

    {"who": "generator-0", "point": "generate", "step": 3, "action": "kill"}

``who`` is ``driver``, ``generator-<replica>``, ``reward-<channel>`` or
``learner-<rank>``; ``step`` (optional) is the training step for the driver and
generators and the call count (0-based) for reward workers and learner ranks;
``action`` is ``kill`` (SIGKILL this process), ``raise``, ``hang`` (sleep
``seconds``) or ``corrupt`` (returned to the caller, which then corrupts its
data: the learner turns its loss into NaN). Each entry fires once: a marker file next to the plan records it,
so a restarted actor does not die again.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

ENV = "MIXGRPO_FAILPOINTS"


class InjectedFault(RuntimeError):
    """Raised by a failpoint whose action is ``raise``."""


def failpoint(point: str, who: str, step: int | None = None) -> str | None:
    """Fire the first matching, not yet fired entry of the plan; returns its action (None: nothing fired)."""
    plan_path = os.environ.get(ENV)
    if not plan_path:
        return None
    plan: list[dict[str, Any]] = json.loads(Path(plan_path).read_text())
    for index, entry in enumerate(plan):
        if entry["point"] != point or entry["who"] != who or entry.get("step", step) != step:
            continue
        marker = Path(f"{plan_path}.{index}.fired")
        try:
            marker.touch(exist_ok=False)
        except FileExistsError:
            continue
        return _act(entry, point, who, step)
    return None


def _act(entry: dict[str, Any], point: str, who: str, step: int | None) -> str:
    action = entry.get("action", "kill")
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "raise":
        raise InjectedFault(f"injected fault at {point} in {who} (step {step})")
    elif action == "hang":
        time.sleep(float(entry.get("seconds", 3600)))
    elif action != "corrupt":
        raise ValueError(f"unknown failpoint action {action!r}")
    return action
