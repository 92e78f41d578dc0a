"""The HF backend's own sampling loop (``backends.hf.decode``) against transformers' ``generate`` and warpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

from mixgrpo.actors.backends.hf import _inverse_cdf, decode, processed_logprobs
from mixgrpo.actors.generator import Generator
from mixgrpo.actors.models import encode_prompts, pad_left
from mixgrpo.config import load_config


@pytest.fixture(scope="module")
def backend(tiny_model_cache):
    config = load_config(None, ["generator.threads=1"])
    return Generator(config.model, config.learner.lora, config.generator, config.run.seed).backend


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.7, 1.0), (1.0, 0.9), (0.5, 0.3), (1.3, 0.05)])
def test_processed_logprobs_are_transformers_temperature_then_top_p(temperature, top_p):
    logits = torch.randn(64, 50, generator=torch.Generator().manual_seed(1)) * 3
    expected = TopPLogitsWarper(top_p)(None, TemperatureLogitsWarper(temperature)(None, logits.clone()))
    ours = processed_logprobs(logits, temperature, top_p)
    assert torch.equal(torch.isinf(ours), torch.isinf(expected))  # the same tokens filtered out
    assert torch.allclose(ours, torch.log_softmax(expected, dim=-1), atol=1e-6)
    if top_p < 0.1:
        assert (torch.isfinite(ours).sum(dim=-1) >= 1).all()  # at least one token is kept


def test_inverse_cdf_draws_follow_the_distribution_and_never_a_zero_mass_token():
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.2, 0.3, 0.0]]).repeat(40_000, 1)
    draws = _inverse_cdf(probs, torch.Generator().manual_seed(0))
    counts = torch.bincount(draws, minlength=6).double() / len(draws)
    assert counts[[0, 2, 5]].sum() == 0
    assert torch.allclose(counts, probs[0].double(), atol=0.01)


def _prompt_tensors(backend, texts):
    tokens = encode_prompts(backend.tokenizer, list(texts), "auto")
    return pad_left(tokens, backend.tokenizer.pad_token_id)


def test_greedy_decode_is_transformers_greedy_generate_with_left_padded_prompts_of_different_lengths(backend):
    ids, mask = _prompt_tensors(backend, ["3+4=", "12+9=", "1+1+1=", "7="])
    assert len(set(mask.sum(dim=1).tolist())) > 1  # the prompts really have different lengths
    tokenizer = backend.tokenizer
    tokens, logprobs = decode(backend.model, ids, mask, group_size=2, max_new_tokens=6, temperature=0.0, top_p=1.0,
                              generator=torch.Generator().manual_seed(0), eos_id=tokenizer.eos_token_id,
                              pad_id=tokenizer.pad_token_id, cache_arg=backend._cache_arg,
                              prefill_options=backend._last_logits)
    reference = backend.model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=6,
                                       pad_token_id=tokenizer.pad_token_id,
                                       eos_token_id=tokenizer.eos_token_id, output_scores=True,
                                       return_dict_in_generate=True, temperature=None, top_p=None, top_k=None)
    assert torch.equal(tokens[0::2], tokens[1::2])  # greedy: both rows of a group (one shared prefill) agree
    assert torch.equal(tokens[0::2], reference.sequences[:, ids.shape[1]:])
    scores = torch.log_softmax(torch.stack(reference.scores, dim=1).float(), dim=-1)
    expected = scores.gather(-1, tokens[0::2].unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(logprobs[0::2], expected, atol=1e-5)


def test_sampled_groups_differ_within_a_group_and_repeat_with_the_seed(backend):
    ids, mask = _prompt_tensors(backend, ["3+4=", "12+9="])
    tokenizer = backend.tokenizer

    def run(seed):
        return decode(backend.model, ids, mask, group_size=8, max_new_tokens=6, temperature=1.0, top_p=1.0,
                      generator=torch.Generator().manual_seed(seed), eos_id=tokenizer.eos_token_id,
                      pad_id=tokenizer.pad_token_id, cache_arg=backend._cache_arg)[0]

    first = run(3)
    assert torch.equal(first, run(3)) and not torch.equal(first, run(4))
    assert len({tuple(row) for row in first[:8].tolist()}) > 1  # one prompt's 8 rows are independent draws
    finished = np.cumsum((first == tokenizer.eos_token_id).numpy(), axis=1) > 0
    after_eos = np.concatenate([np.zeros((len(first), 1), bool), finished[:, :-1]], axis=1)
    assert (first.numpy()[after_eos] == tokenizer.pad_token_id).all()  # a finished row samples only padding
