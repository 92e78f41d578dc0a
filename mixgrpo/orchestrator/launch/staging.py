"""What a job ships besides the package: its resolved config and the data file it reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from mixgrpo.config import Config, TaskConfig


def staged_config(config: Config) -> tuple[str, dict[str, Path | bytes]]:
    """The config as YAML for the job's working directory, and the files (local paths or contents) to put beside it.

    A ``task.kind: file`` prompt file is shipped as ``prompts<suffix>``; a ``task.kind: image-classes``
    file as ``images.parquet`` with every image inline as PNG bytes (its rows may name image files
    that exist only here). The config points at that relative name (the job runs in the directory
    it is unpacked in).
    """
    data: dict[str, Any] = config.model_dump(mode="json")
    files: dict[str, Path | bytes] = {}
    if config.task.kind == "file" and config.task.path:
        source = Path(config.task.path).expanduser()
        files[f"prompts{source.suffix}"] = source
        data["task"]["path"] = f"prompts{source.suffix}"
    elif config.task.kind == "image-classes" and config.task.path:
        files["images.parquet"] = _images_inline(config.task)
        data["task"]["path"] = "images.parquet"
        data["task"]["image_classes"]["image_root"] = None
    return yaml.safe_dump(data, sort_keys=False), files


def _images_inline(task: TaskConfig) -> bytes:
    """The task's image file as Parquet: its image and label columns, each image decoded as the policy does, as PNG."""
    from mixgrpo.rewards.images import load_image
    from mixgrpo.tasks.image_classes import image_classes_pool, png_bytes

    metadata = image_classes_pool(task).metadata
    images = [png_bytes(np.asarray(load_image(record["image"], record["image_root"]))) for record in metadata]
    columns = {task.image_classes.image_column: images, task.image_classes.label_column: [r["label"] for r in metadata]}
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(columns), sink)
    return sink.getvalue().to_pybytes()
