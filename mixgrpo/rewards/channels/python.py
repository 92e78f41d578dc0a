"""A user reward function given as ``package.module:function``.

Signature (per completion, the default)::

    def my_reward(prompt: str, completion: str, metadata: dict) -> float | None

or, with ``options.batched: true``, one call for the whole batch::

    def my_rewards(prompts: list[str], completions: list[str], metadata: list[dict]) -> list[float | None]

Return None where the reward does not apply (a null, never 0). The function runs
inside the reward actor's process only. Extra ``options.kwargs`` are passed as
keyword arguments.

Failures: a per-completion function that raises nulls that completion only
(counted ``item_errors``, the first message of each exception type logged once);
a batched function is all-or-nothing: if it raises, every completion of the
batch is null (counted ``errors``, once per batch).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from pydantic import Field

from mixgrpo.rewards.channels.base import ChannelOptions, ChannelOptionsError, PerSample, ScoringInput, register


def import_callable(spec: str) -> Callable[..., Any]:
    """Resolve ``package.module:function`` (ValueError naming the spec when it cannot)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"callable {spec!r} is not of the form package.module:function")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as error:  # ImportError, but also a module that fails while importing
        raise ValueError(f"callable {spec!r}: cannot import {module_name!r} ({error})") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(f"callable {spec!r}: {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"callable {spec!r} is not callable")
    return target


class PythonOptions(ChannelOptions):
    callable: str = Field(min_length=1)
    """The reward function as package.module:function (importable in the reward actor's process)."""
    batched: bool = False
    """true: one call with the whole batch's lists; false: one call per completion."""
    kwargs: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments passed to every call (free-form: the function's own options)."""


@register("python", PythonOptions)
def python_channel(options: PythonOptions) -> Callable[[ScoringInput], Any]:
    """A user callable, per completion or batched, with ``kwargs``."""
    try:
        function = import_callable(options.callable)
    except ValueError as error:
        raise ChannelOptionsError.of("callable", str(error)) from None
    kwargs = dict(options.kwargs)
    if options.batched:
        return lambda batch: function(batch.prompts, batch.completions, batch.metadata, **kwargs)
    return PerSample(lambda prompt, completion, metadata, n_tokens: function(prompt, completion, metadata, **kwargs))
