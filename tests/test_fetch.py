"""Every chunk is checked before it is served: from the warehouse and from the cache."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest

from faucet_core import (
    ChunkCache,
    ChunkReadError,
    ChunkSpec,
    Plan,
    Reader,
    Warehouse,
    checks,
    hookimpl,
    layout,
)
from faucet_core.chunk_states import ChunkState
from tests.conftest import ROWS, ChunkByChunkDuckDB, ReadCounter, epoch_ids

MakeReader = Callable[..., Reader]


class DropsARow(ChunkByChunkDuckDB):
    name = "drops-a-row"

    def read_buckets(self, plan: Plan, chunk: ChunkSpec) -> pa.Table:
        return super().read_buckets(plan, chunk).slice(1)


class BorrowsARow(ChunkByChunkDuckDB):
    """Serves chunk 1 with one row of chunk 0 in place of one of its own."""

    name = "borrows-a-row"

    def read_buckets(self, plan: Plan, chunk: ChunkSpec) -> pa.Table:
        table = super().read_buckets(plan, chunk)
        if chunk.index != 1:
            return table
        stranger = super().read_buckets(plan, plan.chunks[chunk.split][0]).slice(0, 1)
        return pa.concat_tables([table.slice(1), stranger])


class ChangesAKey(ChunkByChunkDuckDB):
    """Serves a row whose key changed, but whose split and bucket did not."""

    name = "changes-a-key"

    def read_buckets(self, plan: Plan, chunk: ChunkSpec) -> pa.Table:
        table = super().read_buckets(plan, chunk)
        hashes = table.column(layout.HASH_COLUMN).to_pylist()
        step = layout.SPLIT_BUCKETS * layout.BUCKETS
        hashes[0] = hashes[0] - step if hashes[0] >= step else hashes[0] + step
        index = table.schema.get_field_index(layout.HASH_COLUMN)
        return table.set_column(index, layout.HASH_COLUMN, pa.array(hashes, pa.uint64()))


class ReordersColumns(ChunkByChunkDuckDB):
    name = "reorders-columns"

    def read_buckets(self, plan: Plan, chunk: ChunkSpec) -> pa.Table:
        table = super().read_buckets(plan, chunk)
        return table.select(list(reversed(table.column_names)))


class _Plugin:
    @hookimpl
    def register_warehouses(self, register: Callable[[type[Warehouse]], None]) -> None:
        for warehouse in (DropsARow, BorrowsARow, ChangesAKey, ReordersColumns):
            register(warehouse)


@pytest.fixture(autouse=True)
def plugin(register: Callable[[object], None]) -> None:
    register(_Plugin())


@pytest.mark.parametrize(
    ("datastore", "problem"),
    [
        ("drops-a-row", r"train chunk \d+: [\d,]+ rows where the plan counted [\d,]+"),
        ("borrows-a-row", r"row in bucket \d+ of train, outside chunk train \d+-\d+"),
        ("changes-a-key", "checksum of their key hashes is not the plan's"),
    ],
)
def test_a_chunk_that_is_not_the_planned_one_is_refused(
    make_reader: MakeReader, datastore: str, problem: str
) -> None:
    reader = make_reader(datastore=datastore, shuffle=False, initial_backoff=0)
    reader.prep_for_epoch()
    with pytest.raises(ChunkReadError, match=problem) as raised:
        while reader.get_batch() is not None:
            pass
    index = int(str(raised.value).split("train chunk ")[1].split(" ")[0])
    refused = reader.plan.chunks["train"][index]
    assert not reader.stream.fetcher.cached(refused)  # what was refused is not cached


def test_columns_in_another_order_are_put_in_plan_order(make_reader: MakeReader) -> None:
    reader = make_reader(datastore="reorders-columns", output="arrow")
    assert sorted(epoch_ids(reader)) == list(range(ROWS))


def test_a_wrong_cache_entry_is_discarded_and_read_again(
    make_reader: MakeReader,
    read_counter: ReadCounter,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = make_reader(datastore="counting-duckdb")
    expected = epoch_ids(first)
    chunks = first.plan.chunks["train"]
    cache = ChunkCache(tmp_path / "cache")
    # A sound file (its checksum matches) holding another chunk's rows under chunk 0's key.
    other = cache.get(first.plan.chunk_key(chunks[1]))
    assert other is not None
    cache.put(first.plan.chunk_key(chunks[0]), other)
    reads = read_counter.reads

    second = make_reader(datastore="counting-duckdb")
    with caplog.at_level("WARNING"):
        assert epoch_ids(second) == expected
    assert read_counter.reads == reads + 1
    assert "discarding the cached train chunk 0" in caplog.text
    fixed = cache.get(first.plan.chunk_key(chunks[0]))
    assert fixed is not None
    assert checks.check_chunk(first.plan, chunks[0], fixed, ordered=True).equals(fixed)


def test_a_read_after_the_reader_closed_fails_naming_the_chunk(make_reader: MakeReader) -> None:
    reader = make_reader(use_cache=False)
    chunk = reader.plan.chunks["train"][1]
    fetcher = reader.stream.fetcher
    fetcher.stop()
    closed = r"^train chunk 1 \(\d+ rows\): the reader was closed$"
    with pytest.raises(ChunkReadError, match=closed):
        fetcher.fetch(chunk)
    assert fetcher.states.state(chunk) is ChunkState.FAILED
