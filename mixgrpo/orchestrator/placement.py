"""Where every actor runs: one placement-group bundle per actor.

Disaggregated placement: with ``cluster.gpus > 0`` each generator, each
``device: gpu`` reward channel and each learner rank gets a bundle with one
whole GPU; CPU channels get CPU-only bundles. Without GPUs the same bundles ask
for fractions of the CPUs, so every actor fits on a laptop.

Reward actors: channels naming the same ``actor`` group share one actor process, and so do the cheap rule
channels that name none (the automatic group ``cpu-light``, ``reward_actors``); every other channel gets
an actor per replica. One bundle per actor, not per channel.

Colocated placement: there are no generator actors; each learner rank generates
its own shard on its own bundle (one GPU, or on a CPU-only cluster an equal
share of the whole CPUs). CPU reward actors there reserve no CPU and run in the
ranks' bundles: in a synchronous step they score while the ranks wait for them,
so the ranks may use every core. Ray does the scheduling, ``pack`` or
``spread`` across nodes.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Iterator

import ray
from ray.util.placement_group import (
    PlacementGroup,
    placement_group,
    remove_placement_group,
)
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from mixgrpo.config import ClusterConfig, Config, RewardChannelConfig
from mixgrpo.errors import InputError
from mixgrpo.orchestrator.events import Traced, traced_methods
from mixgrpo.rewards.channels.base import SHARED_ACTOR_KINDS

if TYPE_CHECKING:
    import psutil

_STRATEGIES = {"pack": "PACK", "spread": "SPREAD"}


@dataclass(frozen=True)
class Slot:
    """One actor's place: its role, index and resources."""

    role: str
    """generator | reward | learner."""
    index: int
    """Generator replica or learner rank; reward: the index of its actor's first channel."""
    cpus: float
    """CPUs reserved (fractions on a CPU machine)."""
    gpus: int
    """0 or 1."""
    replica: int = 0
    """Reward channels with ``replicas: N``: which of the channel's N actors (0 for other roles)."""


AUTO_GROUP = "cpu-light"
"""The actor group of every channel of a ``SHARED_ACTOR_KINDS`` kind on cpu with replicas 1 and no ``actor``."""


@dataclass(frozen=True)
class RewardActorSpec:
    """One reward actor: which channels it hosts, under which name."""

    name: str
    """Its group, or (an actor of its own) its channel's name, ``<channel>-<k>`` for replica k of several."""
    channels: tuple[int, ...]
    """Indices into ``config.rewards`` of the channels it hosts, in config order."""
    replica: int = 0
    """A channel with ``replicas: N``: which of its N actors (0 otherwise)."""


def actor_group(channel: RewardChannelConfig) -> str | None:
    """The group whose actor ``channel`` joins; None when it gets actors of its own."""
    if channel.actor is not None:
        return channel.shared_group
    automatic = channel.kind in SHARED_ACTOR_KINDS and channel.device == "cpu" and channel.replicas == 1
    return AUTO_GROUP if automatic else None


def reward_actors(channels: list[RewardChannelConfig]) -> list[RewardActorSpec]:
    """Every reward actor of a run, in the order of the first channel each hosts (a group where it first appears)."""
    specs: list[RewardActorSpec] = []
    groups: dict[str, int] = {}
    for index, channel in enumerate(channels):
        group = actor_group(channel)
        if group is None:
            names = [channel.name] if channel.replicas == 1 else [f"{channel.name}-{k}" for k in range(channel.replicas)]
            specs += [RewardActorSpec(name, (index,), replica) for replica, name in enumerate(names)]
        elif group in groups:
            spec = specs[groups[group]]
            specs[groups[group]] = replace(spec, channels=(*spec.channels, index))
        else:
            groups[group] = len(specs)
            specs.append(RewardActorSpec(group, (index,)))
    return specs


def disaggregated_gpus(config: Config) -> int:
    """GPUs a disaggregated plan needs: one per generator, GPU reward channel replica and learner rank."""
    channels = sum(c.replicas for c in config.rewards if c.device == "gpu")
    return config.generator.replicas + channels + config.learner.ranks


