"""Shuffling and batching: per-epoch chunk order, in-chunk permutation, contiguous slices.

Every random choice is drawn from a generator seeded by ``(seed, epoch, ...)``, never
from thread timing, so the same seed gives the same stream and each epoch a new one.
A chunk is permuted once when it is loaded, in an order computed from its rows' key
hashes with one sort; a batch is then a zero-copy slice of it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias, cast

import numpy as np
import pyarrow as pa

from faucet_core import layout, memory
from faucet_core.plan import ChunkSpec
from faucet_core.warehouse import SplitName

if TYPE_CHECKING:
    import pandas as pd
    import polars as pl

    #: One table of a batch's :class:`Parts`: Arrow's, or a DataFrame (pandas and polars
    #: batches).
    Part: TypeAlias = pa.Table | pd.DataFrame | pl.DataFrame

__all__ = [
    "Parts",
    "Segment",
    "batch_count",
    "chunk_order",
    "row_segments",
    "shuffle_key",
    "shuffled_positions",
    "slice_batches",
]

_SPLIT_IDS: dict[SplitName, int] = {"train": 0, "eval": 1}


def chunk_order(
    chunks: Sequence[ChunkSpec], seed: int, epoch: int, shuffle: bool
) -> list[ChunkSpec]:
    """The order in which ``chunks`` are served in ``epoch``."""
    if not shuffle or len(chunks) < 2:
        return list(chunks)
    split = _SPLIT_IDS[chunks[0].split]
    order = np.random.default_rng([seed, epoch, split]).permutation(len(chunks))
    return [chunks[i] for i in order]


class Segment(NamedTuple):
    """Rows ``lo:hi`` of a chunk, after its permutation."""

    chunk: ChunkSpec
    lo: int
    hi: int

    def describe(self) -> str:
        """A short human label, used in errors."""
        whole = self.lo == 0 and self.hi == self.chunk.rows
        return self.chunk.describe() + ("" if whole else f" rows {self.lo}:{self.hi}")


def row_segments(order: Sequence[ChunkSpec], start: int, stop: int) -> list[Segment]:
    """The parts of chunks that rows ``start:stop`` of a pass cover.

    A pass's rows are its chunks' rows laid end to end in ``order``; a worker, a rank or a
    resumed reader serves a range of them. A ``stop`` past the end wraps around to the
    first rows again (how ranks are padded to equal length).
    """
    total = sum(chunk.rows for chunk in order)
    segments = []
    while start < stop and total:
        offset = 0
        for chunk in order:
            lo, hi = max(start - offset, 0), min(stop - offset, chunk.rows)
            if lo < hi:
                segments.append(Segment(chunk, lo, hi))
            offset += chunk.rows
        start, stop = max(start - total, 0), stop - total
    return segments


def shuffle_key(chunk: ChunkSpec, seed: int, epoch: int) -> int:
    """The 64-bit key of ``chunk``'s shuffle in ``epoch``, drawn from ``(seed, epoch, split,
    chunk index)``."""
    rng = np.random.default_rng([seed, epoch, _SPLIT_IDS[chunk.split], chunk.index])
    return int(rng.integers(2**64, dtype=np.uint64))


def _mix(
    parts: list[np.ndarray[Any, Any]], key: int, scratch: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    """SplitMix64's finalizer of ``values ^ key`` (``values``: ``parts`` end to end): a
    bijection of 64-bit integers that scatters neighbouring inputs over the whole range.
    Computed in place, in pooled arrays (``scratch``: one of the same length)."""
    mixed = memory.empty(len(scratch), np.uint64)
    offset = 0
    for part in parts:
        np.bitwise_xor(part.view(np.uint64), np.uint64(key), out=mixed[offset : offset + len(part)])
        offset += len(part)
    for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB), (31, None)):
        np.right_shift(mixed, np.uint64(shift), out=scratch)
        mixed ^= scratch
        if factor is not None:
            mixed *= np.uint64(factor)
    return mixed


def shuffled_positions(
    table: pa.Table, chunk: ChunkSpec, seed: int, epoch: int
) -> np.ndarray[Any, Any]:
    """The positions of ``table``'s rows (``chunk``'s rows, in any order, with the hash
    column) in their order of ``epoch``: by a keyed mix of each row's key hash
    (:func:`shuffle_key`), rows of equal hash (a key that is not unique) in chunk order.

    The order is a function of the rows and the key alone, so a chunk is served the same
    from the warehouse and from the cache, and one sort gives it, whatever order the rows
    came in.
    """
    parts = layout.integer_parts(table.column(layout.HASH_COLUMN))
    key = shuffle_key(chunk, seed, epoch)
    rows = table.num_rows
    scratch = memory.empty(rows, np.uint64)
    # Sorting values is about three times faster than argsort: each row's position goes in
    # the low bits of its mixed hash, below the bits that order it.
    bits = np.uint64(max(rows - 1, 1).bit_length())
    low = (np.uint64(1) << bits) - np.uint64(1)
    keys = _mix(parts, key, scratch)
    keys &= ~low
    keys |= _counting(rows)
    keys.sort()
    steps = scratch[: max(rows - 1, 0)]
    np.bitwise_xor(keys[1:], keys[:-1], out=steps)
    if not len(steps) or steps.min() > low:  # no two rows with equal high bits
        keys &= low
        return keys.view(np.int64)
    # Equal high bits: almost always equal hashes (a key that is not unique). Order those
    # rows by their mix, then in chunk order, whatever order they are stored in.
    mixed = _mix(parts, key, scratch)
    canonical = layout.chunk_positions(table)
    if canonical is None:  # no equal hashes, so no equal mixes (a bijection)
        return np.argsort(mixed)
    rank = np.empty_like(canonical)  # each row's place in chunk order
    rank[canonical] = np.arange(rows)
    return np.lexsort((rank, mixed))


_COUNTING = np.arange(0, dtype=np.uint64)


def _counting(rows: int) -> np.ndarray[Any, Any]:
    """``0 .. rows - 1`` as uint64, read-only, from one array kept for the largest chunk."""
    global _COUNTING
    counting = _COUNTING
    if len(counting) < rows:
        counting = np.arange(rows, dtype=np.uint64)
        counting.flags.writeable = False
        _COUNTING = counting  # a race only makes it twice
    return counting[:rows]


class Parts(tuple["Part", ...]):
    """The same rows as several tables, each of some of their columns: a chunk cut once
    into what a batch hands over apart (its features and its labels), so that each batch
    is a slice of each part rather than a selection from a slice, which builds new schemas
    for every batch. A part is an Arrow table, or, for pandas and polars batches, the
    DataFrame made of one once per chunk."""

    @property
    def num_rows(self) -> int:
        """The rows of each part."""
        return len(self[0])

    def slice(self, offset: int = 0, length: int | None = None) -> Parts:
        """Rows ``offset:offset + length`` of each part (zero copy)."""
        # Bounded here: Arrow gives a table of no columns the length asked for.
        left = max(self.num_rows - offset, 0)
        length = left if length is None else min(length, left)
        return Parts([_slice(part, offset, length) for part in self])

    @staticmethod
    def concat(pieces: Sequence[Parts]) -> Parts:
        """``pieces``' rows end to end, part by part."""
        return Parts(_concat(list(parts)) for parts in zip(*pieces, strict=True))


