"""Shared pieces of the builtin causal LMs (``tiny-arith``, ``tiny-svg``): tokenizer, model, warm start.

No downloads: a byte-level BPE tokenizer is trained on the task's own text, a
small Llama with random weights is created (head_dim 64, which vLLM's CPU
attention accepts), and a short supervised pass on a warm-start corpus makes it
right some of the time, so GRPO has rewards to work with.
"""

from __future__ import annotations

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

_SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>"}


def train_tokenizer(texts: list[str], vocab_size: int = 320, split: str | None = None) -> PreTrainedTokenizerFast:
    """Byte-level BPE over ``texts``, wrapped for transformers.

    Pieces (what a token never crosses): one per digit and GPT-2's word/punctuation
    split, or with ``split`` the matches of that regex and the text between them.
    """
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    if split is None:
        pieces = [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    else:
        pieces = [pre_tokenizers.Split(Regex(split), behavior="isolated"),
                  pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(pieces)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(_SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **_SPECIAL_TOKENS)


def tiny_llama(tokenizer: PreTrainedTokenizerFast, seed: int, num_layers: int = 2,
               max_positions: int = 128) -> LlamaForCausalLM:
    """A ``num_layers``-layer, 128-wide Llama (2 heads of 64) with random weights (about 0.2 M per layer)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=max_positions,
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
    prompts: list[str] | None = None,
) -> float:
    """Short supervised pass (next-token loss on BOS + text + EOS); returns the last loss.

    With ``prompts`` (one per text), each row is BOS + prompt + text + EOS, encoded
    apart as generation encodes them, and only the text and EOS are trained on.
    """
    heads = [[] for _ in texts] if prompts is None else [tokenizer.encode(p) for p in prompts]
    encoded = [[tokenizer.bos_token_id, *head, *tokenizer.encode(t), tokenizer.eos_token_id]
               for head, t in zip(heads, texts)]
    width = max(len(e) for e in encoded)
    ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
    trained = torch.zeros((len(encoded), width), dtype=torch.bool)
    for row, (head, tokens) in enumerate(zip(heads, encoded)):
        ids[row, : len(tokens)] = torch.tensor(tokens)
        trained[row, (1 + len(head) if prompts is not None else 0): len(tokens)] = True
    attention = (ids != tokenizer.pad_token_id).long()
    labels = ids.masked_fill(~trained, -100)
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
