"""A user reward function given as ``package.module:function``.

Signature (per completion, the default)::

    def my_reward(prompt: str, completion: str, metadata: dict) -> float | None

or, with ``options.batched: true``, one call for the whole batch::

    def my_rewards(prompts: list[str], completions: list[str], metadata: list[dict]) -> list[float | None]

Return None where the reward does not apply (a null, never 0). The function runs
inside the reward actor's process only. Extra ``options.kwargs`` are passed as
keyword arguments.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from mixgrpo.rewards.channels.base import PerSample, ScoringInput, pop_options, register


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


@register("python")
def python_channel(options: dict[str, Any]) -> Callable[[ScoringInput], Any]:
    """A user callable (options: callable, batched (default false), kwargs (default {}))."""
    opts = pop_options(options, "python", {"callable": None, "batched": False, "kwargs": {}})
    if not opts["callable"]:
        raise ValueError("channel kind 'python' needs options.callable = 'package.module:function'")
    function = import_callable(str(opts["callable"]))
    kwargs = dict(opts["kwargs"])
    if opts["batched"]:
        return lambda batch: function(batch.prompts, batch.completions, batch.metadata, **kwargs)
    return PerSample(lambda prompt, completion, metadata, n_tokens: function(prompt, completion, metadata, **kwargs))
