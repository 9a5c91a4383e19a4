"""The Snowflake warehouse: count in one query, copy once, read chunks as Arrow.

Everything runs through ``snowflake-connector-python``, with server-side bind parameters
(``?``) for every value of the user's. The key hash is Snowflake's ``HASH(key columns)``,
a signed 64-bit integer. A table's version is its ``LAST_ALTERED``, ``ROW_COUNT`` and
``BYTES`` in ``INFORMATION_SCHEMA.TABLES`` (a view or an external table has none).

On the first chunk the cache cannot serve, the split source is copied once into a
TRANSIENT scratch table named after the plan's rows, with the split flag and bucket as
columns, sorted and clustered by them (so a chunk's read prunes to its micro-partitions).
It is made, found and dropped as the core's protocol says (:mod:`faucet_core.scratch`).
Chunks, and the one streamed pass that fills the cache, are read from it as Arrow.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pyarrow as pa
from pydantic import BaseModel

from faucet_core import layout
from faucet_core.plan import ChunkSpec, Plan
from faucet_core.scratch import ScratchWarehouse
from faucet_core.warehouse import (
    PermanentWarehouseError,
    PlanRequest,
    SourceSpec,
    TransientWarehouseError,
    WarehouseError,
)
from faucet_snowflake.connection import SnowflakeConnection, connect_arguments
from faucet_snowflake.errors import classify
from faucet_snowflake.names import parse_table, quote_identifier, stored_column
from faucet_snowflake.types import ARRAY, WIDE, conform, number_arrays, schema_of, widened

__all__ = ["SnowflakeWarehouse"]


_EVAL, _BUCKET = layout.EVAL_COLUMN, layout.BUCKET_COLUMN
#: Statements that run on the virtual warehouse (the others are metadata and DDL).
_WAREHOUSE_STATEMENTS = frozenset({"copy", "read", "scan", "query", "range"})
#: Snowflake's error code for an object that does not exist (or is not visible).
_NO_SUCH_OBJECT = 2003
_SCRATCH_COMMENT = "Faucet: a scratch copy of a split source"
#: How a copy's comment gives its expiry, an ISO 8601 instant in UTC.
_EXPIRES = re.compile(r"; expires (\S+)$")
log = logging.getLogger(__name__)


def _columns(cursor: Any) -> Any:
    """A result's column metadata in the connector's full form: the public
    ``description`` leaves out a VECTOR's dimension and element type."""
    return getattr(cursor, "_description_internal", None) or cursor.description


def _expiry_in(comment: str | None) -> datetime.datetime | None:
    """The expiry a scratch copy's comment gives, if any."""
    match = _EXPIRES.search(comment or "")
    return datetime.datetime.fromisoformat(match.group(1)) if match else None


