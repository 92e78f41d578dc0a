"""The default job's tiny model, ``builtin:tiny-arith`` (built once and cached by ``mixgrpo.builtin``).

No downloads: a byte-level BPE tokenizer is trained on the toy task's own text,
a 2-layer Llama with random weights is created (head_dim 64, which vLLM's CPU
attention accepts), and a short supervised pass on the warm-start corpus makes
it right some of the time, so GRPO has rewards to work with (the pieces are in
``causal_lm``). The result is a normal ``save_pretrained`` directory: everything
downstream loads it exactly as it loads a hub checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path

from mixgrpo.builtin.causal_lm import tiny_llama, train_tokenizer, warm_start
from mixgrpo.tasks.toy import warm_start_corpus

__all__ = ["BUILD_VERSION", "build_tiny_arith", "train_tokenizer"]

BUILD_VERSION = "v3"
"""Bumped whenever the build changes, so a cache of an older build is never reused."""


def build_tiny_arith(directory: Path, seed: int) -> None:
    """Train tokenizer, create and warm-start the model, ``save_pretrained`` both into directory."""
    started = time.monotonic()
    texts = warm_start_corpus(seed)
    tokenizer = train_tokenizer(texts)
    model = tiny_llama(tokenizer, seed)
    loss = warm_start(model, tokenizer, texts)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / "BUILD.txt").write_text(
        f"builtin:tiny-arith {BUILD_VERSION} seed={seed} warm-start loss={loss:.3f} "
        f"built in {time.monotonic() - started:.1f}s\n"
    )
