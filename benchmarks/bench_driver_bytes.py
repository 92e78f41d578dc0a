"""What the driver handles per step as the batch grows: bytes it unpickles and sends, and the token bytes it does not.

The default job (disaggregated, sync) at prompts_per_step 32 / 128 / 512 (group 8), a few steps each. The
driver's ``ray.get`` results, its ``ray.put`` values and the TrainOrder it sends the learner ranks are sized
with pickle (protocol 5, as Ray serialises) step by step; the generator shards' RolloutBatches, which stay
in the object store (``transport.SplitsRollouts``), are sized after the run from the references the views
hold. The driver's RSS is read after each point. Before the views, the driver fetched every RolloutBatch,
put it again for the reward actors and sent the token rows to the learner: about three times the token
bytes per step.

Run from the repository root: ``python -m benchmarks.bench_driver_bytes [--prompts 32,128,512] [--steps 4]``.
"""

from __future__ import annotations

import argparse
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import ray

from mixgrpo.config import load_config
from mixgrpo.orchestrator import driver, learner_group, step
from mixgrpo.orchestrator.placement import start_ray


def _size(value: Any) -> int:
    """Bytes of ``value`` as Ray would serialise it (pickle 5, out-of-band buffers included)."""
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    return len(data) + sum(memoryview(b).nbytes for b in buffers)


class DriverTraffic:
    """Wraps ray.get / ray.put / LearnerGroup.start_step in this process and keeps per-step byte counts."""

    def __init__(self) -> None:
        self.counts = {"got": 0, "put": 0, "sent_to_ranks": 0}
        self.per_step: list[dict[str, int]] = []
        self.token_refs: list[Any] = []
        self._get, self._put = ray.get, ray.put
        self._start_step, self._run_step = learner_group.LearnerGroup.start_step, step.StepLoop.run_step

    def __enter__(self) -> "DriverTraffic":
        traffic = self

        def get(refs: Any, *args: Any, **kwargs: Any) -> Any:
            values = traffic._get(refs, *args, **kwargs)
            traffic.counts["got"] += _size(values)
            return values

        def put(value: Any, *args: Any, **kwargs: Any) -> Any:
            traffic.counts["put"] += _size(value)
            return traffic._put(value, *args, **kwargs)

        def start_step(group: Any, batch: Any) -> Any:
            traffic.counts["sent_to_ranks"] += _size(batch)
            traffic.token_refs += list(getattr(getattr(batch, "tokens", None), "parts", []))
            return traffic._start_step(group, batch)

        def run_step(loop: Any, index: int) -> Any:
            before = dict(traffic.counts)
            metrics = traffic._run_step(loop, index)
            traffic.per_step.append({k: traffic.counts[k] - before[k] for k in traffic.counts})
            return metrics

        ray.get, ray.put = get, put
        learner_group.LearnerGroup.start_step, step.StepLoop.run_step = start_step, run_step
        return self

    def __exit__(self, *exc: Any) -> None:
        ray.get, ray.put = self._get, self._put
        learner_group.LearnerGroup.start_step, step.StepLoop.run_step = self._start_step, self._run_step

    def token_bytes_per_step(self, steps: int) -> float:
        """Bytes of the RolloutBatches that stayed in the object store, per step (each shard counted once)."""
        unique = list({ref.hex(): ref for ref in self.token_refs}.values())
        return sum(_size(batch) for batch in self._get(unique)) / steps


def main() -> None:
    """Measure each batch size and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", default="32,128,512", help="prompts_per_step values (group 8)")
    parser.add_argument("--steps", type=int, default=4, help="steps per point; the first is left out")
    args = parser.parse_args()
    base = load_config(None, ["run.progress=false", "run.tensorboard=false", "eval.every=0"])
    start_ray(base.cluster)
    lines = ["| prompts/step | rows | driver unpickles KB | driver puts KB | sent to ranks KB | token KB kept out "
             "| driver RSS MB | load |", "|---|---|---|---|---|---|---|---|"]
    try:
        for prompts in [int(p) for p in args.prompts.split(",")]:
            config = load_config(None, ["run.progress=false", "run.tensorboard=false", "eval.every=0",
                                        f"run.steps={args.steps}", f"task.prompts_per_step={prompts}"])
            with tempfile.TemporaryDirectory() as out, DriverTraffic() as traffic:
                driver.train(config, Path(out) / "run")
            steady = traffic.per_step[1:]
            median = {k: float(np.median([s[k] for s in steady])) / 1024 for k in traffic.counts}
            kept = traffic.token_bytes_per_step(args.steps) / 1024
            rss = psutil.Process().memory_info().rss / 2**20
            lines.append(f"| {prompts} | {prompts * config.generator.group_size} | {median['got']:.0f} | "
                         f"{median['put']:.0f} | {median['sent_to_ranks']:.1f} | {kept:.0f} | {rss:.0f} | "
                         f"{os.getloadavg()[0]:.1f} |")
            print(lines[-1], flush=True)
    finally:
        ray.shutdown()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
