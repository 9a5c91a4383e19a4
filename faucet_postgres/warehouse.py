"""The PostgreSQL warehouse: a table or a query, read at Arrow speed. Redshift's warehouse
(:mod:`faucet_postgres.redshift`) is this one with another dialect.

Two drivers, each for what it does best: ``psycopg`` runs the statements that take bind
parameters (the data version, the counting query, the statistics, the scratch copy with
its ``ds`` filter), and an Arrow reader (:mod:`faucet_postgres.readers`: ADBC for
PostgreSQL, connectorx for Redshift) reads rows straight into Arrow, with no value of the
user's in its SQL. Columns of types the reader cannot give as numbers or text are read
through a cast (:mod:`faucet_postgres.types`).

Every read serves the rows planned, one of two ways. With ``copy_when_planning`` (Redshift's
default), planning copies the split source into a scratch table (the core's protocol:
:mod:`faucet_core.scratch`) and counts the copy; the cache fill's scan and each chunk read
it. Without (PostgreSQL's default), planning counts the source as a snapshot sees it, held
open for the plan's reads (:mod:`faucet_postgres.snapshots`); the cache is filled straight
from the source when it needs no bind parameter, and a copy is made, under the snapshot, at
the first read that needs one. A user who may not make tables, and a plan saved by an
earlier run, read the same way, the rows as they are then. The dialect
(:mod:`faucet_postgres.dialects`) says the hash, the scratch table's statements, the
reader and the data version.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, ClassVar
from urllib.parse import quote

import numpy as np
import pyarrow as pa
from pydantic import BaseModel

from faucet_core import layout
from faucet_core.plan import ChunkSpec, Plan
from faucet_core.preprocessing import StatsRequest, StatsSql, TrainStats
from faucet_core.scratch import ScratchWarehouse
from faucet_core.sql import READ_AS, quote_identifier, selected_column, table_reference
from faucet_core.streams import read_at_once
from faucet_core.warehouse import (
    BucketCounts,
    PermanentWarehouseError,
    PlanRequest,
    SourceSpec,
    TransientWarehouseError,
    WarehouseError,
)
from faucet_postgres import hash_arrays, integer_hashes, snapshots, types
from faucet_postgres.connection import PostgresConnection, ServerConnection
from faucet_postgres.dialects import POSTGRES, VALUE_HASH_LOOKUP, ServerDialect
from faucet_postgres.iam import IamCredentials, TemporaryLogin

__all__ = ["PostgresConnection", "PostgresWarehouse", "quote_identifier"]

log = logging.getLogger(__name__)

#: Words of the server's refusal to make a table: the user may not, or the server is a
#: standby.
_CANNOT_COPY = ("permission denied", "read-only transaction")
#: How the server says it refused a login (a wrong or expired password).
_REFUSED_LOGIN = "authentication failed"
#: Rows per batch of a streamed read.
_STREAM_BATCH_ROWS = 65_536
#: Chunks a plan read straight from its table has at least for a pass's first chunk to be
#: read by itself at once: the server scans the table for it, but sends its rows alone, at
#: most an eighth of what the fill's scan sends.
READ_ALONE_FROM_CHUNKS = 8
#: Seconds after planning that the connections opened ahead for the plan's reads are kept
#: for them (a pass's first chunk waits for the fill up to about 5 s before it is read).
UNTAKEN_FOR = 30.0
#: Words of a driver's error that say retrying will not help (credentials, names, SSL
#: settings the server cannot meet, a service file without the service).
_PERMANENT_CONNECT_ERRORS = (
    "authentication failed", "does not exist", "no pg_hba.conf entry",
    "does not support SSL", "definition of service", "no password supplied",
)  # fmt: skip


#: A function's name as the catalog gives a built-in one: put in SQL only when it is one.
_FUNCTION_NAME = re.compile(r"[a-z_][a-z0-9_]*")


def _hashes_here(function: str, values: list[Any], hashes: list[Any]) -> bool:
    """Whether Faucet computes ``function`` (:data:`integer_hashes.FUNCTIONS`) of a
    sample's key ``values`` as the server did (``hashes``)."""
    kind = integer_hashes.FUNCTIONS.get(function)
    if kind is None:
        return False
    try:
        keys = np.array([0 if v is None else v for v in values], kind.to_pandas_dtype())
    except (OverflowError, TypeError, ValueError):
        return False
    computed = integer_hashes.hashes_of(keys)
    computed[[v is None for v in values]] = 0
    return bool(computed.tolist() == [0 if h is None else h for h in hashes])


def _with_key_hash(batch: pa.RecordBatch, column: str, function: str) -> pa.RecordBatch:
    """``batch`` with the key hash column, ``function`` of its key ``column``."""
    hashes = integer_hashes.integer_hashes(batch.column(column), function)
    return batch.append_column(layout.HASH_COLUMN, hashes)


