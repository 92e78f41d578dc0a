"""Answer-checking channels against a gold answer carried in the prompt's metadata."""

from __future__ import annotations

import re
from typing import Any

from mixgrpo.rewards.channels.base import PerSample, pop_options, register

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def last_number(text: str) -> float | None:
    """The last number written in ``text`` ("1,234" counts as 1234), or None."""
    found = _NUMBER.findall(text.replace(",", ""))
    return float(found[-1]) if found else None


def _gold(metadata: dict[str, Any], key: str) -> Any:
    if key not in metadata:
        raise KeyError(f"prompt metadata has no {key!r} column (gold answer)")
    return metadata[key]


@register("exact_match")
def exact_match_channel(options: dict[str, Any]) -> PerSample:
    """1.0 when the stripped completion equals the gold answer (metadata[answer_key]), else 0.0."""
    opts = pop_options(options, "exact_match", {"answer_key": "answer", "case_sensitive": False})

    def score(prompt: str, completion: str, metadata: dict[str, Any], n_tokens: int) -> float:
        gold, text = str(_gold(metadata, opts["answer_key"])).strip(), completion.strip()
        if not opts["case_sensitive"]:
            gold, text = gold.lower(), text.lower()
        return 1.0 if text == gold else 0.0

    return PerSample(score)


@register("numeric_match")
def numeric_match_channel(options: dict[str, Any]) -> PerSample:
    """1.0 when the completion's number (first or last) equals the gold number within tolerance.

    options: answer_key (default "answer"), tolerance (default 1e-6), which ("first" | "last", default "first").
    """
    opts = pop_options(options, "numeric_match", {"answer_key": "answer", "tolerance": 1e-6, "which": "first"})
    if opts["which"] not in ("first", "last"):
        raise ValueError("channel kind 'numeric_match': options.which must be 'first' or 'last'")

    def score(prompt: str, completion: str, metadata: dict[str, Any], n_tokens: int) -> float:
        value = _pick_number(completion, opts["which"])
        gold = float(_gold(metadata, opts["answer_key"]))
        return 1.0 if value is not None and abs(value - gold) <= float(opts["tolerance"]) else 0.0

    return PerSample(score)


@register("numeric_distance")
def numeric_distance_channel(options: dict[str, Any]) -> PerSample:
    """``-min(|x - gold|, cap) / scale`` for the completion's number x; null when it writes no number.

    options: answer_key (default "answer"), scale (default 1), which ("first" | "last"),
    cap (default none: a runaway number like 1414141 then dominates the batch statistics).
    """
    defaults = {"answer_key": "answer", "scale": 1.0, "which": "first", "cap": None}
    opts = pop_options(options, "numeric_distance", defaults)
    cap = float("inf") if opts["cap"] is None else float(opts["cap"])
    if cap <= 0:
        raise ValueError("channel kind 'numeric_distance': options.cap must be > 0")
    if opts["which"] not in ("first", "last") or float(opts["scale"]) <= 0:
        raise ValueError("channel kind 'numeric_distance': options.which must be 'first' or 'last', options.scale > 0")

    def score(prompt: str, completion: str, metadata: dict[str, Any], n_tokens: int) -> float | None:
        value = _pick_number(completion, opts["which"])
        if value is None:
            return None
        return -min(abs(value - float(_gold(metadata, opts["answer_key"]))), cap) / float(opts["scale"])

    return PerSample(score)


def _pick_number(text: str, which: str) -> float | None:
    if which == "last":
        return last_number(text)
    found = _NUMBER.search(text.replace(",", ""))
    return float(found.group()) if found else None
