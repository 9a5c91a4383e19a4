"""The PostgreSQL warehouse: a table or a query, read at Arrow speed.

Two drivers, each for what it does best: ``psycopg`` runs the statements that take bind
parameters (the counting query, the statistics, the scratch copy with its ``ds`` filter),
and ``connectorx`` reads rows straight into Arrow (about 5x a server-side cursor), from
the scratch copy only, with no value of the user's in its SQL. The key hash is
``hashtextextended(ROW(key columns)::text, 0)``, a signed 64-bit integer.

The scratch copy is an ``UNLOGGED`` table named after the plan's rows, with an index on
(split, bucket), made under a temporary name and renamed when complete, so a process
that finds it uses it as it is.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote, urlencode

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from faucet_core import layout
from faucet_core.plan import ChunkSpec, Plan
from faucet_core.preprocessing import StatsSql
from faucet_core.sql import SqlWarehouse, quote_identifier, table_reference
from faucet_core.warehouse import (
    PermanentWarehouseError,
    ScratchDataMissing,
    SourceSpec,
    TransientWarehouseError,
)

__all__ = ["PostgresConnection", "PostgresWarehouse", "quote_identifier"]

log = logging.getLogger(__name__)

_EVAL = layout.EVAL_COLUMN
_BUCKET = layout.BUCKET_COLUMN
_DEFAULT_PARTITION_COLUMN = "ds"
#: Rows per batch of a streamed read.
_STREAM_BATCH_ROWS = 65_536


class PostgresConnection(BaseModel):
    """Connection settings of the ``postgres`` datastore: a ``dsn``, or its parts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dsn: SecretStr | None = Field(
        None,
        description="A connection URL, `postgresql://user:password@host:5432/dbname`; "
        "secrets are best given as `${ENV}`.",
    )
    host: str | None = Field(None, description="Server host name or address.")
    port: int = Field(5432, ge=1, le=65535, description="Server port.")
    user: str | None = Field(None, description="User name.")
    password: SecretStr | None = Field(None, description="Password.")
    dbname: str | None = Field(None, description="Database name.")
    sslmode: str | None = Field(None, description="libpq `sslmode`, e.g. `require`.")
    scratch_schema: str = Field(
        "public", description="Schema of the scratch tables (the split source, per plan)."
    )

    @model_validator(mode="after")
    def _dsn_or_host(self) -> PostgresConnection:
        if self.dsn is None and self.host is None:
            raise ValueError("give either dsn or host (with user, password, dbname)")
        if self.dsn is not None and not self.dsn.get_secret_value().startswith(
            ("postgresql://", "postgres://")
        ):
            raise ValueError("dsn must be a URL: postgresql://user:password@host:port/dbname")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", self.scratch_schema):
            raise ValueError(f"scratch_schema {self.scratch_schema!r} is not a plain identifier")
        return self

    def url(self) -> str:
        """The connection URL (holds the password: never log it)."""
        if self.dsn is not None:
            return self.dsn.get_secret_value()
        credentials = quote(self.user or "", safe="")
        if self.password is not None:
            credentials += ":" + quote(self.password.get_secret_value(), safe="")
        query = urlencode({"sslmode": self.sslmode}) if self.sslmode else ""
        return f"postgresql://{credentials}@{self.host}:{self.port}/{quote(self.dbname or '')}" + (
            f"?{query}" if query else ""
        )


