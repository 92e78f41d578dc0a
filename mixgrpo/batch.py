"""Columnar records that cross actor boundaries, and their Arrow form.

Shapes: P prompts per step, m completions per prompt, N = P * m completions,
R reward channels. Completions are stored group-major: the m completions of
prompt 0, then those of prompt 1, and so on; ``prompt_index`` says which.
Ragged token sequences are lists of 1-D numpy arrays (Arrow ``list<...>``); pickled
(Ray's transport) each ragged column travels as one flat array plus the row lengths.

Token arrays never pass through the driver: a generator's RolloutBatch stays in the object
store, the driver and the reward actors read its ``RolloutView`` (text, lengths, versions), and
each learner rank fetches the token rows it trains on from a ``TrainOrder`` (``TokenRows``
says where each row lives).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable

import numpy as np
import pyarrow as pa


def _row_column(name: str, value: Any, default: np.ndarray) -> np.ndarray:
    """A per-row column given at construction: ``default`` when None, else ``value`` as its dtype and shape (N,)."""
    column = default if value is None else np.asarray(value, dtype=default.dtype)
    if column.shape != default.shape:
        raise ValueError(f"{name} must be {default.shape}, got {column.shape}")
    return column


def _take_rows(column: Any, rows: np.ndarray) -> Any:
    """The entries of a per-row column (numpy array or list) at ``rows``, in that order."""
    return column[rows] if isinstance(column, np.ndarray) else [column[i] for i in rows]


def _concat_rows(columns: list[Any]) -> Any:
    """Per-row columns (all numpy arrays, or all lists) joined in order."""
    if isinstance(columns[0], np.ndarray):
        return np.concatenate(columns)
    return [entry for column in columns for entry in column]


class _PacksRagged:
    """Pickles each ragged column (``_RAGGED``) as one flat array and the row lengths.

    Ray serialises every numpy array as a buffer of its own, so a 256-row RolloutBatch of three
    ragged columns was 768 buffers: ray.put took 4.8 ms, a third of that pickling. Packed, a
    batch is a handful of buffers whatever its size; unpickling gives views into the flat array.
    """

    _RAGGED: tuple[str, ...] = ()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in self._RAGGED:
            rows = state[name]
            lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
            state[name] = (np.concatenate(rows) if rows else np.zeros(0), lengths)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name in self._RAGGED:
            flat, lengths = state[name]
            state[name] = np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []
        self.__dict__.update(state)  # frozen dataclass: no __setattr__


@dataclass(frozen=True)
class PromptBatch:
    """P prompts with their metadata (gold answers, image paths, ...)."""

    prompt_ids: np.ndarray
    """(P,) int64 stable id of each prompt in its task's pool."""
    prompts: list[str]
    """(P,) prompt text as the task wrote it (chat template applied by the generator)."""
    metadata: list[dict[str, Any]]
    """(P,) per-prompt metadata columns, handed to the reward channels."""

    def __len__(self) -> int:
        return len(self.prompts)

    def take(self, rows: np.ndarray | list[int]) -> "PromptBatch":
        """The sub-batch of the given rows, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        return PromptBatch(
            prompt_ids=self.prompt_ids[rows],
            prompts=[self.prompts[i] for i in rows],
            metadata=[self.metadata[i] for i in rows],
        )


@dataclass(frozen=True)
class RolloutBatch(_PacksRagged):
    """N sampled completions with the behaviour log-probs of their tokens."""

    _RAGGED = ("prompt_token_ids", "completion_token_ids", "behaviour_logprobs")

    prompt_index: np.ndarray
    """(N,) int64 row of each completion's prompt in the step's PromptBatch."""
    prompt_token_ids: list[np.ndarray]
    """(N,) ragged int64 prompt tokens (after the chat template)."""
    completion_token_ids: list[np.ndarray]
    """(N,) ragged int64 sampled tokens (EOS included when sampled)."""
    behaviour_logprobs: list[np.ndarray]
    """(N,) ragged float32 log-prob of each sampled token under the sampling policy."""
    completion_text: list[str]
    """(N,) decoded completions, special tokens removed."""
    policy_version: np.ndarray
    """(N,) int64 adapter version that produced each completion."""
    truncated: np.ndarray | None = None
    """(N,) bool: cut at generator.max_new_tokens without EOS (None when built: no completion truncated)."""
    source: np.ndarray | None = None
    """(N,) int64 index of the generator that sampled each completion; colocated: the learner rank, which
    also trains on it (None when built: 0)."""

    def __post_init__(self) -> None:
        n = len(self)  # frozen: the one normalisation at construction
        object.__setattr__(self, "truncated", _row_column("truncated", self.truncated, np.zeros(n, dtype=bool)))
        object.__setattr__(self, "source", _row_column("source", self.source, np.zeros(n, dtype=np.int64)))

    def __len__(self) -> int:
        return len(self.completion_text)

    @property
    def completion_lengths(self) -> np.ndarray:
        """(N,) number of sampled tokens per completion."""
        return np.array([len(t) for t in self.completion_token_ids], dtype=np.int64)

    @staticmethod
    def concat(parts: list["RolloutBatch"], prompt_offsets: list[int]) -> "RolloutBatch":
        """Join shards; shard k's prompt_index is shifted by ``prompt_offsets[k]``."""
        columns = {f.name: _concat_rows([getattr(p, f.name) for p in parts]) for f in fields(RolloutBatch)}
        columns["prompt_index"] = np.concatenate([p.prompt_index + off for p, off in zip(parts, prompt_offsets)])
        return RolloutBatch(**columns)

    def take(self, rows: np.ndarray) -> "RolloutBatch":
        """The completions at ``rows`` (prompt_index kept as is)."""
        return RolloutBatch(**{f.name: _take_rows(getattr(self, f.name), rows) for f in fields(self)})

    def view(self) -> "RolloutView":
        """These completions without their token arrays (``tokens`` unset: the caller knows where they are)."""
        return RolloutView(self.prompt_index, self.completion_text, self.completion_lengths, self.policy_version,
                           self.truncated, self.source)


