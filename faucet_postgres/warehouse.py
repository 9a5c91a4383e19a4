"""The PostgreSQL warehouse: a table or a query, read at Arrow speed. Redshift's warehouse
(:mod:`faucet_postgres.redshift`) is this one with another dialect.

Two drivers, each for what it does best: ``psycopg`` runs the statements that take bind
parameters (the data version, the counting query, the statistics, the scratch copy with
its ``ds`` filter), and ``connectorx`` reads rows straight into Arrow (about 5x a
server-side cursor), with no value of the user's in its SQL.

Filling the cache streams the source once, with its key hash, straight through
connectorx when the source needs no bind parameter; otherwise (``ds``), and for chunk by
chunk reads, the split source is copied once into a scratch table named after the plan's
rows, with its split flag and bucket, made under a temporary name and renamed when
complete, so a process that finds it uses it as it is. The dialect
(:mod:`faucet_postgres.dialects`) says the hash, the scratch table's statements and the
data version.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pyarrow as pa
from pydantic import BaseModel

from faucet_core import layout
from faucet_core.plan import ChunkSpec, Plan
from faucet_core.preprocessing import StatsSql
from faucet_core.sql import SqlWarehouse, quote_identifier, table_reference
from faucet_core.warehouse import (
    PermanentWarehouseError,
    ScratchDataMissing,
    SourceSpec,
    TransientWarehouseError,
    WarehouseError,
)
from faucet_postgres.connection import PostgresConnection, ServerConnection
from faucet_postgres.dialects import POSTGRES, ServerDialect

__all__ = ["PostgresConnection", "PostgresWarehouse", "quote_identifier"]

log = logging.getLogger(__name__)

_EVAL = layout.EVAL_COLUMN
_BUCKET = layout.BUCKET_COLUMN
_DEFAULT_PARTITION_COLUMN = "ds"
#: Rows per batch of a streamed read.
_STREAM_BATCH_ROWS = 65_536
#: Words of a driver's error that say retrying will not help (credentials, names).
_PERMANENT_CONNECT_ERRORS = ("authentication failed", "does not exist", "no pg_hba.conf entry")


def _for_psycopg(sql: str) -> str:
    """``sql`` (quoted names, no placeholder) as psycopg reads it: ``%`` doubled."""
    return sql.replace("%", "%%")


class PostgresWarehouse(SqlWarehouse):
    """Reads a PostgreSQL table or query: counts with ``psycopg``, reads with ``connectorx``."""

    name = "postgres"
    connection_model: ClassVar[type[BaseModel]] = PostgresConnection
    connection: ServerConnection
    #: The SQL that differs between the servers of the family.
    server: ClassVar[ServerDialect] = POSTGRES
    stats_sql: ClassVar[StatsSql | None] = StatsSql(
        float="CAST({c} AS DOUBLE PRECISION)",
        median="PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY {c})",
        text="CAST({c} AS TEXT)",
        ranked="json_agg(json_build_object('value', v, 'count', n) ORDER BY n DESC, v)",
    )

    def __init__(self, connection: BaseModel) -> None:
        super().__init__(connection)
        import connectorx
        import psycopg

        self._psycopg = psycopg
        self._connectorx = connectorx
        self._local = threading.local()
        self._lock = threading.Lock()
        self._materializing = threading.Lock()
        self._opened: list[Any] = []
        self._owned: list[str] = []  # scratch tables this instance made

    # Errors

    def _one_line(self, what: str, error: BaseException) -> str:
        """``error`` as one line after ``what``, without the query echo or any secret."""
        lines = [line.strip() for line in str(error).splitlines()]
        kept = [line for line in lines if line and not line.startswith(("LINE ", "^"))]
        message = f"{what}: {' '.join(kept)}"
        for secret in self.connection.secrets():
            message = message.replace(secret, "***")
        return message

    def _connect_error(self, message: str) -> WarehouseError:
        permanent = any(words in message for words in _PERMANENT_CONNECT_ERRORS)
        return (PermanentWarehouseError if permanent else TransientWarehouseError)(message)

    # Running statements

    def _connection(self) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is None or connection.closed:
            try:
                connection = self._psycopg.connect(self.connection.url(), autocommit=True)
            except self._psycopg.Error as exc:
                message = self._one_line(f"cannot connect to {self.server.title}", exc)
                raise self._connect_error(message) from None
            self._local.connection = connection
            with self._lock:
                self._opened.append(connection)
        return connection

    def _execute(self, what: str, sql: str, params: Sequence[Any] = ()) -> Any:
        psycopg = self._psycopg
        try:
            return self._connection().execute(sql, list(params))
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

    def _read(self, what: str, sql: str, stream: bool = False, scratch: bool = False) -> Any:
        """Rows into Arrow through connectorx; ``sql`` holds no user value. ``scratch``: it
        reads the scratch table, whose absence is worth materializing again."""
        url = self.server.reader_url(self.connection.url())
        try:
            if stream:
                return self._connectorx.read_sql(
                    url, sql, return_type="arrow_stream", batch_size=_STREAM_BATCH_ROWS
                )
            return self._connectorx.read_sql(url, sql, return_type="arrow")
        except RuntimeError as exc:
            message = self._one_line(what, exc)
            if scratch and "does not exist" in message:
                raise ScratchDataMissing(message) from None
            if "connect" in message.lower() or "authentication" in message:
                raise self._connect_error(message) from None
            raise PermanentWarehouseError(message) from None

    # The dialect

    # The core's queries (counting, the scratch copy, statistics) run through psycopg,
    # always with a parameter list, so a ``%`` of a column's name is written ``%%`` there;
    # connectorx's queries take names as they are.

    def quote(self, name: str) -> str:
        return _for_psycopg(quote_identifier(name))

    def hash_sql(self, columns: Sequence[str]) -> str:
        return _for_psycopg(self.server.hash_sql(columns))

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
        column = quote_identifier(source.partition_column or _DEFAULT_PARTITION_COLUMN)
        return f"{relation} WHERE {_for_psycopg(column)} = %s", [source.ds]

    def source_schema(self, source: SourceSpec) -> pa.Schema:
        self._connection()  # fails at once where connectorx would retry for seconds
        relation = self._relation(source, placeholders=False)
        table = self._read(f"cannot read {source.describe()}", f"SELECT * FROM {relation} LIMIT 0")
        schema: pa.Schema = table.schema
        column = source.partition_column or _DEFAULT_PARTITION_COLUMN
        if source.ds is not None and column not in schema.names:
            raise PermanentWarehouseError(
                f"source.ds is set but {source.describe()} has no partition column {column!r} "
                "(set source.partition_column)"
            )
        return schema

    def source_identity(self, source: SourceSpec) -> str:
        """The server, database and user (whose rights decide the rows it sees), from the
        connection URL, without its password."""
        url = urlsplit(self.connection.url())
        return f"{url.username}@{url.hostname}:{url.port}{url.path}"

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
            log.info("no data version for %s: %s", source.describe(), exc)
            return None

    # The scratch copy

    def _scratch(self, plan: Plan) -> str:
        return f"faucet_{plan.rows_id}"

    def scratch_location(self, plan: Plan) -> str:
        return f"{self.connection.scratch_schema}.{self._scratch(plan)}"

    def _scratch_sql(self, name: str) -> str:
        return f"{quote_identifier(self.connection.scratch_schema)}.{quote_identifier(name)}"

    def scratch_attributes(self) -> str:
        """What follows the scratch table's name when it is made (none for PostgreSQL)."""
        return ""

    def materialize(self, plan: Plan) -> None:
        """Copy the split source into the plan's scratch table, unless it is there already."""
        with self._materializing:  # a fill and a first chunk read may both ask for it
            self._materialize(plan)

    def _materialize(self, plan: Plan) -> None:
        final = self._scratch(plan)
        if self._exists(final):
            return
        temp = f"faucet_tmp_{uuid.uuid4().hex}"
        source = plan.request.source
        hashed, params = self.hashed_rows(source, plan.columns, plan.key)
        h = layout.HASH_COLUMN
        rows = (
            f"SELECT *, {self.dialect.is_eval(h, plan.eval_buckets)} AS {_EVAL}, "
            f"{self.dialect.bucket(h)} AS {_BUCKET} FROM ({hashed}) AS faucet_rows"
        )
        statements = self.server.scratch_statements(
            self._scratch_sql(temp), rows, self.scratch_attributes()
        )
        try:
            self._execute(f"cannot read {source.describe()}", statements[0], params)
            for statement in statements[1:]:
                self._execute("cannot prepare the scratch table", statement)
            self._execute(
                "cannot name the scratch table",
                f"ALTER TABLE {self._scratch_sql(temp)} RENAME TO {quote_identifier(final)}",
            )
        except PermanentWarehouseError:
            self._execute(
                "cannot drop a scratch table", f"DROP TABLE IF EXISTS {self._scratch_sql(temp)}"
            )
            if self._exists(final):  # another process finished first: its copy is the same
                return
            raise
        with self._lock:
            self._owned.append(final)
        log.info("materialized %s into %s", source.describe(), self.scratch_location(plan))

    def _exists(self, name: str) -> bool:
        found = self._execute(
            "cannot look up the scratch table",
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s",
            [self.connection.scratch_schema, name],
        ).fetchone()
        return found is not None

    def _scratch_rows(self, plan: Plan, chunks: Sequence[ChunkSpec] | None) -> str:
        """A query of the scratch table's rows (of ``chunks``, or all): integers only."""
        selected = ", ".join(quote_identifier(c) for c in [*plan.columns, layout.HASH_COLUMN])
        sql = f"SELECT {selected} FROM {self._scratch_sql(self._scratch(plan))}"
        if chunks is None:
            return sql
        return f"{sql} WHERE {self.in_chunks(plan, chunks, _EVAL, _BUCKET)}"

    def read_buckets(self, plan: Plan, chunk: ChunkSpec) -> pa.Table:
        table: pa.Table = self._read(
            f"cannot read {chunk.describe()}", self._scratch_rows(plan, [chunk]), scratch=True
        )
        return table

    def scan(
        self, plan: Plan, chunks: Sequence[ChunkSpec] | None = None
    ) -> Iterable[pa.RecordBatch] | None:
        """The rows (of ``chunks``, or all), streamed: straight from the source with their
        hash when it needs no bind parameter, else from the scratch table (made if need be)."""
        source = plan.request.source
        if source.ds is None:
            relation = self._relation(source, placeholders=False)
            selected = "".join(f"{quote_identifier(c)}, " for c in plan.columns)
            hashed = f"{self.server.hash_sql(plan.key)} AS {layout.HASH_COLUMN}"
            sql = f"SELECT {selected}{hashed} FROM {relation}"
            if chunks is not None:
                sql = f"SELECT * FROM ({sql}) AS faucet_rows WHERE {self.in_chunks(plan, chunks)}"
            direct: Iterable[pa.RecordBatch] = self._read(
                f"cannot read {source.describe()}", sql, stream=True
            )
            return direct
        self.materialize(plan)
        reader: Iterable[pa.RecordBatch] = self._read(
            "cannot read the scratch table", self._scratch_rows(plan, chunks), stream=True,
            scratch=True,
        )  # fmt: skip
        return reader

    def close(self) -> None:
        owned = getattr(self, "_owned", [])
        for name in owned:
            try:
                self._execute(
                    "cannot drop a scratch table", f"DROP TABLE IF EXISTS {self._scratch_sql(name)}"
                )
            except Exception as exc:  # a server gone away keeps its tables
                log.warning("could not drop the scratch table %s: %s", name, exc)
        for connection in getattr(self, "_opened", []):
            connection.close()
