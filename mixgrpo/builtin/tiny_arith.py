"""The default job's tiny model, ``builtin:tiny-arith`` (built once and cached by ``mixgrpo.builtin``).

No downloads: a byte-level BPE tokenizer is trained on the toy task's own text,
a 2-layer Llama with random weights is created (head_dim 64, which vLLM's CPU
attention accepts), and a short supervised pass on the warm-start corpus makes
it right some of the time, so GRPO has rewards to work with. The result is a
normal ``save_pretrained`` directory: everything downstream loads it exactly as
it loads a hub checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from mixgrpo.tasks.toy import warm_start_corpus

BUILD_VERSION = "v3"
"""Bumped whenever the build changes, so a cache of an older build is never reused."""
_SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>"}


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
        f"builtin:tiny-arith {BUILD_VERSION} seed={seed} warm-start loss={loss:.3f} "
        f"built in {time.monotonic() - started:.1f}s\n"
    )
