"""Reading query results into Arrow: the ADBC PostgreSQL driver for PostgreSQL, connectorx
for Redshift.

ADBC wraps libpq, so it connects every way ``psql`` does (URLs, ``key=value`` strings, Unix
sockets, ``PG*`` environment variables, ``.pgpass``, service files, ``sslmode``), reads
with binary ``COPY`` and reads every type (:mod:`faucet_postgres.types`). A reader's
first connection costs the driver's catalog queries (:class:`AdbcDatabase`), and each
statement round trips more than psycopg's, so a read takes the connection a read before
it kept, and the connections the next reads need are opened ahead of them, in the
background (:meth:`AdbcReader.open_ahead`). The ADBC driver no longer speaks to Redshift,
which has no binary ``COPY``: Redshift is read by connectorx's cursor mode.

Errors are the drivers' own; the warehouse classifies them.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent import futures
from concurrent.futures import Future
from typing import Any, Protocol

import pyarrow as pa

from faucet_postgres import snapshots, types

__all__ = [
    "AdbcConnection", "AdbcDatabase", "AdbcReader", "AdbcStream", "ArrowReader",
    "ConnectorxReader",
]  # fmt: skip

#: Seconds a connection no read will take is waited for while it is being opened, to close
#: it: a snapshot's are closed as it is released, before the release is said done.
_OPENING_WAIT = 10.0


class ArrowReader(Protocol):
    """Runs queries (no bind parameters) into Arrow."""

    #: The exceptions the driver raises for a failed query or connection.
    errors: tuple[type[BaseException], ...]

    @property
    def schema_of(self) -> Callable[[Sequence[tuple[str, int, int]]], pa.Schema | None] | None:
        """The schema the driver reads a result as, from its columns' names, type OIDs and
        type modifiers as the server describes them (``None``: it cannot tell from them);
        ``None`` where the driver's types are not known that way."""

    def describe(self, sql: str) -> pa.Schema:
        """The result columns of ``sql`` (a ``LIMIT 0`` query) as the driver types them."""

    def read(self, sql: str) -> pa.Table:
        """The whole result of ``sql``."""

    def stream(
        self, sql: str, batch_rows: int, snapshot: str | None = None
    ) -> Iterable[pa.RecordBatch]:
        """The result of ``sql`` in batches, without holding it all (iterated once);
        ``snapshot``: in a transaction that imports it (:mod:`faucet_postgres.snapshots`)."""

    def open_ahead(self, count: int, snapshot: str | None = None) -> None:
        """Begin to open ``count`` connections for the next reads to take, in the
        background: for any read (``snapshot`` ``None``), or for streams that import
        ``snapshot``, each already in a transaction that imports it."""

    def drop_ahead(self, snapshot: str) -> None:
        """Close the connections opened ahead for ``snapshot`` that no stream took."""

    def close(self) -> None:
        """Close the connections this reader opened."""


class _Connections:
    """A reader's connections, by what they are ready for: ``None``, any read (put back
    after it for the next); a snapshot's name, one stream in a transaction that imports
    it (closed with the stream). They are opened in background threads ahead of need, or
    by a read that finds none."""

    def __init__(self, open_: Callable[[str | None], Any]) -> None:
        self._open = open_
        self._lock = threading.Lock()
        self._ready: dict[str | None, list[Future[Any]]] = {}
        self._closed = False

    def open_ahead(self, count: int, snapshot: str | None) -> None:
        """Open connections for ``snapshot`` in the background until ``count`` are ready
        or being opened."""
        with self._lock:
            if self._closed:
                return
            ready = self._ready.setdefault(snapshot, [])
            opening: list[Future[Any]] = [Future() for _ in range(count - len(ready))]
            ready.extend(opening)
        for future in opening:
            threading.Thread(
                target=self._open_into, args=(snapshot, future), name="faucet-connect", daemon=True
            ).start()

    def _open_into(self, snapshot: str | None, future: Future[Any]) -> None:
        try:
            connection = self._open(snapshot)
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(connection)

    def take(self, snapshot: str | None) -> Any:
        """A connection ready for ``snapshot``: one opened ahead (waiting for it while it is
        being opened), else a new one. One that failed to open ahead is opened again here,
        where its error is raised."""
        with self._lock:
            ready = self._ready.get(snapshot)
            future = ready.pop(0) if ready else None
        if future is not None:
            with contextlib.suppress(Exception):
                return future.result()
        return self._open(snapshot)

    def put_back(self, connection: Any) -> None:
        """Keep ``connection``, after a read, for the next one (closed if this is closed)."""
        future: Future[Any] = Future()
        future.set_result(connection)
        with self._lock:
            if not self._closed:
                self._ready.setdefault(None, []).append(future)
                return
        _close(future)

    def drop(self, snapshot: str | None) -> None:
        """Close the connections ready for ``snapshot`` (those being opened, once open)."""
        with self._lock:
            ready = self._ready.pop(snapshot, [])
        for future in ready:
            _close(future)

    def close(self) -> None:
        """Close every connection not taken, and those put back from now on."""
        with self._lock:
            self._closed = True
            kinds = list(self._ready)
        for kind in kinds:
            self.drop(kind)


