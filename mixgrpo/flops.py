"""Model FLOPs of a LoRA GRPO learner step, dense peaks of common GPUs, and MFU.

Counting (per trained token, matmuls only, one multiply-add = 2 FLOPs):

- N, the matmul weights a token passes through: per layer the q, k, v, o projections
  (grouped-query attention: k and v are ``num_key_value_heads * head_dim`` wide) and the MLP
  (three matrices for a Llama/Qwen2-style gated MLP, two for a plain one), plus the LM head
  (``vocab_size * hidden_size``, counted whether or not it is tied to the input embedding: the
  learner computes logits at every position; the embedding lookup is a gather, no FLOPs).
  Biases, norms, activations and the softmax are left out (PaLM's convention).
- Full fine-tuning costs 6N per token (forward 2N, backward 4N: gradients of the activations
  and of the weights; Kaplan et al. 2020, "Scaling Laws for Neural Language Models", sec. 2.1;
  Chowdhery et al. 2022, "PaLM", appendix B). Under LoRA the base weights are frozen, so the
  backward pass needs the activation gradients only: 2N + 2N = 4N, plus 6 FLOPs per LoRA
  parameter (the adapters are trained in full).
- Attention scores (PaLM appendix B): forward ``4 * L * H * Q * T`` per token (QK^T and the
  weighted sum over V, H heads of dimension Q over a context of T positions; PaLM counts the
  full T, not the causal half). Both operands of those products are activations, so the
  backward pass costs twice the forward whatever is frozen: ``12 * L * H * Q * T`` in all, as
  in PaLM.
- With a KL penalty the learner also runs the reference policy (adapter off) forward:
  2N + the attention forward.

Peaks are the vendors' dense (not 2:4 sparse) 16-bit tensor-core figures.
"""

from __future__ import annotations

import re
from typing import Any

GATED_MLP_MODELS = frozenset({
    "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "olmo", "olmo2", "granite",
    "cohere",
})
"""``model_type`` of dense models whose MLP is gated: down(act(gate(x)) * up(x)), three matrices."""
PLAIN_MLP_MODELS = frozenset({"gpt2", "gpt_neox", "gptj", "phi", "opt", "bloom"})
"""``model_type`` of dense models whose MLP is two matrices: down(act(up(x)))."""

LLAMA_LORA_SHAPES = {
    "q_proj": ("hidden", "q_width"), "k_proj": ("hidden", "kv_width"), "v_proj": ("hidden", "kv_width"),
    "o_proj": ("q_width", "hidden"),
    "gate_proj": ("hidden", "intermediate"), "up_proj": ("hidden", "intermediate"),
    "down_proj": ("intermediate", "hidden"),
}
"""(input width, output width) of each Llama/Qwen2 linear module a LoRA adapter may target."""

DENSE_16BIT_PEAKS: tuple[tuple[frozenset[str], float, str], ...] = (
    (frozenset({"H200", "NVL"}), 835.5e12, "H200 NVL datasheet: 1,671 TFLOPS with sparsity"),
    (frozenset({"H200"}), 989.5e12, "H200 SXM datasheet: 1,979 TFLOPS with sparsity"),
    (frozenset({"H100", "NVL"}), 835.5e12, "H100 NVL datasheet: 1,671 TFLOPS with sparsity"),
    (frozenset({"H100", "PCIE"}), 756.5e12, "H100 PCIe datasheet: 1,513 TFLOPS with sparsity"),
    (frozenset({"H100"}), 989.5e12, "H100 SXM datasheet: 1,979 TFLOPS with sparsity"),
    (frozenset({"A100"}), 312e12, "A100 datasheet (SXM and PCIe, 40 and 80 GB): 312 TFLOPS dense"),
    (frozenset({"L40S"}), 362.05e12, "L40S datasheet: 362.05 TFLOPS dense"),
    (frozenset({"L4"}), 121e12, "L4 datasheet: 242 TFLOPS with sparsity"),
    (frozenset({"A10G"}), 70e12, "AWS-only part, no NVIDIA datasheet: the commonly quoted 70 TFLOPS dense (the A10's is 125)"),
    (frozenset({"RTX", "4090"}), 165.2e12, "Ada architecture whitepaper: 165.2 TFLOPS dense, FP32 accumulate"),
)
"""(tokens of ``torch.cuda.get_device_name()``, dense BF16/FP16 tensor-core FLOP/s, source), most specific first.

H100 SXM reports itself as e.g. "NVIDIA H100 80GB HBM3", so a plain H100 is the SXM part.
Sparse figures on the datasheets are twice the dense ones; the table holds half of them.
"""

SIXTEEN_BIT = frozenset({"bfloat16", "float16", "bf16", "fp16", "half"})


