"""Answer-checking channels against a gold answer carried in the prompt's metadata."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field

from mixgrpo.rewards.channels.base import ChannelOptions, PerSample, register

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def last_number(text: str) -> float | None:
    """The last number written in ``text`` ("1,234" counts as 1234), or None."""
    found = _NUMBER.findall(text.replace(",", ""))
    return float(found[-1]) if found else None


def _gold(metadata: dict[str, Any], key: str) -> Any:
    if key not in metadata:
        raise KeyError(f"prompt metadata has no {key!r} column (gold answer)")
    return metadata[key]


class ExactMatchOptions(ChannelOptions):
    answer_key: str = "answer"
    """Prompt-metadata column holding the gold answer."""
    case_sensitive: bool = False
    """Compare letter case too."""


@register("exact_match", ExactMatchOptions)
def exact_match_channel(options: ExactMatchOptions) -> PerSample:
    """1.0 when the stripped completion equals the gold answer (metadata[answer_key]), else 0.0."""

    def score(prompt: str, completion: str, metadata: dict[str, Any], n_tokens: int) -> float:
        gold, text = str(_gold(metadata, options.answer_key)).strip(), completion.strip()
        if not options.case_sensitive:
            gold, text = gold.lower(), text.lower()
        return 1.0 if text == gold else 0.0

    return PerSample(score)


class NumericOptions(ChannelOptions):
    answer_key: str = "answer"
    """Prompt-metadata column holding the gold number."""
    which: Literal["first", "last"] = "first"
    """Which number of the completion counts."""


class NumericMatchOptions(NumericOptions):
    tolerance: float = Field(default=1e-6, ge=0)
    """Largest |x - gold| that still counts as equal."""


@register("numeric_match", NumericMatchOptions)
def numeric_match_channel(options: NumericMatchOptions) -> PerSample:
    """1.0 when the completion's number (first or last) equals the gold number within tolerance."""

    def score(prompt: str, completion: str, metadata: dict[str, Any], n_tokens: int) -> float:
        value = _pick_number(completion, options.which)
        gold = float(_gold(metadata, options.answer_key))
        return 1.0 if value is not None and abs(value - gold) <= options.tolerance else 0.0

    return PerSample(score)


class NumericDistanceOptions(NumericOptions):
    scale: float = Field(default=1.0, gt=0)
    """Distance per unit of reward."""
    cap: float | None = Field(default=None, gt=0)
    """Largest distance counted (None: no cap, so a runaway number like 1414141 dominates the batch statistics)."""


@register("numeric_distance", NumericDistanceOptions)
def numeric_distance_channel(options: NumericDistanceOptions) -> PerSample:
    """``-min(|x - gold|, cap) / scale`` for the completion's number x; null when it writes no number."""
    cap = float("inf") if options.cap is None else options.cap

    def score(prompt: str, completion: str, metadata: dict[str, Any], n_tokens: int) -> float | None:
        value = _pick_number(completion, options.which)
        if value is None:
            return None
        return -min(abs(value - float(_gold(metadata, options.answer_key))), cap) / options.scale

    return PerSample(score)


def _pick_number(text: str, which: str) -> float | None:
    if which == "last":
        return last_number(text)
    found = _NUMBER.search(text.replace(",", ""))
    return float(found.group()) if found else None