def _close(future: Future[Any]) -> None:
    """Close the connection ``future`` opened, if it opened one: once it is open, waiting
    for that up to :data:`_OPENING_WAIT` seconds."""
    try:
        failed = future.exception(timeout=_OPENING_WAIT)
    except futures.TimeoutError:  # a server that does not answer: closed when it does
        future.add_done_callback(_close)
        return
    if failed is None:
        with contextlib.suppress(Exception):
            future.result().close()


class AdbcDatabase:
    """The ADBC driver's database object, shared by a reader's connections. Opening it
    costs a connection of the driver's own and its catalog queries (the server's version
    and types: 10 round trips, and 30 ms of this process's CPU here), paid once, not once
    per connection. The driver counts the connections of a database without a lock, so
    they open and close one at a time; it is closed with the last connection once
    :meth:`close` was called."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._lock = threading.Lock()
        self._database: Any = None
        self._connections = 0
        self._closing = False

    def connect(self, autocommit: bool) -> AdbcConnection:
        """A new connection: autocommit, or, where not, in a transaction begun as it
        opens."""
        import adbc_driver_manager
        import adbc_driver_postgresql

        with self._lock:
            if self._database is None:
                self._database = adbc_driver_postgresql.connect(self._conninfo)
            handle = adbc_driver_manager.AdbcConnection(self._database)
            self._connections += 1
        connection = AdbcConnection(self, handle)
        try:
            if not autocommit:
                handle.set_autocommit(False)
        except BaseException:
            connection.close()
            raise
        return connection

    def release(self, handle: Any) -> None:
        """Close ``handle``, a connection of :meth:`connect`, whatever closing raises."""
        with self._lock:
            _close_quietly(handle)
            self._connections -= 1
            self._close_if_done()

    def close(self) -> None:
        """Close the database now if no connection is open, else with the last one."""
        with self._lock:
            self._closing = True
            self._close_if_done()

    def _close_if_done(self) -> None:
        if self._closing and not self._connections and self._database is not None:
            _close_quietly(self._database)
            self._database = None


class AdbcConnection:
    """A connection of the ADBC driver, through the driver manager's own objects: its DB-API
    module would first import pandas, polars and ``pyarrow.dataset`` (0.4 s before a
    first read; 0.2 s with pandas loaded)."""

    def __init__(self, database: AdbcDatabase, handle: Any) -> None:
        import adbc_driver_manager

        self._manager = adbc_driver_manager
        self._database = database
        self._connection = handle

    def execute(self, sql: str) -> None:
        """Run ``sql``, a statement without rows."""
        statement = self._manager.AdbcStatement(self._connection)
        try:
            statement.set_sql_query(sql)
            statement.execute_update()
        finally:
            statement.close()

    def query(self, sql: str) -> tuple[Any, pa.RecordBatchReader]:
        """The statement running ``sql`` (to cancel it; closed once its rows are read), and
        its rows."""
        statement = self._manager.AdbcStatement(self._connection)
        try:
            statement.set_sql_query(sql)
            handle, _ = statement.execute_query()
            return statement, pa.RecordBatchReader.from_stream(handle)
        except BaseException:
            statement.close()
            raise

    def close(self) -> None:
        """Close the connection, once (its database closes with the last one, once
        closing)."""
        handle, self._connection = self._connection, None
        if handle is not None:
            self._database.release(handle)


def _close_quietly(*opened: Any) -> None:
    """Close each of ``opened`` (``None``: nothing), in order, whatever the others raise."""
    for each in opened:
        if each is not None:
            with contextlib.suppress(Exception):
                each.close()


class AdbcReader:
    """Reads PostgreSQL through the ADBC driver: a connection (kept for the next) for each
    read at a time, one of its own for each stream (closed with the stream)."""

    schema_of = staticmethod(types.builtin_schema)

    def __init__(self, conninfo: str) -> None:
        import adbc_driver_manager

        # libpq takes an empty URL as "everything from the environment"; ADBC needs a URI.
        self._database = AdbcDatabase(conninfo or "postgresql://")
        self._connect = self._database.connect
        # The driver's; pyarrow's for one the server sends while the rows are read.
        self.errors: tuple[type[BaseException], ...] = (
            adbc_driver_manager.Error,
            pa.ArrowException,
            OSError,
        )
        self._connections = _Connections(self._open)

    def _open(self, snapshot: str | None) -> AdbcConnection:
        """A new connection; for ``snapshot``, in a transaction that imports it."""
        connection = self._connect(autocommit=snapshot is None)
        try:
            for statement in snapshots.importing(snapshot) if snapshot is not None else ():
                connection.execute(statement)
        except BaseException:
            connection.close()
            raise
        return connection

    def open_ahead(self, count: int, snapshot: str | None = None) -> None:
        self._connections.open_ahead(count, snapshot)

    def drop_ahead(self, snapshot: str) -> None:
        self._connections.drop(snapshot)

    def _run(self, sql: str) -> pa.Table:
        connection = self._connections.take(None)
        try:
            statement, rows = connection.query(sql)
            try:
                table = rows.read_all()
            finally:
                _close_quietly(rows, statement)
        except BaseException:
            connection.close()  # it may be broken: the next read opens another
            raise
        self._connections.put_back(connection)
        return table

    def describe(self, sql: str) -> pa.Schema:
        return self._run(sql).schema

    def read(self, sql: str) -> pa.Table:
        return types.decoded(self._run(sql))

    def stream(self, sql: str, batch_rows: int, snapshot: str | None = None) -> AdbcStream:
        connection = self._connections.take(snapshot)
        try:
            statement, batches = connection.query(sql)
        except BaseException:
            connection.close()
            raise
        return AdbcStream(connection, statement, batches)

    def close(self) -> None:
        self._connections.close()
        self._database.close()


class AdbcStream:
    """The batches of one streamed query, over a connection of its own, closed when they
    end; :meth:`cancel` (from another thread) stops the query."""

    def __init__(
        self, connection: AdbcConnection, statement: Any, batches: pa.RecordBatchReader
    ) -> None:
        self._connection = connection
        self._statement = statement
        self._batches = batches

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        try:
            for batch in self._batches:
                yield types.decoded(batch)
        finally:
            _close_quietly(self._batches, self._statement)
            self._connection.close()

    def cancel(self) -> None:
        """Ask the server to cancel the query: a read waiting for its rows fails."""
        with contextlib.suppress(Exception):
            self._statement.cancel()


class ConnectorxReader:
    """Reads Redshift through connectorx's ``redshift://`` cursor mode (a connection per
    query, to ``url()`` at the time: credentials may change during a run)."""

    errors: tuple[type[BaseException], ...] = (RuntimeError,)
    schema_of = None

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

    def open_ahead(self, count: int, snapshot: str | None = None) -> None:
        """Nothing to open: connectorx connects per query."""

    def drop_ahead(self, snapshot: str) -> None:
        """Nothing opened ahead."""

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