def choose_placement(config: Config) -> tuple[str, str]:
    """``cluster.placement`` resolved: (disaggregated | colocated, why), from the config alone."""
    cluster = config.cluster
    if cluster.placement != "auto":
        return cluster.placement, "cluster.placement=" + cluster.placement
    if config.model.kind == "clip" and config.algorithm.async_steps == 0:
        return "colocated", "model.kind=clip samples inside its learner ranks"
    if config.algorithm.async_steps > 0:
        return "disaggregated", f"algorithm.async_steps={config.algorithm.async_steps} needs generators of their own"
    if cluster.gpus == 0 and config.generator.backend == "vllm":
        return "disaggregated", "generator.backend=vllm on CPU serves from an engine of its own (no sleep mode)"
    if cluster.gpus == 0:
        return "colocated", "CPU-only cluster: each learner rank generates too, on all of its cores"
    needed = disaggregated_gpus(config)
    if needed > cluster.gpus:
        return "colocated", f"cluster.gpus={cluster.gpus} is fewer than the {needed} GPUs a disaggregated plan needs"
    return "disaggregated", f"cluster.gpus={cluster.gpus} gives every generator and learner rank a GPU"


def plan_slots(config: Config, total_cpus: float) -> list[Slot]:
    """Bundles for every actor of the run, for the placement ``choose_placement`` picks.

    Disaggregated: generators, then reward actors (``reward_actors``: one per group, one per replica of
    any other channel, one GPU each for ``device: gpu``), then learner ranks. Colocated: reward actors,
    then learner ranks.
    """
    use_gpus = config.cluster.gpus > 0
    placement, why = choose_placement(config)
    colocated = placement == "colocated"
    if config.cluster.rank_in_driver and not colocated:
        raise InputError(f"cluster.rank_in_driver needs the colocated placement; auto chose {placement} ({why})")
    if config.cluster.rank_in_driver and use_gpus and any(c.device == "gpu" for c in config.rewards):
        raise InputError("cluster.rank_in_driver with a device: gpu reward channel: the driver's rank would not "
                         "know which GPU Ray gave the channel; give the rank an actor (rank_in_driver: false)")
    generators = 0 if colocated else config.generator.replicas
    roles = [("generator", i, use_gpus, 0) for i in range(generators)]
    roles += [("reward", spec.channels[0], use_gpus and config.rewards[spec.channels[0]].device == "gpu", spec.replica)
              for spec in reward_actors(config.rewards)]
    roles += [("learner", i, use_gpus, 0) for i in range(config.learner.ranks)]
    needed = sum(1 for _, _, gpu, _ in roles if gpu)
    if needed > config.cluster.gpus:
        who = "" if colocated else f"{generators} generators, "
        raise InputError(
            f"cluster.gpus={config.cluster.gpus} but the run needs {needed} GPUs "
            f"({who}GPU reward channels, {config.learner.ranks} learner ranks)"
        )
    if colocated and not use_gpus:
        return [Slot(role, index, _share(total_cpus, config.learner.ranks) if role == "learner" else 0.0, 0, replica)
                for role, index, _, replica in roles]
    cpus = _share(total_cpus, len(roles), cap=1.0)
    return [Slot(role, index, cpus, 1 if gpu else 0, replica) for role, index, gpu, replica in roles]


def _share(total_cpus: float, parts: int, cap: float | None = None) -> float:
    """CPUs per part: whole CPUs when each part gets at least one, else a fraction rounded down (never over-ask)."""
    share = total_cpus / parts if cap is None else min(cap, total_cpus / parts)
    return float(math.floor(share)) if share >= 1 else math.floor(1000 * share) / 1000


def start_ray(cluster: ClusterConfig) -> bool:
    """Connect to ``cluster.address`` / RAY_ADDRESS, or start Ray here. Returns True if we started it.

    A Ray already initialised in this process (tests, notebooks) is reused. The
    dashboard is off unless asked for, and then bound to 127.0.0.1 only. Actor processes
    run at ``cluster.worker_niceness`` (default 0, not Ray's 15).
    """
    if ray.is_initialized():
        return False
    address = cluster.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return False
    ray.init(
        num_cpus=cluster.num_cpus,
        num_gpus=cluster.gpus,
        include_dashboard=cluster.dashboard,
        dashboard_host="127.0.0.1",
        log_to_driver=True,
        _system_config={"worker_niceness": cluster.worker_niceness},
    )
    return True


