"""The ``reward_model`` channel on a tiny randomly initialised sequence classifier saved with save_pretrained."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    LlamaConfig,
    LlamaForSequenceClassification,
)

from mixgrpo.actors.reward import RewardWorker
from mixgrpo.batch import PromptBatch, RolloutBatch
from mixgrpo.builtin.tiny_arith import train_tokenizer
from mixgrpo.config import RewardChannelConfig
from mixgrpo.rewards.channels import ScoringInput, build_channel

PROMPTS = ["3+4=", "3+4=", "an SVG poster", "an SVG poster displaying a long title"]
COMPLETIONS = ["7", "it is 7 i think", "<svg></svg>", ""]


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory) -> str:
    directory = tmp_path_factory.mktemp("tiny-rm")
    tokenizer = train_tokenizer(PROMPTS + COMPLETIONS + ["the quick brown fox"] * 4)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64, num_labels=2,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    LlamaForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def batch() -> ScoringInput:
    return ScoringInput(prompts=PROMPTS, completions=COMPLETIONS, metadata=[{}] * 4, completion_tokens=[1] * 4)


def expected(directory: str, label: int, mode: str = "pair") -> np.ndarray:
    """The model's logit for each (prompt, completion) alone: no padding, no batching."""
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    out = []
    with torch.no_grad():
        for prompt, completion in zip(PROMPTS, COMPLETIONS):
            ids = tokenizer(prompt, completion, return_tensors="pt") if mode == "pair" else \
                tokenizer(prompt + completion, return_tensors="pt")
            out.append(float(model(**ids).logits[0, label]))
    return np.array(out)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_scores_are_the_models_logits_whatever_the_batching(reward_model_dir, batch_size):
    channel = build_channel("reward_model", {"model": reward_model_dir, "batch_size": batch_size, "label": 1})
    np.testing.assert_allclose(channel(batch()), expected(reward_model_dir, 1), atol=1e-5)


def test_concat_input_and_label_choice(reward_model_dir):
    channel = build_channel("reward_model", {"model": reward_model_dir, "input": "concat"})
    values = channel(batch())
    np.testing.assert_allclose(values, expected(reward_model_dir, 0, "concat"), atol=1e-5)
    assert not np.allclose(values, expected(reward_model_dir, 1, "concat"))


def test_worker_loads_the_model_at_start_and_scores(reward_model_dir):
    worker = RewardWorker(RewardChannelConfig(name="rm", kind="reward_model", options={"model": reward_model_dir}))
    assert worker.channel.model is not None  # loaded in __init__ (actor start), not inside a step's timeout
    prompts = PromptBatch(np.arange(2), PROMPTS[1:3], [{}, {}])
    rollouts = RolloutBatch(np.array([0, 1]), [np.arange(2)] * 2, [np.arange(1)] * 2,
                            [np.zeros(1, dtype=np.float32)] * 2, COMPLETIONS[1:3], np.zeros(2, dtype=np.int64))
    scores = worker.score(prompts, rollouts)
    np.testing.assert_allclose(scores.values["rm"], expected(reward_model_dir, 0)[1:3], atol=1e-5)
    assert scores.counters == {}


def test_label_beyond_the_head_fails_when_loading(reward_model_dir):
    channel = build_channel("reward_model", {"model": reward_model_dir, "label": 2})
    with pytest.raises(ValueError, match="2 labels"):
        channel.setup()


@pytest.mark.parametrize("options, message", [
    ({}, "^options.model: Field required$"),
    ({"model": "/no/such/model"}, "^options.model: no config.json in /no/such/model$"),
    ({"model": "org/rm", "input": "xml"}, "^options.input: Input should be 'pair', 'concat' or 'chat'$"),
    ({"model": "org/rm", "batch_size": 0}, "^options.batch_size: Input should be greater than or equal to 1$"),
])
def test_bad_options_fail_at_build_time(options, message):
    with pytest.raises(ValueError, match=message):
        build_channel("reward_model", options)
