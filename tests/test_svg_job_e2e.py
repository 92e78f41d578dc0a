"""The svg-poster job end to end on Ray: tiny-svg learns to write posters that render; the poster grid is written."""

from __future__ import annotations

import numpy as np
import pytest
import ray
from PIL import Image
from ray_helpers import start_local_ray

from mixgrpo.config import load_config
from mixgrpo.orchestrator.driver import train
from mixgrpo.orchestrator.poster_grid import POSTER_GRID, sample_rows, write_poster_grid
from mixgrpo.rundir import read_metrics

SVG_CONFIG = "configs/svg-poster.yaml"


@pytest.fixture(scope="module", autouse=True)
def local_ray(tiny_svg_model):
    start_local_ray(num_cpus=2)
    yield
    ray.shutdown()


def test_sample_rows_take_every_group_before_a_second_completion():
    assert sample_rows(["c"] * 12, group_size=4, count=5) == [0, 4, 8, 1, 5]


def test_no_grid_without_a_rendering_channel(tmp_path):
    (tmp_path / "rollouts.parquet").mkdir()
    assert write_poster_grid(load_config(None, []), tmp_path) is None  # the arithmetic job draws nothing
    assert write_poster_grid(load_config(SVG_CONFIG, []), tmp_path) is None  # no step written yet


def test_svg_job_learns_to_render_and_writes_the_poster_grid(tmp_path):
    # The job's own channels and mixer on a smaller budget: renders and colour only score every step
    # (OCR and CLIPScore are covered by test_reward_parallel), and no held-out eval.
    config = load_config(SVG_CONFIG, [
        "run.steps=16", "run.tensorboard=false", "run.progress=false", "task.eval_fraction=0", "eval.every=0",
        "rewards=[{name: renders, kind: renders, weight: 1.0},"
        " {name: color, kind: color, weight: 0.5, options: {render: svg, render_size: 64}}]"])
    outputs = train(config, tmp_path / "run")
    rows = read_metrics(outputs.run_dir)
    first = np.mean([r["reward/renders"] for r in rows[:4]])
    last = np.mean([r["reward/renders"] for r in rows[-4:]])
    assert last - first >= 0.1, f"renders: first 4 steps {first:.3f}, last 4 steps {last:.3f}"
    grid = Image.open(outputs.run_dir / POSTER_GRID)
    assert grid.size[0] > 800 and grid.size[1] > 300  # two rows of eight tiles
