"""Labelled images for a CLIP classifier policy (``task.kind: image-classes``).

A pool row is one image: ``prompt_ids`` are row ids, the prompt text only
describes the row for people (``digits #17 (label 3)``; a CLIP policy never
reads it), and the metadata carries what the reward channels and the policy
need: ``label`` (the class name, what ``exact_match`` compares the sampled
class against), ``label_index``, and ``image`` (a path, bytes, a data URL or a
{bytes, path} dict: what ``rewards/images.py`` loads, so a ``clipscore`` judge
channel can read it too with ``image_key: image``).

Sources: scikit-learn's ``load_digits`` (1,797 8x8 grey digits shipped in its
wheel, no download; each row's image is an 8x8 PNG, upsampled by the model's
own validation transform), or a JSONL/Parquet file with an image column and a
label column. Rows whose label is not a configured class are an error naming
the row and column. Images are decoded by the policy (``actors/clip_policy``),
which names the row and column of one that does not decode.
"""

from __future__ import annotations

import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from mixgrpo.batch import PromptBatch
from mixgrpo.config import TaskConfig
from mixgrpo.errors import InputError
from mixgrpo.tasks.files import jsonl_objects

DIGITS = "digits"
"""Source name of scikit-learn's digits (task.path unset)."""
DIGIT_NAMES = [str(d) for d in range(10)]


class ImageFileError(InputError):
    """An image/label file that cannot be used; the message names the file, row and column."""


@dataclass(frozen=True)
class ImageClasses:
    """The classes a CLIP policy chooses among: C names and the prompt templates of each."""

    names: list[str]
    """(C,) class names in index order (the sampled class index's completion text)."""
    templates: list[str]
    """(K,) templates with one ``{}``; class c's text feature is the mean over its K prompts."""

    def prompts(self) -> list[list[str]]:
        """(C, K) the class-prompt texts: ``templates[k].format(names[c])``."""
        return [[template.format(name) for template in self.templates] for name in self.names]


def image_classes(config: TaskConfig) -> ImageClasses:
    """The configured classes (the digits 0-9 when task.path is unset and no classes are given)."""
    options = config.image_classes
    return ImageClasses(list(options.classes or DIGIT_NAMES), list(options.templates))


def png_bytes(pixels: np.ndarray) -> bytes:
    """A PNG file of an (H, W) grey or (H, W, 3) RGB uint8 array."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def digits_rows() -> list[dict[str, Any]]:
    """scikit-learn's 1,797 digits as rows {image: 8x8 grey PNG bytes, label: "0".."9"}.

    Read from the file scikit-learn ships (``sklearn/datasets/data/digits.csv.gz``: 64 ink levels 0..16
    and the target per line, what ``load_digits`` parses) without importing scikit-learn, whose import
    costs seconds in every actor.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("task.kind=image-classes without task.path reads scikit-learn's digits: "
                         "pip install scikit-learn (or 'mixgrpo[clip]')")
    data = np.loadtxt(Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz",
                      delimiter=",")
    grey = np.round(data[:, :64].reshape(-1, 8, 8) * (255.0 / 16.0)).astype(np.uint8)
    return [{"image": png_bytes(image), "label": str(int(label))} for image, label in zip(grey, data[:, 64])]


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise ImageFileError(f"image file {'is a directory' if path.is_dir() else 'not found'}: {path}")
    if path.suffix == ".parquet":
        try:
            return pq.read_table(path).to_pylist()
        except Exception as error:  # pyarrow raises several types for corrupt files
            raise ImageFileError(f"{path}: not a readable Parquet file ({error})") from None
    if path.suffix != ".jsonl":
        raise ImageFileError(f"{path}: image files must be .jsonl or .parquet")
    return [row for _, row in jsonl_objects(path, ImageFileError)]


def check_rows(rows: list[dict[str, Any]], image_key: str, label_key: str, names: list[str], where: str) -> None:
    """InputError naming the row and column of the first row without an image or with an unknown label."""
    if not rows:
        raise ImageFileError(f"{where}: no rows")
    known = set(names)
    for index, row in enumerate(rows):
        for column, field in ((image_key, "image_column"), (label_key, "label_column")):
            if column not in row:
                raise ImageFileError(f"{where}: row {index}: no {column!r} column (task.image_classes.{field}; "
                                     f"columns: {', '.join(sorted(row))})")
            if row[column] is None:  # Parquet's null, JSON's null
                raise ImageFileError(f"{where}: row {index}, column {column!r}: empty (null)")
        label = str(row[label_key])
        if label not in known:
            raise ImageFileError(f"{where}: row {index}, column {label_key!r}: label {label!r} is not in "
                                 f"task.image_classes.classes {names}")


def image_classes_pool(config: TaskConfig) -> PromptBatch:
    """Every labelled image of the configured source as a PromptBatch (one row per image, ids = row index)."""
    options, names = config.image_classes, image_classes(config).names
    if config.path is None:
        rows, where, image_key, label_key, root = digits_rows(), DIGITS, "image", "label", None
    else:
        path = Path(config.path)
        rows, where = _read_rows(path), str(path)
        image_key, label_key = options.image_column, options.label_column
        root = options.image_root or str(path.parent)
    check_rows(rows, image_key, label_key, names, where)
    index = {name: i for i, name in enumerate(names)}
    labels = [str(row[label_key]) for row in rows]
    return PromptBatch(
        prompt_ids=np.arange(len(rows), dtype=np.int64),
        prompts=[f"{Path(where).name} #{i} (label {label})" for i, label in enumerate(labels)],
        metadata=[{"image": row[image_key], "image_root": root, "label": label, "label_index": index[label]}
                  for row, label in zip(rows, labels)],
    )
