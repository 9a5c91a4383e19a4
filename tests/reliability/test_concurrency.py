"""Processes sharing a cache folder (and a DuckDB scratch folder) at once.

Readers started together (released by a barrier) serve each of their epochs exactly
once, leave no corrupt entry, and keep the folder within its byte budget whoever wrote
its entries. An entry evicted by one process while another reads it, and a scratch copy
removed by the process that made it while another reads it, never cost a row: the reader
falls back to the warehouse.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from faucet_core.cache import ChunkCache
from faucet_core.plan import Plan
from faucet_core.warehouse import ScratchDataMissing
from tests.conftest import duckdb_scratch_copies
from tests.reliability.figures import record
from tests.reliability.procs import (
    TABLE_ROWS,
    Child,
    check_cache,
    reader_settings,
    served_exactly_once,
    start_together,
)

IDS = np.arange(TABLE_ROWS)
#: About five of the ten entries of a 2,000-row chunking of the table.
SMALL_BUDGET = 540_000


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.glob("*.arrow"))


@pytest.mark.parametrize(
    ("processes", "datastore", "budget"),
    [
        (2, "duckdb", 4 * 2**20),
        (4, "duckdb", 4 * 2**20),
        (4, "chunk-by-chunk-duckdb", SMALL_BUDGET),
        (2, "postgres", 4 * 2**20),
    ],
)
def test_processes_with_one_config_and_cache_folder_each_serveserved_exactly_once(
    processes: int,
    datastore: str,
    budget: int,
    duckdb_table: Path,
    tmp_path: Path,
    children: list[Child],
    request: pytest.FixtureRequest,
) -> None:
    cache = tmp_path / "cache"
    source: dict[str, Any] = {"datastore": datastore}
    if datastore == "postgres":  # the same rows (ids 0-4999) on the PostgreSQL server
        source.update(dsn=request.getfixturevalue("postgres_url"), chunk_size=1_000)
    expected = np.arange(5_000) if datastore == "postgres" else IDS
    settings = reader_settings(
        None if datastore == "postgres" else duckdb_table,
        cache,
        epochs=2,
        cache_max_bytes=budget,
        **source,
    )
    jobs = [({"settings": settings}, tmp_path / f"p{i}") for i in range(processes)]
    started = start_together(jobs)
    children.extend(started)
    results = [child.finish() for child in started]
    rows = sum(served_exactly_once(result, expected) for result in results)
    check = check_cache(cache, results[0].plan_json)
    assert check.bad == [] and check.temp_files == 0
    assert check.bytes <= budget
    record(
        f"{processes} processes, one config and cache folder ({datastore})",
        processes=processes,
        epochs=2 * processes,
        rows_checked=rows,
        lost=0,
        duplicated=0,
        wrong=0,
        entries_verified=check.entries,
        folder_bytes=check.bytes,
        budget=budget,
        evictions=sum(r.stats.get("evictions", 0) for r in results),
    )


def test_processes_reading_other_plans_keep_the_folder_within_its_budget(
    duckdb_table: Path, tmp_path: Path, children: list[Child]
) -> None:
    cache = tmp_path / "cache"
    # Four chunkings of the table: no entry of one is an entry of another, so each
    # process sees the others' entries only in the folder.
    jobs = []
    for i, chunk_size in enumerate([2_000, 1_000, 4_000, 1_500]):
        settings = reader_settings(
            duckdb_table,
            cache,
            datastore="chunk-by-chunk-duckdb",
            chunk_size=chunk_size,
            epochs=2,
            cache_max_bytes=SMALL_BUDGET,
        )
        jobs.append(({"settings": settings}, tmp_path / f"p{i}"))
    started = start_together(jobs)
    children.extend(started)
    results = [child.finish() for child in started]
    rows = sum(served_exactly_once(result) for result in results)
    for result in results:
        assert check_cache(cache, result.plan_json).bad == []
    size = _folder_bytes(cache)
    assert size <= SMALL_BUDGET
    record(
        "4 processes, 4 plans, one cache folder under a budget",
        processes=4,
        epochs=8,
        rows_checked=rows,
        lost=0,
        duplicated=0,
        folder_bytes=size,
        budget=SMALL_BUDGET,
        evictions=sum(r.stats.get("evictions", 0) for r in results),
    )


def test_eviction_counts_the_entries_other_caches_wrote_after_it_opened(tmp_path: Path) -> None:
    table = pa.table({"id": np.arange(1_000), "x": np.zeros(1_000)})
    probe = ChunkCache(tmp_path / "probe")
    probe.put("p", table)
    size = probe.total_bytes
    mine = ChunkCache(tmp_path / "cache", max_bytes=3 * size)
    theirs = ChunkCache(tmp_path / "cache", max_bytes=3 * size)  # opened before any write
    for key in "abc":
        theirs.put(key, table)
    mine.put("d", table)
    assert _folder_bytes(tmp_path / "cache") <= 3 * size
    assert mine.get("d") is not None  # the entry just written stays
    assert (mine.stats.evictions, theirs.get("a")) == (1, None)  # theirs, least recent


@pytest.mark.parametrize("when", ["hold_read", "hold_after_read"])
def test_an_entry_evicted_while_another_process_reads_it_costs_no_row(
    when: str, duckdb_table: Path, tmp_path: Path, children: list[Child]
) -> None:
    cache = tmp_path / "cache"
    # The reader fills the cache in epoch 1 and reads each entry back; it stops at a
    # seeded read of epoch 2, before or after reading the entry's file.
    held_read = 10 + random.Random(len(when)).randrange(1, 10)
    settings = reader_settings(duckdb_table, cache, epochs=2)
    reader = Child({"settings": settings, "hooks": {when: held_read}}, tmp_path / "reader")
    children.append(reader)
    held = Path(reader.wait_for("blocked read").split(" ", 2)[2])
    assert held.exists()
    # Another process, another plan, a budget of about one entry: it evicts the rest.
    evictor_settings = reader_settings(
        duckdb_table,
        cache,
        datastore="chunk-by-chunk-duckdb",
        chunk_size=1_000,
        cache_max_bytes=120_000,
        seed=3,
    )
    evictor = Child({"settings": evictor_settings}, tmp_path / "evictor")
    children.append(evictor)
    evicted = evictor.finish()
    assert not held.exists()
    reader.release()
    result = reader.finish()
    rows = served_exactly_once(result) + served_exactly_once(evicted)
    second = result.epochs[1]
    plan = Plan.from_json(result.plan_json)
    # Read before its file went: served as read; read after: fetched again.
    assert second.chunks_fetched >= (1 if when == "hold_read" else 0)
    assert second.chunks_cached + second.chunks_fetched == len(plan.chunks["train"])
    assert check_cache(cache, result.plan_json).bad == []
    record(
        f"eviction by another process at read {held_read} ({when})",
        evictions=evicted.stats["evictions"],
        refetched_chunks=second.chunks_fetched,
        rows_checked=rows,
        lost=0,
        duplicated=0,
        wrong=0,
    )


def test_a_reader_beside_a_process_evicting_its_entries_serves_every_epoch(
    duckdb_table: Path, tmp_path: Path, children: list[Child]
) -> None:
    cache = tmp_path / "cache"
    settings = reader_settings(duckdb_table, cache, epochs=4)
    evictor = reader_settings(
        duckdb_table,
        cache,
        datastore="chunk-by-chunk-duckdb",
        chunk_size=1_000,
        cache_max_bytes=120_000,
        epochs=4,
        seed=3,
    )
    started = start_together(
        [({"settings": settings}, tmp_path / "reader"), ({"settings": evictor}, tmp_path / "ev")]
    )
    children.extend(started)
    reader, evicting = (child.finish() for child in started)
    rows = served_exactly_once(reader) + served_exactly_once(evicting)
    assert check_cache(cache, reader.plan_json).bad == []
    record(
        "reader beside an evicting process, 4 epochs each",
        evictions=evicting.stats["evictions"],
        refetched_chunks=sum(e.chunks_fetched for e in reader.epochs[1:]),
        rows_checked=rows,
        lost=0,
        duplicated=0,
        wrong=0,
    )


def test_a_scratch_copy_removed_by_its_maker_while_another_process_reads_it_costs_no_row(
    duckdb_table: Path, tmp_path: Path, children: list[Child]
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    # No cache: every chunk is read from the scratch copy, by both processes; one fetch
    # thread, so the read held is the one that finds the copy gone.
    settings: dict[str, Any] = reader_settings(
        duckdb_table,
        tmp_path / "unused",
        datastore="chunk-by-chunk-duckdb",
        use_cache=False,
        scratch_dir=str(scratch),
        fetch_threads=1,
    )
    maker = Child({"settings": settings, "hooks": {"close_after_epoch": 1}}, tmp_path / "maker")
    children.append(maker)
    maker.wait_for("blocked close")
    (copy,) = duckdb_scratch_copies(scratch)
    (copy / "planted").touch()  # gone with the copy, not in one made again
    held_read = random.Random(5).randrange(1, 10)
    other = Child({"settings": settings, "hooks": {"hold_scratch_read": held_read}}, tmp_path / "o")
    children.append(other)
    other.wait_for("blocked scratch")  # past its check that the copy is there
    maker.release()
    maker.finish()
    assert not (copy / "planted").exists()
    other.release()
    result = other.finish()
    rows = served_exactly_once(result)
    record(
        f"scratch copy removed by its maker during another's read {held_read}",
        removals=1,
        rows_checked=rows,
        lost=0,
        duplicated=0,
        wrong=0,
    )


def test_a_scratch_copy_being_deleted_is_never_read_in_part(
    duckdb_table: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from faucet_core import get_batch_reader
    from faucet_duckdb import warehouse as duckdb_warehouse

    settings = reader_settings(duckdb_table, tmp_path / "cache", scratch_dir=str(tmp_path))
    with get_batch_reader(**settings) as reader:
        plan, connection = reader.plan, reader.config.connection
    maker = duckdb_warehouse.DuckDBWarehouse(connection)
    other = duckdb_warehouse.DuckDBWarehouse(connection)
    maker.materialize(plan)
    chunk = plan.chunks["train"][3]
    whole = other.read_buckets(plan, chunk)
    assert whole.num_rows == chunk.rows
    # The maker deletes its copy while the other reads: the read happens after the first
    # of the chunk's files is gone and before the rest (and the copy's marker) are.
    remove = duckdb_warehouse.shutil.rmtree
    reads: list[BaseException | int] = []

    def rmtree_with_a_read_between(path: Any, ignore_errors: bool = False) -> None:
        files = sorted(Path(path).glob(f"{plan.chunk_key(chunk)}.*.arrow"))
        if files:  # the scratch copy (not the spill folder)
            files[0].unlink()
            try:
                reads.append(other.read_buckets(plan, chunk).num_rows)
            except ScratchDataMissing as exc:
                reads.append(exc)
        remove(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(duckdb_warehouse.shutil, "rmtree", rmtree_with_a_read_between)
    maker.close()
    monkeypatch.undo()
    assert len(reads) >= 1 and all(isinstance(r, ScratchDataMissing) for r in reads), reads
    other.materialize(plan)  # what the fetcher does on ScratchDataMissing: made again
    assert other.read_buckets(plan, chunk).num_rows == chunk.rows
    other.close()
    record("scratch copy deleted file by file during a read", removals=1, partial_reads=0)
