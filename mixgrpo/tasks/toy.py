"""The built-in toy task: single-digit addition that a tiny model learns on a CPU.

A prompt is ``"3+4="`` with the gold answer ``"7"`` in its metadata. The
warm-start corpus mixes the clean answer with chatty variants ("it is 7",
"7 or 8") and wrong sums, so a model trained briefly on it is right some of the
time, sometimes chatty and sometimes long: every reward channel of the default
job has signal to learn from.
"""

from __future__ import annotations

import numpy as np

from mixgrpo.batch import PromptBatch

_EVASIVE = ("not sure", "i do not know", "hmm")
_CHATTY_TEMPLATES = ("it is {c}", "{c} or {d}", "about {c}", "{c} i think", "so {c}")


def arithmetic_pool(num_prompts: int, seed: int) -> PromptBatch:
    """A shuffled pool of ``num_prompts`` addition prompts (pairs repeat past 100)."""
    return arithmetic_split(num_prompts, seed, 0.0)[0]


def arithmetic_split(num_prompts: int, seed: int, eval_fraction: float) -> tuple[PromptBatch, PromptBatch]:
    """The training pool (``num_prompts`` prompts) and the held-out prompts, split by distinct pair.

    The seeded permutation of the 100 pairs puts its last ``round(100 * eval_fraction)`` pairs (at
    least one when the fraction is > 0) in the held-out set, once each, with prompt ids from
    ``num_prompts`` on; the training pool cycles over the other pairs, so no held-out sum is ever
    trained on. With fraction 0 the pool is the one of earlier versions.
    """
    rng = np.random.default_rng(seed)
    pairs = [(a, b) for a in range(10) for b in range(10)]
    order = rng.permutation(len(pairs))
    held = max(1, round(len(pairs) * eval_fraction)) if eval_fraction > 0 else 0
    train_pairs = [pairs[i] for i in order[: len(pairs) - held]]
    held_pairs = [pairs[i] for i in order[len(pairs) - held :]]
    chosen = [train_pairs[i % len(train_pairs)] for i in range(num_prompts)]
    return _prompts(chosen, first_id=0), _prompts(held_pairs, first_id=num_prompts)


def _prompts(pairs: list[tuple[int, int]], first_id: int) -> PromptBatch:
    return PromptBatch(
        prompt_ids=np.arange(first_id, first_id + len(pairs), dtype=np.int64),
        prompts=[f"{a}+{b}=" for a, b in pairs],
        metadata=[{"answer": str(a + b)} for a, b in pairs],
    )


def warm_start_corpus(seed: int, copies: int = 200) -> list[str]:
    """Supervised texts ``"a+b=completion"``: 30 % clean, 5 % chatty, 65 % off by one or two."""
    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(copies):
        for a in range(10):
            for b in range(10):
                texts.append(f"{a}+{b}={_completion(a + b, rng)}")
    rng.shuffle(texts)
    return texts


def _completion(answer: int, rng: np.random.Generator) -> str:
    draw = rng.random()
    if draw < 0.3:
        return str(answer)
    wrong = max(0, answer + int(rng.choice([-2, -1, 1, 2])))
    if draw < 0.35:
        template = _CHATTY_TEMPLATES[rng.integers(len(_CHATTY_TEMPLATES))]
        return template.format(c=answer, d=wrong)
    if draw < 0.4:
        return _EVASIVE[rng.integers(len(_EVASIVE))]
    return str(wrong)
