"""Every chunk is checked before it is served: from the warehouse and from the cache."""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pytest

from faucet_core import (
    ChunkCache,
    ChunkReadError,
    ChunkSpec,
    PermanentWarehouseError,
    Plan,
    Reader,
    Warehouse,
    checks,
    fetch,
    hookimpl,
    layout,
)
from faucet_core.chunk_states import ChunkState
from faucet_core.fetch import ChunkFetcher, FetchedChunk
from faucet_core.fill import CacheFill
from faucet_duckdb import DuckDBWarehouse
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


class HeldFill(DuckDBWarehouse):
    """A scan of the whole source (a cache fill) that reads nothing until ``release`` is
    set; scans of a few chunks (a pass's first, read by itself) run freely, counted."""

    name = "held-fill"
    release: ClassVar[threading.Event] = threading.Event()
    chunk_scans: ClassVar[ReadCounter] = ReadCounter()

    def scan(
        self, plan: Plan, chunks: Sequence[ChunkSpec] | None = None
    ) -> Iterable[pa.RecordBatch] | None:
        if chunks is not None:
            type(self).chunk_scans.add()
            return super().scan(plan, chunks)
        return self._held(plan)

    def _held(self, plan: Plan) -> Iterator[pa.RecordBatch]:
        type(self).release.wait(timeout=60)
        batches = super().scan(plan)
        assert batches is not None
        yield from batches


class NoChunkScans(HeldFill):
    """Streams its whole source, but cannot scan a few chunks (``None``): asked to, it
    lets the held scan of the whole source go on."""

    name = "no-chunk-scans"

    def scan(
        self, plan: Plan, chunks: Sequence[ChunkSpec] | None = None
    ) -> Iterable[pa.RecordBatch] | None:
        if chunks is not None:
            type(self).chunk_scans.add()
            type(self).release.set()
            return None
        return self._held(plan)


class _Plugin:
    @hookimpl
    def register_warehouses(self, register: Callable[[type[Warehouse]], None]) -> None:
        for warehouse in (
            DropsARow, BorrowsARow, ChangesAKey, ReordersColumns, HeldFill, NoChunkScans
        ):  # fmt: skip
            register(warehouse)


@pytest.fixture(autouse=True)
def plugin(register: Callable[[object], None]) -> None:
    register(_Plugin())
    HeldFill.release, HeldFill.chunk_scans = threading.Event(), ReadCounter()


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


def _reorder_columns_of_entry(cache: ChunkCache, key: str) -> tuple[list[str], list[str]]:
    """Rewrite the cache entry of ``key`` with its columns in reverse order (sound as a file:
    its checksum matches); returns the entry's column names before and after."""
    entry = cache.get(key)
    assert entry is not None
    names = entry.column_names
    cache.put(key, entry.select(list(reversed(names))))
    return names, list(reversed(names))


