"""Grad-CAM of a trained CLIP classifier run: where in held-out images the chosen class comes from.

``mixgrpo explain --run RUN_DIR`` loads the run's policy (its config.yaml and saved
adapter, in this process: no Ray), takes the first held-out images of its task, and
draws for each the Grad-CAM of the class the policy picks greedily (argmax) over the
image, titled with the label, the choice and its probability. One PNG, a grid of panels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mixgrpo.actors.clip_policy import ClipPolicy
from mixgrpo.config import load_config
from mixgrpo.errors import InputError
from mixgrpo.rundir import CONFIG
from mixgrpo.runtime import pyplot
from mixgrpo.tasks import make_task

DISPLAY_PIXELS = 160
"""Panels are drawn at least this many pixels wide (an 8x8 digit is upscaled, nearest neighbour)."""


def explain_clip_run(run_dir: Path, out: Path, count: int = 8, adapter: Path | None = None,
                     alpha: float = 0.5) -> tuple[int, int]:
    """Write the Grad-CAM grid of the first ``count`` held-out images to ``out``; (correct, shown) greedily."""
    from PIL import Image

    from mixgrpo.rewards.maps import overlay

    if not (run_dir / CONFIG).is_file():
        raise InputError(f"--run {run_dir}: not a run directory ({CONFIG} missing)")
    config = load_config(run_dir / CONFIG)
    if config.model.kind != "clip":
        raise InputError(f"--run {run_dir}: a model.kind={config.model.kind} run; --run explains CLIP classifier runs")
    held_out = make_task(config.task, config.run.seed).held_out
    if held_out is None or not len(held_out):
        raise InputError(f"--run {run_dir}: the task has no held-out images (task.eval_fraction is 0)")
    policy = ClipPolicy(config.model, config.learner, config.algorithm.loss, config.generator, config.run.seed,
                        task=config.task)
    policy.load_saved(str(adapter or run_dir / "adapter"))
    ids = held_out.prompt_ids[:count].astype(np.int64)
    labels = [int(record["label_index"]) for record in held_out.metadata[:count]]
    plt = pyplot()
    columns = min(4, len(ids))
    rows = -(-len(ids) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.9 * rows), squeeze=False)
    correct = 0
    for axis, image_id, label in zip(axes.flat, ids, labels):
        image = policy.images.decode(int(image_id)).convert("RGB")
        scale = max(1, -(-DISPLAY_PIXELS // max(image.size)))
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
        heat, probabilities = policy.chosen_class_gradcam(int(image_id), image.size)
        chosen = int(probabilities.argmax())
        correct += chosen == label
        axis.imshow(overlay(image, heat, alpha=alpha))
        axis.set_title(f"label {policy.classes.names[label]} -> {policy.classes.names[chosen]} "
                       f"(p={probabilities[chosen]:.2f})", fontsize=9, color="green" if chosen == label else "red")
    for axis in axes.flat:
        axis.axis("off")
    figure.suptitle(f"Grad-CAM of the chosen class, held-out images ({run_dir.name})", fontsize=10)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return correct, len(ids)