@contextmanager
def reserved(slots: list[Slot], strategy: str, timeout_s: float = 120.0) -> Iterator[PlacementGroup]:
    """A ready placement group with one bundle per slot that reserves anything, removed on exit."""
    bundles = [{"CPU": s.cpus, **({"GPU": s.gpus} if s.gpus else {})} for s in slots if _reserves(s)]
    group = placement_group(bundles, strategy=_STRATEGIES[strategy])
    try:
        ray.get(group.ready(), timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        remove_placement_group(group)
        raise RuntimeError(
            f"the cluster cannot host {len(bundles)} bundles {bundles} within {timeout_s:g}s "
            f"(available: {ray.available_resources()})"
        ) from None
    try:
        yield group
    finally:
        remove_placement_group(group)


def actor_options(group: PlacementGroup, slots: list[Slot], slot: Slot) -> dict[str, Any]:
    """``.options(...)`` for the actor of ``slot``: its bundle (any bundle when it reserves nothing), CPUs and GPU."""
    bundle = [s for s in slots if _reserves(s)].index(slot) if _reserves(slot) else -1
    return {
        "num_cpus": slot.cpus,
        "num_gpus": slot.gpus,
        "scheduling_strategy": PlacementGroupSchedulingStrategy(
            placement_group=group, placement_group_bundle_index=bundle
        ),
    }


def _reserves(slot: Slot) -> bool:
    return slot.cpus > 0 or slot.gpus > 0


def wait_until_alive(actor: Any, timeout_s: float = 120.0) -> None:
    """Block until a (restarting) actor answers again; RuntimeError after ``timeout_s``.

    Calls made while Ray restarts an actor fail at once, so the driver waits for the
    restart before the actor's next real call.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            ray.get(actor.placement.remote(), timeout=max(1.0, deadline - time.monotonic()))
            return
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as error:
            if time.monotonic() >= deadline:
                raise RuntimeError(f"actor did not come back within {timeout_s:g}s: {error}") from None
            time.sleep(0.5)


class Introspect:
    """Mixin the orchestrator adds to remote actors: where did this actor land?"""

    def placement(self) -> dict[str, Any]:
        """Node id and the GPU ids Ray assigned to this actor."""
        context = ray.get_runtime_context()
        return {"node_id": context.get_node_id(), "gpu_ids": [str(g) for g in context.get_accelerator_ids()["GPU"]]}

    def resident_memory_mb(self) -> float:
        """Resident memory of this actor's process in MiB (soak tests, bench)."""
        import psutil

        return psutil.Process().memory_info().rss / 2**20

    def proportional_memory_mb(self) -> float:
        """PSS of this actor's process in MiB (``process_pss``), logged by the driver at startup."""
        import psutil

        return process_pss(psutil.Process()) / 2**20


def process_pss(process: "psutil.Process") -> int:
    """Proportional set size of ``process`` in bytes (shared pages split between the processes mapping them);
    its RSS where the OS reports no PSS (macOS)."""
    memory = process.memory_full_info()
    return getattr(memory, "pss", memory.rss)


def tree_pss(root: "psutil.Process") -> tuple[float, int]:
    """(PSS in bytes summed over ``root`` and its descendants, number of processes); vanished ones skipped.

    For the driver's process that is the whole run when it started Ray here: Ray's own processes
    and every actor's worker are its descendants.
    """
    import psutil

    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0, 0
    total, counted = 0.0, 0
    for process in processes:
        try:
            total += process_pss(process)
            counted += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return total, counted


def _actor_type(prefix: str, cls: type, *mixins: type) -> type:
    """``cls`` with ``mixins``, placement introspection and timed methods: what the orchestrator calls as an actor."""
    return type(f"{prefix}{cls.__name__}", (cls, *mixins, Introspect, Traced), traced_methods(cls))


def remote_class(cls: type, *mixins: type) -> Any:
    """``ray.remote`` of ``cls`` with placement introspection, timed methods and ``mixins`` (the plain class stays
    Ray-free)."""
    return ray.remote(_actor_type("Remote", cls, *mixins))


class InProcessActor:
    """An object in the driver's own process behind the calls the orchestrator makes on an actor handle.

    ``actor.method.remote(*args)`` runs the method here, at once, and returns an ObjectRef of its
    result (``ray.put``), so ``ray.get`` and ``ray.wait`` work unchanged; an exception propagates from
    ``remote`` itself. It has the methods of ``remote_class(cls, *mixins)`` (timing spans, placement, memory).
    ``cluster.rank_in_driver`` hosts the one colocated learner rank this way.
    """

    def __init__(self, cls: type, *args: Any, mixins: tuple[type, ...] = (), **kwargs: Any) -> None:
        self.instance = _actor_type("InProcess", cls, *mixins)(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return _InProcessMethod(getattr(self.instance, name))


class _InProcessMethod:
    """``.remote`` of one bound method of an ``InProcessActor``."""

    def __init__(self, method: Any) -> None:
        self.method = method

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Run the method now; its result as an ObjectRef (a tuple of them for ``@ray.method(num_returns=k)``)."""
        result = self.method(*args, **kwargs)
        if getattr(self.method, "__ray_num_returns__", 1) == 1:
            return ray.put(result)
        return tuple(ray.put(value) for value in result)
