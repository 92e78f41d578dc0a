"""The reward-channel interface and the registry of channel kinds.

A channel scores a whole batch at once: it receives a ``ScoringInput`` with N
completions and returns N values (float, or None for "no value here"). Channel kinds register themselves by name
with ``@register("kind")``; a kind's factory takes the channel's ``options``
mapping and raises ValueError on bad options (checked before Ray starts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence

ChannelOutput = Sequence[float | None]


@dataclass(frozen=True)
class ScoringInput:
    """N completions with what a channel may need to score them."""

    prompts: list[str]
    """(N,) prompt text of each completion's group."""
    completions: list[str]
    """(N,) completion text."""
    metadata: list[dict[str, Any]]
    """(N,) the prompt record's metadata (gold answers, image paths, ...)."""
    completion_tokens: list[int]
    """(N,) completion length in tokens."""

    def __len__(self) -> int:
        return len(self.completions)


class Channel(Protocol):
    """A reward function over a batch."""

    def __call__(self, batch: ScoringInput) -> ChannelOutput:
        """N values, None where the channel has no value."""


ChannelFactory = Callable[[Mapping[str, Any]], Channel]
CHANNEL_KINDS: dict[str, ChannelFactory] = {}


def register(kind: str) -> Callable[[ChannelFactory], ChannelFactory]:
    """Class or function decorator adding a channel factory under ``kind``."""

    def add(factory: ChannelFactory) -> ChannelFactory:
        if kind in CHANNEL_KINDS:
            raise ValueError(f"channel kind {kind!r} registered twice")
        CHANNEL_KINDS[kind] = factory
        return factory

    return add


def build_channel(kind: str, options: Mapping[str, Any]) -> Channel:
    """Instantiate a registered kind with its options (ValueError for unknown kinds or options)."""
    if kind not in CHANNEL_KINDS:
        raise ValueError(f"unknown reward channel kind {kind!r}; known: {sorted(CHANNEL_KINDS)}")
    return CHANNEL_KINDS[kind](dict(options))


def pop_options(options: dict[str, Any], kind: str, allowed: Mapping[str, Any]) -> dict[str, Any]:
    """Options with defaults filled in; unknown option names are a ValueError."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"channel kind {kind!r}: unknown options {unknown}; allowed: {sorted(allowed)}")
    return {**allowed, **options}


class PerSample:
    """Adapter: a per-completion function ``(prompt, completion, metadata, n_tokens) -> float | None``."""

    def __init__(self, score_one: Callable[[str, str, dict[str, Any], int], float | None]) -> None:
        self.score_one = score_one

    def __call__(self, batch: ScoringInput) -> list[float | None]:
        return [
            self.score_one(p, c, md, n)
            for p, c, md, n in zip(batch.prompts, batch.completions, batch.metadata, batch.completion_tokens)
        ]
