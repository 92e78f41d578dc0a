"""Build (once) and cache the default job's tiny model: ``builtin:tiny-arith``.

No downloads: a byte-level BPE tokenizer is trained on the toy task's own text,
a 2-layer Llama with random weights is created (head_dim 64, which vLLM's CPU
attention accepts), and a short supervised pass on the warm-start corpus makes
it right some of the time, so GRPO has rewards to work with. The result is a
normal ``save_pretrained`` directory: everything downstream loads it exactly as
it loads a hub checkpoint.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from mixgrpo.tasks.toy import warm_start_corpus

BUILTIN_PREFIX = "builtin:"
TINY_ARITH = "tiny-arith"
_BUILD_VERSION = "v3"
_SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>"}


def cache_root() -> Path:
    """Where built artefacts live: $MIXGRPO_CACHE, else $XDG_CACHE_HOME/mixgrpo, else ~/.cache/mixgrpo."""
    if os.environ.get("MIXGRPO_CACHE"):
        return Path(os.environ["MIXGRPO_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "mixgrpo"


def resolve_model_path(path: str, seed: int = 0) -> str:
    """A loadable model path: builtin names are built on first use, others returned unchanged."""
    if not path.startswith(BUILTIN_PREFIX):
        return path
    check_builtin_name(path)
    target = cache_root() / f"{TINY_ARITH}-{_BUILD_VERSION}-seed{seed}"
    if not (target / "config.json").is_file():
        _build_atomically(target, seed)
    return str(target)


def check_builtin_name(path: str) -> None:
    """Raise ValueError unless ``path`` names a known builtin model."""
    if path != BUILTIN_PREFIX + TINY_ARITH:
        raise ValueError(f"unknown builtin model {path!r}; known: {BUILTIN_PREFIX}{TINY_ARITH}")


def _build_atomically(target: Path, seed: int) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        build_tiny_arith(staging, seed)
        try:
            staging.rename(target)
        except OSError:  # another process finished first; its build is equivalent
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def train_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """Byte-level BPE over ``texts`` with one token per digit, wrapped for transformers."""
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=list(_SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **_SPECIAL_TOKENS)


def tiny_llama(tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    """A 2-layer, 128-wide Llama with random weights (about 0.4 M parameters)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def warm_start(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    texts: list[str],
    steps: int = 800,
    batch_size: int = 32,
    lr: float = 1e-3,
) -> float:
    """Short supervised pass (next-token loss on whole texts + EOS); returns the last loss."""
    encoded = [[tokenizer.bos_token_id, *tokenizer.encode(t), tokenizer.eos_token_id] for t in texts]
    width = max(len(e) for e in encoded)
    ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
    for row, tokens in enumerate(encoded):
        ids[row, : len(tokens)] = torch.tensor(tokens)
    attention = (ids != tokenizer.pad_token_id).long()
    labels = ids.masked_fill(attention == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        rows = torch.randint(len(encoded), (batch_size,), generator=generator)
        loss = model(input_ids=ids[rows], attention_mask=attention[rows], labels=labels[rows]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    return float(loss.detach())


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
        f"builtin:{TINY_ARITH} {_BUILD_VERSION} seed={seed} warm-start loss={loss:.3f} "
        f"built in {time.monotonic() - started:.1f}s\n"
    )
