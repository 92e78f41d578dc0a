"""CLIP as a GRPO policy: a one-step image classifier that samples its own rollouts.

Policy (Radford et al. 2021, "Learning Transferable Visual Models From Natural
Language Supervision", fig. 3 and §3.1.4, the zero-shot recipe). For B images
and C classes with K prompt templates each:

    t_c    = normalise(mean_k normalise(E_text(template_k(name_c))))    (C, D)
    v_b    = normalise(E_image(x_b))                                     (B, D)
    logits = exp(min(s, ln 100)) * v @ t^T                               (B, C)
    pi(c | x_b) = softmax(logits_b / temperature)_c

One action per sample: a rollout of image b is a class c ~ pi(. | x_b), its
log-prob is the behaviour log-prob, its completion text the class name (what
the reward channels score). The GRPO loss is ``actors/loss.py:grpo_loss`` with
T = 1 (PPO clip on pi/pi_behaviour, entropy of the whole class distribution as
the bonus, KL to the reference: the adapter disabled for LoRA, a frozen copy of
the initial weights for full fine-tuning).

Records, reused as they are: ``prompt_token_ids = [image id]``,
``completion_token_ids = [class index]``, ``behaviour_logprobs = [log pi]``.
So the Learner's machinery (PPO epochs and mini-batches, micro-batch shares,
all-reduce across ranks, clipping, AdamW with warm-up, checkpoint state) runs
unchanged: this class is a Learner whose ``_token_logprobs`` is the classifier's.

Images never cross Ray: every rank builds the same task from the config and
looks images up by prompt id (the task's row id), decoded once and kept after
the model's validation transform (the same transform for sampling and learning:
a random crop would change pi between the two and break the PPO ratio).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
from torch.nn.functional import normalize

from mixgrpo.actors.learner import Learner, LearnerResult, _loss_metric_names
from mixgrpo.actors.loss import gather_token_logprobs, token_entropy
from mixgrpo.batch import PromptBatch, RolloutBatch, TrainBatch
from mixgrpo.builtin.tiny_clip import resolve_clip_name
from mixgrpo.config import (
    ClipPolicyConfig,
    GeneratorConfig,
    LearnerConfig,
    LossSettings,
    ModelConfig,
    TaskConfig,
)
from mixgrpo.errors import InputError
from mixgrpo.faults import failpoint
from mixgrpo.rewards.clip_model import check_clip_source
from mixgrpo.rewards.images import load_image
from mixgrpo.runtime import pick_device, torch_dtype
from mixgrpo.tasks import make_task
from mixgrpo.tasks.image_classes import DIGITS, ImageClasses, image_classes

MAX_LOGIT_SCALE = math.log(100.0)
"""CLIP clamps the learned log logit scale at ln 100 (Radford et al. 2021, §2.5)."""
_TOWER_PREFIXES = {"visual": ["visual."], "text": ["transformer.", "token_embedding.", "ln_final.",
                                                   "positional_embedding", "text_projection"]}
_TOWER_PREFIXES["both"] = _TOWER_PREFIXES["visual"] + _TOWER_PREFIXES["text"]


def _hub_cached(repo_id: str, with_config: bool = False) -> bool:
    """Whether the HF hub cache holds open_clip weights of ``repo_id`` (and its open_clip_config.json if asked)."""
    from huggingface_hub import try_to_load_from_cache

    def cached(filename: str) -> bool:
        return isinstance(try_to_load_from_cache(repo_id, filename), str)

    weights = cached("open_clip_model.safetensors") or cached("open_clip_pytorch_model.bin")
    return weights and (not with_config or cached("open_clip_config.json"))


def _weights_are_local(name: str, tag: str) -> bool:
    """Whether open_clip finds the weights of (name, tag) without a download (HF hub cache or its URL cache)."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(name, tag)
    if cfg.get("hf_hub"):
        return _hub_cached("/".join(cfg["hf_hub"].rstrip("/").split("/")[:2]))
    url = cfg.get("url", "")
    return bool(url) and (Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)).is_file()


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """A TCP connection to the Hugging Face endpoint opens within ``timeout_s`` (open_clip's download source)."""
    from huggingface_hub import constants

    endpoint = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def _checked_pretrained(name: str, tag: str | None) -> str:
    """``tag``; InputError unless ``name`` is an open_clip architecture and ``tag`` one of its tags or a checkpoint file."""
    import open_clip

    if open_clip.get_model_config(name) is None:
        raise InputError(f"model.path={name!r} is not an open_clip architecture (open_clip.list_models()), "
                         "local-dir:<folder>, hf-hub:<org/repo> or builtin:<name>")
    known = open_clip.list_pretrained_tags_by_model(name)
    if tag is None:
        raise InputError(f"model.path={name} needs model.pretrained: a tag ({', '.join(known) or 'none known'}) "
                         "or a checkpoint file (without one open_clip starts from random weights)")
    if not Path(tag).expanduser().is_file() and not open_clip.get_pretrained_cfg(name, tag):
        raise InputError(f"model.pretrained={tag!r} is not an open_clip tag of {name} (known: {known})")
    return tag


