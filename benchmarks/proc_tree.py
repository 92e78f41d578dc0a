"""Run a command while sampling its process tree's memory, and CPU-bound load to run beside it.

Used by ``bench_vs_trl``: PSS (proportional set size: shared pages split between the processes that map
them, so a tree's sum counts torch's libraries once, not once per process) summed over the process and
all its descendants, sampled every ``every_s`` seconds; the maximum and the most processes seen.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import psutil

from mixgrpo.orchestrator.placement import tree_pss


@dataclass(frozen=True)
class TreeRun:
    """What one command did: exit status, wall time, peak tree PSS and the load average around it."""

    returncode: int
    wall_s: float
    max_pss_mb: float
    max_processes: int
    loadavg_start: tuple[float, float, float]
    loadavg_end: tuple[float, float, float]


def run_sampled(command: list[str], log: Path, env: dict[str, str], cwd: Path, every_s: float = 0.5) -> TreeRun:
    """Run ``command`` (stdout and stderr to ``log``) and sample its tree's PSS until it exits."""
    loadavg_start = os.getloadavg()
    started = time.monotonic()
    peak = {"pss": 0.0, "processes": 0}
    with log.open("w") as out:
        process = psutil.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                pss, count = tree_pss(process)
                peak["pss"], peak["processes"] = max(peak["pss"], pss), max(peak["processes"], count)
                done.wait(every_s)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        returncode = process.wait()
        done.set()
        sampler.join()
    return TreeRun(returncode, time.monotonic() - started, peak["pss"] / 2**20, peak["processes"],
                   loadavg_start, os.getloadavg())


class CpuLoad:
    """``count`` busy-looping Python processes, started on enter and killed (by their own ids) on exit."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.processes: list[subprocess.Popen] = []

    def __enter__(self) -> Self:
        self.processes = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.count)]
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            process.kill()
        for process in self.processes:
            process.wait()
