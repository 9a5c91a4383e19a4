"""A warehouse that speaks SQL: the plugin gives its dialect, the core writes the queries.

A subclass of :class:`SqlWarehouse` says what follows ``FROM`` for a source
(:meth:`~SqlWarehouse.from_sql`), how to hash columns into 64 bits
(:meth:`~SqlWarehouse.hash_sql`), how to quote a name and how to run a query into Arrow;
counting buckets and reading them are written here once, with the layout's arithmetic.
"""

from __future__ import annotations

import dataclasses
import re
from abc import abstractmethod
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa

from faucet_core import layout, vectors
from faucet_core.preprocessing.stats import StatsRequest, StatsSql, TrainStats
from faucet_core.warehouse import (
    BucketCounts,
    PermanentWarehouseError,
    PlanRequest,
    SourceSpec,
    Warehouse,
)

if TYPE_CHECKING:
    from faucet_core.plan import ChunkSpec, Plan

__all__ = [
    "READ_AS", "SqlWarehouse", "quote_identifier", "read_as", "selected_column", "table_reference",
]  # fmt: skip

#: Field metadata of a source column that the warehouse reads through an SQL expression
#: rather than as stored (a type its Arrow reader cannot give as numbers or text): the
#: expression, with ``{c}`` for the quoted column, e.g. ``{c}::text``.
READ_AS = b"faucet.read_as"

_IDENTIFIER_PART = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


def quote_identifier(name: str) -> str:
    """``name`` quoted with double quotes, as standard SQL (DuckDB, PostgreSQL) does."""
    return '"' + name.replace('"', '""') + '"'


def table_reference(table: str, form: str = "[catalog.][schema.]table") -> str:
    """``table`` (1 to 3 dot-separated plain identifiers) quoted, for SQL.

    Raises:
        PermanentWarehouseError: A part is not a plain identifier (letters, digits, ``_``,
            ``$``, not starting with a digit); ``form`` says what is expected.
    """
    parts = table.split(".")
    if not 1 <= len(parts) <= 3 or not all(_IDENTIFIER_PART.match(p) for p in parts):
        raise PermanentWarehouseError(f"source.table {table!r} is not a table name ({form})")
    return ".".join(quote_identifier(p) for p in parts)


def read_as(name: str, schema: pa.Schema | None, quoted: str) -> str:
    """How the source's column ``name`` (``quoted``) is read: as it is, or through the
    expression ``schema`` (the source's or a plan's) keeps for it (:data:`READ_AS`)."""
    metadata = schema.field(name).metadata if schema is not None else None
    if not metadata or READ_AS not in metadata:
        return quoted
    expression: str = metadata[READ_AS].decode().format(c=quoted)
    return expression


def selected_column(name: str, schema: pa.Schema | None, quoted: str) -> str:
    """The column ``name`` (``quoted``) in a select list, read as :func:`read_as` says,
    under its own name."""
    expression = read_as(name, schema, quoted)
    return f"{expression} AS {quoted}"