def check_clip_policy_source(model: ModelConfig) -> None:
    """InputError, without loading anything, for CLIP weights that cannot load here.

    A pretrained tag whose weights are not cached, or an ``hf-hub:`` repo whose
    config and weights are not, fails at once when the hub is unreachable (or
    HF_HUB_OFFLINE is set): open_clip would retry for about 47 s.
    """
    try:
        check_clip_source(model.path, model.pretrained)
    except ValueError as error:
        raise InputError(f"model.path: {error}") from None
    if model.path.startswith(("builtin:", "local-dir:")):
        return
    if model.path.startswith("hf-hub:"):
        local = _hub_cached(model.path.removeprefix("hf-hub:"), with_config=True)
        what = f"model.path={model.path}: its open_clip_config.json and weights are"
    else:
        tag = _checked_pretrained(model.path, model.pretrained)
        if Path(tag).expanduser().is_file():
            return
        local, what = _weights_are_local(model.path, tag), f"model.pretrained={tag!r}: the {model.path} weights are"
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if not local and (offline or not _hub_reachable()):
        raise InputError(f"{what} not in the local cache and the hub is "
                         f"{'disabled (HF_HUB_OFFLINE)' if offline else 'unreachable'}; download them once, "
                         "or set model.pretrained to a checkpoint file or model.path to local-dir:<folder>")


class ImageTable:
    """The task's images by prompt id, decoded once and kept as validation-transformed pixels."""

    def __init__(self, task: TaskConfig, seed: int, preprocess: Any) -> None:
        built = make_task(task, seed)
        self.where = task.path or DIGITS
        self.column = task.image_classes.image_column if task.path else "image"
        self.records = {int(i): record for batch in (built.pool, built.held_out)
                        for i, record in zip(batch.prompt_ids, batch.metadata)}
        self.preprocess = preprocess
        self._pixels: dict[int, torch.Tensor] = {}

    def decode(self, image_id: int) -> Any:
        """The PIL image of ``image_id``; InputError naming the row and column when it does not decode."""
        record = self.records[image_id]
        image = load_image(record["image"], record.get("image_root"))
        if image is None:
            raise InputError(f"{self.where}: row {image_id}, column {self.column!r}: not a readable image "
                             f"(a path, PNG/JPEG bytes, a data: URL or a {{bytes, path}} dict)")
        return image

    def check_all(self) -> None:
        """Decode every image once (preflight: a bad row fails before anything starts)."""
        for image_id in self.records:
            self.decode(image_id)

    def pixels(self, image_ids: np.ndarray) -> torch.Tensor:
        """(B, 3, S, S) validation-transformed pixels of the images (cached per id)."""
        for image_id in image_ids:
            if int(image_id) not in self._pixels:
                self._pixels[int(image_id)] = self.preprocess(self.decode(int(image_id)))
        return torch.stack([self._pixels[int(i)] for i in image_ids])


def load_clip(model: ModelConfig, device: str) -> tuple[torch.nn.Module, Any, Any]:
    """(open_clip model, validation transform, tokenizer) of ``model`` on ``device``."""
    import open_clip

    name = resolve_clip_name(model.path)
    pretrained = None if name.startswith(("local-dir:", "hf-hub:")) else model.pretrained
    clip, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, device=device)
    return clip.to(torch_dtype(model.dtype)), preprocess, open_clip.get_tokenizer(name)


def check_clip_inputs(model: ModelConfig, task: TaskConfig, seed: int) -> None:
    """Preflight of a CLIP run: weights that load here and every image of the task decodes."""
    check_clip_policy_source(model)
    ImageTable(task, seed, preprocess=None).check_all()


