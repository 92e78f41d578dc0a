"""Tests of the prompt sources: the toy arithmetic pool, Task sampling, and JSONL/Parquet prompt files."""

import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mixgrpo.batch import PromptBatch
from mixgrpo.config import TaskConfig
from mixgrpo.tasks import Task, make_task
from mixgrpo.tasks.files import PromptFileError, read_prompt_file
from mixgrpo.tasks.toy import arithmetic_pool, warm_start_corpus


def test_toy_pool_is_deterministic_per_seed():
    a, b = arithmetic_pool(50, seed=3), arithmetic_pool(50, seed=3)
    assert a.prompts == b.prompts
    assert a.metadata == b.metadata
    np.testing.assert_array_equal(a.prompt_ids, np.arange(50))
    assert arithmetic_pool(50, seed=4).prompts != a.prompts


def test_toy_answers_are_correct():
    pool = arithmetic_pool(250, seed=0)
    assert len(pool) == 250
    for prompt, metadata in zip(pool.prompts, pool.metadata):
        assert prompt.endswith("=")
        left, right = prompt[:-1].split("+")
        assert 0 <= int(left) <= 9 and 0 <= int(right) <= 9
        assert metadata == {"answer": str(eval(prompt[:-1]))}


def test_toy_pool_uses_every_pair_before_repeating():
    pool = arithmetic_pool(100, seed=1)
    assert len(set(pool.prompts)) == 100
    repeated = arithmetic_pool(130, seed=1)
    assert repeated.prompts[100:] == repeated.prompts[:30]


def test_warm_start_corpus_is_deterministic_and_well_formed():
    texts = warm_start_corpus(0, copies=2)
    assert texts == warm_start_corpus(0, copies=2)
    assert len(texts) == 200
    assert all("+" in t and "=" in t for t in texts)


def test_task_sample_is_deterministic_per_step():
    pool = arithmetic_pool(20, seed=0)
    task, again = Task(pool, prompts_per_step=4, seed=7), Task(pool, prompts_per_step=4, seed=7)
    for step in (0, 1, 9, 23):
        a, b = task.sample(step), again.sample(step)
        np.testing.assert_array_equal(a.prompt_ids, b.prompt_ids)
        assert a.prompts == b.prompts
        assert a.metadata == b.metadata
    # resuming at step 9 gives the same prompts without replaying 0..8
    np.testing.assert_array_equal(Task(pool, 4, 7).sample(9).prompt_ids, task.sample(9).prompt_ids)


def test_task_rows_carry_their_prompt_and_metadata():
    pool = arithmetic_pool(20, seed=0)
    batch = Task(pool, prompts_per_step=5, seed=1).sample(2)
    assert len(batch) == 5
    for pid, prompt, metadata in zip(batch.prompt_ids, batch.prompts, batch.metadata):
        assert prompt == pool.prompts[pid]
        assert metadata == pool.metadata[pid]


def test_task_covers_each_pool_item_once_per_epoch():
    pool = arithmetic_pool(12, seed=0)
    task = Task(pool, prompts_per_step=4, seed=5)
    epoch0 = np.concatenate([task.sample(s).prompt_ids for s in range(3)])
    epoch1 = np.concatenate([task.sample(s).prompt_ids for s in range(3, 6)])
    assert sorted(epoch0.tolist()) == list(range(12))
    assert sorted(epoch1.tolist()) == list(range(12))
    assert epoch0.tolist() != epoch1.tolist()  # a fresh permutation each epoch


def test_task_covers_epochs_when_steps_straddle_them():
    pool = arithmetic_pool(10, seed=0)
    task = Task(pool, prompts_per_step=4, seed=2)
    ids = np.concatenate([task.sample(s).prompt_ids for s in range(5)])  # 20 positions = 2 epochs
    assert sorted(ids[:10].tolist()) == list(range(10))
    assert sorted(ids[10:].tolist()) == list(range(10))
    assert Counter(ids.tolist()) == {i: 2 for i in range(10)}


def test_different_seeds_give_different_orders():
    pool = arithmetic_pool(64, seed=0)
    a = np.concatenate([Task(pool, 8, seed=0).sample(s).prompt_ids for s in range(4)])
    b = np.concatenate([Task(pool, 8, seed=1).sample(s).prompt_ids for s in range(4)])
    assert a.tolist() != b.tolist()


def test_make_task_toy():
    task = make_task(TaskConfig(prompts_per_step=3, num_prompts=30), seed=2)
    assert len(task.pool) == 30
    assert task.pool.prompts == arithmetic_pool(30, 2).prompts
    assert len(task.sample(0)) == 3


ROWS = [
    {"prompt": "What is 2+2?", "answer": "4", "difficulty": 1, "tags": ["easy", "math"]},
    {"prompt": "Capital of France?", "answer": "Paris", "difficulty": 2, "tags": []},
    {"prompt": "3*3=", "answer": "9", "difficulty": 1, "tags": ["math"]},
]


def expected_metadata():
    return [{k: v for k, v in row.items() if k != "prompt"} for row in ROWS]


