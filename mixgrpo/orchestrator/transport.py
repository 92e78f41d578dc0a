"""How a step's data travels between actors: the mixins that keep token arrays and adapters out of the driver.

The orchestrator adds them to the plain actor classes (``placement.remote_class(cls, *mixins)``):

- ``SplitsRollouts`` (everything that generates): a shard comes back as two objects, its
  RolloutView (text, lengths, versions: what the driver and the reward actors read) and its
  RolloutBatch, which stays in the object store;
- ``FetchesTokens`` (every learner rank): a step from a ``TrainOrder``; the rank fetches the
  generator shards its rows come from, and nothing else;
- ``PublishesAdapter`` (disaggregated rank 0): the step's result and the adapter as two
  objects; the driver forwards the adapter's ObjectRef to the generators.

So per step the driver handles prompts, views, rewards, advantages and metrics: its memory and
the bytes it handles do not grow with sequence length. Ray stores an object under 100 KiB in its
owner's memory (the driver, for a call it made) rather than in shared memory: small shards pass
through the driver as opaque bytes that it never unpickles; larger ones go store to store.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import ray

from mixgrpo.actors.learner import LearnerResult
from mixgrpo.batch import PromptBatch, RolloutBatch, RolloutView, TrainBatch, TrainOrder


def as_train_batch(batch: TrainBatch | TrainOrder) -> TrainBatch:
    """A TrainBatch as it is; a TrainOrder with its token rows fetched from the object store."""
    return batch.resolve(ray.get) if isinstance(batch, TrainOrder) else batch


class SplitsRollouts:
    """Mixin of actors that generate (Generator, ColocatedRank, ClipPolicy)."""

    @ray.method(num_returns=2)
    def generate_split(self, prompts: PromptBatch, step: int, **options: Any) -> tuple[RolloutView, RolloutBatch]:
        """``generate``; returns (the rollouts' view, the rollouts): the driver fetches only the first."""
        rollouts = self.generate(prompts, step, **options)  # type: ignore[attr-defined]
        return rollouts.view(), rollouts


class FetchesTokens:
    """Mixin of learner ranks: ``train_step`` from a TrainOrder (or a TrainBatch)."""

    def train_step_order(self, batch: TrainBatch | TrainOrder) -> LearnerResult:
        """One optimizer step on ``batch``, its token rows fetched here."""
        return self.train_step(as_train_batch(batch))  # type: ignore[attr-defined]


class PublishesAdapter(FetchesTokens):
    """Mixin of disaggregated learner ranks: a step's result and its adapter as two objects.

    The adapter then goes from rank 0 to the generators through the object store: the driver
    forwards its ObjectRef and never deserialises the tensors (for a large adapter, the driver
    would otherwise copy it in and out every step).
    """

    @ray.method(num_returns=2)
    def train_step_publishing(self, batch: TrainBatch | TrainOrder) -> tuple[LearnerResult, Any]:
        """``train_step_order``; returns (its result without the adapter, the adapter)."""
        result = self.train_step_order(batch)
        return replace(result, adapter=None), result.adapter
