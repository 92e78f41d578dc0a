"""The reward-channel interface and the registry of channel kinds.

A channel scores a whole batch at once: it receives a ``ScoringInput`` with N
completions and returns N values (float, or None for "no value here").

Every kind has a typed options model (a ``ChannelOptions`` subclass: unknown
options are errors, each field has a default and a one-line docstring, shown by
``mixgrpo config`` and in the README's configuration reference). ``build_channel``
validates a channel's ``options`` mapping with its kind's model and hands the
typed options to the kind's factory; the driver does this in preflight, before
Ray starts, and reports every problem as ``rewards.<name>.options.<field>: <msg>``.

Adding a kind:

1. Write ``mixgrpo/rewards/channels/<module>.py`` with an options model and a
   factory registered under the kind's name::

       class CapOptions(ChannelOptions):
           cap: float = Field(default=1.0, gt=0)
           \"\"\"Largest value a completion can get.\"\"\"

       @register("cap", CapOptions)
       def cap_channel(options: CapOptions) -> PerSample:
           return PerSample(lambda prompt, completion, metadata, n_tokens: min(n_tokens, options.cap))

   Constraints go in the model (``Field(gt=...)``, ``Literal[...]``, a
   ``model_validator`` for rules across fields); a check the model cannot make
   (a regex that does not compile, a missing model directory) raises
   ``ChannelOptionsError.of("<field>", "<message>")`` in the factory.
2. Add ``"cap": "mixgrpo.rewards.channels.<module>"`` to ``KIND_MODULES`` below:
   the registry imports a kind's module when that kind is first built, so a
   reward actor imports only the kinds it runs.
3. Keep the module's top-level imports light: torch, transformers, open_clip
   and the like are imported inside ``setup()`` or the scoring code, so a
   process running only rule channels never loads them.
4. ``make config-docs`` regenerates the README's configuration reference.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence

from pydantic import BaseModel, ConfigDict, ValidationError

ChannelOutput = Sequence[float | None]


@dataclass(frozen=True)
class ScoringInput:
    """N completions with what a channel may need to score them."""

    prompts: list[str]
    """(N,) prompt text of each completion's group."""
    completions: list[str]
    """(N,) completion text."""
    metadata: list[dict[str, Any]]
    """(N,) the prompt record's metadata (gold answers, image paths, ...)."""
    completion_tokens: list[int]
    """(N,) completion length in tokens."""

    def __len__(self) -> int:
        return len(self.completions)


class Channel(Protocol):
    """A reward function over a batch."""

    def __call__(self, batch: ScoringInput) -> ChannelOutput:
        """N values, None where the channel has no value."""


class ChannelOptions(BaseModel):
    """Base of every kind's options model: frozen, unknown options rejected, field docstrings kept."""

    # strict like the config: a quoted number ('2') is an error naming the option, never converted
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, strict=True)


class ChannelOptionsError(ValueError):
    """Bad ``kind`` or ``options`` of a channel: one ``(path, message)`` per problem, path like ``options.pattern``."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__(self.located(""))

    @classmethod
    def of(cls, field: str, message: str) -> "ChannelOptionsError":
        """One problem with ``options.<field>``."""
        return cls([(f"options.{field}", message)])

    @classmethod
    def from_validation(cls, error: ValidationError, allowed: Sequence[str]) -> "ChannelOptionsError":
        """Pydantic's errors, one line each; an unknown option lists the allowed ones."""
        problems = []
        for item in error.errors():
            path = ".".join(["options", *(str(part) for part in item["loc"])])
            if item["type"] == "extra_forbidden":
                message = f"unknown option; allowed: {', '.join(allowed) or 'none'}"
            else:
                message = item["msg"].removeprefix("Value error, ")
                if item["type"].endswith("_type"):  # strict types: say what was given
                    message += f", got {type(item['input']).__name__} {repr(item['input'])[:40]}"
            problems.append((path, message))
        return cls(problems)

    def located(self, prefix: str) -> str:
        """The problems on one line, each path prefixed (``rewards.<name>.``)."""
        return "; ".join(f"{prefix}{path}: {message}" for path, message in self.problems)


ChannelFactory = Callable[[Any], Channel]
"""Builds a channel from its kind's validated options (an instance of the kind's options model)."""


@dataclass(frozen=True)
class ChannelKind:
    """A registered kind: its options model and the factory taking validated options."""

    name: str
    options: type[ChannelOptions]
    factory: ChannelFactory