def _slice(part: Part, offset: int, length: int) -> Part:
    if not _is_pandas(part):  # Arrow's and polars' slices are views
        return cast("pa.Table | pl.DataFrame", part).slice(offset, length)
    frame = cast("pd.DataFrame", part).iloc[offset : offset + length]
    frame.index = sys.modules["pandas"].RangeIndex(len(frame))  # numbered from 0, as a batch
    return frame


def _concat(parts: list[Part]) -> Part:
    first = parts[0]
    if _is_pandas(first):
        return sys.modules["pandas"].concat(parts, ignore_index=True)
    if not isinstance(first, pa.Table):  # polars
        return sys.modules["polars"].concat(parts, how="vertical")
    tables = cast("list[pa.Table]", parts)
    if first.num_columns:
        return pa.concat_tables(tables)
    # Arrow joins tables of no columns (features of none) into a table of no rows.
    return pa.table({"rows": pa.nulls(sum(table.num_rows for table in tables))}).select([])


def _is_pandas(part: Part) -> bool:
    pandas = sys.modules.get("pandas")  # imported, if a part is a DataFrame of its
    return pandas is not None and isinstance(part, pandas.DataFrame)


def slice_batches(chunks: Iterable[Parts], batch_size: int, drop_last: bool) -> Iterator[Parts]:
    """Cut a stream of chunks (each cut into :class:`Parts`) into batches of ``batch_size``
    rows.

    A chunk's tail that does not fill a batch is joined with the head of the next chunk,
    so every batch but the last is full. The last, smaller batch is yielded unless
    ``drop_last``. Each row is yielded exactly once.
    """
    carry: Parts | None = None
    for chunk in chunks:
        if not chunk.num_rows:
            continue
        offset = 0
        if carry is not None:
            need = batch_size - carry.num_rows
            head = chunk.slice(0, need)
            carry = Parts.concat([carry, head])
            offset = head.num_rows
            if carry.num_rows < batch_size:
                continue
            yield carry
            carry = None
        rows = chunk.num_rows
        while rows - offset >= batch_size:
            yield chunk.slice(offset, batch_size)
            offset += batch_size
        if offset < rows:
            carry = chunk.slice(offset)
    if carry is not None and carry.num_rows and not drop_last:
        yield carry


def batch_count(rows: int, batch_size: int, drop_last: bool) -> int:
    """How many batches :func:`slice_batches` yields for ``rows`` rows."""
    full, rest = divmod(rows, batch_size)
    return full + (1 if rest and not drop_last else 0)
