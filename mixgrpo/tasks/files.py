"""Prompt files: JSONL or Parquet with a ``prompt`` column and any metadata columns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from mixgrpo.batch import PromptBatch


class PromptFileError(ValueError):
    """A prompt file that cannot be used; the message names the file (and line)."""


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise PromptFileError(f"{path}:{number}: not JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise PromptFileError(f"{path}:{number}: each line must be a JSON object")
        rows.append(row)
    return rows


def read_prompt_file(path: str | Path) -> PromptBatch:
    """All prompts of a .jsonl/.parquet file; every other column becomes metadata."""
    path = Path(path)
    if not path.is_file():
        raise PromptFileError(f"prompt file not found: {path}")
    if path.suffix == ".jsonl":
        rows = _read_jsonl(path)
    elif path.suffix == ".parquet":
        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as error:  # pyarrow raises several types for corrupt files
            raise PromptFileError(f"{path}: not a readable Parquet file ({error})") from None
    else:
        raise PromptFileError(f"{path}: prompt files must be .jsonl or .parquet")
    if not rows:
        raise PromptFileError(f"{path}: no prompts")
    for number, row in enumerate(rows, start=1):
        if not isinstance(row.get("prompt"), str) or not row["prompt"]:
            raise PromptFileError(f"{path}: row {number} has no 'prompt' column (a non-empty string)")
    return PromptBatch(
        prompt_ids=np.arange(len(rows), dtype=np.int64),
        prompts=[row["prompt"] for row in rows],
        metadata=[{k: v for k, v in row.items() if k != "prompt"} for row in rows],
    )
