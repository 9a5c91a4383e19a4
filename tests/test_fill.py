"""Filling the cache from one scan of the source (faucet_core.fill)."""

from __future__ import annotations

import contextlib
import errno
import math
import queue
import re
import resource
import subprocess
import sys
import threading
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pytest

from faucet_core import (
    ChunkCache,
    ChunkSpec,
    Plan,
    PlanRequest,
    Reader,
    SourceSpec,
    SplitSpec,
    Warehouse,
    checks,
    fetch,
    fill,
    hookimpl,
    layout,
    stream,
)
from faucet_core import cache as cache_module
from faucet_core.cache import EntryWriter, read_entry
from faucet_core.chunk_states import ChunkStates, Origin
from faucet_core.fill import CacheFill, ChunkWriters, _allow_open_files, write_chunk_copy
from faucet_duckdb import DuckDBWarehouse
from tests.conftest import ROWS, ReadCounter, epoch_ids

MakeReader = Callable[..., Reader]


class CountingScans(DuckDBWarehouse):
    """DuckDB, counting its scans of the whole source, and its chunk reads."""

    name = "counting-scans"
    scans: ClassVar[ReadCounter] = ReadCounter()
    reads: ClassVar[ReadCounter] = ReadCounter()

    def scan(
        self, plan: Plan, chunks: Sequence[ChunkSpec] | None = None
    ) -> Iterable[pa.RecordBatch] | None:
        if chunks is None:
            type(self).scans.add()
        return super().scan(plan, chunks)

    def read_buckets(self, plan: Plan, chunk: object) -> pa.Table:
        type(self).reads.add()
        return super().read_buckets(plan, chunk)  # type: ignore[arg-type]


class PassedScan(DuckDBWarehouse):
    """DuckDB, its scans' batches passed through :meth:`passed`."""

    def scan(
        self, plan: Plan, chunks: Sequence[ChunkSpec] | None = None
    ) -> Iterator[pa.RecordBatch]:
        batches = super().scan(plan, chunks)
        assert batches is not None
        yield from self.passed(batches, chunks)

    def passed(
        self, batches: Iterable[pa.RecordBatch], chunks: Sequence[ChunkSpec] | None
    ) -> Iterator[pa.RecordBatch]:
        """The batches the scan gives, of ``batches`` (DuckDB's, of ``chunks``)."""
        yield from batches


class ScanDropsARow(PassedScan):
    """A scan that disagrees with the plan: the source changed after planning."""

    name = "scan-drops-a-row"

    def passed(
        self, batches: Iterable[pa.RecordBatch], chunks: Sequence[ChunkSpec] | None
    ) -> Iterator[pa.RecordBatch]:
        for i, batch in enumerate(batches):
            yield batch.slice(1) if i == 0 else batch


class BlockedScan(PassedScan):
    """A scan of the whole source that stops after its first batch until ``release`` is
    set; scans of a few chunks run freely."""

    name = "blocked-scan"
    started = threading.Event()
    release = threading.Event()

    def passed(
        self, batches: Iterable[pa.RecordBatch], chunks: Sequence[ChunkSpec] | None
    ) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            yield batch
            if chunks is None:
                type(self).started.set()
                type(self).release.wait(timeout=60)


class SlowToEnd(PassedScan):
    """A scan of the whole source that, having yielded every row, takes ``pause`` seconds
    to end (a warehouse slow to close its stream); scans of a few chunks are counted."""

    name = "slow-to-end"
    pause = 2.0
    chunk_scans: ClassVar[ReadCounter] = ReadCounter()

    def passed(
        self, batches: Iterable[pa.RecordBatch], chunks: Sequence[ChunkSpec] | None
    ) -> Iterator[pa.RecordBatch]:
        if chunks is not None:
            type(self).chunk_scans.add()
        yield from batches
        if chunks is None:
            threading.Event().wait(timeout=type(self).pause)


class HeldScan(PassedScan):
    """A scan of the whole source in 10-row batches that, after its first, waits for a
    chunk to be read by itself; that read notes whether the scan moved on meanwhile."""

    name = "held-scan"
    chunk_read = threading.Event()
    third_batch = threading.Event()
    moved_on: ClassVar[list[bool]] = []

    def passed(
        self, batches: Iterable[pa.RecordBatch], chunks: Sequence[ChunkSpec] | None
    ) -> Iterator[pa.RecordBatch]:
        if chunks is not None:
            type(self).chunk_read.set()
            # Broken holds show at once; a held scan never pulls a third batch meanwhile.
            type(self).moved_on.append(type(self).third_batch.wait(timeout=0.5))
            yield from batches
            return
        pulled = 0
        for batch in batches:
            for offset in range(0, batch.num_rows, 10):
                if pulled == 1:
                    type(self).chunk_read.wait(timeout=60)
                pulled += 1
                if pulled == 3:
                    type(self).third_batch.set()
                yield batch.slice(offset, 10)


class PacedScan(PassedScan):
    """A scan of the whole source in 1,000-row batches, each only once the test puts its
    number in ``go``; it tells ``asked`` when the fill asks for the next one."""

    name = "paced-scan"
    go: ClassVar[queue.Queue[int]] = queue.Queue()
    asked: ClassVar[queue.Queue[int]] = queue.Queue()

    def passed(
        self, batches: Iterable[pa.RecordBatch], chunks: Sequence[ChunkSpec] | None
    ) -> Iterator[pa.RecordBatch]:
        table = pa.Table.from_batches(list(batches))
        for number, start in enumerate(range(0, table.num_rows, 1_000)):
            type(self).asked.put(number)
            assert type(self).go.get(timeout=60) == number
            yield from table.slice(start, 1_000).to_batches()


class CutScan(PassedScan):
    """A scan of the whole source in 100-row batches."""

    name = "cut-scan"

    def passed(
        self, batches: Iterable[pa.RecordBatch], chunks: Sequence[ChunkSpec] | None
    ) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for offset in range(0, batch.num_rows, 100):
                yield batch.slice(offset, 100)


