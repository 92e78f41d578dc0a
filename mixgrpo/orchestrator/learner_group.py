"""K learner ranks as K Ray actors joined by torch.distributed; rank 0 speaks for the group.

Colocated placement: the ranks are ``ColocatedRank`` actors that also generate (``ClipPolicy``
ones for model.kind=clip); the rollout pipeline uses ``actors`` as its generators.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ray

from mixgrpo.actors.clip_policy import ClipPolicy
from mixgrpo.actors.colocated import ColocatedRank
from mixgrpo.actors.learner import Learner, LearnerResult
from mixgrpo.batch import TrainBatch, TrainOrder
from mixgrpo.config import Config
from mixgrpo.orchestrator.placement import InProcessActor, remote_class
from mixgrpo.orchestrator.transport import FetchesTokens, PublishesAdapter, SplitsRollouts


def rank_threads(num_cpus: float) -> int:
    """Most torch threads a colocated rank may run: the whole CPUs it reserved, at least one."""
    return max(1, int(num_cpus))


def rank_args(config: Config) -> tuple[Any, ...]:
    """The leading arguments of a ColocatedRank or ClipPolicy: model, learner, loss, generator settings, seed."""
    return config.model, config.learner, config.algorithm.loss, config.generator, config.run.seed


class LearnerGroupError(RuntimeError):
    """A learner rank died or raised during a step; the group has been killed."""


@dataclasses.dataclass(frozen=True)
class PendingStep:
    """A learner step sent to the ranks (``LearnerGroup.start_step``), not yet waited for."""

    results: list[Any]
    """ObjectRef of each rank's LearnerResult, rank 0 first."""
    adapter: Any
    """ObjectRef of rank 0's adapter (disaggregated), else None."""


class LearnerGroup:
    """Creates the ranks (one actor option dict each), joins them, and fans each step out.

    ``colocated``: ColocatedRank actors, each running learner.threads / generator.threads torch
    threads, at most the whole CPUs of its ``num_cpus`` (at least one). With
    ``cluster.rank_in_driver`` the one rank is an ``InProcessActor`` in this process.
    model.kind=clip: ClipPolicy ranks in either placement (disaggregated, they publish their tensors).
    """

    def __init__(self, config: Config, options_per_rank: list[dict[str, Any]], colocated: bool = False) -> None:
        world_size = len(options_per_rank)
        self.colocated = colocated
        clip = config.model.kind == "clip"
        if colocated or clip:  # ranks that sample too: ColocatedRank, or a CLIP classifier (either placement)
            rank_class = ClipPolicy if clip else ColocatedRank
            keywords = {"task": config.task, "colocated": colocated} if clip else {}
            mixins = (SplitsRollouts, FetchesTokens if colocated else PublishesAdapter)
            remote_rank = remote_class(rank_class, *mixins)

            def start(rank: int, options: dict[str, Any]) -> Any:
                args = (*rank_args(config), rank, world_size, rank_threads(options.get("num_cpus", 1)))
                if config.cluster.rank_in_driver:  # validated: colocated, one rank
                    return InProcessActor(rank_class, *args, mixins=mixins, **keywords)
                return remote_rank.options(**options).remote(*args, **keywords)

            self.actors = [start(rank, options) for rank, options in enumerate(options_per_rank)]
        else:
            remote_learner = remote_class(Learner, PublishesAdapter)
            self.actors = [
                remote_learner.options(**options).remote(
                    config.model, config.learner, config.algorithm.loss,
                    config.generator.temperature, config.run.seed, rank, world_size,
                    max_new_tokens=config.generator.max_new_tokens,
                )
                for rank, options in enumerate(options_per_rank)
            ]
        if world_size > 1:
            address = ray.get(self.actors[0].rendezvous_address.remote())
            ray.get([actor.join.remote(address) for actor in self.actors])

    @property
    def world_size(self) -> int:
        """Number of ranks."""
        return len(self.actors)

    def train_step(self, batch: TrainBatch | TrainOrder) -> LearnerResult:
        """One optimizer step over the whole batch, sharded across ranks; rank 0's result (``start_step`` then
        ``finish_step``)."""
        return self.finish_step(self.start_step(batch))

    def start_step(self, batch: TrainBatch | TrainOrder) -> PendingStep:
        """Send every rank its shard of the step and return at once (the driver may work meanwhile).

        A TrainOrder (the step loop's) holds no tokens: each rank fetches the rows of its shard from
        the object store (``transport.FetchesTokens``). Disaggregated: a strided shard each, and the
        result's ``adapter`` is an ObjectRef of rank 0's tensors (``PublishesAdapter``) for
        ``RolloutPipeline.broadcast`` to forward. Colocated: each rank trains on the rows it sampled;
        no adapter. A rank in the driver (``cluster.rank_in_driver``) trains before this returns.
        """
        shards = [batch.sampled_by(rank) if self.colocated else batch.shard(rank, self.world_size)
                  for rank in range(self.world_size)]
        if self.colocated:
            first, adapter = self.actors[0].train_step_order.remote(shards[0]), None
        else:
            first, adapter = self.actors[0].train_step_publishing.remote(shards[0])
        rest = [actor.train_step_order.remote(shard) for actor, shard in zip(self.actors[1:], shards[1:])]
        return PendingStep([first, *rest], adapter)

    def finish_step(self, pending: PendingStep) -> LearnerResult:
        """Wait for every rank of a started step; rank 0's result.

        If any rank fails, the others are killed at once (a survivor would otherwise wait in a
        collective until its timeout) and LearnerGroupError is raised.
        """
        waiting = list(pending.results)
        try:
            while waiting:
                ready, waiting = ray.wait(waiting, num_returns=1)
                ray.get(ready)
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as error:
            self.kill()
            raise LearnerGroupError(f"learner rank failed: {str(error).splitlines()[0]}") from error
        result = ray.get(pending.results[0])
        return result if pending.adapter is None else dataclasses.replace(result, adapter=pending.adapter)

    def state(self) -> dict[str, Any]:
        """Checkpointable learner state (identical on every rank; taken from rank 0)."""
        return ray.get(self.actors[0].state.remote())

    def load_state(self, state: dict[str, Any]) -> int:
        """Restore every rank from a checkpoint; returns the adapter version."""
        return ray.get([actor.load_state.remote(state) for actor in self.actors])[0]

    def save_adapter(self, directory: str) -> str:
        """Write the adapter in PEFT format from rank 0."""
        return ray.get(self.actors[0].save_adapter.remote(directory))

    def placements(self) -> list[dict[str, Any]]:
        """Node and GPU ids of every rank."""
        return ray.get([actor.placement.remote() for actor in self.actors])

    def kill(self) -> None:
        """End every rank actor now (no clean process-group exit); a rank in the driver is left as it is."""
        for actor in self._remote_actors():
            ray.kill(actor, no_restart=True)

    def shutdown(self) -> None:
        """Leave the process group and end the actors."""
        ray.get([actor.shutdown.remote() for actor in self.actors])
        for actor in self._remote_actors():
            ray.kill(actor)

    def _remote_actors(self) -> list[Any]:
        return [actor for actor in self.actors if not isinstance(actor, InProcessActor)]
