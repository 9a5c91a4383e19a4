"""Reading query results into Arrow: the ADBC PostgreSQL driver for PostgreSQL, connectorx
for Redshift.

ADBC wraps libpq, so it connects every way ``psql`` does (URLs, ``key=value`` strings, Unix
sockets, ``PG*`` environment variables, ``.pgpass``, service files, ``sslmode``), reads
with binary ``COPY`` and reads every type (:mod:`faucet_postgres.types`). Its connection
costs a catalog query, so each thread keeps one. The ADBC driver no longer speaks to
Redshift, which has no binary ``COPY``: Redshift is read by connectorx's cursor mode.

Errors are the drivers' own; the warehouse classifies them.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import pyarrow as pa

from faucet_postgres import snapshots, types

__all__ = ["AdbcReader", "AdbcStream", "ArrowReader", "ConnectorxReader"]


class ArrowReader(Protocol):
    """Runs queries (no bind parameters) into Arrow."""

    #: The exceptions the driver raises for a failed query or connection.
    errors: tuple[type[BaseException], ...]

    def describe(self, sql: str) -> pa.Schema:
        """The result columns of ``sql`` (a ``LIMIT 0`` query) as the driver types them."""

    def read(self, sql: str) -> pa.Table:
        """The whole result of ``sql``."""

    def stream(
        self, sql: str, batch_rows: int, snapshot: str | None = None
    ) -> Iterable[pa.RecordBatch]:
        """The result of ``sql`` in batches, without holding it all (iterated once);
        ``snapshot``: in a transaction that imports it (:mod:`faucet_postgres.snapshots`)."""

    def close(self) -> None:
        """Close the connections this reader opened."""


class AdbcReader:
    """Reads PostgreSQL through the ADBC driver: one connection per thread for reads, one
    of its own for each stream (closed with the stream)."""

    def __init__(self, conninfo: str) -> None:
        import adbc_driver_manager
        import adbc_driver_postgresql.dbapi

        self._connect = adbc_driver_postgresql.dbapi.connect
        # libpq takes an empty URL as "everything from the environment"; ADBC needs a URI.
        self._conninfo = conninfo or "postgresql://"
        self.errors: tuple[type[BaseException], ...] = (adbc_driver_manager.Error,)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: list[Any] = []

    def _connection(self) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect(self._conninfo, autocommit=True)
            self._local.connection = connection
            with self._lock:
                self._opened.append(connection)
        return connection

    def _run(self, sql: str) -> pa.Table:
        try:
            with self._connection().cursor() as cursor:
                cursor.execute(sql)
                table: pa.Table = cursor.fetch_arrow_table()
            return table
        except self.errors:
            self._forget()  # the connection may be broken: the next read opens another
            raise

    def _forget(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            with self._lock:
                if connection in self._opened:
                    self._opened.remove(connection)
            with contextlib.suppress(Exception):
                connection.close()

    def describe(self, sql: str) -> pa.Schema:
        return self._run(sql).schema

    def read(self, sql: str) -> pa.Table:
        return types.decoded(self._run(sql))

    def stream(self, sql: str, batch_rows: int, snapshot: str | None = None) -> AdbcStream:
        connection = self._connect(self._conninfo, autocommit=snapshot is None)
        try:
            cursor = connection.cursor()
            for statement in snapshots.importing(snapshot) if snapshot is not None else ():
                cursor.execute(statement)
            cursor.execute(sql)
            batches = cursor.fetch_record_batch()
        except BaseException:
            connection.close()
            raise
        return AdbcStream(connection, cursor, batches)

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for connection in opened:
            with contextlib.suppress(Exception):
                connection.close()


class AdbcStream:
    """The batches of one streamed query, over a connection of its own, closed when they
    end; :meth:`cancel` (from another thread) stops the query."""

    def __init__(self, connection: Any, cursor: Any, batches: Any) -> None:
        self._connection = connection
        self._cursor = cursor
        self._batches = batches

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        try:
            for batch in self._batches:
                yield types.decoded(batch)
        finally:
            with contextlib.suppress(Exception):
                self._cursor.close()
            self._connection.close()

    def cancel(self) -> None:
        """Ask the server to cancel the query: a read waiting for its rows fails."""
        with contextlib.suppress(Exception):
            self._cursor.adbc_cancel()


class ConnectorxReader:
    """Reads Redshift through connectorx's ``redshift://`` cursor mode (a connection per
    query, to ``url()`` at the time: credentials may change during a run)."""

    errors: tuple[type[BaseException], ...] = (RuntimeError,)

    def __init__(self, url: Callable[[], str]) -> None:
        import connectorx

        self._connectorx = connectorx
        self._url = url

    def describe(self, sql: str) -> pa.Schema:
        return self.read(sql).schema

    def read(self, sql: str) -> pa.Table:
        with _panics_as_errors():
            table: pa.Table = self._connectorx.read_sql(self._url(), sql, return_type="arrow")
        return table

    def stream(
        self, sql: str, batch_rows: int, snapshot: str | None = None
    ) -> Iterator[pa.RecordBatch]:
        if snapshot is not None:
            raise RuntimeError("Redshift cannot import a snapshot")
        with _panics_as_errors():
            batches = self._connectorx.read_sql(
                self._url(), sql, return_type="arrow_stream", batch_size=batch_rows
            )
        return self._streamed(batches)

    @staticmethod
    def _streamed(batches: Any) -> Iterator[pa.RecordBatch]:
        with _panics_as_errors():
            yield from batches

    def close(self) -> None:
        """Nothing to close: connectorx connects per query."""


@contextlib.contextmanager
def _panics_as_errors() -> Iterator[None]:
    """A Rust panic in connectorx (a type it cannot read) as a ``RuntimeError``: pyo3 raises
    it as a ``PanicException``, a ``BaseException`` no module exports by name."""
    try:
        yield
    except BaseException as exc:
        if type(exc).__name__ != "PanicException":
            raise
        raise RuntimeError(f"connectorx cannot read the result: {exc}") from None
