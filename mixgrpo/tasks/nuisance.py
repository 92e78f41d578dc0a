"""A nuisance reward for ``configs/local-tiny-nuisance.yaml``: large scale, high variance, unrelated to the sum.

``style_score`` stands for a miscalibrated learned "style" reward: a fixed
pseudo-random function of the (prompt, completion) text, uniform on
``[-scale, scale]`` (std ``scale / sqrt(3)``, about 5.8 for the default 10,
against at most 0.5 for the 0/1 channels). It is a reward, not noise: the same
completion of the same prompt always gets the same value, so a policy can learn
to chase it; but it says nothing about whether the answer is right, so every
step spent on it is a step not spent on ``correct``. Used as the kind
``python`` channel ``mixgrpo.tasks.nuisance:style_score``.
"""

from __future__ import annotations

import hashlib
from typing import Any


def style_score(prompt: str, completion: str, metadata: dict[str, Any], scale: float = 10.0) -> float:
    """``scale * (2u - 1)`` with ``u`` in [0, 1) from a BLAKE2b hash of the prompt and stripped completion."""
    digest = hashlib.blake2b(f"{prompt}\x00{completion.strip()}".encode(), digest_size=8).digest()
    unit = int.from_bytes(digest, "big") / 2.0**64
    return float(scale) * (2.0 * unit - 1.0)
