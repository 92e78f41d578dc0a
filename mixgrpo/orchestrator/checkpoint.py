"""Atomic, resumable checkpoints.

``RUN_DIR/checkpoints/step-000020/`` holds ``learner.pt`` (adapter, optimizer,
scheduler, version, RNG) and ``driver.json`` (the next step to run). A
checkpoint is written into a temporary directory and renamed into place, and
``RUN_DIR/checkpoints/latest`` is replaced atomically afterwards, so a crash at
any point leaves the previous checkpoint valid and never exposes a half-written one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mixgrpo.faults import failpoint


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint."""

    next_step: int
    """The step the resumed run starts with."""
    learner_state: dict[str, Any]
    """What Learner.state() returned."""
    path: Path
    """Its directory."""


def _write_atomically(path: Path, text: str) -> None:
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def save_checkpoint(run_dir: Path, next_step: int, learner_state: dict[str, Any]) -> Path:
    """Write checkpoint ``step-<next_step>`` and point ``latest`` at it; returns its directory."""
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{next_step:06d}"
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".writing-"))
    torch.save(learner_state, staging / "learner.pt")
    failpoint("checkpoint_write", "driver", next_step)
    (staging / "driver.json").write_text(json.dumps({"next_step": next_step}))
    replaced = None
    if final.exists():  # re-saving a step: keep the old copy until the new one is in place
        replaced = final.with_name(f".replaced-{final.name}")
        shutil.rmtree(replaced, ignore_errors=True)
        os.rename(final, replaced)
    os.rename(staging, final)
    _write_atomically(root / "latest", final.name)
    if replaced is not None:
        shutil.rmtree(replaced)
    return final


def load_latest_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The checkpoint ``latest`` points at, or None when the run has none."""
    pointer = run_dir / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    path = run_dir / "checkpoints" / pointer.read_text().strip()
    driver = json.loads((path / "driver.json").read_text())
    state = torch.load(path / "learner.pt", weights_only=False)
    return Checkpoint(next_step=int(driver["next_step"]), learner_state=state, path=path)
