"""The TRL side's rewards and prompts, built from mixgrpo's own code (no TRL import: testable in mixgrpo's venv)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mixgrpo.rewards.channels import ScoringInput, build_channel
from mixgrpo.rewards.channels.base import ItemError


def reward_function(channel: dict[str, Any], means: list[float]) -> Callable[..., list[float | None]]:
    """A TRL reward function scoring with mixgrpo's channel ``channel``; appends each call's mean to ``means``.

    TRL calls every reward function once per generation batch (one optimizer step here), with the
    completion texts, their token ids (through the first EOS, as mixgrpo counts them) and the dataset's
    ``answer`` column. None (no value) stays None: TRL treats it as NaN, like mixgrpo's null.
    """
    score = build_channel(channel["kind"], channel["options"])

    def reward(prompts: list[str], completions: list[str], completion_ids: list[list[int]],
               answer: list[str], **kwargs: Any) -> list[float | None]:
        batch = ScoringInput(prompts=list(prompts), completions=list(completions),
                             metadata=[{"answer": a} for a in answer],
                             completion_tokens=[len(ids) for ids in completion_ids])
        values = [None if isinstance(v, ItemError) or v is None else float(v) for v in score(batch)]
        present = [v for v in values if v is not None]
        means.append(sum(present) / len(present) if present else float("nan"))
        return values

    reward.__name__ = channel["name"]
    return reward


def trl_prompts(tokenizer: Any, job: dict[str, Any]) -> list[str]:
    """The prompt strings whose TRL tokenization equals mixgrpo's prompt ids (BOS + text); raises if none does."""
    prompts = []
    for text, expected in zip(job["prompts"], job["prompt_token_ids"]):
        for candidate in (text, tokenizer.bos_token + text):
            if tokenizer(text=candidate)["input_ids"] == expected:
                prompts.append(candidate)
                break
        else:
            raise ValueError(f"no TRL prompt string tokenizes like mixgrpo's prompt {text!r} ({expected})")
    return prompts