def _lora_target_regex(options: ClipPolicyConfig) -> str:
    """PEFT target regex: the configured module suffixes inside the residual blocks of the trained towers."""
    towers = {"visual": [r"visual\.transformer"], "text": [r"transformer"],
              "both": [r"visual\.transformer", r"transformer"]}[options.towers]
    suffixes = "|".join(target.replace(".", r"\.") for target in options.lora_targets)
    return rf"^({'|'.join(towers)})\.resblocks\.\d+\.({suffixes})$"


class ClipPolicy(Learner):
    """One rank of a CLIP classifier policy: samples its shard's rollouts and trains on them.

    Same methods as a colocated learner rank (Generator + Learner): ``generate``,
    ``load_adapter``, ``train_step``, ``state``, ``load_state``, ``adapter_tensors``,
    ``save_adapter``, ``rendezvous_address``, ``join``, ``shutdown``. The task's
    classes and images come from ``task`` (built here from the config, like the driver's).

    ``colocated`` (the default): it samples with the weights it trains, so nothing is
    broadcast. Disaggregated (``colocated=False``, e.g. async_steps > 0): a learner rank
    returns its trained tensors after each step (rank 0) and a generator instance takes
    them in ``load_adapter``, as a language-model Generator takes a LoRA adapter.
    """

    def __init__(
        self,
        model: ModelConfig,
        learner: LearnerConfig,
        loss: LossSettings,
        sampling: GeneratorConfig,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        threads: int = 1,
        task: TaskConfig | None = None,
        colocated: bool = True,
    ) -> None:
        if task is None or task.kind != "image-classes":
            raise ValueError("ClipPolicy needs a task of kind image-classes")
        torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.config = learner
        self.loss_config = loss.model_copy(update={"max_response_tokens": loss.max_response_tokens or 1})
        self.loss_metric_names = _loss_metric_names(self.loss_config)
        self.sampling, self.seed, self.options = sampling, seed, model.clip
        self.temperature = sampling.temperature
        self.rank, self.world_size = rank, world_size
        self.device = pick_device()
        self.clip, preprocess, self.tokenizer = load_clip(model, self.device)
        self.classes: ImageClasses = image_classes(task)
        self.images = ImageTable(task, seed, preprocess)
        self.model = self._trainable_model(learner)
        self.reference = self._frozen_copy() if model.clip.tune == "full" and loss.kl_coef > 0 else None
        self._text_features = None if self._text_trains else self._class_features(self.clip).detach()
        self.pad_id = 0
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=learner.lr, weight_decay=learner.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._warmup_factor)
        self.version = 0
        self.skipped_steps = 0
        self.calls = 0
        self.colocated = colocated
        self.publishes_adapter = rank == 0 and not colocated  # colocated: no generator reads it

    @property
    def _text_trains(self) -> bool:
        return self.options.towers in ("text", "both")

    def _trainable_model(self, learner: LearnerConfig) -> torch.nn.Module:
        """The model the optimizer trains: a PEFT wrapper (tune=lora) or the CLIP model with its towers unfrozen."""
        self.clip.requires_grad_(False)
        if self.options.tune == "lora":
            from peft import LoraConfig, get_peft_model

            lora = learner.lora
            wrapped = get_peft_model(self.clip, LoraConfig(r=lora.rank, lora_alpha=lora.alpha,
                                                           lora_dropout=lora.dropout,
                                                           target_modules=_lora_target_regex(self.options)))
        else:
            wrapped = self.clip
            prefixes = tuple(_TOWER_PREFIXES[self.options.towers])
            for name, parameter in self.clip.named_parameters():
                parameter.requires_grad_(name.startswith(prefixes))
        self.clip.logit_scale.requires_grad_(self.options.train_logit_scale)
        if not any(p.requires_grad for p in wrapped.parameters()):
            raise InputError(f"model.clip: nothing trains ({self.options.tune} on {self.options.towers})")
        return wrapped

    def _frozen_copy(self) -> torch.nn.Module:
        reference = copy.deepcopy(self.clip).eval()
        return reference.requires_grad_(False)

    def _class_features(self, clip: torch.nn.Module) -> torch.Tensor:
        """(C, D) unit-norm class features: the normalised mean of each class's normalised template features."""
        prompts = self.classes.prompts()
        flat = self.tokenizer([text for texts in prompts for text in texts]).to(self.device)
        features = normalize(clip.encode_text(flat).float(), dim=-1).view(len(prompts), len(prompts[0]), -1)
        return normalize(features.mean(dim=1), dim=-1)

    def logits(self, image_ids: np.ndarray, clip: torch.nn.Module | None = None) -> torch.Tensor:
        """(B, C) float32 logits exp(min(s, ln 100)) * v @ t^T of the images (before the temperature).

        A frozen text tower's cached class features serve the reference too (its text tower is the same).
        """
        clip = self.clip if clip is None else clip
        text = self._class_features(clip) if self._text_features is None else self._text_features
        pixels = self.images.pixels(image_ids).to(self.device, dtype=next(clip.visual.parameters()).dtype)
        image = normalize(clip.encode_image(pixels).float(), dim=-1)
        scale = clip.logit_scale.float().clamp(max=MAX_LOGIT_SCALE).exp()
        return scale * image @ text.T

    def _action_logits(self, micro: Any, clip: torch.nn.Module | None = None) -> torch.Tensor:
        """(B, C) logits at the sampling temperature of each row's image (each distinct image encoded once)."""
        image_ids = micro.input_ids[:, 0].cpu().numpy()  # prompt_token_ids = [image id]
        unique, inverse = np.unique(image_ids, return_inverse=True)
        return self.logits(unique, clip)[torch.as_tensor(inverse)] / self.temperature

    def _token_logprobs(self, micro: Any, with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, 1) log pi(sampled class | image) and (B, 1) entropy of the whole class distribution if asked."""
        logits = self._action_logits(micro).unsqueeze(1)  # (B, 1, C): one action per sample
        entropy = token_entropy(logits) if with_entropy else None
        return gather_token_logprobs(logits, micro.completion_ids[:, :1]), entropy

    def _reference_logprobs(self, micro: Any) -> torch.Tensor | None:
        """(B, 1) log-probs under the reference: the adapter disabled (LoRA) or the frozen initial copy (full)."""
        if self.loss_config.kl_coef == 0:
            return None
        with torch.no_grad():
            if self.reference is not None:
                logits = self._action_logits(micro, self.reference).unsqueeze(1)
            else:
                with self.model.disable_adapter():
                    logits = self._action_logits(micro).unsqueeze(1)
            return gather_token_logprobs(logits, micro.completion_ids[:, :1])

    @torch.no_grad()
    def generate(self, prompts: PromptBatch, step: int, *, n: int | None = None, temperature: float | None = None,
                 max_new_tokens: int | None = None, seed: int | None = None) -> RolloutBatch:
        """m sampled classes per image of the shard (``Generator.generate``'s contract and seeding).

        ``n`` overrides group_size, ``temperature`` the sampling temperature (0: the argmax,
        held-out eval; its log-prob is then taken at temperature 1), ``seed`` the run seed;
        ``max_new_tokens`` is accepted and ignored (one action per sample).
        """
        del max_new_tokens
        failpoint("generate", f"generator-{self.rank}", step)
        self.model.eval()
        m = n or self.sampling.group_size
        temperature = self.sampling.temperature if temperature is None else temperature
        image_ids = prompts.prompt_ids.astype(np.int64)
        first_id = int(image_ids[0]) if len(image_ids) else 0
        generator = torch.Generator().manual_seed(
            ((self.seed if seed is None else seed) * 1_000_003 + step * 7_919 + first_id) % 2**31)
        logits = self.logits(image_ids).cpu() if len(image_ids) else torch.zeros(0, len(self.classes.names))
        if temperature == 0:
            log_probs = torch.log_softmax(logits, dim=-1)
            actions = logits.argmax(dim=-1, keepdim=True).expand(-1, m)
        else:
            log_probs = torch.log_softmax(logits / temperature, dim=-1)
            actions = torch.multinomial(log_probs.exp(), m, replacement=True, generator=generator) \
                if len(image_ids) else torch.zeros(0, m, dtype=torch.long)
        chosen = log_probs.gather(1, actions).reshape(-1).numpy().astype(np.float32)
        actions = actions.reshape(-1).numpy()
        rows = np.repeat(np.arange(len(image_ids), dtype=np.int64), m)
        return RolloutBatch(
            prompt_index=rows,
            prompt_token_ids=[image_ids[i : i + 1] for i in rows],
            completion_token_ids=[actions[k : k + 1].astype(np.int64) for k in range(len(actions))],
            behaviour_logprobs=[chosen[k : k + 1] for k in range(len(chosen))],
            completion_text=[self.classes.names[a] for a in actions],
            policy_version=np.full(len(rows), self.version, dtype=np.int64),
            source=np.full(len(rows), self.rank, dtype=np.int64),
        )

    def train_step(self, batch: TrainBatch) -> LearnerResult:
        """The Learner's step (epochs, mini-batches, all-reduce); colocated: no tensors in the result (nothing to
        broadcast), else rank 0's trained tensors for the generators."""
        result = super().train_step(batch)
        return dataclasses.replace(result, adapter=None) if self.colocated else result

    def load_adapter(self, tensors: Any, version: int, rollback: bool = False) -> int:
        """Colocated: nothing to load (it samples with its own weights), checks ``version`` is the one it holds.
        A disaggregated generator: takes the learner's trained tensors as ``version`` (forward only, except
        ``rollback`` after a restore); returns the version it now samples with."""
        if self.colocated:
            if version != self.version:
                raise ValueError(f"CLIP policy rank {self.rank} holds version {self.version}, not {version}")
            return version
        if version < self.version and not rollback:
            raise ValueError(f"refusing version {version}: CLIP generator {self.rank} already samples {self.version}")
        self._load_trained(tensors)
        self.version = version
        return version

    def adapter_tensors(self) -> dict[str, torch.Tensor]:
        """Every trained tensor (LoRA factors, or the unfrozen towers, plus logit_scale when it trains), on CPU."""
        return {name: p.detach().to("cpu").clone() for name, p in self.model.named_parameters() if p.requires_grad}

    def _load_trained(self, tensors: dict[str, torch.Tensor]) -> None:
        """Every trained tensor of this policy must be in the checkpoint (Learner.load_state calls this)."""
        missing = set(self.adapter_tensors()) - set(tensors)
        if missing:
            raise ValueError(f"checkpoint lacks {len(missing)} trained tensors of this CLIP policy, "
                             f"e.g. {min(missing)} (another model.clip.tune or towers?)")
        self.model.load_state_dict(tensors, strict=False)

    def save_adapter(self, directory: str) -> str:
        """Write the trained tensors: PEFT format for LoRA (plus logit_scale), else ``trained.safetensors``."""
        from safetensors.torch import save_file

        Path(directory).mkdir(parents=True, exist_ok=True)
        tensors = self.adapter_tensors()
        if self.options.tune == "lora":
            self.model.save_pretrained(directory)
            tensors = {k: v for k, v in tensors.items() if "lora_" not in k}
        if tensors:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(Path(directory) / "trained.safetensors"))
        return directory

    def load_saved(self, directory: str) -> None:
        """Load what ``save_adapter`` wrote (PEFT LoRA factors and/or ``trained.safetensors``) into this policy."""
        from safetensors.torch import load_file

        folder = Path(directory)
        trained = folder / "trained.safetensors"
        loaded = load_file(str(trained)) if trained.is_file() else {}
        if self.options.tune == "lora":
            from peft import set_peft_model_state_dict

            factors = folder / "adapter_model.safetensors"
            if not factors.is_file():
                raise InputError(f"{folder}: no adapter_model.safetensors (a model.clip.tune=lora run saves one)")
            set_peft_model_state_dict(self.model, load_file(str(factors)))
            loaded.update({k: v for k, v in self.adapter_tensors().items() if "lora_" in k})
        elif not loaded:
            raise InputError(f"{folder}: no trained.safetensors (a model.clip.tune=full run saves one)")
        self._load_trained(loaded)

    def chosen_class_gradcam(self, image_id: int, image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(H, W) Grad-CAM (maps.vit_gradcam) of the argmax class's logit, and the (C,) class probabilities.

        ``image_size``: (W, H) of the frame the map is aligned with (the decoded image, or an
        upscaled copy of it for display). Probabilities are at temperature 1.
        """
        from mixgrpo.rewards.maps import vit_gradcam

        self.model.eval()
        forward: dict[str, torch.Tensor] = {}

        def chosen_logit() -> torch.Tensor:
            logits = self.logits(np.array([image_id], dtype=np.int64))[0]  # (C,): one forward serves both
            forward["probabilities"] = torch.softmax(logits.detach(), dim=-1)
            return logits[int(logits.argmax())]

        heat = vit_gradcam(self.clip.visual, chosen_logit, image_size)
        self.model.zero_grad(set_to_none=True)
        return heat, forward["probabilities"].cpu().numpy()

    def accuracy(self, prompts: PromptBatch) -> float:
        """Greedy (argmax) accuracy on ``prompts`` against their metadata ``label_index``."""
        if not len(prompts):
            return float("nan")
        chosen = np.concatenate(self.generate(prompts, 0, n=1, temperature=0.0).completion_token_ids)
        return float((chosen == np.array([record["label_index"] for record in prompts.metadata])).mean())