@dataclass(frozen=True)
class TokenRows:
    """Where the token columns of N rollouts are: row i is row ``row[i]`` of the RolloutBatch ``parts[part[i]]``.

    ``parts`` are object-store references (Ray ObjectRefs) of whole generator shards: the driver
    passes them on without reading them; a learner rank fetches those its rows need.
    """

    parts: list[Any]
    """References of RolloutBatch objects (one per generator shard)."""
    part: np.ndarray
    """(N,) int64 index into ``parts``."""
    row: np.ndarray
    """(N,) int64 row within that part."""

    @staticmethod
    def whole(ref: Any, n: int) -> "TokenRows":
        """Rows 0 .. n-1 of the one batch behind ``ref``."""
        return TokenRows([ref], np.zeros(n, dtype=np.int64), np.arange(n, dtype=np.int64))

    def take(self, rows: np.ndarray) -> "TokenRows":
        """The entries at ``rows``, in that order; ``parts`` shrinks to the parts they use (a rank's order
        carries no reference to a shard it does not read)."""
        used, part = np.unique(self.part[rows], return_inverse=True)
        return TokenRows([self.parts[p] for p in used], part.astype(np.int64).reshape(-1), self.row[rows])

    @staticmethod
    def concat(items: list["TokenRows"]) -> "TokenRows":
        """Entries joined in order; their parts listed one after another."""
        offsets = np.cumsum([0] + [len(t.parts) for t in items[:-1]])
        return TokenRows([ref for t in items for ref in t.parts],
                         np.concatenate([t.part + off for t, off in zip(items, offsets)]),
                         np.concatenate([t.row for t in items]))

    def fetch(self, get: Callable[[list[Any]], list["RolloutBatch"]]) -> dict[str, list[np.ndarray]]:
        """The token columns of these rows; ``get`` turns references into batches (``ray.get``), called once,
        with only the parts these rows use."""
        used = np.unique(self.part)
        batches = dict(zip(used.tolist(), get([self.parts[p] for p in used])))
        pairs = list(zip(self.part.tolist(), self.row.tolist()))
        return {name: [getattr(batches[p], name)[r] for p, r in pairs] for name in RolloutBatch._RAGGED}


