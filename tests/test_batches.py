"""Batch slicing, chunk order and in-chunk permutation."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from faucet_core import layout
from faucet_core.batches import (
    Parts,
    batch_count,
    chunk_order,
    row_segments,
    shuffled_positions,
    slice_batches,
)
from faucet_core.plan import ChunkSpec

#: Chunk sizes, a batch size and ``drop_last``: the streams the slicing tests cut.
_slicings = given(
    sizes=st.lists(st.integers(0, 50), max_size=12),
    batch_size=st.integers(1, 60),
    drop_last=st.booleans(),
)


def _tables(sizes: list[int]) -> list[pa.Table]:
    start, tables = 0, []
    for size in sizes:
        tables.append(pa.table({"id": pa.array(range(start, start + size), pa.int64())}))
        start += size
    return tables


def _whole(sizes: list[int], batch_size: int, drop_last: bool) -> list[pa.Table]:
    """The batches of chunks of ``sizes`` rows, each chunk one part."""
    chunks = [Parts((table,)) for table in _tables(sizes)]
    return [table for (table,) in slice_batches(chunks, batch_size, drop_last)]


@_slicings
def test_slices_deliver_each_row_once_in_order(
    sizes: list[int], batch_size: int, drop_last: bool
) -> None:
    batches = _whole(sizes, batch_size, drop_last)
    rows = [i for b in batches for i in b.column("id").to_pylist()]
    total = sum(sizes)
    kept = total - total % batch_size if drop_last else total
    assert rows == list(range(kept))
    assert all(b.num_rows == batch_size for b in batches[:-1])
    assert len(batches) == batch_count(total, batch_size, drop_last)
    if drop_last and batches:
        assert batches[-1].num_rows == batch_size


@_slicings
def test_parts_are_sliced_alike_and_joined_part_by_part(
    sizes: list[int], batch_size: int, drop_last: bool
) -> None:
    """A chunk cut into parts once gives, in each batch, each part's slice of the same
    rows as slicing the whole chunk; a part of no columns keeps the batch's rows."""
    chunks = [
        Parts((t, t.select([]), t.select(["id"]).rename_columns(["twice"]))) for t in _tables(sizes)
    ]
    batches = list(slice_batches(chunks, batch_size, drop_last))
    whole = _whole(sizes, batch_size, drop_last)
    assert [b.num_rows for b in batches] == [b.num_rows for b in whole]
    for parts, table in zip(batches, whole, strict=True):
        ids, nothing, again = parts
        assert ids.equals(table)
        assert nothing.num_columns == 0 and nothing.num_rows == table.num_rows
        assert again.column("twice").to_pylist() == table.column("id").to_pylist()


@_slicings
def test_pandas_parts_are_sliced_and_joined_as_tables_numbered_from_zero(
    sizes: list[int], batch_size: int, drop_last: bool
) -> None:
    """A chunk converted to pandas once gives, in each batch, the DataFrame converting the
    batch's rows would give, rows numbered from 0; a part of no columns keeps the rows."""
    chunks = [Parts((t.to_pandas(), t.select([]).to_pandas())) for t in _tables(sizes)]
    batches = list(slice_batches(chunks, batch_size, drop_last))
    whole = _whole(sizes, batch_size, drop_last)
    assert [b.num_rows for b in batches] == [b.num_rows for b in whole]
    for (frame, nothing), table in zip(batches, whole, strict=True):
        pd.testing.assert_frame_equal(frame, table.to_pandas())
        assert nothing.shape == (table.num_rows, 0)
        assert nothing.index.equals(pd.RangeIndex(table.num_rows))


@_slicings
def test_polars_parts_are_sliced_and_joined_as_tables(
    sizes: list[int], batch_size: int, drop_last: bool
) -> None:
    chunks = [Parts((pl.from_arrow(t), pl.from_arrow(t))) for t in _tables(sizes)]
    batches = list(slice_batches(chunks, batch_size, drop_last))
    whole = _whole(sizes, batch_size, drop_last)
    assert [b.num_rows for b in batches] == [b.num_rows for b in whole]
    for (frame, again), table in zip(batches, whole, strict=True):
        assert frame.equals(pl.from_arrow(table)) and again.equals(frame)