def write_jsonl(path, rows, blank_lines=False):
    lines = [json.dumps(row) for row in rows]
    if blank_lines:
        lines.insert(1, "")
        lines.append("   ")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jsonl_round_trip(tmp_path):
    batch = read_prompt_file(write_jsonl(tmp_path / "prompts.jsonl", ROWS, blank_lines=True))
    assert isinstance(batch, PromptBatch)
    assert batch.prompts == [row["prompt"] for row in ROWS]
    assert batch.metadata == expected_metadata()
    np.testing.assert_array_equal(batch.prompt_ids, [0, 1, 2])
    assert batch.prompt_ids.dtype == np.int64


def test_parquet_round_trip(tmp_path):
    path = tmp_path / "prompts.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    batch = read_prompt_file(str(path))
    assert batch.prompts == [row["prompt"] for row in ROWS]
    assert batch.metadata == expected_metadata()
    np.testing.assert_array_equal(batch.prompt_ids, [0, 1, 2])


def test_make_task_file(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", ROWS)
    task = make_task(TaskConfig(kind="file", path=str(path), prompts_per_step=2), seed=0)
    assert task.pool.prompts == [row["prompt"] for row in ROWS]
    ids = np.concatenate([task.sample(s).prompt_ids for s in range(3)])  # 6 positions = 2 epochs
    assert sorted(ids[:3].tolist()) == [0, 1, 2]
    assert sorted(ids[3:].tolist()) == [0, 1, 2]
    batch = task.sample(0)
    for pid, metadata in zip(batch.prompt_ids, batch.metadata):
        assert metadata == expected_metadata()[pid]


def test_make_task_file_error_propagates(tmp_path):
    config = TaskConfig(kind="file", path=str(tmp_path / "absent.jsonl"))
    with pytest.raises(PromptFileError):
        make_task(config, seed=0)


def test_prompt_file_error_is_a_value_error():
    assert issubclass(PromptFileError, ValueError)


def test_missing_file(tmp_path):
    path = tmp_path / "absent.jsonl"
    with pytest.raises(PromptFileError) as raised:
        read_prompt_file(path)
    assert str(raised.value) == f"prompt file not found: {path}"


def test_empty_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(PromptFileError) as raised:
        read_prompt_file(empty)
    assert str(raised.value) == f"{empty}: no prompts"
    empty_parquet = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"prompt": pa.array([], type=pa.string())}), empty_parquet)
    with pytest.raises(PromptFileError, match="no prompts"):
        read_prompt_file(empty_parquet)


def test_wrong_extension(tmp_path):
    path = tmp_path / "prompts.csv"
    path.write_text("prompt\nhello\n")
    with pytest.raises(PromptFileError) as raised:
        read_prompt_file(path)
    assert str(raised.value) == f"{path}: prompt files must be .jsonl or .parquet"


def test_jsonl_line_that_is_not_json_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a"}\n\n{"prompt": "b",\n')
    with pytest.raises(PromptFileError) as raised:
        read_prompt_file(path)
    assert str(raised.value).startswith(f"{path}:3: not JSON (")


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text('{"prompt": "a"}\n["prompt", "b"]\n')
    with pytest.raises(PromptFileError) as raised:
        read_prompt_file(path)
    assert str(raised.value) == f"{path}:2: each line must be a JSON object"


@pytest.mark.parametrize("bad_row, problem", [
    ({"question": "a"}, "no 'prompt' column (a non-empty string)"),
    ({"prompt": ""}, "'prompt' must be a non-empty string, got an empty string"),
    ({"prompt": 3}, "'prompt' must be a non-empty string, got int"),
    ({"prompt": None}, "'prompt' must be a non-empty string, got null"),
])
def test_row_without_prompt_names_the_file_line_and_the_type(tmp_path, bad_row, problem):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"prompt": "ok"}) + "\n\n" + json.dumps(bad_row) + "\n")  # blank lines count
    with pytest.raises(PromptFileError) as raised:
        read_prompt_file(path)
    assert str(raised.value) == f"{path}: line 3: {problem}"


def test_parquet_without_prompt_column(tmp_path):
    path = tmp_path / "noprompt.parquet"
    pq.write_table(pa.table({"question": ["a", "b"]}), path)
    with pytest.raises(PromptFileError) as raised:
        read_prompt_file(path)
    assert str(raised.value) == f"{path}: no 'prompt' column (columns: question)"


def test_parquet_prompt_of_the_wrong_arrow_type_or_null(tmp_path):
    numbers = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"prompt": pa.array([1, 2], type=pa.int64())}), numbers)
    with pytest.raises(PromptFileError) as raised:
        read_prompt_file(numbers)
    assert str(raised.value) == f"{numbers}: 'prompt' must be a non-empty string, got Arrow type int64"
    nulls = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"prompt": pa.array(["a", "b", None], type=pa.string())}), nulls)
    with pytest.raises(PromptFileError) as raised:
        read_prompt_file(nulls)
    assert str(raised.value) == f"{nulls}: row index 2: 'prompt' must be a non-empty string, got null"


def test_prompt_file_that_is_a_directory(tmp_path):
    with pytest.raises(PromptFileError) as raised:
        read_prompt_file(tmp_path)
    assert str(raised.value) == f"prompt file is a directory: {tmp_path}"


def test_corrupt_parquet(tmp_path):
    path = tmp_path / "corrupt.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(PromptFileError) as raised:
        read_prompt_file(path)
    assert str(raised.value).startswith(f"{path}: not a readable Parquet file")
