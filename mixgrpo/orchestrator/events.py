"""Actor-side timing: every remote method call records its own start and end.

``remote_class`` (placement.py) builds the Ray actor class from a plain class
plus ``Traced``: each public method of the plain class is wrapped to append a
``(method, start, end)`` span measured on the actor's monotonic clock. The
driver drains the spans after a step and shifts them onto its own clock with
the offset measured by ``clock_offset`` (NTP-style midpoint), so spans from
actors on other nodes line up with the driver's stages.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any, Callable

import ray

MAX_SPANS = 10_000
"""Spans kept per actor between drains (older ones are dropped: a driver that never drains cannot leak)."""


@dataclass(frozen=True)
class Span:
    """One timed interval on the driver's clock (seconds)."""

    lane: str
    """Who did it: driver, generator-0, reward-correct, learner-1, ..."""
    stage: str
    """What: generate, score, train_step, load_adapter, or a driver stage."""
    start: float
    end: float
    step: int = -1
    """The training step it belongs to (-1 when unknown)."""


class Traced:
    """Mixin: span log of the wrapped methods, drained by the driver."""

    def clock(self) -> float:
        """This actor's monotonic clock."""
        return time.monotonic()

    def drain_spans(self) -> list[tuple[str, float, float]]:
        """The (method, start, end) spans recorded since the last drain, on the actor's clock."""
        spans = list(getattr(self, "_spans", []))
        self._spans = []
        return spans


def _timed(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.__dict__.get("_in_call"):  # a method calling another: only the outer call is a span
            return method(self, *args, **kwargs)
        self._in_call = True
        start = time.monotonic()
        try:
            return method(self, *args, **kwargs)
        finally:
            self._in_call = False
            spans = self.__dict__.setdefault("_spans", [])
            spans.append((method.__name__, start, time.monotonic()))
            del spans[:-MAX_SPANS]

    return wrapper


def traced_methods(cls: type) -> dict[str, Callable[..., Any]]:
    """Timing wrappers for the public methods defined by ``cls`` and its bases (not object's)."""
    names = {n for klass in cls.__mro__[:-1] for n, v in vars(klass).items() if callable(v) and not n.startswith("_")}
    return {name: _timed(getattr(cls, name)) for name in sorted(names)}


def clock_offset(actor: Any, samples: int = 3) -> float:
    """driver_clock - actor_clock, from the round trip with the smallest delay."""
    best: tuple[float, float] | None = None
    for _ in range(samples):
        sent = time.monotonic()
        remote_now = ray.get(actor.clock.remote())
        received = time.monotonic()
        candidate = (received - sent, (sent + received) / 2 - remote_now)
        best = candidate if best is None or candidate[0] < best[0] else best
    return best[1] if best else 0.0


def chrome_trace(spans: list[Span]) -> dict[str, Any]:
    """Spans as a Chrome/Perfetto trace (``chrome://tracing`` or ui.perfetto.dev)."""
    lanes = sorted({s.lane for s in spans}, key=_lane_order)
    origin = min((s.start for s in spans), default=0.0)
    events: list[dict[str, Any]] = [
        {"name": "thread_name", "ph": "M", "pid": 1, "tid": i, "args": {"name": lane}} for i, lane in enumerate(lanes)
    ]
    for span in spans:
        events.append({
            "name": span.stage, "ph": "X", "pid": 1, "tid": lanes.index(span.lane),
            "ts": (span.start - origin) * 1e6, "dur": (span.end - span.start) * 1e6, "args": {"step": span.step},
        })
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def _lane_order(lane: str) -> tuple[int, str]:
    order = ["driver", "generator", "reward", "learner"]
    head = lane.split("-")[0]
    return (order.index(head) if head in order else len(order), lane)