def _chunks(n: int, split: str = "train") -> list[ChunkSpec]:
    return [ChunkSpec(split, i, i, i + 1, 10, 0) for i in range(n)]  # type: ignore[arg-type]


def test_chunk_order_is_a_seeded_permutation_per_epoch() -> None:
    chunks = _chunks(20)
    first = chunk_order(chunks, seed=3, epoch=1, shuffle=True)
    assert sorted(c.index for c in first) == list(range(20))
    assert chunk_order(chunks, seed=3, epoch=1, shuffle=True) == first
    assert chunk_order(chunks, seed=3, epoch=2, shuffle=True) != first
    assert chunk_order(chunks, seed=4, epoch=1, shuffle=True) != first
    assert chunk_order(chunks, seed=3, epoch=1, shuffle=False) == chunks


def permute_chunk(table: pa.Table, chunk: ChunkSpec, seed: int, epoch: int) -> pa.Table:
    """``table`` (``chunk``'s rows) in their order of ``epoch``, as a pass takes them."""
    return table.take(pa.array(shuffled_positions(table, chunk, seed, epoch)))


def _hashed(ids: list[int]) -> pa.Table:
    """Rows with these ids, and key hashes as a warehouse gives them."""
    hashes = [layout.hash_values(i) for i in ids]
    return pa.table({"id": ids, layout.HASH_COLUMN: pa.array(hashes, pa.int64())})


def test_permutation_depends_on_seed_epoch_and_chunk() -> None:
    table = _hashed(list(range(100)))
    chunk = ChunkSpec("train", 0, 0, 1, 100, 0)
    once = permute_chunk(table, chunk, seed=1, epoch=1).column("id").to_pylist()
    assert sorted(once) == list(range(100))
    assert once != list(range(100))
    assert permute_chunk(table, chunk, seed=1, epoch=1).column("id").to_pylist() == once
    assert permute_chunk(table, chunk, seed=1, epoch=2).column("id").to_pylist() != once
    other_chunk = ChunkSpec("train", 1, 1, 2, 100, 0)
    assert permute_chunk(table, other_chunk, seed=1, epoch=1).column("id").to_pylist() != once
    # The order is the rows' own: the same whatever order they come in.
    reversed_rows = table.take(pa.array(range(99, -1, -1)))
    assert permute_chunk(reversed_rows, chunk, seed=1, epoch=1).column("id").to_pylist() == once