KIND_MODULES: dict[str, str] = {
    "regex": "mixgrpo.rewards.channels.rules",
    "length": "mixgrpo.rewards.channels.rules",
    "overlong": "mixgrpo.rewards.channels.overlong",
    "exact_match": "mixgrpo.rewards.channels.math",
    "numeric_match": "mixgrpo.rewards.channels.math",
    "numeric_distance": "mixgrpo.rewards.channels.math",
    "python": "mixgrpo.rewards.channels.python",
    "renders": "mixgrpo.rewards.channels.renders",
    "http": "mixgrpo.rewards.channels.http",
    "ocr": "mixgrpo.rewards.channels.ocr",
    "clipscore": "mixgrpo.rewards.channels.clipscore",
    "color": "mixgrpo.rewards.channels.color",
    "reward_model": "mixgrpo.rewards.channels.reward_model",
}
"""Built-in kind -> the module that registers it (imported on the kind's first use)."""

KIND_EXTRAS: dict[str, tuple[str, ...]] = {
    "renders": ("rewards",),
    "ocr": ("rewards",),
    "color": ("rewards",),
    "clipscore": ("rewards", "clip"),
    "reward_model": ("rewards",),
}
"""Built-in kind -> the package extras (pyproject ``[project.optional-dependencies]``) it needs; others need none."""

SHARED_ACTOR_KINDS: frozenset[str] = frozenset(
    {"regex", "length", "overlong", "exact_match", "numeric_match", "numeric_distance"})
"""Built-in kinds that share one reward actor by default (``rewards.<name>.actor`` unset, ``device: cpu``,
``replicas: 1``): pure-Python rules that import nothing heavy and answer in milliseconds. Not here, so each
keeps an actor of its own unless its config names a group: ``python`` (a user callable may load a model, hang
or call out: its restarts must not take other channels along), ``http`` (I/O bound and slow: it must not
delay the others), and the image and model kinds (renders, ocr, color, clipscore, reward_model)."""

CHANNEL_KINDS: dict[str, ChannelKind] = {}
"""The kinds registered so far in this process (built-in modules join on first use)."""


def register(kind: str, options: type[ChannelOptions]) -> Callable[[ChannelFactory], ChannelFactory]:
    """Class or function decorator adding a channel factory under ``kind``, its options validated by ``options``."""

    def add(factory: ChannelFactory) -> ChannelFactory:
        builtin_home = KIND_MODULES.get(kind)
        if kind in CHANNEL_KINDS or (builtin_home is not None and factory.__module__ != builtin_home):
            raise ValueError(f"channel kind {kind!r} registered twice")
        CHANNEL_KINDS[kind] = ChannelKind(kind, options, factory)
        return factory

    return add


def known_kinds() -> list[str]:
    """Every kind that can be built: the built-in ones and those registered here."""
    return sorted(set(KIND_MODULES) | set(CHANNEL_KINDS))


def channel_kind(kind: str) -> ChannelKind:
    """The registered kind, importing its built-in module on first use (ChannelOptionsError if unknown)."""
    if kind not in CHANNEL_KINDS and kind in KIND_MODULES:
        importlib.import_module(KIND_MODULES[kind])
    if kind not in CHANNEL_KINDS:
        raise ChannelOptionsError([("kind", f"unknown reward channel kind {kind!r}; known: {known_kinds()}")])
    return CHANNEL_KINDS[kind]


def all_kinds() -> list[ChannelKind]:
    """Every built-in and registered kind, sorted by name (imports every built-in kind module)."""
    return [channel_kind(kind) for kind in known_kinds()]


def channel_options(kind: str, options: Mapping[str, Any]) -> ChannelOptions:
    """``options`` validated by the kind's model (ChannelOptionsError naming each bad ``options.<field>``)."""
    model = channel_kind(kind).options
    try:
        return model.model_validate(dict(options))
    except ValidationError as error:
        raise ChannelOptionsError.from_validation(error, sorted(model.model_fields)) from None


def build_channel(kind: str, options: Mapping[str, Any]) -> Channel:
    """Instantiate a kind with its validated options (ChannelOptionsError for an unknown kind or bad options)."""
    return channel_kind(kind).factory(channel_options(kind, options))


@dataclass(frozen=True)
class ItemError:
    """In a channel's output: what scoring one completion raised (the worker nulls it, counted ``item_errors``)."""

    error: Exception
    """The exception, logged once per type by the reward worker."""


class PerSample:
    """Adapter: a per-completion function ``(prompt, completion, metadata, n_tokens) -> float | None``.

    Completions are scored independently, so a completion whose call raises is an
    ``ItemError`` in the output (null for that completion only), never a failure
    of the whole batch.
    """

    def __init__(self, score_one: Callable[[str, str, dict[str, Any], int], float | None]) -> None:
        self.score_one = score_one

    def __call__(self, batch: ScoringInput) -> list[float | None | ItemError]:
        return [
            self._one(p, c, md, n)
            for p, c, md, n in zip(batch.prompts, batch.completions, batch.metadata, batch.completion_tokens)
        ]

    def _one(self, prompt: str, completion: str, metadata: dict[str, Any], n_tokens: int) -> Any:
        try:
            return self.score_one(prompt, completion, metadata, n_tokens)
        except Exception as error:  # one bad completion nulls itself, not its batch
            return ItemError(error)
