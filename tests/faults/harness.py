"""Fault-injection harness: plans that kill, break or stall a named actor at a named point of a step.

Reads as the scenario: ``kill("generator-0", at="generate", step=2)``. The plan file
lives where MIXGRPO_FAILPOINTS points (set before Ray starts, so every actor process sees
it); each test writes its own plan and clears the markers of the previous one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mixgrpo.faults import ENV


def kill(who: str, at: str, step: int | None = None) -> dict:
    """SIGKILL ``who``'s process when it reaches point ``at`` (at ``step``)."""
    return _entry(who, at, step, "kill")


def corrupt(who: str, at: str, step: int | None = None) -> dict:
    """Let ``who`` corrupt its data at ``at`` (the learner's loss becomes NaN)."""
    return _entry(who, at, step, "corrupt")


def _entry(who: str, at: str, step: int | None, action: str) -> dict:
    entry = {"who": who, "point": at, "action": action}
    if step is not None:
        entry["step"] = step
    return entry


class FaultPlan:
    """One plan file per test session; ``arm`` replaces its entries and forgets what already fired."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "failpoints.json"
        self.path.write_text("[]")

    def install(self) -> None:
        """Point this process (and every Ray worker started after it) at the plan."""
        os.environ[ENV] = str(self.path)

    def arm(self, *entries: dict) -> None:
        """Replace the plan."""
        for marker in self.path.parent.glob(f"{self.path.name}.*.fired"):
            marker.unlink()
        self.path.write_text(json.dumps(list(entries)))

    def fired(self) -> int:
        """How many entries have fired."""
        return len(list(self.path.parent.glob(f"{self.path.name}.*.fired")))
