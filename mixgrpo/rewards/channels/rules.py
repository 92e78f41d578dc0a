"""Rule channels: a regular-expression format check and a length reward."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, model_validator

from mixgrpo.rewards.channels.base import ChannelOptions, ChannelOptionsError, PerSample, register


class RegexOptions(ChannelOptions):
    pattern: str = Field(min_length=1)
    """Python regular expression the completion must match."""
    fullmatch: bool = True
    """true: the whole (stripped) completion must match; false: a match anywhere counts."""
    strip: bool = True
    """Strip surrounding whitespace before matching."""


@register("regex", RegexOptions)
def regex_channel(options: RegexOptions) -> PerSample:
    """1.0 when the completion matches ``pattern`` (``fullmatch`` or search), else 0.0."""
    try:
        pattern = re.compile(options.pattern)
    except re.error as error:
        raise ChannelOptionsError.of("pattern", f"bad pattern {options.pattern!r}: {error}") from None
    match = pattern.fullmatch if options.fullmatch else pattern.search

    def score(prompt: str, completion: str, metadata: dict[str, Any], n_tokens: int) -> float:
        text = completion.strip() if options.strip else completion
        return 1.0 if match(text) else 0.0

    return PerSample(score)


class LengthOptions(ChannelOptions):
    target: int | None = Field(default=None, ge=0)
    """Target mode: reward -|n - target| / scale for n completion tokens."""
    max_tokens: int | None = Field(default=None, ge=0)
    """Penalty mode: reward -max(0, n - max_tokens) / scale (exactly one of target and max_tokens)."""
    scale: float = Field(default=1.0, gt=0)
    """Tokens per unit of reward."""

    @model_validator(mode="after")
    def _one_mode(self) -> "LengthOptions":
        if (self.target is None) == (self.max_tokens is None):
            raise ValueError("needs exactly one of target or max_tokens")
        return self


@register("length", LengthOptions)
def length_channel(options: LengthOptions) -> PerSample:
    """Length reward in tokens: ``-max(0, n - max_tokens) / scale`` (penalty mode) or
    ``-|n - target| / scale`` (target mode)."""

    def score(prompt: str, completion: str, metadata: dict[str, Any], n_tokens: int) -> float:
        if options.target is not None:
            return -abs(n_tokens - options.target) / options.scale
        return -max(0, n_tokens - options.max_tokens) / options.scale

    return PerSample(score)