class SqlWarehouse(Warehouse):
    """Counts and reads buckets with SQL built from the plugin's dialect.

    Set :attr:`dialect` when the warehouse has no ``MOD(a, n)`` function, and implement
    :meth:`from_sql`, :meth:`hash_sql`, :meth:`quote` and :meth:`query`. Without
    :meth:`~faucet_core.warehouse.Warehouse.materialize`, each chunk is read from the
    source with a filter on its buckets (one scan of the source per chunk read).
    """

    dialect: ClassVar[layout.Dialect] = layout.Dialect()
    #: How the dialect spells the statistics preprocessing needs; ``None``: the core
    #: computes them from the train chunks.
    stats_sql: ClassVar[StatsSql | None] = None
    #: The column ``source.ds`` filters when ``source.partition_column`` is not set, as
    #: the warehouse stores a column created as ``ds``.
    default_partition_column: ClassVar[str] = "ds"
    #: The rows of one day of a timestamp column (:meth:`ds_filter`): ``{c}`` is the
    #: quoted column, ``{p}`` the day's bind parameter (given twice); ``None``: ``ds`` is
    #: compared as it is.
    day_filter: ClassVar[str | None] = None

    @abstractmethod
    def from_sql(self, source: SourceSpec) -> tuple[str, Sequence[Any]]:
        """What follows ``FROM`` to read ``source`` (with a ``WHERE`` for ``ds``), and
        the query parameters it uses."""

    @abstractmethod
    def hash_sql(self, columns: Sequence[str]) -> str:
        """A 64-bit integer hash of ``columns`` (names as given, not yet quoted)."""

    @abstractmethod
    def quote(self, name: str) -> str:
        """``name`` quoted as a column name."""

    @abstractmethod
    def query(self, sql: str, params: Sequence[Any]) -> pa.Table:
        """Run ``sql`` with ``params`` and return its result as Arrow.

        Raises:
            TransientWarehouseError: A failure that a retry may fix.
            PermanentWarehouseError: Any other failure.
        """

    def query_counts(self, sql: str, params: Sequence[Any]) -> pa.Table:
        """The rows of a count query (:meth:`~faucet_core.layout.Dialect.count_query`), as
        :meth:`query` returns them; a warehouse whose client reads a result slowly row by
        row may read these packed into fewer values (BigQuery)."""
        return self.query(sql, params)

    def source_schema(self, source: SourceSpec) -> pa.Schema:
        """The columns of ``source`` and their Arrow types (default: a ``LIMIT 0`` query)."""
        sql, params = self.from_sql(source)
        try:
            return self.query(f"SELECT * FROM {sql} LIMIT 0", params).schema
        except PermanentWarehouseError as exc:
            raise PermanentWarehouseError(f"cannot read {source.describe()}: {exc}") from exc

    def partition_column(self, source: SourceSpec, names: Sequence[str] | None = None) -> str:
        """The column ``source.ds`` filters; with ``names`` (the source's columns), checked.

        Raises:
            PermanentWarehouseError: ``names`` lacks it.
        """
        column = source.partition_column or self.default_partition_column
        if names is not None and column not in names:
            raise PermanentWarehouseError(
                f"source.ds is set but {source.describe()} has no partition column {column!r} "
                f"(set source.partition_column); it has {list(names)}"
            )
        return column

    def ds_filter(self, source: SourceSpec, placeholder: str) -> tuple[str, list[Any]]:
        """The condition ``source.ds`` puts on the source (``placeholder``: how the driver
        writes a bind parameter) and its parameters: the partition column equals it, or,
        where the dialect says how (:attr:`day_filter`) and the column holds timestamps,
        falls on that day."""
        column = self.quote(self.partition_column(source))
        if self.day_filter is not None and self.partition_holds_timestamps(source):
            return self.day_filter.format(c=column, p=placeholder), [source.ds, source.ds]
        return f"{column} = {placeholder}", [source.ds]

    def partition_holds_timestamps(self, source: SourceSpec) -> bool:
        """Whether the column ``source.ds`` filters holds timestamps, so that ``ds`` keeps
        that day rather than its midnight (:meth:`from_sql` says how); looked up once per
        source and partition column, from :meth:`source_schema`."""
        whole = dataclasses.replace(source, ds=None, columns=None)
        name = self.partition_column(source)
        known: dict[tuple[SourceSpec, str], bool] = vars(self).setdefault("_timestamps", {})
        if (whole, name) not in known:
            schema = self.source_schema(whole)
            kind = schema.field(name).type if name in schema.names else pa.null()
            known[(whole, name)] = pa.types.is_timestamp(kind)
        return known[(whole, name)]

    def columns(self, request: PlanRequest) -> pa.Schema:
        """The columns to read and their types, checked against the source's (the key's,
        and with ``ds`` the partition column's, too).

        Raises:
            PermanentWarehouseError: Naming the columns that do not exist.
        """
        source = request.source
        schema = self.source_schema(source)
        available = schema.names
        if source.ds is not None:
            self.partition_column(source, available)
        columns = tuple(source.columns) if source.columns is not None else tuple(available)
        for setting, names in (("columns", columns), ("split_key", request.split.key or ())):
            missing = [c for c in names if c not in available]
            if missing:
                raise PermanentWarehouseError(
                    f"source.{setting} {missing} not found in {source.describe()}; "
                    f"it has {available}"
                )
        return pa.schema([schema.field(name) for name in columns])

    def uniform_lists(self, request: PlanRequest, schema: pa.Schema) -> pa.Schema:
        """``schema`` with its list columns of numbers whose lists all hold one number of
        values as vector columns of that size (:func:`~faucet_core.vectors.uniform_lists`),
        from one query of their least and most sizes; as it is where the dialect cannot
        measure a list (:attr:`StatsSql.length <faucet_core.preprocessing.stats.StatsSql>`).
        """
        varying = vectors.varying_lists(schema)
        length = self.stats_sql.length if self.stats_sql is not None else None
        if not varying or length is None:
            return schema
        sql, params = self.from_sql(request.source)
        items = [
            f"{aggregate}({length.format(c=read_as(name, schema, self.quote(name)))}) "
            f"AS s{2 * index + offset}"
            for index, name in enumerate(varying)
            for offset, aggregate in enumerate(("MIN", "MAX"))
        ]
        found = list(
            self.query(f"SELECT {', '.join(items)} FROM {sql}", params).to_pylist()[0].values()
        )
        sizes = {
            name: (int(found[2 * index] or 0), int(found[2 * index + 1] or 0))
            for index, name in enumerate(varying)
        }
        return vectors.uniform_lists(schema, sizes)

    def hashed_rows(
        self,
        source: SourceSpec,
        columns: Sequence[str],
        key: Sequence[str],
        schema: pa.Schema | None = None,
        once: bool = False,
    ) -> tuple[str, Sequence[Any]]:
        """A query of ``columns`` (read as ``schema`` says, :func:`read_as`) and the key
        hash (as :data:`~faucet_core.layout.HASH_COLUMN`), and its parameters; ``once``:
        the hash as :meth:`once_per_row` gives it."""
        sql, params = self.from_sql(source)
        selected = "".join(f"{selected_column(c, schema, self.quote(c))}, " for c in columns)
        hashed = self.key_hash_sql(source, key)
        hashed = self.once_per_row(hashed) if once else hashed
        return f"SELECT {selected}{hashed} AS {layout.HASH_COLUMN} FROM {sql}", params

    def once_per_row(self, expression: str) -> str:
        """``expression`` as a select-list item that a query over its column computes once
        per row: by default as it is. A warehouse whose planner puts the expression in
        place of each use of the column wraps it so that it cannot. Counting asks for it,
        using each row's key hash three times (the split flag, the bucket, the checksum);
        reads with a filter on the hash do not, where holding each row whole before the
        filter would cost more."""
        return expression

    def key_hash_sql(self, source: SourceSpec, key: Sequence[str]) -> str:
        """The hash of ``key`` in ``source``'s rows: :meth:`hash_sql` of it, unless the
        warehouse's hash depends on the key's types in ``source``."""
        return self.hash_sql(key)

    def stream(self, sql: str, params: Sequence[Any]) -> Iterable[pa.RecordBatch] | None:
        """Run ``sql`` and stream its result as Arrow batches, without holding it all in
        memory; ``None`` (the default) if the warehouse cannot."""
        return None

    def source_rows(
        self, plan: Plan, chunks: Sequence[ChunkSpec] | None
    ) -> tuple[str, Sequence[Any]]:
        """A query of ``plan``'s rows (of ``chunks``, or all) read from the source:
        ``plan.columns``, then the key hash (named as :data:`~faucet_core.layout.HASH_COLUMN`
        exactly, whatever case the dialect gives a name without quotes); its parameters."""
        hashed, params = self.hashed_rows(plan.request.source, plan.columns, plan.key, plan.schema)
        h = layout.HASH_COLUMN
        selected = "".join(f"{self.quote(c)}, " for c in plan.columns)
        sql = f"SELECT {selected}{h} AS {self.quote(h)} FROM ({hashed}) AS faucet_rows"
        if chunks is not None:
            sql += f" WHERE {self.in_chunks(plan, chunks)}"
        return sql, params

    def scan(
        self, plan: Plan, chunks: Sequence[ChunkSpec] | None = None
    ) -> Iterable[pa.RecordBatch] | None:
        return self.stream(*self.source_rows(plan, chunks))

    def in_chunks(
        self,
        plan: Plan,
        chunks: Sequence[ChunkSpec],
        is_eval: str | None = None,
        bucket: str | None = None,
    ) -> str:
        """A condition selecting the rows of ``chunks``: by the layout's arithmetic on the
        key hash, or by ``is_eval`` and ``bucket`` expressions where a scratch copy stores
        them."""
        is_eval = is_eval or self.dialect.is_eval(layout.HASH_COLUMN, plan.eval_buckets)
        bucket = bucket or self.dialect.bucket(layout.HASH_COLUMN)
        ranges = [f"({self.dialect.in_range(is_eval, bucket, c.buckets)})" for c in chunks]
        return " OR ".join(ranges) or "FALSE"

    def count_buckets(self, request: PlanRequest) -> BucketCounts:
        """As :meth:`Warehouse.count_buckets`; its stats are what the counting cost, where
        the warehouse says (:attr:`~faucet_core.warehouse.Warehouse.costs`)."""
        before = dataclasses.replace(self.costs)
        schema = self.uniform_lists(request, self.columns(request))
        columns = tuple(schema.names)
        try:
            counted = self.count_rows(request, request.key(columns))
        except PermanentWarehouseError as exc:  # e.g. a ds value the server refuses
            raise PermanentWarehouseError(
                f"cannot count the rows of {request.source.describe()}: {exc}"
            ) from exc
        spent = dataclasses.asdict(self.costs - before)
        stats = {name: value for name, value in spent.items() if value}
        return BucketCounts(columns, counted, stats, schema=schema)

    def count_rows(self, request: PlanRequest, key: Sequence[str]) -> pa.Table:
        """Rows and checksum per (split, bucket) of the source's rows hashed by ``key``, a
        count table (:data:`~faucet_core.layout.COUNT_COLUMNS`): by default, the dialect's
        count query run in the warehouse (:meth:`query_counts`)."""
        hashed, params = self.hashed_rows(request.source, (), key, once=True)
        count_query = self.dialect.count_query(hashed, request.split.eval_buckets)
        return self.query_counts(count_query, params)

    def column_stats(self, plan: Plan, request: StatsRequest) -> TrainStats | None:
        if self.stats_sql is None:
            return None
        hashed, params = self.hashed_rows(plan.request.source, plan.columns, plan.key, plan.schema)
        train = f"NOT {self.dialect.is_eval(layout.HASH_COLUMN, plan.eval_buckets)}"
        rows = f"SELECT * FROM ({hashed}) AS faucet_rows WHERE {train}"
        sql, read = self.stats_sql.query(rows, request, self.quote)
        return read(self.query(sql, params).to_pylist()[0])

    def read_buckets(self, plan: Plan, chunk: ChunkSpec) -> pa.Table:
        return self.query(*self.source_rows(plan, [chunk]))
