"""Rule channels: a regular-expression format check and a length reward."""

from __future__ import annotations

import re
from typing import Any

from mixgrpo.rewards.channels.base import PerSample, pop_options, register


@register("regex")
def regex_channel(options: dict[str, Any]) -> PerSample:
    """1.0 when the completion matches ``pattern`` (``fullmatch`` or search), else 0.0.

    options: pattern (required), fullmatch (default true), strip (default true).
    """
    opts = pop_options(options, "regex", {"pattern": None, "fullmatch": True, "strip": True})
    if not opts["pattern"]:
        raise ValueError("channel kind 'regex' needs options.pattern")
    try:
        pattern = re.compile(opts["pattern"])
    except re.error as error:
        raise ValueError(f"channel kind 'regex': bad pattern {opts['pattern']!r}: {error}") from None
    match = pattern.fullmatch if opts["fullmatch"] else pattern.search

    def score(prompt: str, completion: str, metadata: dict[str, Any], n_tokens: int) -> float:
        text = completion.strip() if opts["strip"] else completion
        return 1.0 if match(text) else 0.0

    return PerSample(score)


@register("length")
def length_channel(options: dict[str, Any]) -> PerSample:
    """Length reward in tokens: ``-max(0, n - max_tokens) / scale`` (penalty mode) or
    ``-|n - target| / scale`` (target mode).

    options: target (tokens) or max_tokens (one of them), scale (default 1).
    """
    opts = pop_options(options, "length", {"target": None, "max_tokens": None, "scale": 1.0})
    if (opts["target"] is None) == (opts["max_tokens"] is None):
        raise ValueError("channel kind 'length' needs exactly one of options.target or options.max_tokens")
    if float(opts["scale"]) <= 0:
        raise ValueError("channel kind 'length': options.scale must be > 0")
    scale = float(opts["scale"])

    def score(prompt: str, completion: str, metadata: dict[str, Any], n_tokens: int) -> float:
        if opts["target"] is not None:
            return -abs(n_tokens - int(opts["target"])) / scale
        return -max(0, n_tokens - int(opts["max_tokens"])) / scale

    return PerSample(score)