class ChunksReadAlone(PassedScan):
    """DuckDB, said to read a few chunks at the cost of their rows alone; notes when its
    scans are sent and when they are read to the end."""

    name = "chunks-read-alone"
    events: ClassVar[list[str]] = []

    def reads_chunks_alone(self, plan: Plan) -> bool:
        return True

    def scan(
        self, plan: Plan, chunks: Sequence[ChunkSpec] | None = None
    ) -> Iterator[pa.RecordBatch]:
        type(self).events.append("whole sent" if chunks is None else "chunk sent")
        return super().scan(plan, chunks)

    def passed(
        self, batches: Iterable[pa.RecordBatch], chunks: Sequence[ChunkSpec] | None
    ) -> Iterator[pa.RecordBatch]:
        yield from batches
        type(self).events.append("whole read" if chunks is None else "chunk read")


class SlowToTellReadsAlone(ChunksReadAlone):
    """Reads chunks alone, but says so only once the fill's scan is sent, or after a
    second: meanwhile the pass's other fetches miss their chunks too."""

    name = "slow-to-tell-reads-alone"
    scan_sent = threading.Event()

    def reads_chunks_alone(self, plan: Plan) -> bool:
        type(self).scan_sent.wait(timeout=1)
        return True

    def scan(
        self, plan: Plan, chunks: Sequence[ChunkSpec] | None = None
    ) -> Iterator[pa.RecordBatch]:
        if chunks is None:
            type(self).scan_sent.set()
        return super().scan(plan, chunks)


class CannotTellReadsAlone(PassedScan):
    """DuckDB whose answer to how it reads a chunk alone fails."""

    name = "cannot-tell-reads-alone"

    def reads_chunks_alone(self, plan: Plan) -> bool:
        raise RuntimeError("no answer")


class _Plugin:
    @hookimpl
    def register_warehouses(self, register: Callable[[type[Warehouse]], None]) -> None:
        for warehouse in (
            CountingScans, ScanDropsARow, BlockedScan, SlowToEnd, HeldScan, PacedScan, CutScan,
            ChunksReadAlone, SlowToTellReadsAlone, CannotTellReadsAlone,
        ):  # fmt: skip
            register(warehouse)


@pytest.fixture(autouse=True)
def plugin(register: Callable[[object], None]) -> None:
    register(_Plugin())
    CountingScans.scans = ReadCounter()
    CountingScans.reads = ReadCounter()
    PacedScan.go, PacedScan.asked = queue.Queue(), queue.Queue()


def test_one_scan_caches_every_chunk_of_both_splits(make_reader: MakeReader) -> None:
    reader = make_reader(datastore="counting-scans", test_split_percent=20, epochs=2)
    ids = epoch_ids(reader) + epoch_ids(reader, eval=True)
    assert sorted(ids) == list(range(ROWS))
    assert CountingScans.scans.reads == 1 and CountingScans.reads.reads == 0
    chunks = [c for split in reader.plan.chunks.values() for c in split]
    assert all(reader.stream.fetcher.cached(c) for c in chunks)
    assert sorted(epoch_ids(reader)) == sorted(ids[: reader.rows("train")])
    # Each chunk counts as read from the warehouse (by the scan) in the pass that first
    # serves it; epoch 2 comes from the cache.
    epoch_1, evaluation, epoch_2 = reader.metrics
    trains = len(reader.plan.chunks["train"])
    assert (epoch_1.chunks_fetched, epoch_1.chunks_cached) == (trains, 0)
    assert (evaluation.chunks_fetched, evaluation.chunks_cached) == (1, 0)
    assert (epoch_2.chunks_fetched, epoch_2.chunks_cached) == (0, trains)
    assert CountingScans.scans.reads == 1


def test_the_first_batch_does_not_wait_for_the_whole_scan(make_reader: MakeReader) -> None:
    BlockedScan.started.clear()
    BlockedScan.release.clear()
    reader = make_reader(datastore="blocked-scan", chunk_size=500, epochs=2, output="pandas")
    reader.prep_for_epoch()
    try:
        first = reader.get_batch()
        # The scan of the whole source is held after its first batch until released: this
        # batch came from a scan of its chunk alone.
        assert first is not None
        assert not all(reader.stream.fetcher.cached(c) for c in reader.plan.chunks["train"])
    finally:
        BlockedScan.release.set()
    ids = first["features"]["id"].tolist()
    while (batch := reader.get_batch()) is not None:
        ids.extend(batch["features"]["id"].tolist())
    assert sorted(ids) == list(range(ROWS))
    assert reader.metrics[0].chunks_fetched == len(reader.plan.chunks["train"])
    assert reader.metrics[0].retries == 0  # each chunk read once, by itself or by the scan
    assert sorted(epoch_ids(reader)) == list(range(ROWS))
    assert reader.metrics[1].chunks_cached == len(reader.plan.chunks["train"])


def test_the_scan_waits_while_the_first_chunk_is_read_by_itself(
    make_reader: MakeReader,
) -> None:
    # Both would share the machine's cores; the pass's first batch waits only for its chunk.
    HeldScan.chunk_read.clear()
    HeldScan.third_batch.clear()
    HeldScan.moved_on = []
    reader = make_reader(datastore="held-scan", chunk_size=500)
    assert sorted(epoch_ids(reader)) == list(range(ROWS))
    assert HeldScan.moved_on == [False]
    assert HeldScan.third_batch.is_set()  # the scan went on once the read was over
    assert all(reader.stream.fetcher.cached(c) for c in reader.plan.chunks["train"])