def _attribute(config: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    if default is None:
        raise ValueError(f"model config has none of {', '.join(names)}")
    return default


def _widths(config: Any) -> dict[str, int]:
    """hidden, q_width (H * head_dim), kv_width (H_kv * head_dim), intermediate, heads, head_dim, layers, vocab."""
    hidden = int(_attribute(config, "hidden_size", "n_embd"))
    heads = int(_attribute(config, "num_attention_heads", "n_head"))
    head_dim = int(_attribute(config, "head_dim", default=hidden // heads))
    kv_heads = int(_attribute(config, "num_key_value_heads", default=heads))
    return {
        "hidden": hidden, "heads": heads, "head_dim": head_dim, "q_width": heads * head_dim,
        "kv_width": kv_heads * head_dim,
        "intermediate": int(_attribute(config, "intermediate_size", "n_inner", "ffn_dim", default=4 * hidden)),
        "layers": int(_attribute(config, "num_hidden_layers", "n_layer")), "vocab": int(config.vocab_size),
    }


def _gated(config: Any) -> bool:
    model_type = getattr(config, "model_type", "")
    if getattr(config, "num_local_experts", None) or getattr(config, "num_experts", None):
        raise ValueError(f"model_type {model_type!r} is a mixture of experts: dense FLOPs do not apply")
    if model_type in GATED_MLP_MODELS:
        return True
    if model_type in PLAIN_MLP_MODELS:
        return False
    raise ValueError(f"model_type {model_type!r}: unknown MLP form (add it to GATED_MLP_MODELS or PLAIN_MLP_MODELS)")


def matmul_params(config: Any) -> int:
    """N: weights of every matmul a token passes through (attention and MLP projections, LM head)."""
    w = _widths(config)
    attention = w["hidden"] * (2 * w["q_width"] + 2 * w["kv_width"])  # q, o: hidden x q_width; k, v: hidden x kv_width
    mlp = (3 if _gated(config) else 2) * w["hidden"] * w["intermediate"]
    return w["layers"] * (attention + mlp) + w["vocab"] * w["hidden"]


def attention_flops_per_token(config: Any, sequence_length: float) -> float:
    """Forward FLOPs of the attention scores per token: 4 * L * H * Q * T (PaLM appendix B)."""
    w = _widths(config)
    return 4.0 * w["layers"] * w["heads"] * w["head_dim"] * sequence_length


def lora_params(config: Any, rank: int, target_modules: list[str]) -> int:
    """Trainable parameters of a rank-``rank`` LoRA on a Llama/Qwen2-style model: r * (in + out) per module."""
    w = _widths(config)
    unknown = sorted(set(target_modules) - set(LLAMA_LORA_SHAPES))
    if unknown:
        raise ValueError(f"LoRA target modules {unknown}: widths known only for {sorted(LLAMA_LORA_SHAPES)}")
    per_layer = sum(w[LLAMA_LORA_SHAPES[m][0]] + w[LLAMA_LORA_SHAPES[m][1]] for m in set(target_modules))
    return w["layers"] * rank * per_layer


def causal_lm_flops_per_token(config: Any, *, sequence_length: float, reference_forward: bool = False,
                              trainable_params: int = 0) -> float:
    """Model FLOPs per trained token of a LoRA GRPO learner step (see the module docstring).

    ``config``: a transformers causal-LM config; ``sequence_length``: the context T a token attends
    over (prompt + completion; for rows of mixed length the token-weighted mean length);
    ``reference_forward``: the KL term is on (one more forward, adapter off); ``trainable_params``:
    the LoRA parameters (6 FLOPs each). Total: 4N + 3A + 6 P_lora (+ 2N + A with the reference),
    A = the attention-score forward.
    """
    if sequence_length < 0 or trainable_params < 0:
        raise ValueError("sequence_length and trainable_params must be >= 0")
    n = matmul_params(config)
    attention = attention_flops_per_token(config, sequence_length)
    policy = (2 * n + attention) + (2 * n + 2 * attention) + 6 * trainable_params  # forward + activation gradients
    return float(policy + (2 * n + attention if reference_forward else 0))


def peak_flops(device_name: str, dtype: Any) -> float | None:
    """Dense BF16/FP16 tensor-core peak FLOP/s of the named GPU (``DENSE_16BIT_PEAKS``); None when unknown.

    ``device_name``: ``torch.cuda.get_device_name()`` (or "cpu"); ``dtype``: a torch dtype or its
    name. None on CPU, for an unlisted GPU, and for any dtype but bfloat16/float16.
    """
    if str(dtype).removeprefix("torch.") not in SIXTEEN_BIT:
        return None
    tokens = set(re.split(r"[^A-Z0-9]+", device_name.upper()))
    for needed, peak, _ in DENSE_16BIT_PEAKS:
        if needed <= tokens:
            return peak
    return None


def mfu(tokens_per_s: float, flops_per_token: float, peak: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s (tokens/s x FLOPs per token) over the peak, in [0, 1]."""
    if peak <= 0:
        raise ValueError(f"peak FLOP/s must be > 0, got {peak}")
    return tokens_per_s * flops_per_token / peak
