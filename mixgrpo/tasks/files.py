"""Prompt files: JSONL or Parquet with a ``prompt`` column and any metadata columns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mixgrpo.batch import PromptBatch
from mixgrpo.errors import InputError


class PromptFileError(InputError):
    """A prompt file that cannot be used; the message names the file (and line or row)."""


def _found(value: Any) -> str:
    """How a bad ``prompt`` value is named in messages: its type, ``null`` or ``an empty string``."""
    if value is None:
        return "null"
    if value == "":
        return "an empty string"
    return type(value).__name__


def jsonl_objects(path: Path, error: type[InputError]) -> list[tuple[int, dict[str, Any]]]:
    """(file line number, object) of every non-blank line (numbers count blank lines); ``error`` names
    the file and line of one that is not JSON or not an object."""
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as decode_error:
            raise error(f"{path}:{number}: not JSON ({decode_error.msg})") from None
        if not isinstance(row, dict):
            raise error(f"{path}:{number}: each line must be a JSON object")
        rows.append((number, row))
    return rows


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, row in jsonl_objects(path, PromptFileError):
        if "prompt" not in row:
            raise PromptFileError(f"{path}: line {number}: no 'prompt' column (a non-empty string)")
        if not isinstance(row["prompt"], str) or not row["prompt"]:
            raise PromptFileError(f"{path}: line {number}: 'prompt' must be a non-empty string, "
                                  f"got {_found(row['prompt'])}")
        rows.append(row)
    return rows


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several types for corrupt files
        raise PromptFileError(f"{path}: not a readable Parquet file ({error})") from None
    if "prompt" not in table.column_names:
        raise PromptFileError(f"{path}: no 'prompt' column (columns: {', '.join(table.column_names) or 'none'})")
    column_type = table.schema.field("prompt").type
    if table.num_rows and not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)):
        raise PromptFileError(f"{path}: 'prompt' must be a non-empty string, got Arrow type {column_type}")
    rows = table.to_pylist()
    for index, row in enumerate(rows):
        if not row["prompt"]:
            raise PromptFileError(f"{path}: row index {index}: 'prompt' must be a non-empty string, "
                                  f"got {_found(row['prompt'])}")
    return rows


def read_prompt_file(path: str | Path) -> PromptBatch:
    """All prompts of a .jsonl/.parquet file; every other column becomes metadata."""
    path = Path(path)
    if not path.is_file():
        problem = "is a directory" if path.is_dir() else "not found"
        raise PromptFileError(f"prompt file {problem}: {path}")
    if path.suffix == ".jsonl":
        rows = _read_jsonl(path)
    elif path.suffix == ".parquet":
        rows = _read_parquet(path)
    else:
        raise PromptFileError(f"{path}: prompt files must be .jsonl or .parquet")
    if not rows:
        raise PromptFileError(f"{path}: no prompts")
    return PromptBatch(
        prompt_ids=np.arange(len(rows), dtype=np.int64),
        prompts=[row["prompt"] for row in rows],
        metadata=[{k: v for k, v in row.items() if k != "prompt"} for row in rows],
    )
