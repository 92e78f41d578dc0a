"""Torch threads: a fixed count, or ``auto``: the cores that other processes left idle.

Why not always all cores: a torch op split over T OpenMP threads ends when its slowest thread
does, so when other processes hold the cores every op waits for a descheduled thread. On this
2-core machine with a load average of about 20 the default job's step took 2.7 s with one thread
and 25 s with two; on an idle machine two threads cut the same step by about a third. ``auto``
takes the better of both: before each phase it looks at how busy the machine was since the last
look, minus this process's own use, and runs on the cores left over (at least one, at most the
cores the process reserved).
"""

from __future__ import annotations

import time

import psutil


def fixed_threads(threads: int | str) -> int:
    """The torch threads of an actor that shares the cores with others (disaggregated): ``auto`` is 1."""
    return 1 if threads == "auto" else threads


class IdleCores:
    """Torch threads for the next phase of a process that owns ``cap`` cores: the ones others left idle.

    ``threads()`` compares the machine's busy CPU time since the previous call with this process's
    own (both from /proc through psutil) over the same wall time: others' use, in cores, is
    (machine busy - own busy) / wall; the answer is cap - others, rounded, within [1, cap]. The
    first call, with nothing to compare, answers ``cap``.
    """

    def __init__(self, cap: int) -> None:
        self.cap = max(1, cap)
        self._process = psutil.Process()
        self._last: tuple[float, float, float] | None = None
        self.others = 0.0
        """Cores other processes kept busy over the last interval (diagnostic)."""

    def _sample(self) -> tuple[float, float, float]:
        machine = psutil.cpu_times()
        busy = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
        own = self._process.cpu_times()
        return time.monotonic(), busy, own.user + own.system

    def threads(self) -> int:
        """Threads to run now (see the class docstring)."""
        now = self._sample()
        last, self._last = self._last, now
        if self.cap == 1 or last is None or now[0] - last[0] < 1e-3:
            return self.cap
        wall = now[0] - last[0]
        self.others = max(0.0, ((now[1] - last[1]) - (now[2] - last[2])) / wall)
        return int(min(self.cap, max(1, round(self.cap - self.others))))
