"""mixgrpo.flops: hand-computed FLOPs of known shapes, cross-checked against real transformers/PEFT models."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, LlamaConfig, MixtralConfig, Qwen2Config, Qwen2ForCausalLM

from mixgrpo.actors.models import wrap_lora
from mixgrpo.config import LoraConfig
from mixgrpo.flops import (
    attention_flops_per_token,
    causal_lm_flops_per_token,
    lora_params,
    matmul_params,
    mfu,
    peak_flops,
)

QWEN2_05B = Qwen2Config(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                        intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True)


def test_qwen2_05b_by_hand():
    # per layer: q 896*896 + k 896*128 + v 896*128 + o 896*896 = 1,835,008; gated MLP 3*896*4864 = 13,074,432
    # 24 layers: 357,826,560; LM head 151,936*896 = 136,134,656 (tied: the matmul still runs)
    assert matmul_params(QWEN2_05B) == 493_961_216
    assert attention_flops_per_token(QWEN2_05B, 100) == 4 * 24 * 14 * 64 * 100 == 8_601_600
    # LoRA r=8 on q,k,v,o: 8 * ((896+896) + (896+128) + (896+128) + (896+896)) * 24 = 1,081,344
    targets = ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert lora_params(QWEN2_05B, 8, targets) == 1_081_344
    # 4N + 3A + 6P = 1,975,844,864 + 25,804,800 + 6,488,064
    assert causal_lm_flops_per_token(QWEN2_05B, sequence_length=100, trainable_params=1_081_344) == 2_008_137_728
    # the KL reference forward adds 2N + A = 987,922,432 + 8,601,600
    assert causal_lm_flops_per_token(QWEN2_05B, sequence_length=100, trainable_params=1_081_344,
                                     reference_forward=True) == 3_004_661_760


def test_plain_mlp_gpt2_by_hand():
    # GPT-2 small: attention 4*768*768 = 2,359,296, MLP 2*768*3072 (n_inner None -> 4*768) = 4,718,592,
    # 12 layers: 84,934,656; LM head 50,257*768 = 38,597,376
    gpt2 = GPT2Config()
    assert matmul_params(gpt2) == 123_532_032
    assert causal_lm_flops_per_token(gpt2, sequence_length=0) == 4 * 123_532_032


def test_counts_match_a_real_model_and_peft_adapter():
    config = Qwen2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=96, vocab_size=300, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    linear_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert matmul_params(config) == linear_weights
    targets = ["q_proj", "v_proj", "down_proj"]
    peft_model = wrap_lora(model, LoraConfig(rank=4, target_modules=targets))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert lora_params(config, 4, targets) == trainable


def test_head_dim_from_the_config_when_given():
    config = LlamaConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         head_dim=32, intermediate_size=256, vocab_size=100)
    # q, k, v, o: 128*64 each (2 heads of 32, not 128 / 2); gated MLP 3*128*256; 2 layers; head 100*128
    assert matmul_params(config) == 2 * (4 * 128 * 64 + 3 * 128 * 256) + 100 * 128
    assert attention_flops_per_token(config, 10) == 4 * 2 * 2 * 32 * 10


def test_unknown_or_sparse_models_are_refused():
    with pytest.raises(ValueError, match="mixture of experts"):
        matmul_params(MixtralConfig())
    unknown = LlamaConfig()
    unknown.model_type = "something_new"
    with pytest.raises(ValueError, match="unknown MLP form"):
        matmul_params(unknown)
    with pytest.raises(ValueError, match="widths known only"):
        lora_params(QWEN2_05B, 8, ["c_attn"])


@pytest.mark.parametrize(("name", "expected"), [
    ("NVIDIA H100 80GB HBM3", 989.5e12), ("NVIDIA H100 PCIe", 756.5e12), ("NVIDIA H100 NVL", 835.5e12),
    ("NVIDIA H200", 989.5e12), ("NVIDIA H200 NVL", 835.5e12), ("NVIDIA A100-SXM4-80GB", 312e12),
    ("NVIDIA A100 80GB PCIe", 312e12), ("NVIDIA L40S", 362.05e12), ("NVIDIA L4", 121e12), ("NVIDIA A10G", 70e12),
    ("NVIDIA GeForce RTX 4090", 165.2e12), ("NVIDIA A10", None), ("NVIDIA L40", None), ("NVIDIA GH200 480GB", None),
    ("cpu", None),
])
def test_peak_table(name, expected):
    assert peak_flops(name, torch.bfloat16) == expected
    assert peak_flops(name, "float16") == expected


def test_no_peak_outside_16_bit():
    assert peak_flops("NVIDIA H100 80GB HBM3", torch.float32) is None
    assert peak_flops("NVIDIA H100 80GB HBM3", "float32") is None


def test_mfu():
    assert mfu(10_000, 2e9, 1e15) == pytest.approx(0.02)
    with pytest.raises(ValueError):
        mfu(1.0, 1.0, 0.0)