@dataclass(frozen=True)
class RolloutView:
    """N sampled completions as the driver and the reward actors read them: text, lengths, versions, no tokens.

    Columns as in RolloutBatch (``RolloutBatch.view``); ``completion_lengths`` is stored, and
    ``tokens`` says where the token rows are (None: nowhere the caller needs, e.g. a reward actor's copy).
    """

    prompt_index: np.ndarray
    """(N,) int64 row of each completion's prompt in the step's PromptBatch."""
    completion_text: list[str]
    """(N,) decoded completions."""
    completion_lengths: np.ndarray
    """(N,) int64 number of sampled tokens per completion."""
    policy_version: np.ndarray
    """(N,) int64 adapter version that produced each completion."""
    truncated: np.ndarray
    """(N,) bool: cut at generator.max_new_tokens without EOS."""
    source: np.ndarray
    """(N,) int64 generator (colocated: learner rank) that sampled each completion."""
    tokens: TokenRows | None = None
    """Where each row's token arrays are (set by the rollout pipeline)."""

    def __len__(self) -> int:
        return len(self.completion_text)

    def take(self, rows: np.ndarray) -> "RolloutView":
        """The completions at ``rows`` (prompt_index kept as is)."""
        columns = {f.name: _take_rows(getattr(self, f.name), rows) for f in fields(self) if f.name != "tokens"}
        return RolloutView(**columns, tokens=None if self.tokens is None else self.tokens.take(rows))

    @staticmethod
    def concat(parts: list["RolloutView"], prompt_offsets: list[int]) -> "RolloutView":
        """Join shards; shard k's prompt_index is shifted by ``prompt_offsets[k]``; tokens kept where every part has them."""
        columns = {f.name: _concat_rows([getattr(p, f.name) for p in parts]) for f in fields(RolloutView)
                   if f.name != "tokens"}
        columns["prompt_index"] = np.concatenate([p.prompt_index + off for p, off in zip(parts, prompt_offsets)])
        tokens = None if any(p.tokens is None for p in parts) else TokenRows.concat([p.tokens for p in parts])
        return RolloutView(**columns, tokens=tokens)


@dataclass(frozen=True)
class ChannelScores:
    """What one reward channel returned for a batch: values plus failure counters."""

    values: dict[str, np.ndarray]
    """channel (or sub-channel) name -> (N,) float64, NaN = null."""
    counters: dict[str, int] = field(default_factory=dict)
    """errors, timeouts, invalid values, ... for this batch."""
    seconds: float = 0.0
    """Wall time spent scoring."""