class SnowflakeWarehouse(ScratchWarehouse):
    """Reads a Snowflake table or query through a TRANSIENT scratch table, written in
    split and bucket order, kept until its expiry."""

    name = "snowflake"
    connection_model = SnowflakeConnection
    connection: SnowflakeConnection
    default_partition_column = "DS"  # ds, as Snowflake resolves it
    scratch_expires = True
    # In the session's TIMEZONE, for TIMESTAMP_LTZ and TIMESTAMP_TZ.
    day_filter = "{c} >= TO_DATE({p}) AND {c} < DATEADD(day, 1, TO_DATE({p}))"

    @classmethod
    def column_name(cls, written: str) -> str:
        """As Snowflake SQL resolves it (:func:`~faucet_snowflake.names.stored_column`):
        ``label`` is ``LABEL``, ``"label"`` is ``label``."""
        return stored_column(written)

    def __init__(self, connection: BaseModel) -> None:
        super().__init__(connection)
        try:
            import snowflake.connector
            from snowflake.connector.constants import FIELD_ID_TO_NAME
        except ImportError as exc:
            raise PermanentWarehouseError(
                f"the snowflake datastore needs snowflake-connector-python ({exc}); "
                "install it with: pip install 'faucetml[snowflake]'"
            ) from None
        self._connector = snowflake.connector
        self._type_names = FIELD_ID_TO_NAME
        self._secrets = self.connection.secrets()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: list[Any] = []
        #: The kind of every statement this instance ran, in order: ``version``,
        #: ``describe``, ``query`` (:meth:`query`: counting, statistics), ``range`` (the
        #: least and most values of wide integers, the sizes of arrays), ``expired`` (the
        #: lookup of expired copies), ``exists``, ``copy``, ``rename``, ``expire``,
        #: ``read``, ``scan``, ``drop``; for ``faucet validate``, ``explain`` and
        #: ``session`` (the session's warehouse, database and schema). Those that run on
        #: the virtual warehouse are counted in ``costs.query_jobs``.
        self.statements: list[str] = []
        self._explained: dict[tuple[str, tuple[Any, ...]], tuple[int, int, int]] = {}

    # Running statements

    def _where(self) -> str:
        c = self.connection
        place = f"connection {c.connection_name!r}" if c.connection_name else f"account {c.account}"
        return f"{place} as {c.user}" if c.user else place

    def _session(self) -> Any:
        """This thread's connection, opened on first use."""
        session = getattr(self._local, "session", None)
        if session is None or session.is_closed():
            try:
                session = self._connector.connect(**connect_arguments(self.connection))
            except Exception as exc:
                what = f"cannot connect to Snowflake {self._where()}"
                raise classify(exc, what, self._secrets) from None
            self._local.session = session
            with self._lock:
                self._opened.append(session)
        return session

    def _forget_session(self) -> None:
        """Drop this thread's connection after a failure, so a retry opens a new one."""
        session = getattr(self._local, "session", None)
        self._local.session = None
        if session is not None:
            with contextlib.suppress(Exception):
                session.close()

    def _execute(
        self,
        kind: str,
        what: str,
        sql: str,
        params: Sequence[Any] = (),
        *,
        describe: bool = False,
        scratch: Plan | None = None,
    ) -> Any:
        """Run ``sql`` and return its cursor (to fetch from, then close).

        ``describe``: only compile it (the result's columns, no rows, no warehouse);
        ``scratch``: it reads this plan's scratch table, whose absence is
        :class:`~faucet_core.warehouse.ScratchDataMissing`.
        """
        session = self._session()
        with self._lock:
            self.statements.append(kind)
            if kind in _WAREHOUSE_STATEMENTS:
                self.costs.query_jobs += 1
        cursor = session.cursor()
        bound = list(params) or None
        try:
            if describe:
                cursor.describe(sql, bound)
            else:
                cursor.execute(sql, bound)
        except Exception as exc:
            cursor.close()
            if scratch is not None and getattr(exc, "errno", None) == _NO_SUCH_OBJECT:
                raise self.scratch_gone(scratch, what) from None
            error = classify(exc, what, self._secrets)
            if isinstance(error, TransientWarehouseError):
                self._forget_session()
            raise error from None
        return cursor

    def _fetch(self, cursor: Any, what: str, schema: pa.Schema | None = None) -> pa.Table:
        """The whole result of ``cursor`` as Arrow, in ``schema`` (default: the types of
        its columns)."""
        try:
            target = schema or schema_of(_columns(cursor), self._type_names, what)
            table = cursor.fetch_arrow_all(force_microsecond_precision=True)
        except WarehouseError:
            raise
        except Exception as exc:
            raise classify(exc, what, self._secrets) from None
        finally:
            cursor.close()
        return target.empty_table() if table is None else conform(table, target, what)

    def _stream(self, cursor: Any, schema: pa.Schema, what: str) -> Iterator[pa.RecordBatch]:
        """The result of ``cursor`` as Arrow batches, one result batch at a time."""
        try:
            for table in cursor.fetch_arrow_batches(force_microsecond_precision=True):
                yield from conform(table, schema, what).to_batches()
        except WarehouseError:
            raise
        except Exception as exc:
            raise classify(exc, what, self._secrets) from None
        finally:
            cursor.close()

    def _rows(self, kind: str, what: str, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """The rows of ``sql`` as tuples (a small result: metadata, measures)."""
        cursor = self._execute(kind, what, sql, params)
        try:
            return list(cursor.fetchall())
        finally:
            cursor.close()

    def query(self, sql: str, params: Sequence[Any]) -> pa.Table:
        return self._fetch(self._execute("query", "query failed", sql, params), "query failed")

    # The dialect

    def quote(self, name: str) -> str:
        return quote_identifier(name)

    def hash_sql(self, columns: Sequence[str]) -> str:
        # HASH is a signed 64-bit integer, on which the fold below is the identity. It maps
        # an unsigned 64-bit hash onto the same range (two's complement), so that the SQL
        # also runs where HASH is unsigned (fakesnow, the local stand-in, runs DuckDB's);
        # adding 3 * 2^63 first keeps the sum positive, and wider than 64 bits there.
        key = ", ".join(quote_identifier(c) for c in columns)
        return f"CAST(MOD(HASH({key}) + {3 * 2**63}, {2**64}) - {2**63} AS BIGINT)"

    def _relation(self, source: SourceSpec) -> str:
        if source.files:
            raise PermanentWarehouseError("source.files is not supported by snowflake")
        if source.table:
            return f"{parse_table(source.table).sql} AS faucet_source"
        return f"({source.query}) AS faucet_source"

    def from_sql(self, source: SourceSpec) -> tuple[str, Sequence[Any]]:
        relation = self._relation(source)
        if source.ds is None:
            return relation, []
        condition, params = self.ds_filter(source, "?")
        return f"{relation} WHERE {condition}", params

    def source_schema(self, source: SourceSpec) -> pa.Schema:
        """The columns of ``source`` as Snowflake names them, from compiling a query of it
        (no rows read, no warehouse needed)."""
        what = f"cannot read {source.describe()}"
        cursor = self._execute(
            "describe", what, f"SELECT * FROM {self._relation(source)} LIMIT 0", describe=True
        )
        try:
            return schema_of(_columns(cursor), self._type_names, what)
        finally:
            cursor.close()

    def columns(self, request: PlanRequest) -> pa.Schema:
        """As :meth:`SqlWarehouse.columns`, then measured in one query (from metadata
        alone where Snowflake can): integer columns of more than 18 digits whose values do
        not fit 64 bits (their least and most values) as decimals; ``ARRAY`` columns of
        numbers (their least and most sizes, and the largest array) as lists of numbers,
        vectors where every array has one size."""
        try:
            schema = super().columns(request)
        except PermanentWarehouseError as exc:
            if not str(exc).startswith(("source.columns", "source.split_key")):
                raise
            raise PermanentWarehouseError(
                f"{exc} (a name without double quotes means its upper-case form, as in "
                "Snowflake SQL; write one created in double quotes in them: '\"label\"')"
            ) from None
        wide = [f.name for f in schema if f.metadata and WIDE in f.metadata]
        arrays = [f.name for f in schema if f.metadata and ARRAY in f.metadata]
        if not wide and not arrays:
            return schema
        items = [f"{aggregate}({self.quote(n)})" for n in wide for aggregate in ("MIN", "MAX")]
        for name in arrays:
            size = f"ARRAY_SIZE({self.quote(name)})"
            items += [f"MIN({size})", f"MAX({size})", f"MAX_BY({self.quote(name)}, {size})"]
        sql, params = self.from_sql(request.source)
        (found,) = self._rows(
            "range", f"cannot read {request.source.describe()}",
            f"SELECT {', '.join(items)} FROM {sql}", params,
        )  # fmt: skip
        ranges = {name: (found[2 * i], found[2 * i + 1]) for i, name in enumerate(wide)}
        start = 2 * len(wide)
        measured = {
            name: tuple(found[start + 3 * i : start + 3 * i + 3]) for i, name in enumerate(arrays)
        }
        return number_arrays(widened(schema, ranges), measured)

    def source_identity(self, source: SourceSpec) -> str:
        """The account (or host), the default database and schema, the user and role: what
        decides which table a name means and which rows it shows."""
        c = self.connection
        return layout.stable_digest(
            c.account, c.host, c.port, c.connection_name, c.database, c.schema, c.user, c.role
        )

    def data_version(self, source: SourceSpec) -> str | None:
        """A table's ``LAST_ALTERED``, ``ROW_COUNT`` and ``BYTES`` (metadata only); ``None``
        for a query, a view or an external table.

        Raises:
            PermanentWarehouseError: The table does not exist or is not visible to the role.
        """
        if not source.table:
            return None
        table = parse_table(source.table)
        views = "INFORMATION_SCHEMA.TABLES"
        if table.database is not None:
            views = f"{table.database}.{views}"
        rows = self._rows(
            "version",
            f"cannot look up {source.describe()}",
            f"SELECT TABLE_TYPE, LAST_ALTERED, ROW_COUNT, BYTES FROM {views} "
            "WHERE TABLE_SCHEMA = COALESCE(?, CURRENT_SCHEMA()) AND TABLE_NAME = ?",
            [table.schema, table.name],
        )
        if not rows:
            raise PermanentWarehouseError(
                f"table {source.table} does not exist or is not authorized "
                f"(looked up as {'.'.join(table.stored)} in {views})"
            )
        kind, altered, row_count, size = rows[0]
        if kind != "BASE TABLE":
            return None
        return layout.stable_digest(str(altered), row_count, size)

    # The scratch copy

    def copy_name(self, copy_id: str) -> str:
        return f"FAUCET_SCRATCH_{copy_id.upper()}"

    def temporary_scratch_name(self) -> str:
        return super().temporary_scratch_name().upper()

    def scratch_reference(self, name: str) -> str:
        """``name`` (upper-case, unquoted) in the session's current database and schema."""
        return name

    def scratch_location(self, plan: Plan) -> str:
        """``database.schema.table`` of ``plan``'s scratch copy, as far as the settings say
        (it is made in the session's current database and schema)."""
        where = [p for p in (self.connection.database, self.connection.schema) if p]
        return ".".join([*where, self.scratch_name(plan)])

    def scratch_exists(self, name: str) -> bool:
        ((found,),) = self._rows(
            "exists",
            "cannot look up the scratch table",
            "SELECT COUNT(*) FROM INFORMATION_SCHEMA.TABLES "
            "WHERE TABLE_SCHEMA = CURRENT_SCHEMA() AND TABLE_NAME = ?",
            [name],
        )
        return bool(found)

    def create_scratch(
        self, source: SourceSpec, name: str, rows: str, params: Sequence[Any]
    ) -> None:
        """A TRANSIENT table, written in split and bucket order, with no Time Travel. No
        clustering key: it would turn on Automatic Clustering, a billed service, for a
        table that is written once in the order its reads need."""
        self._execute(
            "copy",
            f"cannot copy {source.describe()} into a scratch table",
            f"CREATE TRANSIENT TABLE {name} "
            f"DATA_RETENTION_TIME_IN_DAYS = 0 COMMENT = '{_SCRATCH_COMMENT}' AS "
            f"{rows} ORDER BY {_EVAL}, {_BUCKET}",
            params,
        ).close()

    def rename_scratch(self, temporary: str, name: str) -> None:
        self._execute(
            "rename", "cannot name the scratch table", f"ALTER TABLE {temporary} RENAME TO {name}"
        ).close()

    def drop_scratch(self, name: str) -> None:
        self._execute("drop", "cannot drop a scratch table", f"DROP TABLE IF EXISTS {name}").close()

    def set_expiry(self, name: str) -> None:
        """The expiry, ``scratch_expiration_hours`` from now, in the copy's comment."""
        hours = self.connection.scratch_expiration_hours
        expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=hours)
        comment = f"{_SCRATCH_COMMENT}; expires {expires.strftime('%Y-%m-%dT%H:%M:%SZ')}"
        self._execute(
            "expire", "cannot set the scratch table's expiry",
            f"ALTER TABLE {name} SET COMMENT = '{comment}'",
        ).close()  # fmt: skip

    def drop_expired(self) -> None:
        """Drop the scratch copies of the session's schema whose expiry has passed (a
        metadata query)."""
        found = self._rows(
            "expired", "cannot look up expired scratch tables",
            "SELECT TABLE_NAME, COMMENT FROM INFORMATION_SCHEMA.TABLES "
            "WHERE TABLE_SCHEMA = CURRENT_SCHEMA() AND TABLE_NAME LIKE 'FAUCET_SCRATCH_%'",
        )  # fmt: skip
        now = datetime.datetime.now(datetime.timezone.utc)
        for name, comment in found:
            expiry = _expiry_in(comment)
            if expiry is not None and expiry < now:
                log.info("dropping the expired scratch table %s", name)
                try:
                    self.drop_scratch(name)
                except PermanentWarehouseError as exc:  # another role's: its owner drops it
                    log.warning("cannot drop the expired scratch table %s: %s", name, exc)

    # What a run will cost (faucet validate): compiled, never run

    def _explain(self, what: str, sql: str, params: Sequence[Any]) -> tuple[int, int, int]:
        """The bytes and micro-partitions ``sql`` would read, and the micro-partitions of
        what it reads, from ``EXPLAIN USING JSON``: compiled, not run (no warehouse)."""
        key = (sql, tuple(params))
        if key not in self._explained:
            (found,) = self._rows("explain", what, f"EXPLAIN USING JSON {sql}", params)
            stats = json.loads(found[0]).get("GlobalStats", {})
            read, assigned, total = (
                int(stats.get(part) or 0)
                for part in ("bytesAssigned", "partitionsAssigned", "partitionsTotal")
            )
            self._explained[key] = (read, assigned, total)
        return self._explained[key]

    def _planning_queries(self, request: PlanRequest) -> dict[str, tuple[str, Sequence[Any]]]:
        """The copy's query, and the counting query as it runs on the source (where the
        role cannot create the copy), each with its parameters."""
        schema = self.columns(request)
        columns = schema.names
        key, eval_buckets = request.key(columns), request.split.eval_buckets
        hashed, params = self.hashed_rows(request.source, (), key)
        return {
            "copy": self._copied_rows(request.source, columns, key, schema, eval_buckets),
            "count": (self.dialect.count_query(hashed, eval_buckets), params),
        }

    def estimate(self, request: PlanRequest) -> dict[str, int]:
        """What the scratch copy will read of the source (``EXPLAIN``); the counting query
        then reads the copy's split and bucket columns only."""
        sql, params = self._planning_queries(request)["copy"]
        return {
            "materializing": self._explain(
                f"cannot explain {request.source.describe()}", sql, params
            )[0]
        }

    def cost_notes(self, request: PlanRequest, plan: Plan | None) -> list[str]:
        """The virtual warehouse that runs the statements; without a saved plan, what
        ``EXPLAIN`` says the copy and a count of the source read; the copy's name and
        expiry."""
        from faucet_core.report import size  # with rich, which only the command line needs

        notes = [f"runs on: {self._runs_on()}"]
        hours = self.connection.scratch_expiration_hours
        if plan is None:
            what = f"cannot explain {request.source.describe()}"
            queries = self._planning_queries(request)
            copy = self._explain(what, *queries["copy"])
            count = self._explain(what, *queries["count"])
            notes.append(
                f"EXPLAIN: the copy reads {size(copy[0])} ({copy[1]} of {copy[2]} "
                "micro-partitions of the source); counting it reads its split and bucket "
                f"columns only (counting the source instead, as for a role that cannot create "
                f"tables here: {size(count[0])}, {count[1]} micro-partitions)"
            )
            notes.append(
                f"scratch copy: {self._scratch_place()}.FAUCET_SCRATCH_<the copy's id>, "
                f"kept {hours:g} h after it is made (connection.scratch_expiration_hours) for "
                "every reader of the plan, then dropped by the next copy made there"
            )
            return notes
        name = self.scratch_name(plan)
        expiry = self._expiry(name)
        if expiry is None:
            notes.append(
                f"scratch copy {name}: not there (expired or dropped); the first chunk the "
                f"cache lacks makes it again, kept {hours:g} h"
            )
        elif expiry < datetime.datetime.now(datetime.timezone.utc):
            notes.append(
                f"scratch copy {name}: expired {expiry:%Y-%m-%dT%H:%M:%SZ}, used until the "
                "next copy made there drops it"
            )
        else:
            notes.append(f"scratch copy {name}: kept until {expiry:%Y-%m-%dT%H:%M:%SZ}")
        return notes

    def _runs_on(self) -> str:
        if self.connection.warehouse:
            return f"the virtual warehouse {self.connection.warehouse} (connection.warehouse)"
        ((found,),) = self._rows(
            "session", "cannot look up the session's warehouse", "SELECT CURRENT_WAREHOUSE()"
        )
        if found is None:
            return "no virtual warehouse: set connection.warehouse (counting and reading need one)"
        return f"the virtual warehouse {found} (the user's default)"

    def _scratch_place(self) -> str:
        """The database and schema scratch copies go to: the session's."""
        ((database, schema),) = self._rows(
            "session", "cannot look up the session's schema",
            "SELECT CURRENT_DATABASE(), CURRENT_SCHEMA()",
        )  # fmt: skip
        return f"{database}.{schema}"

    def _expiry(self, name: str) -> datetime.datetime | None:
        """The expiry of the copy ``name``; ``None`` if there is no copy."""
        found = self._rows(
            "exists", "cannot look up the scratch table",
            "SELECT COMMENT FROM INFORMATION_SCHEMA.TABLES "
            "WHERE TABLE_SCHEMA = CURRENT_SCHEMA() AND TABLE_NAME = ?", [name],
        )  # fmt: skip
        return _expiry_in(found[0][0]) if found else None

    def _chunk_schema(self, plan: Plan) -> pa.Schema | None:
        if plan.schema is None:
            return None
        return pa.schema([*plan.schema, pa.field(layout.HASH_COLUMN, pa.int64())])

    def copies_when_planning(self) -> bool:
        """Yes: the copy is made while planning and its rows are counted, so every chunk
        reads the rows planned, whatever the source does after (the copy is made anyway,
        at the first read: now the counting query reads the copy's two small columns)."""
        return True

    def cannot_copy(self, error: PermanentWarehouseError) -> bool:
        """A role without the privilege to create tables in the session's schema."""
        return "Insufficient privileges" in str(error)

    def _read_rows(
        self, kind: str, plan: Plan, chunks: Sequence[ChunkSpec] | None
    ) -> tuple[Any, str]:
        """A cursor over ``plan``'s rows (of ``chunks``, or all): of the scratch table, or
        of the source where the role may not copy it; and what a failure says."""
        copy = self.reads_copy(plan)
        place = self.scratch_location(plan) if copy else plan.request.source.describe()
        what = f"cannot read {place}"
        if chunks is not None and len(chunks) == 1:
            what = f"cannot read {chunks[0].describe()} of {place}"
        sql, params = self.rows_query(plan, chunks)
        return self._execute(kind, what, sql, params, scratch=plan if copy else None), what

    def read_buckets(self, plan: Plan, chunk: ChunkSpec) -> pa.Table:
        cursor, what = self._read_rows("read", plan, [chunk])
        return self._fetch(cursor, what, self._chunk_schema(plan))

    def scan(
        self, plan: Plan, chunks: Sequence[ChunkSpec] | None = None
    ) -> Iterable[pa.RecordBatch] | None:
        """The scratch table's rows (of ``chunks``, or all), streamed, after materializing
        it if need be (the source's, where the role may not copy it)."""
        self.materialize(plan)
        cursor, what = self._read_rows("scan", plan, chunks)
        schema = self._chunk_schema(plan) or schema_of(_columns(cursor), self._type_names, what)
        return self._stream(cursor, schema, what)

    def close(self) -> None:
        if not hasattr(self, "_lock"):  # the connector could not be imported
            return
        super().close()
        with self._lock:
            opened, self._opened = self._opened, []
        for session in opened:
            with contextlib.suppress(Exception):
                session.close()
