"""The launch state file, ``RUN_DIR/launch/state.json``: which pod, where, what it costs, how it ended.

It is written before the pod exists and after every change, so ``mixgrpo launch
status | attach | fetch | stop RUN_DIR`` find the pod after a ``--detach``, a
closed terminal or a crashed laptop. It holds no secret.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mixgrpo.errors import InputError
from mixgrpo.orchestrator.launch.ssh import SshTarget

LAUNCH_DIR = "launch"
STATE = "state.json"
KEY = "id_ed25519"
LOG = "train.log"


def launch_dir(run_dir: Path) -> Path:
    """Where a launch keeps its own files inside the local run directory."""
    return run_dir / LAUNCH_DIR


@dataclass
class LaunchState:
    """Everything needed to find, follow, price and end a launched pod."""

    name: str
    run_dir: str
    gpu_type: str
    gpus: int
    cloud: str
    image: str
    price_per_hr: float
    """Estimated from the GPU price before creation, then the pod's own costPerHr."""
    max_hours: float
    max_cost: float | None
    keep_pod: bool
    remote_dir: str
    pod_id: str | None = None
    created_at: float | None = None
    """Epoch seconds of the create request (the cost clock starts here)."""
    ssh_host: str | None = None
    ssh_port: int | None = None
    status: str = "validated"
    """validated | creating | starting | running | detached | finished | failed | capped | interrupted | error."""
    exit_code: int | None = None
    terminated: bool = False
    ended_at: float | None = None
    """Epoch seconds of the termination (the cost clock stops here)."""
    log_offset: int = 0
    """Bytes of the remote train.log already shown and saved locally."""
    last_pull: float | None = None

    @property
    def path(self) -> Path:
        """The state file."""
        return launch_dir(Path(self.run_dir)) / STATE

    def save(self) -> None:
        """Write the state file atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".state-")
        with os.fdopen(fd, "w") as handle:
            json.dump(dataclasses.asdict(self), handle, indent=2)
        os.replace(temporary, self.path)

    @classmethod
    def load(cls, run_dir: Path) -> LaunchState:
        """The state of the launch whose local run directory is ``run_dir``."""
        path = launch_dir(run_dir) / STATE
        if not path.is_file():
            raise InputError(f"{run_dir}: no launch state ({path} missing); not a launched run directory")
        return cls(**json.loads(path.read_text()))

    def cap_seconds(self) -> float:
        """Seconds the pod may live: the tighter of --max-hours and --max-cost at its price."""
        by_cost = self.max_cost / self.price_per_hr * 3600 if self.max_cost and self.price_per_hr > 0 else math.inf
        return min(self.max_hours * 3600, by_cost)

    def deadline(self) -> float:
        """Epoch seconds when the cap is reached."""
        return (self.created_at or time.time()) + self.cap_seconds()

    def cap_cost(self) -> float:
        """Dollars at the cap."""
        return self.cap_seconds() / 3600 * self.price_per_hr

    def cost_so_far(self, now: float | None = None) -> float:
        """Dollars since creation at the pod's hourly price (RunPod bills by the second)."""
        if self.created_at is None:
            return 0.0
        end = self.ended_at or now or time.time()
        return max(0.0, end - self.created_at) / 3600 * self.price_per_hr

    def ssh(self) -> SshTarget:
        """The pod's SSH target with this launch's key."""
        if self.ssh_host is None or self.ssh_port is None:
            raise FileNotFoundError(f"{self.run_dir}: the pod never reported an SSH endpoint")
        folder = launch_dir(Path(self.run_dir))
        return SshTarget(self.ssh_host, int(self.ssh_port), folder / KEY, folder / "known_hosts")