@dataclass(frozen=True)
class _ShardsRows:
    """What TrainBatch and TrainOrder share: the whole batch's row numbers and sources, and the shards of a step."""

    rows: np.ndarray | None = field(default=None, kw_only=True)
    """(N,) int64 row of each sequence in the step's whole batch (None when built: 0 .. N-1, the whole batch)."""
    total_rows: int | None = field(default=None, kw_only=True)
    """Number of rows in the step's whole batch (None when built: N)."""
    source: np.ndarray | None = field(default=None, kw_only=True)
    """(N,) int64 generator (colocated: learner rank) that sampled each sequence (None when built: 0)."""

    def __len__(self) -> int:
        return len(self.advantages)  # type: ignore[attr-defined]

    def __post_init__(self) -> None:
        """Fill ``rows``, ``source`` and ``total_rows`` left None (frozen: the one normalisation at construction)."""
        n = len(self)
        object.__setattr__(self, "rows", _row_column("rows", self.rows, np.arange(n, dtype=np.int64)))
        object.__setattr__(self, "source", _row_column("source", self.source, np.zeros(n, dtype=np.int64)))
        object.__setattr__(self, "total_rows", n if self.total_rows is None else int(self.total_rows))

    def shard(self, rank: int, world_size: int) -> Any:
        """Rows rank, rank + world_size, ... (a strided split keeps shard sizes within one)."""
        return self._take(np.arange(rank, len(self), world_size))

    def sampled_by(self, rank: int) -> Any:
        """The rows ``source`` says rank ``rank`` sampled (colocated: each rank trains on its own rollouts)."""
        return self._take(np.flatnonzero(self.source == rank))

    def _take(self, rows: np.ndarray) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class TrainBatch(_ShardsRows, _PacksRagged):
    """What the learner needs: tokens, behaviour log-probs and one advantage per sequence."""

    _RAGGED = ("prompt_token_ids", "completion_token_ids", "behaviour_logprobs")

    prompt_token_ids: list[np.ndarray]
    """(N,) ragged prompt tokens."""
    completion_token_ids: list[np.ndarray]
    """(N,) ragged completion tokens."""
    behaviour_logprobs: list[np.ndarray]
    """(N,) ragged behaviour log-probs, aligned with completion_token_ids."""
    advantages: np.ndarray
    """(N,) float32 advantage of each completion."""

    @staticmethod
    def from_rollouts(rollouts: RolloutBatch, advantages: np.ndarray, rows: np.ndarray) -> "TrainBatch":
        """The rollouts at ``rows`` (those that count in the loss) with their advantages; advantages: (N,)."""
        return TrainBatch(
            prompt_token_ids=[rollouts.prompt_token_ids[i] for i in rows],
            completion_token_ids=[rollouts.completion_token_ids[i] for i in rows],
            behaviour_logprobs=[rollouts.behaviour_logprobs[i] for i in rows],
            advantages=np.asarray(advantages, dtype=np.float32)[rows],
            source=rollouts.source[rows],
        )

    def _take(self, rows: np.ndarray) -> "TrainBatch":
        columns = {f.name: _take_rows(getattr(self, f.name), rows) for f in fields(self) if f.name != "total_rows"}
        return TrainBatch(**columns, total_rows=self.total_rows)

    def mini_batch_rows(self, count: int) -> list[np.ndarray]:
        """Indices into this batch of the rows of each of ``count`` mini-batches (fewer when the batch is smaller).

        Mini-batch j holds the whole batch's rows [j * n // count, (j + 1) * n // count), n = total_rows:
        contiguous, so groups (stored group-major) stay together, and cut by the whole batch's row
        numbers, so every rank's shard is split the same way and mini-batch j over all ranks is
        the whole batch's mini-batch j. A shard may hold no row of some mini-batch.
        """
        count = min(count, self.total_rows)
        if count == 0:
            return []
        bounds = np.array([j * self.total_rows // count for j in range(count + 1)])
        which = np.searchsorted(bounds, self.rows, side="right") - 1
        return [np.flatnonzero(which == j) for j in range(count)]


@dataclass(frozen=True)
class TrainOrder(_ShardsRows):
    """A TrainBatch by reference, what the driver sends a learner rank: advantages, and where the token rows are.

    The rank turns it into its TrainBatch with ``resolve(ray.get)``, fetching only the generator
    shards its rows come from; the driver never holds the token arrays.
    """

    tokens: TokenRows
    """(N,) where each sequence's tokens are."""
    advantages: np.ndarray
    """(N,) float32 advantage of each completion."""

    @staticmethod
    def from_rollouts(rollouts: RolloutView, advantages: np.ndarray, rows: np.ndarray) -> "TrainOrder":
        """The rollouts at ``rows`` (those that count in the loss) with their advantages; advantages: (N,)."""
        if rollouts.tokens is None:
            raise ValueError("these rollouts do not say where their tokens are (RolloutView.tokens is None)")
        return TrainOrder(tokens=rollouts.tokens.take(rows), advantages=np.asarray(advantages, np.float32)[rows],
                          source=rollouts.source[rows])

    def _take(self, rows: np.ndarray) -> "TrainOrder":
        return TrainOrder(self.tokens.take(rows), self.advantages[rows], rows=self.rows[rows],
                          total_rows=self.total_rows, source=self.source[rows])

    def resolve(self, get: Callable[[list[Any]], list[RolloutBatch]]) -> TrainBatch:
        """The TrainBatch of these rows; ``get`` fetches the generator shards they use (``ray.get``), once."""
        return TrainBatch(**self.tokens.fetch(get), advantages=self.advantages, rows=self.rows,
                          total_rows=self.total_rows, source=self.source)


def rollout_table(
    step: int,
    prompts: PromptBatch,
    rollouts: RolloutBatch,
    rewards: np.ndarray,
    channel_names: list[str],
    advantages: np.ndarray,
    weak_heads: np.ndarray,
    review_reason: np.ndarray,
) -> pa.Table:
    """One step of rollouts as an Arrow table (one row per completion, nulls kept).

    rewards: (N, R) float64 with NaN = null; advantages: (N,); weak_heads: (N, R) bool;
    review_reason: (N,) str.
    """
    rows = rollouts.prompt_index
    columns: dict[str, Any] = {
        "step": pa.array(np.full(len(rollouts), step, dtype=np.int64)),
        "prompt_id": pa.array(prompts.prompt_ids[rows]),
        "prompt": pa.array([prompts.prompts[i] for i in rows]),
        "completion": pa.array(rollouts.completion_text),
        "completion_tokens": pa.array(rollouts.completion_lengths),
        "policy_version": pa.array(rollouts.policy_version),
        "truncated": pa.array(rollouts.truncated),
        "advantage": pa.array(advantages.astype(np.float64)),
    }
    for r, name in enumerate(channel_names):
        values = rewards[:, r]
        columns[f"reward_{name}"] = pa.array(values, mask=np.isnan(values))
    columns["weak_heads"] = pa.array(
        [[channel_names[r] for r in np.flatnonzero(flags)] for flags in weak_heads],
        type=pa.list_(pa.string()),
    )
    columns["review_reason"] = pa.array([str(s) for s in review_reason])
    return pa.table(columns)
