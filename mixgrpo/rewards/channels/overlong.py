"""DAPO's soft overlong punishment as a reward channel (Yu et al. 2025, "DAPO", eq. 13).

With L_max = ``max_tokens`` and L_cache = ``buffer``, a completion of n tokens gets

    0                                  n <= L_max - L_cache
    ((L_max - L_cache) - n) / L_cache  L_max - L_cache < n <= L_max
    -1                                 n > L_max

a penalty that grows linearly over the last ``buffer`` tokens before the cap.
Set ``max_tokens`` to ``generator.max_new_tokens``: a completion cut at the cap
then gets -1. It is an ordinary channel, so its weight and the mixer decide how
it combines with the others (``algorithm.overlong: penalty`` requires one).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from mixgrpo.rewards.channels.base import ChannelOptions, PerSample, register


class OverlongOptions(ChannelOptions):
    max_tokens: int = Field(ge=1)
    """L_max: the completion cap in tokens (normally generator.max_new_tokens)."""
    buffer: int = Field(ge=1)
    """L_cache: the penalty ramps from 0 to -1 over this many tokens before max_tokens."""

    @model_validator(mode="after")
    def _buffer_fits(self) -> OverlongOptions:
        if self.buffer > self.max_tokens:
            raise ValueError(f"buffer ({self.buffer}) must not exceed max_tokens ({self.max_tokens})")
        return self


def overlong_penalty(n_tokens: int, max_tokens: int, buffer: int) -> float:
    """DAPO eq. 13 for one completion of ``n_tokens`` tokens: 0, a linear ramp down to -1, or -1 past the cap."""
    free = max_tokens - buffer
    if n_tokens <= free:
        return 0.0
    if n_tokens <= max_tokens:
        return (free - n_tokens) / buffer
    return -1.0


@register("overlong", OverlongOptions)
def overlong_channel(options: OverlongOptions) -> PerSample:
    """Soft overlong punishment of each completion by its length in tokens."""

    def score(prompt: str, completion: str, metadata: dict[str, Any], n_tokens: int) -> float:
        return overlong_penalty(n_tokens, options.max_tokens, options.buffer)

    return PerSample(score)