def test_the_first_batch_waits_for_a_fill_about_to_end(
    make_reader: MakeReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fill ends within the grace period: reading the first chunk by itself would only
    # slow it down.
    monkeypatch.setattr(fetch, "FIRST_CHUNK_GRACE", 60.0)
    SlowToEnd.chunk_scans = ReadCounter()
    reader = make_reader(datastore="slow-to-end", chunk_size=500)
    assert sorted(epoch_ids(reader)) == list(range(ROWS))
    assert SlowToEnd.chunk_scans.reads == 0
    assert reader.metrics[0].chunks_fetched == len(reader.plan.chunks["train"])


def test_a_first_chunk_read_alone_is_sent_before_the_fills_scan(
    make_reader: MakeReader,
) -> None:
    """Where a few chunks cost their rows alone (a copy clustered by bucket), the pass's
    first chunk is read by itself at once, and the fill's scan is sent once that read is
    over: a warehouse that runs one query at a time answers the small one first."""
    ChunksReadAlone.events = []
    reader = make_reader(datastore="chunks-read-alone", chunk_size=500)
    assert sorted(epoch_ids(reader)) == list(range(ROWS))
    assert ChunksReadAlone.events == ["chunk sent", "chunk read", "whole sent", "whole read"]
    assert all(reader.stream.fetcher.cached(c) for c in reader.plan.chunks["train"])
    assert reader.metrics[0].chunks_fetched == len(reader.plan.chunks["train"])


def test_the_passs_other_fetches_do_not_send_the_fills_scan_before_its_first_chunk(
    make_reader: MakeReader,
) -> None:
    # They miss their chunks while the first fetch is still finding out how to read its
    # own; the fill they wait for is started by it, held back.
    SlowToTellReadsAlone.events = []
    SlowToTellReadsAlone.scan_sent.clear()
    reader = make_reader(
        datastore="slow-to-tell-reads-alone", chunk_size=500, fetch_threads=2, prefetch_chunks=2
    )
    assert sorted(epoch_ids(reader)) == list(range(ROWS))
    assert SlowToTellReadsAlone.events == ["chunk sent", "chunk read", "whole sent", "whole read"]


def test_a_warehouse_that_cannot_tell_how_it_reads_a_chunk_alone_is_served_by_the_fill(
    make_reader: MakeReader, caplog: pytest.LogCaptureFixture
) -> None:
    reader = make_reader(datastore="cannot-tell-reads-alone", chunk_size=500)
    with caplog.at_level("INFO", logger="faucet_core.fetch"):
        assert sorted(epoch_ids(reader)) == list(range(ROWS))
    assert "could not tell how the warehouse reads a chunk alone (no answer)" in caplog.text
    assert all(reader.stream.fetcher.cached(c) for c in reader.plan.chunks["train"])


def test_a_scan_serves_what_chunk_reads_serve(make_reader: MakeReader, tmp_path: Path) -> None:
    # The in-chunk order is a function of the rows: a seed gives the same batches either way.
    scanned = make_reader(
        datastore="duckdb", seed=5, output="arrow", test_split_percent=10, epochs=2
    )
    by_chunk = make_reader(
        datastore="chunk-by-chunk-duckdb",
        seed=5,
        output="arrow",
        test_split_percent=10,
        epochs=2,
        cache_dir=str(tmp_path / "other-cache"),
    )
    for _ in range(2):
        assert epoch_ids(scanned) == epoch_ids(by_chunk)
    assert epoch_ids(scanned, eval=True) == epoch_ids(by_chunk, eval=True)


def test_a_scan_that_disagrees_with_the_plan_is_never_cached(
    make_reader: MakeReader, caplog: pytest.LogCaptureFixture
) -> None:
    reader = make_reader(datastore="scan-drops-a-row")
    with caplog.at_level("WARNING"):
        ids = epoch_ids(reader)
    # The warning names the source, the reason, and what the reader does instead.
    assert [
        r.getMessage()
        for r in caplog.records
        if re.fullmatch(
            r"could not fill the cache from one scan of table t \(.*the source changed after"
            r" planning.*\); reading chunk by chunk",
            r.getMessage(),
            re.DOTALL,
        )
    ]
    # Read chunk by chunk instead, every row once.
    assert sorted(ids) == list(range(ROWS))


def test_without_room_in_the_cache_chunks_are_read_one_by_one(make_reader: MakeReader) -> None:
    reader = make_reader(datastore="counting-scans", cache_max_bytes=20_000)
    assert sorted(epoch_ids(reader)) == list(range(ROWS))
    assert CountingScans.scans.reads == 0 and CountingScans.reads.reads > 0


def test_the_fill_runs_when_the_plan_takes_at_most_four_fifths_of_the_budget(
    make_reader: MakeReader, tmp_path: Path
) -> None:
    size = make_reader(datastore="counting-scans").plan.arrow_bytes()
    assert size is not None
    scans = []
    for folder, budget in (("tight", size), ("roomy", math.ceil(size / 0.8))):
        reader = make_reader(
            datastore="counting-scans", cache_dir=str(tmp_path / folder), cache_max_bytes=budget
        )
        before = CountingScans.scans.reads
        assert sorted(epoch_ids(reader)) == list(range(ROWS))
        scans.append(CountingScans.scans.reads - before)
    assert scans == [0, 1]


def test_where_the_fill_cannot_run_the_chunks_read_one_by_one_are_cached(
    make_reader: MakeReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that may not open a file per chunk reads chunk by chunk; the chunks are
    cached as they are read, and the next epoch comes from the cache alone."""
    monkeypatch.setattr(fill, "_allow_open_files", lambda count: False)
    reader = make_reader(datastore="counting-scans", epochs=2)
    assert sorted(epoch_ids(reader)) == list(range(ROWS))
    reads = CountingScans.reads.reads
    assert CountingScans.scans.reads == 0 and reads == len(reader.plan.chunks["train"])
    assert sorted(epoch_ids(reader)) == list(range(ROWS))
    assert CountingScans.reads.reads == reads


def test_a_chunk_asked_for_while_the_fill_runs_waits_for_the_fill(
    make_reader: MakeReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk fetched while the fill runs (by the preprocessing fit, say) comes from the
    fill, however long it takes: only a pass's first chunk is read by itself (after a
    grace, while this fill's scan waits for the test)."""
    reader = make_reader(datastore="paced-scan")
    chunk = reader.plan.chunks["train"][0]
    states = reader.stream.fetcher.states
    waiting = threading.Event()  # set once the fetch waits for the fill with no deadline
    wait_filled = states.wait_filled

    def noted(chunk: ChunkSpec, stopped: Callable[[], bool], timeout: float | None = None) -> Any:
        if timeout is None:
            waiting.set()
        return wait_filled(chunk, stopped, timeout)

    monkeypatch.setattr(states, "wait_filled", noted)
    fetched: queue.Queue[fetch.FetchedChunk] = queue.Queue()
    fetcher = threading.Thread(target=lambda: fetched.put(reader.stream.fetcher.fetch(chunk)))
    fetcher.start()
    assert PacedScan.asked.get(timeout=60) == 0
    assert waiting.wait(timeout=30)
    for number in range(-(-ROWS // 1_000)):
        PacedScan.go.put(number)
    assert fetched.get(timeout=60).table.num_rows == chunk.rows
    fetcher.join(timeout=60)
    assert reader.stream.fetcher.states.origin(chunk) is Origin.FILL


def _reading_while_the_scan_is_held(make_reader: MakeReader) -> tuple[Reader, threading.Thread]:
    """A reader of the blocked-scan warehouse, and a thread asking it for a batch: its fill's
    scan is held until ``BlockedScan.release`` is set."""
    BlockedScan.started.clear()
    BlockedScan.release.clear()
    reader = make_reader(datastore="blocked-scan", chunk_size=500)
    reader.prep_for_epoch()
    getter = threading.Thread(target=lambda: _swallow(reader.get_batch), daemon=True)
    getter.start()
    return reader, getter


def test_close_stops_a_fill_under_way(make_reader: MakeReader) -> None:
    reader, getter = _reading_while_the_scan_is_held(make_reader)
    assert BlockedScan.started.wait(timeout=60)
    closer = threading.Thread(target=reader.close)
    closer.start()
    BlockedScan.release.set()
    closer.join(timeout=60)
    getter.join(timeout=60)
    assert not closer.is_alive() and not getter.is_alive()
    assert not [t for t in threading.enumerate() if t.name.startswith("faucet-fill")]
    assert not list((Path(reader.config.cache.dir)).glob("*.arrow"))  # nothing half-cached


def test_the_time_a_fill_has_left_is_at_its_pace_since_its_first_batch_not_held(
    make_reader: MakeReader, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    held = threading.Event()  # the scan waits for a read by itself (it notes the time)

    def clock() -> float:
        if threading.current_thread().name == "faucet-fill":
            held.set()
        return now[0]

    monkeypatch.setattr(fill, "time", types.SimpleNamespace(monotonic=clock))
    reader = make_reader(datastore="paced-scan", chunk_size=500)
    plan = reader.plan
    warehouse = reader.stream.warehouse
    filling = CacheFill(
        plan, ChunkCache(tmp_path / "fill"), warehouse, contextlib.nullcontext, ChunkStates(plan)
    )
    assert filling.seconds_left() is None  # not started
    filling.start()
    assert PacedScan.asked.get(timeout=60) == 0
    assert filling.seconds_left() is None  # nothing read yet
    now[0] = 104.0  # the query's start: the first batch comes 4 s after it was sent
    PacedScan.go.put(0)
    assert PacedScan.asked.get(timeout=60) == 1
    # One batch: the pace since the scan was sent.
    assert filling.seconds_left() == pytest.approx((ROWS - 1_000) * 4 / 1_000)
    now[0] = 110.0  # 1,000 rows in 10 s
    assert filling.seconds_left() == pytest.approx((ROWS - 1_000) / 100)
    held.clear()
    with filling.held():
        PacedScan.go.put(1)
        assert held.wait(timeout=60)
        now[0] = 114.0  # held for 4 s
    assert PacedScan.asked.get(timeout=60) == 2
    now[0] = 130.0  # since the first batch: 1,000 rows in 26 s, of which 4 held
    assert filling.seconds_left() == pytest.approx((ROWS - 2_000) * 22 / 1_000)
    held.clear()
    with filling.held():
        PacedScan.go.put(2)
        assert held.wait(timeout=60)
        now[0] = 136.0  # held again, for 6 s
    assert PacedScan.asked.get(timeout=60) == 3
    now[0] = 150.0  # since the first batch: 2,000 rows in 46 s, of which 10 held
    assert filling.seconds_left() == pytest.approx((ROWS - 3_000) * 36 / 2_000)
    for number in range(3, -(-ROWS // 1_000)):
        PacedScan.go.put(number)
    filling.wait_all()
    assert filling.seconds_left() == 0


def _fill_of(reader: Reader, cache: ChunkCache, **settings: Any) -> CacheFill:
    """A fill (not started) of ``reader``'s plan into ``cache``, alone in its process."""
    plan = reader.plan
    return CacheFill(
        plan, cache, reader.stream.warehouse, contextlib.nullcontext, ChunkStates(plan),
        **settings,
    )  # fmt: skip


def test_a_fill_logs_the_chunks_it_cached_and_the_rows_it_scanned(
    make_reader: MakeReader, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Once its entries are committed, a fill says how many chunks it cached, of which
    source, and how many rows its scan read."""
    reader = make_reader(datastore="duckdb", test_split_percent=30)
    plan = reader.plan
    filling = _fill_of(reader, ChunkCache(tmp_path / "fill"))
    with caplog.at_level("INFO", logger="faucet_core.fill"):
        filling.wait_all()
    assert all(filling.wait(chunk, timeout=0) for chunk in plan.every_chunk)
    messages = [r.getMessage() for r in caplog.records if r.name == "faucet_core.fill"]
    chunks = len(plan.every_chunk)
    assert messages == [f"cached {chunks} chunks of table t from one scan of {ROWS} rows"]


@pytest.fixture
def made_writers(monkeypatch: pytest.MonkeyPatch) -> list[ChunkWriters]:
    """The chunk writers fills make from now on, with parts as small as the source makes
    them."""
    monkeypatch.setattr(fill, "_MIN_PART_BYTES", 1)
    made: list[ChunkWriters] = []

    class NotedWriters(ChunkWriters):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(fill, "ChunkWriters", NotedWriters)
    return made


def test_a_fill_writes_a_small_source_in_parts_of_an_eighth_of_its_bytes(
    make_reader: MakeReader, tmp_path: Path, made_writers: list[ChunkWriters]
) -> None:
    """A source far under the fill's buffer budget is still written while it is scanned,
    in flushes of an eighth of the plan's bytes (whole bytes) each, not all at the end."""
    reader = make_reader(datastore="cut-scan", test_split_percent=30)
    plan = reader.plan
    size = plan.arrow_bytes()
    assert size is not None
    cache = ChunkCache(tmp_path / "parts")
    filling = _fill_of(reader, cache, budget=10**9)
    filling.wait_all()
    assert all(filling.wait(chunk, timeout=0) for chunk in plan.every_chunk)
    (writers,) = made_writers
    assert writers.budget == size // 8 and isinstance(writers.budget, int)
    assert writers.flushes > 1
    batches = [cache.get(plan.chunk_key(chunk)) for chunk in plan.every_chunk]
    assert any(entry is not None and entry.column(0).num_chunks > 1 for entry in batches)


def test_the_fill_holds_no_more_rows_than_cache_fill_buffer(
    make_reader: MakeReader, made_writers: list[ChunkWriters]
) -> None:
    reader = make_reader(datastore="cut-scan", cache_fill_buffer="10KB")
    assert sorted(epoch_ids(reader)) == list(range(ROWS))
    (writers,) = made_writers
    assert writers.budget == 10_000 and writers.flushes > 1


def test_the_fill_thread_is_a_daemon(make_reader: MakeReader, tmp_path: Path) -> None:
    """A fill started by the main thread runs in a daemon thread named ``faucet-fill``: a
    fill stuck in the warehouse never keeps the process from exiting."""
    BlockedScan.started.clear()
    BlockedScan.release.clear()
    reader = make_reader(datastore="blocked-scan", chunk_size=500)
    plan = reader.plan
    filling = _fill_of(reader, ChunkCache(tmp_path / "fill"))
    assert not threading.current_thread().daemon
    try:
        filling.start()
        assert BlockedScan.started.wait(timeout=60)
        fills = [t for t in threading.enumerate() if t.name == "faucet-fill"]
        assert fills and all(t.daemon for t in fills)
    finally:
        BlockedScan.release.set()
    filling.wait_all()
    assert all(filling.wait(chunk, timeout=0) for chunk in plan.every_chunk)


def test_a_fill_of_a_cache_holding_every_chunk_scans_nothing(
    make_reader: MakeReader,
) -> None:
    """A fill that finds every chunk cached already (by another reader) ends without
    scanning the source, every chunk found cached."""
    filler = make_reader(datastore="counting-scans")
    assert sorted(epoch_ids(filler)) == list(range(ROWS))
    assert CountingScans.scans.reads == 1
    plan = filler.plan
    cache = filler.stream.fetcher.cache
    assert cache is not None
    states = ChunkStates(plan)
    filling = CacheFill(plan, cache, filler.stream.warehouse, contextlib.nullcontext, states)
    filling.wait_all()
    assert filling.over
    assert CountingScans.scans.reads == 1
    assert all(filling.wait(chunk, timeout=0) for chunk in plan.every_chunk)


def test_a_reader_closed_while_its_fill_is_stuck_warns_it_left_it_behind(
    make_reader: MakeReader, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing a reader whose fill is stuck in the warehouse past the close's wait leaves
    it behind, warning that chunk reads are still running that long after close()."""
    monkeypatch.setattr(stream, "CLOSE_TIMEOUT", 0.0)
    reader, getter = _reading_while_the_scan_is_held(make_reader)
    try:
        assert BlockedScan.started.wait(timeout=60)
        with caplog.at_level("WARNING"):
            reader.close()
    finally:
        BlockedScan.release.set()
    getter.join(timeout=60)
    assert not getter.is_alive()
    assert [
        r.getMessage()
        for r in caplog.records
        if re.fullmatch(
            r"chunk reads still running 0s after close\(\); leaving them behind", r.getMessage()
        )
    ]
    for thread in threading.enumerate():
        if thread.name.startswith("faucet-fill"):
            thread.join(timeout=60)
            assert not thread.is_alive()


def _swallow(call: Callable[[], object]) -> None:
    with contextlib.suppress(Exception):  # the reader was closed under it
        call()


def test_large_batches_are_cut_in_parts_whose_checksums_add_up_exactly(
    make_reader: MakeReader, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checks, "_MAX_BATCH_ROWS", 700)
    reader = make_reader(datastore="chunk-by-chunk-duckdb", test_split_percent=30)
    plan = reader.plan
    chunks = [c for split in plan.chunks.values() for c in split]
    warehouse = DuckDBWarehouse(reader.config.connection)
    try:
        scanned = warehouse.scan(plan)
        assert scanned is not None
        whole = pa.Table.from_batches(list(scanned)).combine_chunks().to_batches()
    finally:
        warehouse.close()
    assert len(whole) == 1 and whole[0].num_rows == ROWS  # one batch, cut in eight parts
    writers = ChunkWriters(plan, ChunkCache(tmp_path / "parts"), range(len(chunks)), 10**9)
    writers.add(whole[0])
    assert sorted(writers.commit()) == list(range(len(chunks)))
    writers.close()


def _scanned(reader: Reader) -> pa.Table:
    """Every row of the reader's source, as one scan of it gives them."""
    warehouse = DuckDBWarehouse(reader.config.connection)
    try:
        scanned = warehouse.scan(reader.plan)
        assert scanned is not None
        return pa.Table.from_batches(list(scanned))
    finally:
        warehouse.close()


def _assert_entries_hold_rows_in_scan_order(plan: Plan, cache: ChunkCache, rows: pa.Table) -> None:
    """Each chunk's entry holds that chunk's rows of ``rows`` (the scan), in their order."""
    _, where = checks.RowCheck(plan).add(rows)
    for index, chunk in enumerate(plan.every_chunk):
        entry = cache.get(plan.chunk_key(chunk))
        assert entry is not None
        assert checks.check_chunk(plan, chunk, entry, ordered=True).equals(entry)
        in_scan_order = rows.filter(pa.array(where == index))
        assert entry["id"].to_pylist() == in_scan_order["id"].to_pylist()


def test_a_small_buffer_writes_entries_in_many_parts(
    make_reader: MakeReader, tmp_path: Path
) -> None:
    """Entries written in many flushes hold each chunk's rows in the scan's order."""
    reader = make_reader(datastore="chunk-by-chunk-duckdb", test_split_percent=30)
    plan = reader.plan
    chunks = plan.every_chunk
    rows = _scanned(reader)
    cache = ChunkCache(tmp_path / "parts")
    writers = ChunkWriters(plan, cache, range(len(chunks)), budget=10_000)
    for batch in rows.to_batches(max_chunksize=300):
        writers.add(batch)
    assert sorted(writers.commit()) == list(range(len(chunks)))
    writers.close()
    assert writers.flushes > 5
    for chunk in chunks:
        entry = cache.get(plan.chunk_key(chunk))
        assert entry is not None and entry.column(0).num_chunks > 1
    _assert_entries_hold_rows_in_scan_order(plan, cache, rows)


def _flushes_after_each(writers: ChunkWriters, batches: list[pa.RecordBatch]) -> list[int]:
    """The writers' count of flushes after each batch added; then every chunk committed,
    and the writers closed."""
    flushes = []
    try:
        for batch in batches:
            writers.add(batch)
            flushes.append(writers.flushes)
        assert sorted(writers.commit()) == list(range(len(writers.chunks)))
    finally:
        writers.close()
    return flushes


def test_a_flush_comes_once_the_buffered_bytes_pass_the_budget(
    make_reader: MakeReader, tmp_path: Path
) -> None:
    """The rows buffered are written once their bytes since the last flush pass the budget
    (not once they reach it); commit writes the rest, however few rows."""
    reader = make_reader(datastore="chunk-by-chunk-duckdb", test_split_percent=30)
    plan = reader.plan
    rows = _scanned(reader).combine_chunks()
    cuts = [(0, 1_000), (1_000, 200), (1_200, 200), (1_400, ROWS - 1_401), (ROWS - 1, 1)]
    batches = [rows.slice(start, length).to_batches()[0] for start, length in cuts]
    budget = batches[1].nbytes + batches[2].nbytes
    assert batches[0].nbytes > budget and batches[3].nbytes > budget
    cache = ChunkCache(tmp_path / "parts")
    writers = ChunkWriters(plan, cache, range(len(plan.every_chunk)), budget)
    # The third batch brings the budget's bytes exactly.
    assert _flushes_after_each(writers, batches) == [1, 1, 1, 2, 2]
    assert writers.flushes == 3  # the last row, by itself
    _assert_entries_hold_rows_in_scan_order(plan, cache, rows)


def test_the_first_flush_too_comes_only_past_the_budget(
    make_reader: MakeReader, tmp_path: Path
) -> None:
    """Before any flush, batches that bring the budget's bytes exactly are not written
    yet; the next batch passes it and flushes them all, and commit has nothing left."""
    reader = make_reader(datastore="chunk-by-chunk-duckdb", test_split_percent=30)
    plan = reader.plan
    rows = _scanned(reader).combine_chunks()
    cuts = [(0, 200), (200, 200), (400, ROWS - 400)]
    batches = [rows.slice(start, length).to_batches()[0] for start, length in cuts]
    cache = ChunkCache(tmp_path / "first")
    budget = batches[0].nbytes + batches[1].nbytes
    writers = ChunkWriters(plan, cache, range(len(plan.every_chunk)), budget)
    assert _flushes_after_each(writers, batches) == [0, 0, 1]
    assert writers.flushes == 1
    _assert_entries_hold_rows_in_scan_order(plan, cache, rows)


class _NamingCache(ChunkCache):
    """A cache noting the name of each thread that opens one of its entries."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.threads: set[str] = set()

    def writer(self, key: str, schema: pa.Schema) -> EntryWriter:
        self.threads.add(threading.current_thread().name)
        return super().writer(key, schema)


def test_the_fills_writer_threads_are_named_as_faucets(
    make_reader: MakeReader, tmp_path: Path
) -> None:
    """The threads writing a fill's entries are named ``faucet-fill-write_N``: Faucet's
    threads are told apart by their ``faucet`` names (a leak check looks for them)."""
    reader = make_reader(datastore="chunk-by-chunk-duckdb", test_split_percent=30)
    plan = reader.plan
    cache = _NamingCache(tmp_path / "named")
    writers = ChunkWriters(plan, cache, range(len(plan.every_chunk)), budget=10_000)
    try:
        for batch in _scanned(reader).to_batches(max_chunksize=300):
            writers.add(batch)
        assert sorted(writers.commit()) == list(range(len(plan.every_chunk)))
    finally:
        writers.close()
    assert cache.threads
    assert {name.rpartition("_")[0] for name in cache.threads} == {"faucet-fill-write"}


def test_a_commit_past_the_budget_evicts_older_entries_never_those_it_wrote(
    make_reader: MakeReader, tmp_path: Path
) -> None:
    """A cache smaller than the chunks a fill writes: the commit evicts the entries there
    before, and keeps every entry it wrote and reports cached, though over the budget."""
    reader = make_reader(datastore="chunk-by-chunk-duckdb", test_split_percent=30)
    plan = reader.plan
    chunks = plan.every_chunk
    rows = _scanned(reader)

    def write(cache: ChunkCache) -> dict[int, str]:
        writers = ChunkWriters(plan, cache, range(len(chunks)), budget=10**9)
        try:
            for batch in rows.to_batches():
                writers.add(batch)
            return writers.commit()
        finally:
            writers.close()

    unbounded = ChunkCache(tmp_path / "unbounded")
    assert sorted(write(unbounded)) == list(range(len(chunks)))
    largest = max(p.stat().st_size for p in unbounded.directory.glob("*.arrow"))
    budget = unbounded.total_bytes // 2
    assert largest < budget  # each entry fits, not all of them
    cache = ChunkCache(tmp_path / "bounded", max_bytes=budget)
    assert cache.put("older", rows.slice(0, 10))
    assert sorted(write(cache)) == list(range(len(chunks)))
    assert cache.get("older") is None
    assert all(cache.get(plan.chunk_key(chunk)) is not None for chunk in chunks)
    assert cache.total_bytes == unbounded.total_bytes


@pytest.mark.parametrize("count", [2**16, 2**16 + 1])
def test_chunk_indexes_past_16_bits_are_written_to_their_own_entries(
    count: int, tmp_path: Path
) -> None:
    """A plan of 65,536 chunks or more (one row each; both splits have 65,537 buckets),
    most cached already: each entry written holds its own chunk's row, though the rows come
    last chunk first."""
    request = PlanRequest(SourceSpec(table="t"), SplitSpec(("id",), 0.0), 1)
    chunks = tuple(ChunkSpec("train", b, b, b + 1, 1, b) for b in range(count))
    plan = Plan("w", request, ("id",), None, "rows", {"train": chunks, "eval": ()})
    buckets = list(reversed(range(count)))  # a row's hash is its bucket
    batch = pa.record_batch({"id": buckets, layout.HASH_COLUMN: pa.array(buckets, pa.uint64())})
    wanted = [0, 1, count - 1]
    cache = ChunkCache(tmp_path / "many")
    writers = ChunkWriters(plan, cache, wanted, budget=10**9)
    try:
        writers.add(batch)
        assert sorted(writers.commit()) == wanted
    finally:
        writers.close()
    for index in wanted:
        entry = cache.get(plan.chunk_key(chunks[index]))
        assert entry is not None and entry["id"].to_pylist() == [index]


@pytest.mark.parametrize("last", [False, True])
def test_a_written_chunk_short_of_a_row_fails_the_commit_naming_it(
    last: bool, make_reader: MakeReader, tmp_path: Path
) -> None:
    """A chunk written with a row fewer than planned, be it the plan's first or its last,
    fails the commit naming the chunk and both counts; no entry is committed."""
    reader = make_reader(datastore="chunk-by-chunk-duckdb", test_split_percent=30)
    plan = reader.plan
    chunks = plan.every_chunk
    rows = _scanned(reader).combine_chunks()
    _, where = checks.RowCheck(plan).add(rows)
    short = len(chunks) - 1 if last else 0
    dropped = where.tolist().index(short)  # the chunk's first row in the scan
    rows = pa.concat_tables([rows.slice(0, dropped), rows.slice(dropped + 1)])
    cache = ChunkCache(tmp_path / "short")
    writers = ChunkWriters(plan, cache, range(len(chunks)), budget=10**9)
    try:
        for batch in rows.to_batches():
            writers.add(batch)
        with pytest.raises(checks.PlanBreach) as refused:
            writers.commit()
    finally:
        writers.close()
    chunk = chunks[short]
    assert refused.value.rule.startswith(
        f"{chunk.split} chunk {chunk.index}: {chunk.rows - 1:,} rows where the plan counted "
        f"{chunk.rows:,}"
    )
    assert all(cache.get(plan.chunk_key(c)) is None for c in chunks)


def test_only_the_chunks_written_are_checked_at_the_commit(
    make_reader: MakeReader, tmp_path: Path
) -> None:
    """Rows of the chunks wanted only (a chunk cached already left out of the scan): the
    chunk left out is not checked, and every chunk wanted is committed with its rows."""
    reader = make_reader(datastore="chunk-by-chunk-duckdb", test_split_percent=30)
    plan = reader.plan
    chunks = plan.every_chunk
    rows = _scanned(reader).combine_chunks()
    _, where = checks.RowCheck(plan).add(rows)
    cached = len(chunks) // 2
    wanted = [i for i in range(len(chunks)) if i != cached]
    rows = rows.filter(pa.array(where != cached))
    cache = ChunkCache(tmp_path / "wanted")
    writers = ChunkWriters(plan, cache, wanted, budget=10**9)
    try:
        for batch in rows.to_batches():
            writers.add(batch)
        assert sorted(writers.commit()) == wanted
    finally:
        writers.close()
    assert cache.get(plan.chunk_key(chunks[cached])) is None
    for index in wanted:
        entry = cache.get(plan.chunk_key(chunks[index]))
        assert entry is not None
        assert checks.check_chunk(plan, chunks[index], entry, ordered=True).equals(entry)


def test_entries_a_fill_wrote_are_not_checked_again_by_its_process(
    make_reader: MakeReader, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[ChunkSpec] = []

    def counted(plan: Plan, chunk: ChunkSpec, table: pa.Table, ordered: bool = False) -> pa.Table:
        checked.append(chunk)
        return checks.check_chunk(plan, chunk, table, ordered)

    monkeypatch.setattr(fetch, "check_chunk", counted)
    cache = str(tmp_path / "shared-cache")
    filler = make_reader(datastore="counting-scans", epochs=2, cache_dir=cache)
    assert sorted(epoch_ids(filler)) == list(range(ROWS))
    assert sorted(epoch_ids(filler)) == list(range(ROWS))
    # Only a chunk read by itself while the scan ran is checked; the scan checked the rest.
    assert CountingScans.scans.reads == 1 and len(checked) <= 1
    checked.clear()
    # Another reader of the same cache did not write its entries: it checks each, once.
    other = make_reader(datastore="counting-scans", epochs=2, cache_dir=cache)
    assert sorted(epoch_ids(other)) == list(range(ROWS))
    assert sorted(epoch_ids(other)) == list(range(ROWS))
    assert sorted(c.index for c in checked) == [c.index for c in other.plan.chunks["train"]]
    assert CountingScans.scans.reads == 1


class _HeldCache(ChunkCache):
    """A cache whose entries open only once ``release`` is set (``opening`` says one waits)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.opening, self.release = threading.Event(), threading.Event()

    def writer(self, key: str, schema: pa.Schema) -> EntryWriter:
        self.opening.set()
        assert self.release.wait(timeout=60)
        return super().writer(key, schema)


def test_closing_the_writers_waits_for_the_writes_under_way(
    make_reader: MakeReader, tmp_path: Path
) -> None:
    """Closing drops the entries not committed only once the writes under way have ended:
    none is still being written when close returns, and none is left in the cache."""
    reader = make_reader(datastore="chunk-by-chunk-duckdb", test_split_percent=30)
    plan = reader.plan
    cache = _HeldCache(tmp_path / "held")
    writers = ChunkWriters(plan, cache, range(len(plan.every_chunk)), budget=1)
    writers.add(_scanned(reader).to_batches()[0])  # past the budget: its writes begin
    assert cache.opening.wait(timeout=60)
    closing = threading.Thread(target=writers.close)
    closing.start()
    closing.join(timeout=0.5)
    assert closing.is_alive()  # it cannot end while a write is held
    cache.release.set()
    closing.join(timeout=60)
    assert not closing.is_alive()
    assert all(cache.get(plan.chunk_key(chunk)) is None for chunk in plan.every_chunk)


@pytest.fixture
def soft_open_files() -> Iterator[int]:
    """This process's soft limit of open files set to 256 for the test (the hard one left
    as it is, so that the limit can be restored)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard < 1_000:
        pytest.fail(f"the test needs a finite hard limit of open files of 1,000 or more: {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        yield 256
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_fill_raises_the_soft_open_files_limit_of_its_own_process(
    soft_open_files: int,
) -> None:
    def soft() -> int:
        return resource.getrlimit(resource.RLIMIT_NOFILE)[0]

    assert (_allow_open_files(100), soft()) == (True, soft_open_files)  # left as it is
    assert (_allow_open_files(600), soft()) == (True, 600)
    assert (_allow_open_files(1_000), soft()) == (True, 1_000)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert (_allow_open_files(hard + 1), soft()) == (False, 1_000)  # past the hard limit
    assert (_allow_open_files(hard), soft()) == (True, hard)


def test_a_fill_raises_the_soft_limit_to_a_file_per_chunk_and_the_spare_ones(
    soft_open_files: int, make_reader: MakeReader
) -> None:
    reader = make_reader(chunk_size=20, test_split_percent=10)
    chunks = len(reader.plan.every_chunk)
    assert chunks > soft_open_files / 2
    assert len(set(epoch_ids(reader))) == reader.rows("train")
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert soft == chunks + fill._SPARE_FILES


def test_a_soft_open_files_limit_the_system_will_not_raise_refuses_the_fill(
    soft_open_files: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However the system refuses (an error of its own, not only a limit past the hard
    one), the fill is refused and the chunks are read one by one."""

    def refused(which: int, limits: tuple[int, int]) -> None:
        raise OSError("operation not permitted")

    with monkeypatch.context() as patched:  # undone before the fixture restores the limit
        patched.setattr(resource, "setrlimit", refused)
        assert _allow_open_files(600) is False


OPEN_FILES = """
import resource
from faucet_core.fill import _allow_open_files

def soft():
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]

resource.setrlimit(resource.RLIMIT_NOFILE, (256, 1024))
print(_allow_open_files(100), soft())   # within the soft limit: left as it is
print(_allow_open_files(256), soft())
print(_allow_open_files(600), soft())   # past it, within the hard one: raised
print(_allow_open_files(2000), soft())  # past the hard limit: refused
"""


def test_the_fill_raises_the_open_files_limit_as_far_as_the_hard_one() -> None:
    """A fill opens a file per chunk: the process's soft limit is raised to that when the
    hard limit allows it, and the fill is refused (chunks read one by one) when not."""
    ran = subprocess.run(
        [sys.executable, "-c", OPEN_FILES], capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split("\n")[:4] == ["True 256", "True 256", "True 600", "False 600"]


def _counted_scans(reader: Reader) -> tuple[Callable[[], Iterable[pa.RecordBatch]], list[int]]:
    """A scan of the reader's whole source, and the list its calls are counted in."""
    calls: list[int] = []

    def scan() -> Iterable[pa.RecordBatch]:
        calls.append(1)
        scanned = reader.stream.warehouse().scan(reader.plan)
        assert scanned is not None
        return scanned

    return scan, calls


def _copied_ids(reader: Reader, folder: Path) -> list[int]:
    ids = []
    for chunk in reader.plan.every_chunk:
        table = read_entry(folder, reader.plan.chunk_key(chunk))
        assert table is not None and table.num_rows == chunk.rows
        ids.extend(table.column("id").to_pylist())
    return sorted(ids)


def test_a_copy_holds_every_chunk_from_one_scan(make_reader: MakeReader, tmp_path: Path) -> None:
    reader = make_reader(chunk_size=500)
    scan, calls = _counted_scans(reader)
    write_chunk_copy(reader.plan, scan, tmp_path, budget=10_000)  # several flushes
    assert len(calls) == 1
    assert _copied_ids(reader, tmp_path) == list(range(ROWS))


def test_a_copy_is_written_a_group_of_chunks_at_a_time_where_files_cannot_all_be_open(
    make_reader: MakeReader, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = make_reader(chunk_size=500)
    chunks = len(reader.plan.every_chunk)
    monkeypatch.setattr(fill, "_allow_open_files", lambda count: False)
    monkeypatch.setattr(fill.resource, "getrlimit", lambda which: (fill._SPARE_FILES + 3, 10**6))
    scan, calls = _counted_scans(reader)
    write_chunk_copy(reader.plan, scan, tmp_path)
    assert len(calls) == math.ceil(chunks / 3) > 1
    assert _copied_ids(reader, tmp_path) == list(range(ROWS))


def test_a_copy_of_rows_that_break_the_plan_fails(make_reader: MakeReader, tmp_path: Path) -> None:
    reader = make_reader(chunk_size=500)
    scan, _ = _counted_scans(reader)

    def one_row_short() -> Iterator[pa.RecordBatch]:
        table = pa.Table.from_batches(list(scan()))
        yield from table.slice(1).to_batches()

    with pytest.raises(checks.PlanBreach, match="rows where the plan counted"):
        write_chunk_copy(reader.plan, one_row_short, tmp_path)


def test_a_copy_whose_files_cannot_be_written_fails(
    make_reader: MakeReader, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = make_reader(chunk_size=500)
    scan, _ = _counted_scans(reader)

    def full(descriptor: int, data: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_module, "_write_all", full)
    chunks = len(reader.plan.every_chunk)
    with pytest.raises(OSError, match=f"could not write {chunks} chunks into "):
        write_chunk_copy(reader.plan, scan, tmp_path)
