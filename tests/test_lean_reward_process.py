"""Rule-channel reward processes stay lean: they never import torch, transformers or another kind's module.

The registry imports a kind's module on first build, model kinds import their
libraries inside, and the RewardWorker sets torch threads only where a channel
loaded torch. Checked in a fresh interpreter and in a real Ray actor.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import ray

from mixgrpo.actors.reward import RewardWorker
from mixgrpo.batch import PromptBatch, RolloutBatch
from mixgrpo.config import RewardChannelConfig
from mixgrpo.rewards.channels.base import KIND_MODULES
from tests.ray_helpers import start_local_ray

HEAVY = ("torch", "transformers", "open_clip")
RULES = {
    "regex": {"pattern": r"-?\d+"},
    "length": {"max_tokens": 3},
    "numeric_match": {},
    "numeric_distance": {"cap": 10},
    "exact_match": {},
    "python": {"callable": "os.path:basename"},
}

PROBE = """
import json, sys
from mixgrpo.actors.reward import RewardWorker
from mixgrpo.config import RewardChannelConfig
RewardWorker(RewardChannelConfig(name="c", kind=sys.argv[1], options=json.loads(sys.argv[2])))
print(json.dumps(sorted(m for m in sys.modules
                        if m.split(".")[0] in {heavy} or m.startswith("mixgrpo.rewards.channels."))))
"""


@pytest.mark.parametrize("kind", sorted(RULES))
def test_a_rule_channel_worker_imports_no_model_library_and_no_other_kind(kind):
    probe = PROBE.format(heavy=set(HEAVY))
    out = subprocess.run([sys.executable, "-c", probe, kind, json.dumps(RULES[kind])],
                         capture_output=True, text=True, check=True).stdout
    loaded = json.loads(out)
    assert not [m for m in loaded if m.split(".")[0] in HEAVY], loaded
    assert set(loaded) == {"mixgrpo.rewards.channels.base", KIND_MODULES[kind]}


def _batch() -> tuple[PromptBatch, RolloutBatch]:
    prompts = PromptBatch(prompt_ids=np.array([0, 1]), prompts=["1+2=", "3+4="],
                          metadata=[{"answer": "3"}, {"answer": "7"}])
    texts = ["3", "4", "7", "x"]
    rollouts = RolloutBatch(
        prompt_index=np.array([0, 0, 1, 1]),
        prompt_token_ids=[np.array([1, 2], dtype=np.int64)] * 4,
        completion_token_ids=[np.array([5], dtype=np.int64)] * 4,
        behaviour_logprobs=[np.array([-0.5], dtype=np.float32)] * 4,
        completion_text=texts,
        policy_version=np.zeros(4, dtype=np.int64),
    )
    return prompts, rollouts


class ProbedWorker(RewardWorker):
    """A RewardWorker that also reports on its own process."""

    def process(self) -> dict:
        import psutil

        memory = psutil.Process().memory_full_info()
        return {"heavy": [name for name in HEAVY if name in sys.modules], "rss": memory.rss,
                "pss": getattr(memory, "pss", None)}


def test_rule_channel_actor_scores_without_torch():
    start_local_ray(num_cpus=2)
    try:
        actor = ray.remote(ProbedWorker).options(num_cpus=0.5).remote(
            RewardChannelConfig(name="correct", kind="numeric_match"))
        scores = ray.get(actor.score.remote(*_batch()))
        np.testing.assert_array_equal(scores.values["correct"], [1.0, 0.0, 1.0, 0.0])
        report = ray.get(actor.process.remote())
        assert report["heavy"] == []
        assert report["rss"] > 0 and (report["pss"] is None or report["pss"] > 0)
        print(f"rule-channel reward actor: rss {report['rss'] / 2**20:.0f} MiB, "
              f"pss {(report['pss'] or 0) / 2**20:.0f} MiB")
    finally:
        ray.shutdown()
