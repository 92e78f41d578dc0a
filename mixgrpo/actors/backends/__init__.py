"""Generation engines behind one protocol (``base.GenerationBackend``): ``hf`` and ``vllm``.

The Generator actor imports this package one way; neither backend imports the generator.
"""

from __future__ import annotations

from mixgrpo.actors.backends.base import GenerationBackend, SampledCompletions
from mixgrpo.actors.backends.hf import HFBackend
from mixgrpo.actors.backends.vllm import VLLMBackend, vllm_available
from mixgrpo.config import GeneratorConfig, LoraConfig, ModelConfig

__all__ = ["GenerationBackend", "HFBackend", "SampledCompletions", "VLLMBackend", "make_backend", "vllm_available"]


def make_backend(model_path: str, model: ModelConfig, lora: LoraConfig, sampling: GeneratorConfig) -> GenerationBackend:
    """The configured backend of a generator: vllm, hf, or auto (vllm when ``import vllm`` works, else hf)."""
    if sampling.backend == "vllm" or (sampling.backend == "auto" and vllm_available()):
        return VLLMBackend(model_path, model, lora, sampling)
    return HFBackend(model_path, model, lora, sampling)
