"""What RL costs and buys on CLIP digits: GRPO vs plain supervised cross-entropy, same model, data and budget.

Both arms start from the same ``builtin:tiny-clip-digits`` (random image tower, frozen
spread text features), train the image tower with the same AdamW settings on the
same images per step (``task.prompts_per_step``, the clip-digits config), and are
evaluated greedily (argmax) on the same held-out 20 % every ``--every`` steps:

- GRPO: ``ClipPolicy.generate`` samples ``group_size`` labels per image at the config's
  temperature, the reward is 1 for the right label, NA group advantages, ``train_step``
  (PPO clip, the Learner's loop) - the loop of ``mixgrpo train`` without Ray.
- supervised: cross-entropy of the same logits (temperature 1) against the labels.

Prints held-out accuracy against steps and wall time for both, and writes a PNG with
``--plot``. No Ray; run from the repository root::

    .venv/bin/python -m benchmarks.bench_clip_vs_supervised [--steps 200] [--every 25] [--plot clip.png]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

CONFIG = "configs/clip-digits.yaml"


def _policy(config: Any) -> Any:
    from mixgrpo.actors.clip_policy import ClipPolicy

    return ClipPolicy(config.model, config.learner, config.algorithm.loss, config.generator, config.run.seed,
                      task=config.task)


def grpo_step(policy: Any, prompts: Any, step: int) -> None:
    """One GRPO step: sample, reward 1 for the right label, NA group advantages, train."""
    from mixgrpo.batch import TrainBatch
    from mixgrpo.rewards.mixer import compute_advantages

    rollouts = policy.generate(prompts, step)
    labels = np.array([prompts.metadata[i]["label_index"] for i in rollouts.prompt_index])
    rewards = (np.concatenate(rollouts.completion_token_ids) == labels).astype(np.float64)
    mix = compute_advantages(rewards.reshape(len(prompts), -1, 1), np.ones(1), mode="na", scope="group")
    policy.train_step(TrainBatch(rollouts.prompt_token_ids, rollouts.completion_token_ids,
                                 rollouts.behaviour_logprobs, mix.advantages.reshape(-1).astype(np.float32)))


def supervised_step(policy: Any, prompts: Any, step: int) -> None:
    """One cross-entropy step on the same logits, optimizer and gradient clipping as the GRPO arm."""
    del step
    labels = torch.tensor([record["label_index"] for record in prompts.metadata])
    loss = torch.nn.functional.cross_entropy(policy.logits(prompts.prompt_ids), labels)
    policy.optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(policy.trainable, policy.config.max_grad_norm)
    policy.optimizer.step()


def run_arm(name: str, step_fn: Any, config: Any, steps: int, every: int) -> list[tuple[int, float, float]]:
    """(step, training seconds so far, held-out accuracy) every ``every`` steps and at the end."""
    from mixgrpo.tasks import make_task

    task = make_task(config.task, config.run.seed)
    policy = _policy(config)
    curve, seconds = [(0, 0.0, policy.accuracy(task.held_out))], 0.0
    for step in range(steps):
        started = time.monotonic()
        step_fn(policy, task.sample(step), step)
        seconds += time.monotonic() - started
        if (step + 1) % every == 0 or step + 1 == steps:
            curve.append((step + 1, seconds, policy.accuracy(task.held_out)))
            print(f"{name:<11}step {step + 1:>4}  {seconds:7.1f}s  held-out accuracy {curve[-1][2]:.3f}", flush=True)
    return curve


def plot(curves: dict[str, list[tuple[int, float, float]]], path: str) -> None:
    """Held-out accuracy against steps and against training seconds, one line per arm."""
    from mixgrpo.runtime import pyplot

    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(8, 3))
    for name, curve in curves.items():
        steps, seconds, accuracy = zip(*curve)
        axes[0].plot(steps, accuracy, "o-", label=name)
        axes[1].plot(seconds, accuracy, "o-", label=name)
    for axis, label in zip(axes, ["training steps", "training seconds (CPU)"]):
        axis.axhline(0.9, color="grey", linestyle=":")
        axis.set_xlabel(label)
        axis.set_ylim(0, 1)
    axes[0].set_ylabel("held-out accuracy (argmax)")
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    print(f"plot: {path}")


def main() -> None:
    """Run both arms and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--plot", default=None, help="write the accuracy curves to this PNG")
    args = parser.parse_args()
    from mixgrpo.config import load_config

    torch.set_num_threads(args.threads)
    config = load_config(CONFIG, [f"learner.threads={args.threads}"])
    curves = {"grpo": run_arm("grpo", grpo_step, config, args.steps, args.every),
              "supervised": run_arm("supervised", supervised_step, config, args.steps, args.every)}
    print(f"\n{'arm':<11}{'acc@end':>8}{'steps to 0.9':>14}{'seconds to 0.9':>16}{'s/step':>8}")
    for name, curve in curves.items():
        reached = [(step, seconds) for step, seconds, accuracy in curve if accuracy >= 0.9]
        first = reached[0] if reached else ("-", "-")
        print(f"{name:<11}{curve[-1][2]:>8.3f}{first[0]!s:>14}"
              f"{first[1] if isinstance(first[1], str) else f'{first[1]:.1f}':>16}{curve[-1][1] / curve[-1][0]:>8.3f}")
    if args.plot:
        plot(curves, args.plot)


if __name__ == "__main__":
    main()
