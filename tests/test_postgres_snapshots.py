"""Planning without a copy pins the rows counted with an exported snapshot (real server)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

import adbc_driver_manager
import psycopg
import pytest

import faucet_postgres.hash_arrays
import faucet_postgres.warehouse
from faucet_core import Reader
from faucet_core.errors import ChunkReadError
from faucet_core.torch import FaucetDataLoader, FaucetIterableDataset
from tests.conftest import ROWS, epoch_ids
from tests.pgserver import PostgresServer, importing_sessions

MakeReader = Callable[..., Reader]


@pytest.fixture
def table(own_pg_table: Callable[[str], str]) -> str:
    """A copy of table ``t`` of this test's own, dropped after it."""
    return own_pg_table("SELECT * FROM t")


@pytest.fixture
def make_pinned_reader(table: str, postgres_url: str, make_reader: MakeReader) -> MakeReader:
    """Readers of ``table`` (closed before it is dropped) that plan without a copy, keyed
    by every column (a changed value moves its row), with the other tests' defaults."""
    return functools.partial(
        make_reader, datastore="postgres", dsn=postgres_url, database=None, table_name=table,
        copy_when_planning=False, split_key=None, test_split_percent=20,
    )  # fmt: skip


def change_rows(postgres_url: str, table: str) -> None:
    """Delete, add and change rows of ``table``."""
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(f"DELETE FROM {table} WHERE id < 50")
        db.execute(f"INSERT INTO {table} SELECT id + {ROWS}, x1, x2, name, label, ds FROM t "
                   f"WHERE id < 70")  # fmt: skip
        db.execute(f"UPDATE {table} SET x1 = x1 + 1 WHERE id % 7 = 0")


def pins(postgres_url: str) -> int:
    """The sessions holding a snapshot open: idle in the transaction that exported it."""
    with psycopg.connect(postgres_url, autocommit=True) as db:
        (count,) = db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' "
            "AND query LIKE '%pg_export_snapshot%' AND datname = current_database()"
        ).fetchone() or (0,)
    return int(count)


def test_rows_changed_after_planning_are_read_as_planned(
    make_pinned_reader: MakeReader, postgres_url: str, table: str
) -> None:
    reader = make_pinned_reader()
    assert reader.plan.pinned.get("snapshot")
    change_rows(postgres_url, table)
    assert sorted(epoch_ids(reader) + epoch_ids(reader, eval=True)) == list(range(ROWS))


def test_without_the_snapshot_a_change_fails_the_read(
    make_pinned_reader: MakeReader, postgres_url: str, table: str
) -> None:
    reader = make_pinned_reader(pin_snapshot=False)
    assert not reader.plan.pinned
    change_rows(postgres_url, table)
    with pytest.raises(ChunkReadError, match="the source changed after planning"):
        epoch_ids(reader)


def test_the_snapshot_locks_no_table(
    make_pinned_reader: MakeReader, postgres_url: str, table: str
) -> None:
    make_pinned_reader()
    with psycopg.connect(postgres_url) as db:  # a transaction, rolled back
        db.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE NOWAIT")


def test_dataloader_workers_read_the_rows_planned(
    make_pinned_reader: MakeReader, postgres_url: str, table: str
) -> None:
    reader = make_pinned_reader(columns=["id", "x2", "label"], split_key="id",
                                test_split_percent=0)  # fmt: skip
    change_rows(postgres_url, table)
    batches = list(FaucetDataLoader(FaucetIterableDataset(reader), num_workers=2))
    ids = [int(i) for features, _ in batches for i in features[:, 0]]
    assert sorted(ids) == list(range(ROWS))


def test_the_snapshot_is_released_once_the_fill_has_read_every_row(
    make_pinned_reader: MakeReader, postgres_url: str
) -> None:
    before = pins(postgres_url)
    reader = make_pinned_reader()
    assert pins(postgres_url) == before + 1
    train = epoch_ids(reader)  # the fill reads every row, eval's too
    assert pins(postgres_url) == before
    assert sorted(train + epoch_ids(reader, eval=True)) == list(range(ROWS))


def test_a_copy_made_at_the_first_read_holds_the_rows_planned(
    make_pinned_reader: MakeReader, postgres_url: str, table: str
) -> None:
    before = pins(postgres_url)
    # ds needs a bind parameter: the copy is made at the first read, under the snapshot.
    reader = make_pinned_reader(ds="2024-01-02")
    change_rows(postgres_url, table)
    expected = [i for i in range(ROWS) if i % 3 == 1]
    assert sorted(epoch_ids(reader) + epoch_ids(reader, eval=True)) == expected
    assert pins(postgres_url) == before  # the copy holds the rows now