def test_a_cache_entry_with_its_columns_out_of_order_is_discarded_naming_the_rule(
    make_reader: MakeReader,
    read_counter: ReadCounter,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The core writes each entry with the plan's columns in order: one whose columns come
    in another order was not written so, and is discarded (the log names the rule it broke)
    and read again from the warehouse."""
    first = make_reader(datastore="counting-duckdb")
    expected = epoch_ids(first)
    chunk = first.plan.chunks["train"][0]
    cache = ChunkCache(tmp_path / "cache")
    names, reordered = _reorder_columns_of_entry(cache, first.plan.chunk_key(chunk))
    reads = read_counter.reads

    second = make_reader(datastore="counting-duckdb")
    with caplog.at_level("WARNING", logger="faucet_core.fetch"):
        assert epoch_ids(second) == expected
    assert read_counter.reads == reads + 1
    [message] = [r.getMessage() for r in caplog.records if r.name == "faucet_core.fetch"]
    assert message.startswith(f"discarding the cached {chunk.describe()}: ")
    assert message.endswith(f"columns {reordered} where the plan has {names}")


def test_a_wrong_cache_entry_is_discarded_even_when_the_warehouse_cannot_read_it_again(
    make_reader: MakeReader, tmp_path: Path
) -> None:
    """A wrong entry is gone once its fetch is over, though no read replaced it: the
    warehouse failed."""
    reader = make_reader(datastore="counting-duckdb")
    assert sorted(epoch_ids(reader)) == list(range(ROWS))  # every chunk is cached
    plan = reader.plan
    chunk = plan.chunks["train"][0]
    cache = ChunkCache(tmp_path / "cache")
    _reorder_columns_of_entry(cache, plan.chunk_key(chunk))

    def down() -> Warehouse:
        raise PermanentWarehouseError("the warehouse is down")

    fetcher = ChunkFetcher(plan, down, cache, reader.config.retry)
    try:
        with pytest.raises(ChunkReadError, match="the warehouse is down"):
            fetcher.fetch(chunk)
    finally:
        fetcher.stop()
        assert fetcher.join(timeout=60)
    assert not fetcher.cached(chunk)
    assert all(fetcher.cached(c) for c in plan.every_chunk if c != chunk)


def test_a_read_after_the_reader_closed_fails_naming_the_chunk(make_reader: MakeReader) -> None:
    reader = make_reader(use_cache=False)
    chunk = reader.plan.chunks["train"][1]
    fetcher = reader.stream.fetcher
    fetcher.stop()
    closed = r"^train chunk 1 \(\d+ rows\): the reader was closed$"
    with pytest.raises(ChunkReadError, match=closed):
        fetcher.fetch(chunk)
    assert fetcher.states.state(chunk) is ChunkState.FAILED


def _first_chunk_while_another_process_fills(
    reader: Reader, turn: threading.Event
) -> tuple[FetchedChunk, int]:
    """Fetch the reader's first train chunk as a pass's first, with a fetcher of its own
    whose fill waits for ``turn`` to take the fill lock: another process held it, and cached
    that chunk meanwhile. Returns the chunk and how many chunk scans read it by itself."""
    plan = reader.plan
    chunk = plan.chunks["train"][0]
    warehouse = reader.stream.warehouse()
    warehouse.materialize(plan)
    rows = checks.check_chunk(plan, chunk, warehouse.read_buckets(plan, chunk))

    @contextlib.contextmanager
    def after_another_process() -> Iterator[None]:
        assert turn.wait(timeout=60)
        reader.cache.put(plan.chunk_key(chunk), rows)  # the other process's fill cached it
        yield

    fetcher = ChunkFetcher(
        plan, reader.stream.warehouse, reader.cache, reader.config.retry,
        fill_lock=after_another_process,
    )  # fmt: skip
    try:
        fetched = fetcher.fetch(chunk, first=True)
    finally:
        turn.set()
        HeldFill.release.set()  # this fill's scan of the rest of the source
        fetcher.stop()
        assert fetcher.join(timeout=60)
    assert sorted(fetched.table["id"].to_pylist()) == sorted(rows["id"].to_pylist())
    return fetched, HeldFill.chunk_scans.reads


def test_a_first_chunk_cached_within_the_grace_is_not_read_by_itself(
    make_reader: MakeReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fill finds the pass's first chunk cached (by another process) within the grace
    while it goes on with the rest: the chunk is served from the cache, not scanned again."""
    monkeypatch.setattr(fetch, "FIRST_CHUNK_GRACE", 60.0)
    turn = threading.Event()
    turn.set()  # the other process is done: this fill finds the chunk at once
    reader = make_reader(datastore="held-fill", chunk_size=500)
    fetched, chunk_scans = _first_chunk_while_another_process_fills(reader, turn)
    assert (fetched.from_cache, fetched.attempts, chunk_scans) == (True, 0, 0)


def test_a_first_chunk_waits_for_a_fill_that_ends_just_within_the_patience(
    make_reader: MakeReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the grace, a fill that by its pace ends within FIRST_CHUNK_PATIENCE seconds
    (exactly then, here) is waited for, and the chunk it caches meanwhile is served from
    the cache, not scanned again."""
    monkeypatch.setattr(fetch, "FIRST_CHUNK_GRACE", 0.0)
    monkeypatch.setattr(fetch, "FIRST_CHUNK_PATIENCE", 60.0)
    turn = threading.Event()

    def seconds_left(self: CacheFill) -> float:
        turn.set()  # the fill takes its turn once the reader has decided to wait
        return fetch.FIRST_CHUNK_PATIENCE

    monkeypatch.setattr(CacheFill, "seconds_left", seconds_left)
    reader = make_reader(datastore="held-fill", chunk_size=500)
    fetched, chunk_scans = _first_chunk_while_another_process_fills(reader, turn)
    assert (fetched.from_cache, fetched.attempts, chunk_scans) == (True, 0, 0)


def test_a_first_chunk_waits_once_the_watched_pace_says_the_fill_ends_within_the_patience(
    make_reader: MakeReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scan starts slower than it goes on: the pace, past the patience at the end of the
    grace, is looked at again while watched; once within it, the fill is waited for."""
    monkeypatch.setattr(fetch, "FIRST_CHUNK_GRACE", 0.0)
    monkeypatch.setattr(fetch, "FIRST_CHUNK_PATIENCE", 60.0)
    monkeypatch.setattr(fetch, "FIRST_CHUNK_WATCH", 60.0)
    monkeypatch.setattr(fetch, "FIRST_CHUNK_WATCHED_BELOW", 120.0)
    turn = threading.Event()
    looks = iter([None, 61.0, 61.0])

    def seconds_left(self: CacheFill) -> float | None:
        left = next(looks, fetch.FIRST_CHUNK_PATIENCE)
        if left == fetch.FIRST_CHUNK_PATIENCE:
            turn.set()  # the fill takes its turn once the reader has decided to wait
        return left

    monkeypatch.setattr(CacheFill, "seconds_left", seconds_left)
    reader = make_reader(datastore="held-fill", chunk_size=500)
    fetched, chunk_scans = _first_chunk_while_another_process_fills(reader, turn)
    assert (fetched.from_cache, fetched.attempts, chunk_scans) == (True, 0, 0)
    assert next(looks, "all looked at") == "all looked at"


@pytest.mark.parametrize(
    ("watch", "left", "watched"),
    [(0.3, 61.0, True), (60.0, 121.0, False)],
    ids=["past-the-patience-all-the-watch-long", "far-past-it-not-watched"],
)
def test_a_first_chunk_is_read_by_itself_when_the_pace_says_the_fill_ends_later(
    make_reader: MakeReader,
    monkeypatch: pytest.MonkeyPatch,
    watch: float,
    left: float,
    watched: bool,
) -> None:
    """A pace past the patience all the time it is watched, or past what is watched at
    all (then looked at once): the chunk is read by itself."""
    monkeypatch.setattr(fetch, "FIRST_CHUNK_GRACE", 0.0)
    monkeypatch.setattr(fetch, "FIRST_CHUNK_PATIENCE", 60.0)
    monkeypatch.setattr(fetch, "FIRST_CHUNK_WATCH", watch)
    monkeypatch.setattr(fetch, "FIRST_CHUNK_WATCHED_BELOW", 120.0)
    looks: list[float] = []

    def seconds_left(self: CacheFill) -> float:
        looks.append(left)
        return left

    monkeypatch.setattr(CacheFill, "seconds_left", seconds_left)
    reader = make_reader(datastore="held-fill", chunk_size=500)
    fetched, chunk_scans = _first_chunk_while_another_process_fills(reader, threading.Event())
    assert (fetched.from_cache, fetched.attempts, chunk_scans) == (False, 1, 1)
    assert (len(looks) > 1) == watched


def test_a_first_chunk_stops_waiting_once_the_pace_says_the_fill_ends_much_later(
    make_reader: MakeReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pace within the patience at first (the first batches of several streams at once),
    then far past it: the chunk is read by itself without waiting the patience out."""
    monkeypatch.setattr(fetch, "FIRST_CHUNK_GRACE", 0.0)
    monkeypatch.setattr(fetch, "FIRST_CHUNK_PATIENCE", 60.0)
    monkeypatch.setattr(fetch, "FIRST_CHUNK_WATCHED_BELOW", 10.0)
    paces = iter([1.0])
    looks: list[float] = []

    def seconds_left(self: CacheFill) -> float:
        looks.append(next(paces, 61.0))
        return looks[-1]

    scanned = itertools.count(step=1000)  # the scan goes on between two looks
    monkeypatch.setattr(CacheFill, "seconds_left", seconds_left)
    monkeypatch.setattr(CacheFill, "scanned_rows", property(lambda self: next(scanned)))
    reader = make_reader(datastore="held-fill", chunk_size=500)
    fetched, chunk_scans = _first_chunk_while_another_process_fills(reader, threading.Event())
    assert (fetched.from_cache, fetched.attempts, chunk_scans) == (False, 1, 1)
    assert looks == [1.0, 61.0]  # looked at again while waiting, not the patience out


def test_a_first_chunk_the_warehouse_cannot_scan_by_itself_waits_for_the_fill(
    make_reader: MakeReader, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A warehouse that streams its source but answers ``None`` to a scan of a few chunks:
    the pass's first chunk comes from the fill, and no failed read is reported."""
    monkeypatch.setattr(fetch, "FIRST_CHUNK_GRACE", 0.0)
    reader = make_reader(datastore="no-chunk-scans", chunk_size=500)
    with caplog.at_level("INFO", logger="faucet_core.fetch"):
        assert sorted(epoch_ids(reader)) == list(range(ROWS))
    assert HeldFill.chunk_scans.reads == 1  # the first chunk was asked for by itself
    assert "by itself failed" not in caplog.text
    assert reader.metrics[0].chunks_fetched == len(reader.plan.chunks["train"])