class PostgresWarehouse(SqlWarehouse):
    """Reads a PostgreSQL table or query: counts with ``psycopg``, reads with ``connectorx``."""

    name = "postgres"
    connection_model = PostgresConnection
    connection: PostgresConnection
    stats_sql = StatsSql(
        float="CAST({c} AS DOUBLE PRECISION)",
        median="PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY {c})",
        text="CAST({c} AS TEXT)",
    )

    def __init__(self, connection: BaseModel) -> None:
        super().__init__(connection)
        import connectorx
        import psycopg

        self._psycopg = psycopg
        self._connectorx = connectorx
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: list[Any] = []
        self._owned: list[str] = []  # scratch tables this instance made

    # Running statements

    def _connection(self) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is None or connection.closed:
            try:
                connection = self._psycopg.connect(self.connection.url(), autocommit=True)
            except self._psycopg.Error as exc:
                raise TransientWarehouseError(f"cannot connect to PostgreSQL: {exc}") from None
            self._local.connection = connection
            with self._lock:
                self._opened.append(connection)
        return connection

    def _execute(self, what: str, sql: str, params: Sequence[Any] = ()) -> Any:
        psycopg = self._psycopg
        try:
            return self._connection().execute(sql, list(params))
        except psycopg.OperationalError as exc:
            raise TransientWarehouseError(f"{what}: {exc}") from None
        except psycopg.Error as exc:
            raise PermanentWarehouseError(f"{what}: {exc}") from None

    def query(self, sql: str, params: Sequence[Any]) -> pa.Table:
        cursor = self._execute("query failed", sql, params)
        names = [column.name for column in cursor.description]
        rows = cursor.fetchall()
        return pa.table({name: [row[i] for row in rows] for i, name in enumerate(names)})

    def _read(self, what: str, sql: str, stream: bool = False) -> Any:
        """Rows into Arrow through connectorx; ``sql`` holds no user value."""
        try:
            if stream:
                return self._connectorx.read_sql(
                    self.connection.url(), sql, return_type="arrow_stream",
                    batch_size=_STREAM_BATCH_ROWS,
                )  # fmt: skip
            return self._connectorx.read_sql(self.connection.url(), sql, return_type="arrow")
        except RuntimeError as exc:
            message = str(exc)
            if "does not exist" in message:
                raise ScratchDataMissing(f"{what}: {message}") from None
            error = (
                TransientWarehouseError if "connect" in message.lower() else PermanentWarehouseError
            )
            raise error(f"{what}: {message}") from None

    # The dialect

    def quote(self, name: str) -> str:
        return quote_identifier(name)

    def hash_sql(self, columns: Sequence[str]) -> str:
        row = ", ".join(quote_identifier(c) for c in columns)
        return f"hashtextextended(ROW({row})::text, 0)"

    def _relation(self, source: SourceSpec, placeholders: bool) -> str:
        """What follows ``FROM`` to read ``source``; ``placeholders``: for psycopg, which
        reads ``%`` as the start of a placeholder."""
        if source.files:
            raise PermanentWarehouseError("source.files is not supported by postgres")
        if source.table:
            return table_reference(source.table, "[database.][schema.]table")
        query = source.query or ""
        return f"({query.replace('%', '%%') if placeholders else query}) AS faucet_query"

    def from_sql(self, source: SourceSpec) -> tuple[str, Sequence[Any]]:
        relation = self._relation(source, placeholders=True)
        if source.ds is None:
            return relation, []
        column = quote_identifier(source.partition_column or _DEFAULT_PARTITION_COLUMN)
        return f"{relation} WHERE {column} = %s", [source.ds]

    def source_schema(self, source: SourceSpec) -> pa.Schema:
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

    # The scratch copy

    def _scratch(self, plan: Plan) -> str:
        return f"faucet_{plan.rows_id}"

    def scratch_location(self, plan: Plan) -> str:
        return f"{self.connection.scratch_schema}.{self._scratch(plan)}"

    def _scratch_sql(self, name: str) -> str:
        return f"{quote_identifier(self.connection.scratch_schema)}.{quote_identifier(name)}"

    def materialize(self, plan: Plan) -> None:
        """Copy the split source into the plan's scratch table, unless it is there already."""
        final = self._scratch(plan)
        if self._exists(final):
            return
        temp = f"faucet_tmp_{uuid.uuid4().hex}"
        source = plan.request.source
        hashed, params = self.hashed_rows(source, plan.columns, plan.key)
        h = layout.HASH_COLUMN
        try:
            self._execute(
                f"cannot read {source.describe()}",
                f"CREATE UNLOGGED TABLE {self._scratch_sql(temp)} AS SELECT *, "
                f"{self.dialect.is_eval(h, plan.eval_buckets)} AS {_EVAL}, "
                f"{self.dialect.bucket(h)} AS {_BUCKET} FROM ({hashed}) AS faucet_rows",
                params,
            )
            self._execute(
                "cannot index the scratch table",
                f"CREATE INDEX ON {self._scratch_sql(temp)} ({_EVAL}, {_BUCKET})",
            )
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
            "SELECT to_regclass(%s) IS NOT NULL",
            [f"{quote_identifier(self.connection.scratch_schema)}.{quote_identifier(name)}"],
        ).fetchone()
        return bool(found and found[0])

    def _scratch_rows(self, plan: Plan, chunks: Sequence[ChunkSpec] | None) -> str:
        """A query of the scratch table's rows (of ``chunks``, or all): integers only."""
        selected = ", ".join(quote_identifier(c) for c in [*plan.columns, layout.HASH_COLUMN])
        sql = f"SELECT {selected} FROM {self._scratch_sql(self._scratch(plan))}"
        if chunks is None:
            return sql
        return f"{sql} WHERE {self.in_chunks(plan, chunks, _EVAL, _BUCKET)}"

    def read_buckets(self, plan: Plan, chunk: ChunkSpec) -> pa.Table:
        table: pa.Table = self._read(
            f"cannot read {chunk.describe()}", self._scratch_rows(plan, [chunk])
        )
        return table

    def scan(
        self, plan: Plan, chunks: Sequence[ChunkSpec] | None = None
    ) -> Iterable[pa.RecordBatch] | None:
        """The scratch table's rows (of ``chunks``, or all), streamed, after materializing
        it if need be."""
        self.materialize(plan)
        reader: Iterable[pa.RecordBatch] = self._read(
            "cannot read the scratch table", self._scratch_rows(plan, chunks), stream=True
        )
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
