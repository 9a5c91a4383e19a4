"""The ADBC reader's connections: kept for the next read, opened ahead of need in the
background, and those opened for a snapshot closed with it (real server)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import adbc_driver_manager
import adbc_driver_postgresql
import psycopg
import pytest

from faucet_postgres import snapshots
from faucet_postgres.readers import AdbcReader
from tests.conftest import ROWS
from tests.pgserver import importing_sessions

#: The rows of each test's table.
TABLE_ROWS = 10


@pytest.fixture
def reader(postgres_url: str) -> Iterator[AdbcReader]:
    """A reader of the test server, closed after the test."""
    reader = AdbcReader(postgres_url)
    yield reader
    reader.close()


@pytest.fixture
def opened_by(reader: AdbcReader) -> list[str]:
    """The names of the threads that opened ``reader``'s connections, in order (the
    driver's own connect, watched)."""
    names: list[str] = []
    connect = reader._connect

    def watched(*args: Any, **kwargs: Any) -> Any:
        names.append(threading.current_thread().name)
        return connect(*args, **kwargs)

    reader._connect = watched
    return names


@pytest.fixture
def table(own_pg_table: Callable[[str], str]) -> str:
    """A table of this test's own, of :data:`TABLE_ROWS` rows, dropped after it."""
    return own_pg_table(f"SELECT i AS id FROM generate_series(1, {TABLE_ROWS}) i")


@pytest.fixture
def exported(postgres_url: str, table: str) -> Iterator[str]:
    """The name of a snapshot of ``table`` a session holds (as planning does) while the
    test runs."""
    with psycopg.connect(postgres_url, autocommit=True) as pin:
        yield snapshots.SnapshotPins.export(pin)


def count_rows(stream: Any) -> int:
    """The single count a streamed ``SELECT count(*)`` gives."""
    (counted,) = [row for batch in stream for row in batch.column(0).to_pylist()]
    return int(counted)


def test_a_read_takes_the_connection_the_one_before_it_kept(
    reader: AdbcReader, opened_by: list[str]
) -> None:
    assert reader.read("SELECT 1 AS one").column("one").to_pylist() == [1]
    assert reader.describe("SELECT 2 AS two LIMIT 0").names == ["two"]
    assert len(opened_by) == 1


def test_streams_take_the_connections_opened_ahead_for_their_snapshot(
    reader: AdbcReader, opened_by: list[str], exported: str, table: str, postgres_url: str
) -> None:
    reader.open_ahead(2, exported)
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(f"INSERT INTO {table} SELECT 0")  # after the export: not seen
    counted = [count_rows(reader.stream(f"SELECT count(*) FROM {table}", 1024, exported))]
    counted += [count_rows(reader.stream(f"SELECT count(*) FROM {table}", 1024, exported))]
    counted += [count_rows(reader.stream(f"SELECT count(*) FROM {table}", 1024, None))]
    assert counted == [TABLE_ROWS, TABLE_ROWS, TABLE_ROWS + 1]
    # The two streams took the two connections opened ahead; the third opened its own.
    assert opened_by == ["faucet-connect", "faucet-connect", "MainThread"]


def test_a_read_takes_a_connection_opened_ahead(reader: AdbcReader, opened_by: list[str]) -> None:
    reader.open_ahead(1)
    reader.open_ahead(1)  # one is being opened already: no other
    assert reader.read("SELECT 1 AS one").num_rows == 1
    assert opened_by == ["faucet-connect"]


def test_connections_opened_ahead_for_a_snapshot_gone_fail_the_stream_as_gone(
    reader: AdbcReader, opened_by: list[str]
) -> None:
    gone = "0000FFFF-0000FFFF-1"
    reader.open_ahead(1, gone)
    with pytest.raises(reader.errors) as raised:
        reader.stream("SELECT 1", 1024, gone)
    assert snapshots.is_gone(str(raised.value))
    assert opened_by == ["faucet-connect", "MainThread"]  # opened again to say why


def test_dropping_a_snapshot_closes_the_connections_opened_ahead_for_it(
    reader: AdbcReader, exported: str, postgres_url: str
) -> None:
    reader.open_ahead(3, exported)
    reader.drop_ahead(exported)  # waits for those still being opened
    assert importing_sessions(postgres_url, exported, 0) == 0
    assert count_rows(reader.stream("SELECT count(*) FROM t", 1024, exported)) == ROWS
    assert importing_sessions(postgres_url, exported, 0) == 0  # closed with the stream


def test_closing_the_reader_closes_the_connections_no_read_took(
    reader: AdbcReader, exported: str, postgres_url: str
) -> None:
    reader.open_ahead(2, exported)
    assert importing_sessions(postgres_url, exported, 2) == 2
    reader.close()
    assert importing_sessions(postgres_url, exported, 0) == 0


def test_a_connection_a_read_broke_is_not_kept(reader: AdbcReader, opened_by: list[str]) -> None:
    with pytest.raises(reader.errors):
        reader.read("SELECT no_such_column FROM t")
    assert reader.read("SELECT 1 AS one").num_rows == 1
    assert len(opened_by) == 2


def test_an_error_sent_while_the_rows_are_read_is_one_of_the_readers(
    reader: AdbcReader, opened_by: list[str]
) -> None:
    # The server fails the query after its first rows were sent: pyarrow raises it.
    failing = "SELECT 1 / (i - 300000) AS x FROM generate_series(1, 1000000) AS s(i)"
    with pytest.raises(reader.errors, match="division by zero"):
        reader.read(failing)
    with pytest.raises(reader.errors, match="division by zero"):
        for _ in reader.stream(failing, 1024):
            pass
    assert reader.read("SELECT 1 AS one").num_rows == 1
    assert opened_by == ["MainThread"] * 3  # the one the error broke was not kept


@pytest.fixture
def databases(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The driver's database objects opened during the test (its own connect, watched)."""
    opened: list[Any] = []
    connect = adbc_driver_postgresql.connect

    def watched(*args: Any, **kwargs: Any) -> Any:
        opened.append(connect(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(adbc_driver_postgresql, "connect", watched)
    return opened


def test_the_readers_connections_share_one_database(
    reader: AdbcReader, opened_by: list[str], databases: list[Any], exported: str
) -> None:
    reader.open_ahead(3)
    reader.open_ahead(2, exported)
    streams = [reader.stream("SELECT count(*) FROM t", 1024, exported) for _ in range(2)]
    counted = [count_rows(stream) for stream in streams]
    assert counted == [ROWS, ROWS]
    assert reader.read("SELECT 1 AS one").num_rows == 1
    assert len(opened_by) == 5
    assert len(databases) == 1  # the driver's catalog queries ran once


def test_the_database_closes_with_the_last_connection_once_the_reader_is_closed(
    reader: AdbcReader, databases: list[Any], exported: str
) -> None:
    stream = reader.stream("SELECT count(*) FROM t", 1024, exported)
    reader.read("SELECT 1 AS one")  # a connection kept for the next read
    reader.close()
    (database,) = databases
    adbc_driver_manager.AdbcConnection(database).close()  # still open for the stream
    assert count_rows(stream) == ROWS
    with pytest.raises(adbc_driver_manager.ProgrammingError, match="not initialized"):
        adbc_driver_manager.AdbcConnection(database)