def _for_psycopg(sql: str) -> str:
    """``sql`` (quoted names, no placeholder) as psycopg reads it: ``%`` doubled."""
    return sql.replace("%", "%%")


class PostgresWarehouse(ScratchWarehouse):
    """Reads a PostgreSQL table or query: counts with ``psycopg``, reads with ADBC."""

    name = "postgres"
    connection_model: ClassVar[type[BaseModel]] = PostgresConnection
    connection: ServerConnection
    #: The SQL that differs between the servers of the family.
    server: ClassVar[ServerDialect] = POSTGRES
    # Counting 10M rows took 4.1 and 4.3 s summing the checksum's terms as int, against
    # 4.9 and 5.2 s as the hash's bigint (summed as numeric, whose state spilled to disk).
    dialect: ClassVar[layout.Dialect] = layout.Dialect(checksum_terms_as="INTEGER")
    stats_sql: ClassVar[StatsSql | None] = StatsSql(
        float="NULLIF(CAST({c} AS DOUBLE PRECISION), 'NaN')",  # NaN = NaN, in PostgreSQL
        median="PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY {c})",
        text="CAST({c} AS TEXT)",
        ranked="json_agg(json_build_object('value', v, 'count', n) ORDER BY n DESC, v)",
        length="cardinality({c})",
    )
    # In the session's time zone, for a timestamptz.
    day_filter: ClassVar[str | None] = "{c} >= {p}::date AND {c} < {p}::date + 1"

    def __init__(self, connection: BaseModel) -> None:
        super().__init__(connection)
        import psycopg

        self._psycopg = psycopg
        #: Temporary logins from IAM (Redshift), else ``None``: the connection's own.
        self._iam = iam = self._iam_credentials()
        login = (lambda: self._login_of(iam.current())) if iam is not None else None
        self._reader = self.server.reader(self.connection, login)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: list[Any] = []
        self._server_version: int | None = None
        #: Per source, its columns read through a cast, whose key hash takes their text.
        self._hashed_as_text: dict[SourceSpec, frozenset[str]] = {}
        #: Per table and key column, the function of its type that hashes it (``None``: its
        #: row's hash does), and whether Faucet computes it as the server does
        #: (:meth:`_value_hash`).
        self._value_hashes: dict[tuple[SourceSpec, str], tuple[str | None, bool]] = {}
        #: Per table and snapshot held, its :meth:`_block_ranges` when it was taken.
        self._block_ranges_of: dict[tuple[SourceSpec, str], list[str]] = {}
        self._pins = snapshots.SnapshotPins()

    # Errors

    def _iam_credentials(self) -> IamCredentials | None:
        """Where temporary logins come from, if the connection says (Redshift's IAM)."""
        return None

    @staticmethod
    def _login_of(login: TemporaryLogin) -> tuple[str, str]:
        return login.user, login.password

    def _one_line(self, what: str, error: BaseException) -> str:
        """``error`` as one line after ``what``, without the query echo or any secret."""
        lines = [line.strip() for line in str(error).splitlines()]
        kept = [line for line in lines if line and not line.startswith(("LINE ", "^"))]
        message = f"{what}: {' '.join(kept)}"
        secrets = self.connection.secrets()
        if self._iam is not None:
            secrets += [
                p for password in self._iam.passwords for p in (password, quote(password, safe=""))
            ]
        for secret in sorted(secrets, key=len, reverse=True):
            message = message.replace(secret, "***")
        return message

    def _connect_error(self, message: str) -> WarehouseError:
        permanent = any(words in message for words in _PERMANENT_CONNECT_ERRORS)
        return (PermanentWarehouseError if permanent else TransientWarehouseError)(message)

    # Running statements

    def _connection(self) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is None or connection.closed:
            connection = self._with_login(self._connect)
            self._local.connection = connection
            with self._lock:
                self._opened.append(connection)
        return connection

    def _connect(self, login: TemporaryLogin | None) -> Any:
        """A psycopg connection (as ``login``, if given)."""
        conninfo = self.connection.conninfo()
        if login is not None:
            conninfo = self._psycopg.conninfo.make_conninfo(
                conninfo, user=login.user, password=login.password
            )
        try:
            return self._psycopg.connect(conninfo, autocommit=True)
        except self._psycopg.Error as exc:
            message = self._one_line(f"cannot connect to {self.server.title}", exc)
            raise self._connect_error(message) from None

    def _with_login(self, call: Callable[[TemporaryLogin | None], Any]) -> Any:
        """``call(login)`` with the current IAM login (``None`` without IAM); when the
        server refuses that login, once more with a new one."""
        if self._iam is None:
            return call(None)
        login = self._iam.current()
        try:
            return call(login)
        except WarehouseError as exc:
            if _REFUSED_LOGIN not in str(exc):
                raise
            log.info("the server refused the IAM login: asking for new credentials")
            return call(self._iam.refused(login))

    def _execute(
        self, what: str, sql: str, params: Sequence[Any] = (), binary: bool = False
    ) -> Any:
        with self._statement_errors(what):
            return self._connection().execute(sql, list(params), binary=binary)

    @contextlib.contextmanager
    def _statement_errors(self, what: str) -> Iterator[None]:
        """psycopg's errors in the block as the warehouse's, saying ``what`` failed: a lost
        connection's transient, the others permanent."""
        psycopg = self._psycopg
        try:
            yield
        except psycopg.OperationalError as exc:
            raise TransientWarehouseError(self._one_line(what, exc)) from None
        except psycopg.Error as exc:
            raise PermanentWarehouseError(self._one_line(what, exc)) from None

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self._execute("metadata query failed", sql, params).fetchall()
        return rows

    def query(self, sql: str, params: Sequence[Any]) -> pa.Table:
        cursor = self._execute("query failed", sql, params)
        names = [column.name for column in cursor.description]
        rows = cursor.fetchall()
        return pa.table({name: [row[i] for row in rows] for i, name in enumerate(names)})

    def _read(
        self,
        what: str,
        sql: str,
        stream: bool = False,
        scratch: Plan | None = None,
        snapshot: str | None = None,
    ) -> Any:
        """Rows into Arrow through the reader; ``sql`` holds no user value. ``scratch``: it
        reads this plan's scratch table, whose absence is worth materializing again.
        ``snapshot``: it streams rows of the source as that snapshot of a plan saw them,
        while the snapshot lasts."""
        return self._with_login(lambda _: self._read_once(what, sql, stream, scratch, snapshot))

    def _read_once(
        self, what: str, sql: str, stream: bool, scratch: Plan | None, snapshot: str | None
    ) -> Any:
        try:
            if stream:
                return self._reader.stream(sql, _STREAM_BATCH_ROWS, snapshot)
            return self._reader.read(sql)
        except self._reader.errors as exc:
            message = self._one_line(what, exc)
            if snapshot is not None and snapshots.is_gone(message):
                self._pins.gone(snapshot)
                return self._read_once(what, sql, stream, scratch, None)
            if scratch is not None and "does not exist" in message:
                raise self.scratch_gone(scratch, message) from None
            if "connect" in message.lower() or "authentication" in message:
                raise self._connect_error(message) from None
            raise PermanentWarehouseError(message) from None

    # The snapshot planning holds (see faucet_postgres.snapshots)

    def _pins_snapshots(self) -> bool:
        """Whether planning without a copy pins the rows counted with a snapshot."""
        connection = self.connection
        return isinstance(connection, PostgresConnection) and connection.pin_snapshot

    def _snapshot_of(self, plan: Plan | None) -> str | None:
        """The snapshot ``plan``'s reads import, if it has one still exported."""
        return self._pins.of(plan) if plan is not None and self._pins_snapshots() else None

    def count_source(self, request: PlanRequest) -> BucketCounts:
        """The source's rows counted as they are; with ``pin_snapshot``, as a snapshot
        this instance holds for the plan's reads saw them (the plan's ``pinned``). The
        transaction that holds it reads nothing: it locks no table."""
        self._reader.open_ahead(1)  # to describe the source: connected meanwhile
        if not self._pins_snapshots():
            return super().count_source(request)
        pin = self._with_login(self._connect)
        try:
            name = self._pins.export(pin)
        except self._psycopg.Error as exc:
            pin.close()
            log.warning(
                "cannot pin the rows of %s with a snapshot (%s): counting them as they are; "
                "a change of them before they are read fails the read",
                request.source.describe(), self._one_line("pg_export_snapshot failed", exc),
            )  # fmt: skip
            return super().count_source(request)
        pinned = self._pins.hold(name, pin)
        # While it counts: the fill's streams, and a first chunk read by itself.
        self._reader.open_ahead(self.connection.read_streams + 1, name)
        self._local.snapshot = name  # for the connections counting beside this one
        try:
            with self._importing(name):
                counted = super().count_source(request)
                self._block_ranges(request.source, name)  # for the fill's streams to start at once
        except BaseException:
            self._release(name)
            raise
        finally:
            self._local.snapshot = None
        return dataclasses.replace(counted, pinned=pinned)

    def count_rows(self, request: PlanRequest, key: Sequence[str]) -> pa.Table:
        """As :meth:`SqlWarehouse.count_rows <faucet_core.sql.SqlWarehouse.count_rows>`; a
        table's rows, where the server reads a range of blocks by itself, counted here from
        their key hashes (or their keys, where Faucet hashes them as the server does), sent
        a range of blocks at a time over ``read_streams`` connections at once
        (:mod:`faucet_postgres.hash_arrays` says why)."""
        source = request.source
        if source.table is None or not self._server_since(self.server.block_ranges_since):
            return super().count_rows(request, key)
        blocks, block_size = self._table_blocks(source.table)
        if not blocks:
            return super().count_rows(request, key)
        condition, params = self.ds_filter(source, "%s") if source.ds is not None else ("TRUE", [])
        relation = self._relation(source, placeholders=True)
        # The key hash; its SQL says whether Faucet hashes the keys as the server does.
        expression = self.key_hash_sql(source, key)
        function = self._hash_function_here(source, key)
        if function is not None:
            expression = self.quote(key[0])
        width = hash_arrays.width_of(function)
        ranges = self.server.block_ranges(hash_arrays.cuts(blocks, block_size))
        queries = [
            hash_arrays.integers_sql(
                expression, width, relation, f"({condition}) AND ({part or 'TRUE'})"
            )
            for part in ranges
        ]
        counts = layout.HashCounts(request.split.eval_buckets)
        self._count_hash_arrays(queries, params, counts, function)
        return counts.table()

    def _count_hash_arrays(
        self,
        queries: list[str],
        params: Sequence[Any],
        counts: layout.HashCounts,
        function: str | None,
    ) -> None:
        """Add to ``counts`` the key hashes of ``queries`` (:func:`hash_arrays.integers_sql`
        of the hashes, or of the keys that ``function`` hashes), run over up to
        ``read_streams`` connections at once: this thread's, and others that import the
        snapshot it counts in, closed once they are done. Each connection is sent its next
        query before it sends the values of the one before (psycopg's pipeline mode): the
        server never waits a round trip for it (at 40 ms, the count of 10M rows took 0.16 s
        less)."""
        left = iter(queries)
        taking = threading.Lock()

        def next_query() -> str | None:
            with taking:
                return next(left, None)

        def count_queries() -> None:
            connection = self._connection()
            sent: collections.deque[Any] = collections.deque()
            try:
                with self._statement_errors("counting failed"), connection.pipeline():
                    while True:
                        while len(sent) < 2 and (sql := next_query()) is not None:
                            sent.append(connection.execute(sql, list(params), binary=True))
                        if not sent:
                            return
                        values, rows = sent.popleft().fetchone()
                        found = hash_arrays.hashes(values, rows, function)
                        with taking:
                            counts.add(found)
            except BaseException:
                with taking:
                    for _ in left:  # the other threads stop too
                        pass
                raise

        def count_queries_apart(snapshot: str | None) -> None:
            try:
                with self._importing(snapshot):
                    count_queries()
            finally:
                self._close_thread_connection()

        helpers = min(self.connection.read_streams, len(queries)) - 1
        with concurrent.futures.ThreadPoolExecutor(max(helpers, 1), "faucet-count") as pool:
            snapshot = getattr(self._local, "snapshot", None)  # this thread imported it
            helping = [pool.submit(count_queries_apart, snapshot) for _ in range(helpers)]
            count_queries()
            for helper in helping:
                helper.result()

    def planned(self, plan: Plan) -> None:
        super().planned(plan)
        snapshot = self._snapshot_of(plan)
        if snapshot is not None:
            # The reads of the process that planned start at once; where none comes (the
            # plan is read in DataLoader workers), the connections opened ahead for them
            # would wait, in a transaction, until the snapshot is released.
            closing = threading.Timer(UNTAKEN_FOR, self._reader.drop_ahead, [snapshot])
            closing.daemon = True
            closing.start()

    def _release(self, snapshot: str) -> None:
        """Release ``snapshot`` if this instance holds it, and close the connections
        opened ahead to import it."""
        self._reader.drop_ahead(snapshot)
        self._pins.release(snapshot)
        with self._lock:
            for held in [k for k in self._block_ranges_of if k[1] == snapshot]:
                del self._block_ranges_of[held]

    @contextlib.contextmanager
    def _importing(self, snapshot: str | None) -> Iterator[None]:
        """This thread's statements in the block in one transaction that sees
        ``snapshot``, while the server still exports it; else each by itself."""
        if snapshot is None or not self._began_in(snapshot):
            yield
            return
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                self._connection().execute("ROLLBACK")
            raise
        self._execute("cannot commit", "COMMIT")

    def _began_in(self, snapshot: str) -> bool:
        """Begin a transaction that sees ``snapshot``; ``False`` (and none begun) where the
        server no longer exports it."""
        try:  # in one round trip: psycopg sends statements without parameters as they are
            self._execute(
                "cannot import the plan's snapshot",
                "; ".join(["BEGIN", *snapshots.importing(snapshot)]),
            )
        except WarehouseError as exc:
            with contextlib.suppress(Exception):
                self._connection().execute("ROLLBACK")
            if not snapshots.is_gone(str(exc)):
                raise
            self._pins.gone(snapshot)
            return False
        return True

    # The dialect

    # The core's queries (counting, the scratch copy, statistics) run through psycopg,
    # always with a parameter list, so a ``%`` of a column's name is written ``%%`` there;
    # the reader's queries take names as they are.

    def quote(self, name: str) -> str:
        return _for_psycopg(quote_identifier(name))

    def hash_sql(self, columns: Sequence[str]) -> str:
        """The hash of the row text of ``columns``, the key hash of servers without the
        typed one; a source's key hash is :meth:`key_hash_sql`'s, which the core asks."""
        return _for_psycopg(self.server.hash_sql(columns))

    def key_hash_sql(self, source: SourceSpec, key: Sequence[str]) -> str:
        return _for_psycopg(self._key_hash(source, key))

    def once_per_row(self, expression: str) -> str:
        return self.server.once_per_row(expression)

    def _key_hash(self, source: SourceSpec, key: Sequence[str]) -> str:
        """The hash of ``key`` in ``source``'s rows, for the reader (no placeholder): each
        value by its type's hash where the server has :meth:`~ServerDialect.typed_hash_sql`,
        the columns read through a cast by their text (their types may have no hash);
        else the row's text."""
        if not self._hashes_by_type():
            return self.server.hash_sql(key)
        if source not in self._hashed_as_text:
            casts = self.casts(source, f"cannot read {source.describe()}")
            self._hashed_as_text[source] = frozenset(c for c, cast in casts.items() if cast)
        typed = self.server.typed_hash_sql(key, self._hashed_as_text[source])
        if len(key) == 1 and key[0] not in self._hashed_as_text[source]:
            return self._value_hash(source, key[0], typed) or typed
        return typed

    def _value_hash(self, source: SourceSpec, column: str, typed: str) -> str | None:
        """The typed hash of a table's one key column by its type's own function
        (:meth:`~faucet_postgres.dialects.ServerDialect.value_hash_sql`), once a sample of
        its rows hashes to ``typed`` by it too; ``None`` where it does not, or cannot be
        known."""
        if source.table is None:
            return None
        if (source, column) not in self._value_hashes:
            table = table_reference(source.table, "[database.][schema.]table")
            found = self._fetch(VALUE_HASH_LOOKUP, [table, column])
            function = str(found[0][0]) if found else ""
            known: tuple[str | None, bool] = (None, False)
            if _FUNCTION_NAME.fullmatch(function):
                value_hash = self.server.value_hash_sql(column, function)
                quoted = quote_identifier(column)
                sample = f"SELECT {quoted} FROM {table} LIMIT 1000"
                compared = (
                    f"SELECT bool_and({value_hash} = {typed}), array_agg({quoted}), "
                    f"array_agg({value_hash}) FROM ({sample}) AS faucet_sample"
                )
                same, values, hashes = self._fetch(_for_psycopg(compared), [])[0]
                if same:
                    known = (function, _hashes_here(function, values or [], hashes or []))
            self._value_hashes[(source, column)] = known
        by = self._value_hashes[(source, column)][0]
        return self.server.value_hash_sql(column, by) if by else None

    def _hashed_here(self, plan: Plan) -> str | None:
        """The function of :meth:`_value_hash` that hashes ``plan``'s key, where Faucet
        computes it as the server does (:meth:`_hash_function_here`) from the key's column
        as read; else ``None``."""
        source, key = plan.request.source, plan.key
        if key[0] not in plan.columns or plan.schema is None:
            return None
        function = self._hash_function_here(source, key)
        if function is None:
            return None
        kind = integer_hashes.FUNCTIONS[function]
        return function if plan.schema.field(key[0]).type == kind else None

    def _hash_function_here(self, source: SourceSpec, key: Sequence[str]) -> str | None:
        """The function of :meth:`_value_hash` that hashes ``key`` in ``source``, once
        found, where it is one column and Faucet computes that function as the server does
        (:mod:`faucet_postgres.integer_hashes`) from the column's values; else ``None``."""
        if len(key) != 1:
            return None
        function, here = self._value_hashes.get((source, key[0]), (None, False))
        return function if function is not None and here else None

    def _hashes_by_type(self) -> bool:
        """Whether the key hash is the dialect's typed one on this server's version."""
        return self._server_since(self.server.typed_hash_since)

    def _server_since(self, version: int | None) -> bool:
        """Whether the server's version (``server_version_num``) is ``version`` or later;
        no for ``None``."""
        if version is None:
            return False
        if self._server_version is None:
            self._server_version = int(self._connection().info.server_version)
        return self._server_version >= version

    def _relation(self, source: SourceSpec, placeholders: bool) -> str:
        """What follows ``FROM`` to read ``source``; ``placeholders``: for psycopg, which
        reads ``%`` as the start of a placeholder."""
        if source.files:
            raise PermanentWarehouseError(f"source.files is not supported by {self.name}")
        if source.table:
            return table_reference(source.table, "[database.][schema.]table")
        query = source.query or ""
        return f"({query.replace('%', '%%') if placeholders else query}) AS faucet_query"

    def from_sql(self, source: SourceSpec) -> tuple[str, Sequence[Any]]:
        relation = self._relation(source, placeholders=True)
        if source.ds is None:
            return relation, []
        condition, params = self.ds_filter(source, "%s")
        return f"{relation} WHERE {condition}", params

    def source_schema(self, source: SourceSpec) -> pa.Schema:
        """The source's columns as they are read: each column the reader has no type for
        read through its cast (:meth:`casts`), which the field's metadata keeps
        (:data:`READ_AS`). No row is read, and a column left out of ``source.columns`` is
        only named (its type: ``null``)."""
        self._connection()  # a refused login fails here, in one line, before any read
        relation = self._relation(source, placeholders=False)
        what = f"cannot read {source.describe()}"
        casts, as_read = self._described(source, what)
        self._hashed_as_text[source] = frozenset(c for c, cast in casts.items() if cast)
        wanted = [n for n in casts if source.columns is None or n in source.columns]
        if as_read is None or any(casts[name] for name in wanted):
            selected = ", ".join(
                f"{cast.format(c=quote_identifier(name))} AS {quote_identifier(name)}"
                if (cast := casts[name])
                else quote_identifier(name)
                for name in wanted
            )
            sql = f"SELECT {selected or 'NULL'} FROM {relation} LIMIT 0"
            as_read = self._read(what, sql).schema
        fields = []
        for name, cast in casts.items():
            if name not in wanted:
                fields.append(pa.field(name, pa.null()))
            elif cast:
                fields.append(as_read.field(name).with_metadata({READ_AS: cast.encode()}))
            else:
                fields.append(as_read.field(name))
        return pa.schema(fields)

    def casts(self, source: SourceSpec, what: str) -> dict[str, str | None]:
        """Each column of ``source`` and the expression it is read through (``None``: as
        it is)."""
        return self._described(source, what)[0]

    def _described(
        self, source: SourceSpec, what: str
    ) -> tuple[dict[str, str | None], pa.Schema | None]:
        """:meth:`casts`, from the ADBC driver's description of a ``LIMIT 0`` query
        (:func:`faucet_postgres.types.read_as`); and the columns' types as they are read
        without a cast, which that description gives. Columns of built-in types only are
        described by the server over psycopg (:attr:`ArrowReader.schema_of
        <faucet_postgres.readers.ArrowReader.schema_of>`): the driver's connection, and
        the round trips of its catalog queries, are then not waited for (0.4 s at 40 ms)."""
        if self._reader.schema_of is not None:
            relation = self._relation(source, placeholders=True)
            cursor = self._execute(what, f"SELECT * FROM {relation} LIMIT 0")
            columns = [
                (column.name, column.type_code, cursor.pgresult.fmod(index))
                for index, column in enumerate(cursor.description)
            ]
            schema = self._reader.schema_of(columns)
            if schema is not None:
                return dict.fromkeys(schema.names), schema
        relation = self._relation(source, placeholders=False)
        try:
            described = self._reader.describe(f"SELECT * FROM {relation} LIMIT 0")
        except self._reader.errors as exc:
            raise PermanentWarehouseError(self._one_line(what, exc)) from None
        casts = {field.name: types.read_as(field) for field in described}
        return casts, types.decoded_schema(described)

    def source_identity(self, source: SourceSpec) -> str:
        """The server, database and user (whose rights decide the rows it sees), as the
        connection made them (whatever the form of the settings), without the password;
        and the key hash, so that plans and copies made with the row text's hash (older
        servers and versions of Faucet) never match those made with the typed one."""
        info = self._connection().info
        identity = f"{info.user}@{info.host}:{info.port}/{info.dbname}"
        return f"{identity}, typed key hash" if self._hashes_by_type() else identity

    def data_version(self, source: SourceSpec) -> str | None:
        """The table's version from the server's metadata (see
        :mod:`faucet_postgres.versions`); ``None`` for a query, or when turned off."""
        if source.table is None or not self.connection.data_version:
            return None
        table = table_reference(source.table, "[database.][schema.]table")
        self._connection()  # a refused login is an error, not a table without a version
        try:
            return self.server.version(self._fetch, table)
        except PermanentWarehouseError as exc:  # views it may not read: plan as if unknown
            log.warning(
                "no data version for %s (%s): every reader plans it again unless "
                "cache.plan_ttl is set", source.describe(), exc,
            )  # fmt: skip
            return None

    # The scratch copy

    def scratch_location(self, plan: Plan) -> str:
        return f"{self.connection.scratch_schema}.{self.scratch_name(plan)}"

    def scratch_reference(self, name: str) -> str:
        return f"{quote_identifier(self.connection.scratch_schema)}.{quote_identifier(name)}"

    def scratch_attributes(self) -> str:
        """What follows the scratch table's name when it is made (none for PostgreSQL)."""
        return ""

    def scratch_exists(self, name: str) -> bool:
        found = self._execute(
            "cannot look up the scratch table",
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s",
            [self.connection.scratch_schema, name],
        ).fetchone()
        return found is not None

    def create_scratch(
        self, source: SourceSpec, name: str, rows: str, params: Sequence[Any]
    ) -> None:
        """Make the copy, as the plan's snapshot saw the rows where :meth:`materialize`
        makes it for a plan that has one."""
        table = self.scratch_reference(name)
        first, *rest = self.server.scratch_statements(table, rows, self.scratch_attributes())
        with self._importing(getattr(self._local, "snapshot", None)):
            self._execute(f"cannot read {source.describe()}", first, params)
            for statement in rest:
                self._execute("cannot prepare the scratch table", statement)

    def materialize(self, plan: Plan) -> None:
        """As the core's protocol says; a copy made here for a plan with a snapshot holds
        the rows it saw, and the snapshot is released once the copy is there."""
        snapshot = self._snapshot_of(plan)
        self._local.snapshot = snapshot
        try:
            super().materialize(plan)
        finally:
            self._local.snapshot = None
        if snapshot is not None and self.has_copy(plan):
            self._release(snapshot)

    def rename_scratch(self, temporary: str, name: str) -> None:
        self._execute(
            "cannot name the scratch table",
            f"ALTER TABLE {self.scratch_reference(temporary)} RENAME TO {quote_identifier(name)}",
        )

    def drop_scratch(self, name: str) -> None:
        self._execute(
            "cannot drop a scratch table", f"DROP TABLE IF EXISTS {self.scratch_reference(name)}"
        )

    def read_buckets(self, plan: Plan, chunk: ChunkSpec) -> pa.Table:
        table: pa.Table = self._read(
            f"cannot read {chunk.describe()}", self.scratch_rows(plan, [chunk]), scratch=plan
        )
        return table

    def copies_when_planning(self) -> bool:
        """As the connection's ``copy_when_planning`` says (by default, yes): neither
        PostgreSQL's snapshots nor Redshift's outlive a session, so the rows a plan counts
        are kept by copying them."""
        return self.connection.copy_when_planning

    def cannot_copy(self, error: PermanentWarehouseError) -> bool:
        """A user without the right to create tables, or a read-only server (a standby)."""
        return any(words in str(error) for words in _CANNOT_COPY)

    def reads_chunks_alone(self, plan: Plan) -> bool:
        """Yes where :meth:`scan` reads the copy; straight from the source, where the plan
        has at least :data:`READ_ALONE_FROM_CHUNKS` chunks. The server then scans the
        whole table for a chunk, but sends its rows alone, and the fill's time goes into
        sending and writing every row: at 10M rows, a first chunk read by itself took
        1.0 to 1.2 s where the fill took 17 s, and the first batch came 0.5 s sooner read
        at once than after a look at the fill's pace, the fill ending as soon."""
        if self._scans_source(plan):
            return len(plan.every_chunk) >= READ_ALONE_FROM_CHUNKS
        return super().reads_chunks_alone(plan)

    def _scans_source(self, plan: Plan) -> bool:
        """Whether :meth:`scan` reads the source straight: no copy was made while planning,
        and no bind parameter is needed."""
        return plan.request.source.ds is None and not self.has_copy(plan)

    def scan(
        self, plan: Plan, chunks: Sequence[ChunkSpec] | None = None
    ) -> Iterable[pa.RecordBatch] | None:
        """The rows (of ``chunks``, or all), streamed over ``read_streams`` connections at
        once: from the copy, where one was made (:meth:`_stream_runs`); else straight from
        the source with their hash, where that needs no bind parameter, as the plan's
        snapshot saw them while it lasts (a table's blocks cut into ranges:
        :meth:`_block_ranges`; a few chunks, a query, over one connection); else from a
        copy made now. A whole table keyed by one integer column is read without its
        hash, which Faucet computes as the batches come (:meth:`_hashed_here`)."""
        source = plan.request.source
        if self._scans_source(plan):
            relation = self._relation(source, placeholders=False)
            selected = [selected_column(c, plan.schema, quote_identifier(c)) for c in plan.columns]
            hashed = f"{self._key_hash(source, plan.key)} AS {layout.HASH_COLUMN}"
            what = f"cannot read {source.describe()}"
            snapshot = self._snapshot_of(plan)
            if chunks is not None:
                sql = f"SELECT {', '.join([*selected, hashed])} FROM {relation}"
                sql = f"SELECT * FROM ({sql}) AS faucet_rows WHERE {self.in_chunks(plan, chunks)}"
                return self._streams(what, [sql], snapshot=snapshot)
            function = self._hashed_here(plan)
            then = None
            if function is not None:
                then = functools.partial(_with_key_hash, column=plan.key[0], function=function)
            else:
                selected.append(hashed)
            sql = f"SELECT {', '.join(selected)} FROM {relation}"
            ranges = self._block_ranges(source, snapshot)
            parts = [f"{sql} WHERE {part}" for part in ranges] or [sql]
            rows = self._streams(what, parts, snapshot=snapshot, then=then)
            return rows if snapshot is None else self._released_after(rows, snapshot)
        self.materialize(plan)
        queries = [self.scratch_rows(plan, run) for run in self._stream_runs(plan, chunks)]
        return self._streams("cannot read the scratch table", queries, scratch=plan)

    def _streams(
        self,
        what: str,
        queries: list[str],
        scratch: Plan | None = None,
        snapshot: str | None = None,
        then: Callable[[pa.RecordBatch], pa.RecordBatch] | None = None,
    ) -> Iterable[pa.RecordBatch]:
        """The rows of ``queries``, each streamed over a connection of its own, all at once
        (as :meth:`_read` reads them); each batch through ``then`` (of several queries, in
        its stream's thread)."""
        if len(queries) == 1:
            one: Iterable[pa.RecordBatch] = self._read(
                what, queries[0], stream=True, scratch=scratch, snapshot=snapshot
            )
            return one if then is None else map(then, one)

        def read(sql: str, opened: list[Any]) -> Iterator[pa.RecordBatch]:
            stream = self._read(what, sql, stream=True, scratch=scratch, snapshot=snapshot)
            opened.append(stream)
            yield from (stream if then is None else map(then, stream))

        return read_at_once(queries, read)

    def _block_ranges(self, source: SourceSpec, snapshot: str | None) -> list[str]:
        """Conditions that cut a table's rows into ``read_streams`` parts, by ranges of the
        blocks they lie in, read at the cost of their own pages; none where the rows are
        read in one (one stream, a query or a view, a server that would scan the whole
        table for each, a table of fewer blocks than streams). For a plan's ``snapshot``,
        those found when it was taken: every row it sees lies in them."""
        streams = self.connection.read_streams
        if streams == 1 or source.table is None:
            return []
        if not self._server_since(self.server.block_ranges_since):
            return []
        found = self._block_ranges_of.get((source, snapshot)) if snapshot is not None else None
        if found is not None:
            return found
        blocks, _ = self._table_blocks(source.table)
        cuts = [blocks * i // streams for i in range(1, streams)]
        ranges = self.server.block_ranges(cuts) if blocks >= streams else []
        if snapshot is not None:
            with self._lock:
                self._block_ranges_of[(source, snapshot)] = ranges
        return ranges

    def _table_blocks(self, table: str) -> tuple[int, int]:
        """The blocks of ``table`` and their size in bytes; no blocks for a view or a
        partitioned table (its partitions hold its rows)."""
        found = self._fetch(
            "SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::BIGINT, "
            "current_setting('block_size')::BIGINT",
            [table_reference(table, "[database.][schema.]table")],
        )
        blocks, size = found[0] if found else (None, None)
        return int(blocks or 0), int(size or 0)

    def _close_thread_connection(self) -> None:
        """Close this thread's connection, if it has one open."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            self._local.connection = None
            with self._lock:
                self._opened.remove(connection)
            connection.close()

    def _released_after(
        self, batches: Iterable[pa.RecordBatch], snapshot: str
    ) -> Iterator[pa.RecordBatch]:
        """``batches``, every row of a plan; once they are all read (into the cache), the
        plan's ``snapshot`` is released, if this instance holds it."""
        yield from batches
        self._release(snapshot)

    def _stream_runs(
        self, plan: Plan, chunks: Sequence[ChunkSpec] | None
    ) -> list[Sequence[ChunkSpec] | None]:
        """What each stream of a read of the copy reads: ``chunks`` (or all of the plan's)
        in the copy's order, cut into at most ``read_streams`` runs of about as many rows,
        each run's adjacent bucket ranges joined into one; ``[chunks]`` for one stream.
        A run's rows lie together in the copy: each stream reads its own pages."""
        streams = self.connection.read_streams
        wanted = (
            list(chunks) if chunks is not None else [*plan.chunks["train"], *plan.chunks["eval"]]
        )
        if streams == 1 or len(wanted) < 2:
            return [chunks]
        wanted.sort(key=lambda c: (c.split == "eval", c.lo))
        total = sum(c.rows for c in wanted)
        runs: list[list[ChunkSpec]] = [[]]
        done = 0
        for chunk in wanted:
            if runs[-1] and done >= total * len(runs) / streams:
                runs.append([])
            last = runs[-1][-1] if runs[-1] else None
            if last is not None and last.split == chunk.split and last.hi == chunk.lo:
                runs[-1][-1] = dataclasses.replace(last, hi=chunk.hi, rows=last.rows + chunk.rows)
            else:
                runs[-1].append(chunk)
            done += chunk.rows
        return list(runs)

    def column_stats(self, plan: Plan, request: StatsRequest) -> TrainStats | None:
        """As :meth:`faucet_core.sql.SqlWarehouse.column_stats` computes them, of the rows
        the plan's snapshot saw where it has one."""
        with self._importing(self._snapshot_of(plan)):
            return super().column_stats(plan, request)

    def close(self) -> None:
        super().close()
        if hasattr(self, "_pins"):
            self._pins.close()
        if hasattr(self, "_reader"):
            self._reader.close()
        for connection in getattr(self, "_opened", []):
            connection.close()