def test_a_reader_closed_before_the_reads_leaves_them_the_rows_as_they_are(
    make_pinned_reader: MakeReader, postgres_url: str, table: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    planner = make_pinned_reader(use_cache=False)
    planner.close()  # releases the snapshot
    with contextlib.closing(Reader(planner.config, plan=planner.plan)) as unchanged:
        with caplog.at_level(logging.WARNING):
            read = epoch_ids(unchanged) + epoch_ids(unchanged, eval=True)
        assert sorted(read) == list(range(ROWS))
    assert "is gone" in caplog.text
    change_rows(postgres_url, table)
    changed = Reader(planner.config, plan=planner.plan)
    with contextlib.closing(changed), pytest.raises(ChunkReadError, match="source changed"):
        epoch_ids(changed)


def test_a_pinned_value_that_is_not_a_snapshot_is_never_run(
    make_pinned_reader: MakeReader, postgres_url: str, table: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    planner = make_pinned_reader()
    forged = dataclasses.replace(planner.plan, pinned={"snapshot": f"1-1'; DROP TABLE {table}; --"})
    with contextlib.closing(Reader(planner.config, plan=forged)) as reader:
        with caplog.at_level(logging.WARNING):
            read = epoch_ids(reader) + epoch_ids(reader, eval=True)
        assert sorted(read) == list(range(ROWS))
    assert "is not a snapshot's name" in caplog.text
    with psycopg.connect(postgres_url, autocommit=True) as db:
        assert db.execute(f"SELECT count(*) FROM {table}").fetchone() == (ROWS,)


@pytest.mark.parametrize("streams", [1, 3])
def test_the_fill_reads_a_table_over_read_streams_connections(
    make_pinned_reader: MakeReader, postgres_url: str, table: str,
    postgres_server: PostgresServer, streams: int,
) -> None:  # fmt: skip
    mark = postgres_server.log_offset()
    reader = make_pinned_reader(read_streams=streams, seed=streams)
    change_rows(postgres_url, table)  # each connection imports the snapshot
    assert sorted(epoch_ids(reader) + epoch_ids(reader, eval=True)) == list(range(ROWS))
    fill = [
        s for s in postgres_server.statements("postgres", mark)
        if s.startswith("COPY (SELECT") and "LIMIT 0" not in s and "faucet_rows" not in s
    ]  # fmt: skip
    # One read of the whole table, or one per range of its blocks (the first chunk may be
    # read by itself too, filtered on its buckets).
    assert len(fill) == streams
    assert sum("ctid" in s for s in fill) == (streams if streams > 1 else 0)


@pytest.mark.parametrize("streams", [1, 3])
def test_each_connection_counting_a_range_of_blocks_counts_the_rows_of_the_snapshot(
    make_pinned_reader: MakeReader, postgres_url: str, table: str,
    monkeypatch: pytest.MonkeyPatch, streams: int,
) -> None:  # fmt: skip
    """The rows change once the count's first range of blocks is counted; each of
    ``streams`` connections counts one of its ranges (at least), and those after the
    change too, in the snapshot taken before."""
    monkeypatch.setattr(faucet_postgres.hash_arrays, "PART_BYTES", 8192)  # a query per block
    everyone_counting = threading.Barrier(streams, timeout=60)
    changed: list[bool] = []
    lock = threading.Lock()
    hashes = faucet_postgres.hash_arrays.hashes
    counted_by: set[int] = set()

    def changing_first(*sent: Any) -> Any:  # a range's hashes, sent by a count's query
        with lock:
            if not changed:
                change_rows(postgres_url, table)
                changed.append(True)
            first = threading.get_ident() not in counted_by
            counted_by.add(threading.get_ident())
        if first:
            everyone_counting.wait()
        return hashes(*sent)

    monkeypatch.setattr(faucet_postgres.hash_arrays, "hashes", changing_first)
    reader = make_pinned_reader(read_streams=streams, seed=streams)
    assert len(counted_by) == streams
    assert sum(chunk.rows for chunk in reader.plan.every_chunk) == ROWS
    monkeypatch.undo()
    assert sorted(epoch_ids(reader) + epoch_ids(reader, eval=True)) == list(range(ROWS))


def test_the_reads_take_connections_opened_while_planning(
    make_pinned_reader: MakeReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened_by: list[str] = []
    connect = adbc_driver_manager.AdbcConnection

    def watched(*args: Any, **kwargs: Any) -> Any:  # the driver's own connection, watched
        opened_by.append(threading.current_thread().name)
        return connect(*args, **kwargs)

    monkeypatch.setattr(adbc_driver_manager, "AdbcConnection", watched)
    reader = make_pinned_reader(read_streams=2)
    assert sorted(epoch_ids(reader) + epoch_ids(reader, eval=True)) == list(range(ROWS))
    # One to describe the source, one per stream of the fill and one for a first chunk
    # read by itself: all opened in the background, while the reader planned. (A chunk
    # of the eval pass read by itself while the fill runs opens one of its own.)
    assert opened_by[:4] == ["faucet-connect"] * 4
    assert not [name for name in opened_by if name.startswith(("faucet-stream", "faucet-fill"))]


def test_connections_opened_for_reads_that_never_come_are_closed_soon_after_planning(
    make_pinned_reader: MakeReader, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(faucet_postgres.warehouse, "UNTAKEN_FOR", 0.1)
    before = pins(postgres_url)
    reader = make_pinned_reader()  # its reads would come in DataLoader workers
    snapshot = reader.plan.pinned["snapshot"]
    assert importing_sessions(postgres_url, snapshot, 0) == 0
    assert pins(postgres_url) == before + 1  # the snapshot is still held for them
    assert sorted(epoch_ids(reader) + epoch_ids(reader, eval=True)) == list(range(ROWS))