@pytest.mark.parametrize("rows", [1, 2, 3, 1_000, 70_000])
def test_rows_of_distinct_hashes_are_ordered_by_one_sort(
    rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each row's position rides below the bits of its mixed hash that order it: rows of
    distinct hashes need no second ordering (which rows of equal hash take)."""
    table = _hashed(list(range(rows)))
    chunk = ChunkSpec("train", 0, 0, 1, rows, 0)
    expected = shuffled_positions(table, chunk, seed=2, epoch=1)

    def second_ordering(table: pa.Table) -> None:
        raise AssertionError("rows of distinct hashes were ordered a second time")

    monkeypatch.setattr(layout, "chunk_positions", second_ordering)
    positions = shuffled_positions(table, chunk, seed=2, epoch=1)
    assert positions.tolist() == expected.tolist()
    assert sorted(positions.tolist()) == list(range(rows))


@pytest.mark.parametrize("ids", [list(range(100)), [5, 5, 6, 7, 8, 8, 9]])
def test_permutation_is_the_same_whatever_batches_hold_the_rows(ids: list[int]) -> None:
    # A cache entry holds a chunk's rows in as many batches as its fill flushed.
    table = _hashed(ids).set_column(0, "id", pa.array(range(len(ids))))
    chunk = ChunkSpec("train", 0, 0, 1, len(ids), 0)
    pieces = [table.slice(lo, 3).combine_chunks() for lo in range(0, len(ids), 3)]
    batched = pa.concat_tables(pieces)
    assert batched.column(layout.HASH_COLUMN).num_chunks > 1
    for seed in range(5):
        expected = permute_chunk(table, chunk, seed, 1).column("id").to_pylist()
        assert permute_chunk(batched, chunk, seed, 1).column("id").to_pylist() == expected


def test_rows_of_equal_hash_are_shuffled_among_the_others_in_chunk_order() -> None:
    # A split key that is not unique: rows 0 and 1 share a hash (and so sort together).
    table = _hashed([5, 5, 6, 7, 8]).set_column(0, "id", pa.array([0, 1, 2, 3, 4]))
    chunk = ChunkSpec("train", 0, 0, 1, 5, 0)
    orders = set()
    for seed in range(30):
        once = permute_chunk(table, chunk, seed, 1).column("id").to_pylist()
        flipped = permute_chunk(table.take(pa.array([1, 0, 4, 3, 2])), chunk, seed, 1)
        assert flipped.column("id").to_pylist() == once
        position = once.index(0)
        assert once[position + 1] == 1  # together, in chunk order
        orders.add(tuple(once))
    assert len(orders) > 10


@given(
    sizes=st.lists(st.integers(1, 30), min_size=1, max_size=8),
    start=st.integers(0, 100),
    length=st.integers(0, 300),
)
def test_row_segments_cover_the_range_and_wrap_around(
    sizes: list[int], start: int, length: int
) -> None:
    order = [ChunkSpec("train", i, i, i + 1, n, 0) for i, n in enumerate(sizes)]
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    total = sum(sizes)
    start = min(start, total)
    segments = row_segments(order, start, start + length)
    rows = [offsets[seg.chunk.index] + r for seg in segments for r in range(seg.lo, seg.hi)]
    assert rows == [i % total for i in range(start, start + length)]
    # An empty segment would cost a chunk read for no rows.
    assert all(seg.lo < seg.hi for seg in segments)


def test_two_row_chunks_are_shuffled_too() -> None:
    table = _hashed([0, 1])
    chunk = ChunkSpec("train", 0, 0, 1, 2, 0)
    orders = {tuple(permute_chunk(table, chunk, seed, 1).column("id").to_pylist())
              for seed in range(20)}  # fmt: skip
    assert orders == {(0, 1), (1, 0)}


def test_two_chunks_are_shuffled_too() -> None:
    chunks = [ChunkSpec("train", i, i, i + 1, 10, 0) for i in range(2)]
    orders = {tuple(c.index for c in chunk_order(chunks, seed, 1, shuffle=True))
              for seed in range(20)}  # fmt: skip
    assert orders == {(0, 1), (1, 0)}


def test_a_segment_names_its_rows_only_when_it_is_part_of_its_chunk() -> None:
    """The label a chunk that was not ready in time is named by."""
    chunk = ChunkSpec("train", 3, 30, 40, 100, 0)
    segments = row_segments([chunk], 0, 100)
    assert [s.describe() for s in segments] == [chunk.describe()]
    assert [s.describe() for s in row_segments([chunk], 0, 60)] == [f"{chunk.describe()} rows 0:60"]
    assert [s.describe() for s in row_segments([chunk], 40, 100)] == [
        f"{chunk.describe()} rows 40:100"
    ]


def test_a_seed_gives_the_same_order_in_every_release() -> None:
    """The orders a seed gives are pinned: the same seed gives the same batches from one
    release to the next. An order changed on purpose needs a new ``LAYOUT_VERSION``, so
    that plans, and positions saved under the old order, are not taken for the new."""
    assert layout.LAYOUT_VERSION == 2
    chunk = ChunkSpec("train", 3, 0, 1, 10, 0)
    assert shuffled_positions(_hashed(list(range(10))), chunk, 7, 1).tolist() == [
        5, 1, 2, 9, 7, 6, 0, 4, 8, 3
    ]  # fmt: skip
    pair = ChunkSpec("train", 0, 0, 1, 2, 0)
    firsts = [shuffled_positions(_hashed([0, 1]), pair, seed, 1)[0] for seed in range(24)]
    assert firsts == [0, 1, 1, 1, 1, 1, 0, 1, 1, 0, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1]
    big = ChunkSpec("train", 5, 0, 1, 100_000, 0)
    positions = shuffled_positions(_hashed(list(range(100_000))), big, 7, 3)
    digest = hashlib.sha256(positions.astype(np.int64).tobytes()).hexdigest()
    assert digest[:16] == "d10ac5c64c0e74b9"
    chunks = [ChunkSpec("train", i, i, i + 1, 10, 0) for i in range(8)]
    assert [c.index for c in chunk_order(chunks, 7, 2, shuffle=True)] == [6, 0, 2, 3, 7, 5, 1, 4]
