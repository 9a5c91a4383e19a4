"""The DuckDB warehouse: a table in a DuckDB file, a SQL query, or Parquet/CSV files.

Planning runs two small aggregate queries over the source (split sizes, then rows per
chunk). :meth:`DuckDBWarehouse.prepare` then materializes the split source once, with
one ``COPY ... PARTITION_BY`` into a Parquet folder per chunk in a scratch folder, so each
chunk read touches only its own file, from this process or any other (DataLoader workers).

Rows go to the eval split when ``hash(split key) % 10000`` falls below the eval share,
to chunks by a second, salted hash, and are ordered inside a chunk by a third: all are
functions of the row's content, so the split, the chunks and the order inside each chunk
are the same in every run, and chunks are well mixed whatever the storage order.
DuckDB's ``hash`` is version-specific, so the DuckDB version is part of the fingerprint.
"""

from __future__ import annotations

import glob
import math
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from faucet_core.warehouse import (
    ChunkSpec,
    PermanentWarehouseError,
    Plan,
    PlanRequest,
    SourceSpec,
    SplitName,
    TransientWarehouseError,
    Warehouse,
    stable_digest,
)

if TYPE_CHECKING:
    import duckdb

__all__ = ["DuckDBConnection", "DuckDBWarehouse", "quote_identifier"]

_EVAL = "__faucet_eval"
_CHUNK = "__faucet_chunk"
_ORDER = "__faucet_order"
_TIE = "__faucet_tie"
_DEFAULT_PARTITION_COLUMN = "ds"
_IDENTIFIER_PART = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


class DuckDBConnection(BaseModel):
    """Connection settings of the ``duckdb`` datastore."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    database: Path | None = Field(
        None, description="DuckDB database file holding the table (opened read-only)."
    )
    threads: int | None = Field(None, ge=1, description="DuckDB worker threads (default: all).")
    memory_limit: str | None = Field(None, description="DuckDB memory limit, e.g. `4GB`.")
    scratch_dir: Path | None = Field(
        None, description="Folder for the materialized split (default: the system temp folder)."
    )

    @field_validator("database")
    @classmethod
    def _database_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no DuckDB database file at {value}")
        return value


def quote_identifier(name: str) -> str:
    """Quote a column name for DuckDB SQL."""
    return '"' + name.replace('"', '""') + '"'


def _table_reference(table: str) -> str:
    parts = table.split(".")
    if not 1 <= len(parts) <= 3 or not all(_IDENTIFIER_PART.match(p) for p in parts):
        raise PermanentWarehouseError(
            f"source.table {table!r} is not a table name ([catalog.][schema.]table)"
        )
    return ".".join(quote_identifier(p) for p in parts)


def _file_reader(files: Sequence[str]) -> str:
    kinds = {Path(f).suffix.lower() for f in files}
    if kinds <= {".parquet"}:
        return "read_parquet"
    if kinds <= {".csv", ".tsv"}:
        return "read_csv"
    raise PermanentWarehouseError(
        f"source.files must all be Parquet (.parquet) or all CSV (.csv, .tsv); got {sorted(kinds)}"
    )


class DuckDBWarehouse(Warehouse):
    """Reads a DuckDB table, a query, or Parquet/CSV files through an embedded DuckDB."""

    name = "duckdb"
    connection_model = DuckDBConnection
    connection: DuckDBConnection

    def __init__(self, connection: BaseModel) -> None:
        super().__init__(connection)
        import duckdb

        self._duckdb = duckdb
        config: dict[str, Any] = {}
        if self.connection.threads:
            config["threads"] = self.connection.threads
        if self.connection.memory_limit:
            config["memory_limit"] = self.connection.memory_limit
        self._db = duckdb.connect(":memory:", config=config)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._owned: list[Path] = []  # scratch folders of plans made here
        self._plans: dict[str, _PlanState] = {}
        try:
            if self.connection.database is not None:
                self._db.execute(
                    "ATTACH ? AS faucet_source (READ_ONLY)", [str(self.connection.database)]
                )
        except duckdb.Error as exc:
            self.close()
            raise PermanentWarehouseError(
                f"cannot open DuckDB database {self.connection.database}: {exc}"
            ) from exc

    @property
    def fingerprint(self) -> str:
        database = self.connection.database
        stat = database.stat() if database is not None else None
        return stable_digest(
            "duckdb",
            self._duckdb.__version__,
            str(database.resolve()) if database is not None else None,
            (stat.st_size, stat.st_mtime_ns) if stat is not None else None,
        )

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._db.cursor()
            cursor.execute("SET enable_progress_bar = false")
            if self.connection.database is not None:
                cursor.execute("USE faucet_source")
            self._local.cursor = cursor
        return cursor

    def _run(self, what: str, sql: str, params: Sequence[Any] = (), arrow: bool = False) -> Any:
        try:
            if arrow:  # the relation API hands Arrow over without an extra copy
                return self._cursor().sql(sql, params=list(params)).to_arrow_table()
            return self._cursor().execute(sql, list(params))
        except self._duckdb.Error as exc:
            error = (
                TransientWarehouseError
                if isinstance(exc, self._duckdb.InterruptException)
                else PermanentWarehouseError
            )
            raise error(f"{what}: {exc}") from exc

    def _source_sql(self, source: SourceSpec) -> tuple[str, list[Any], str]:
        """``(FROM clause, its parameters, a description for errors)``."""
        if source.table:
            return _table_reference(source.table), [], f"table {source.table}"
        if source.query:
            return f"({source.query}) AS faucet_query", [], "the source query"
        files = list(source.files or ())
        missing = [f for f in files if not any(c in f for c in "*?[") and not os.path.exists(f)]
        if missing:
            raise PermanentWarehouseError(f"source.files: no such file: {', '.join(missing)}")
        return f"{_file_reader(files)}(?)", [files], f"files {', '.join(files)}"

    def _file_stats(self, source: SourceSpec) -> list[Any]:
        stats = []
        for pattern in source.files or ():
            for path in sorted(glob.glob(pattern)):
                stat = os.stat(path)
                stats.append((os.path.abspath(path), stat.st_size, stat.st_mtime_ns))
        return stats

    def _relation(self, request: PlanRequest) -> _PlanState:
        source, split = request.source, request.split
        from_sql, params, what = self._source_sql(source)
        described = self._run(f"cannot read {what}", f"DESCRIBE SELECT * FROM {from_sql}", params)
        types = {row[0]: row[1] for row in described.fetchall()}
        columns = list(source.columns) if source.columns is not None else list(types)
        missing = [c for c in columns if c not in types]
        if missing:
            raise PermanentWarehouseError(
                f"source.columns {missing} not found in {what}; it has {list(types)}"
            )
        key = list(split.key) if split.key else columns
        missing = [c for c in key if c not in types]
        if missing:
            raise PermanentWarehouseError(
                f"source.split_key {missing} not found in {what}; it has {list(types)}"
            )
        where = "TRUE"
        if source.ds is not None:
            column = source.partition_column or _DEFAULT_PARTITION_COLUMN
            if column not in types:
                raise PermanentWarehouseError(
                    f"source.ds is set but {what} has no partition column {column!r} "
                    "(set source.partition_column)"
                )
            where = f"{quote_identifier(column)} = TRY_CAST(? AS {types[column]})"
            params = [*params, source.ds]
        hashed = ", ".join(quote_identifier(c) for c in key)
        is_eval = f"(hash({hashed}) % 10000 < {split.eval_buckets})"
        return _PlanState(from_sql, params, where, what, columns, hashed, is_eval)

    def plan(self, request: PlanRequest) -> Plan:
        state = self._relation(request)
        counts = self._run(
            f"cannot plan {state.what}",
            f"SELECT count(*) FILTER (WHERE {state.is_eval}), count(*) FILTER (WHERE NOT "
            f"{state.is_eval}) FROM {state.from_sql} WHERE {state.where}",
            state.params,
        ).fetchone()
        if request.source.ds is not None and counts == (0, 0):
            raise PermanentWarehouseError(f"{state.what} has no rows for ds={request.source.ds!r}")
        rows: dict[SplitName, int] = {"eval": counts[0], "train": counts[1]}
        state.buckets = {s: max(1, math.ceil(n / request.chunk_size)) for s, n in rows.items()}
        grouped = self._run(
            f"cannot plan {state.what}",
            f"SELECT {_EVAL}, {_CHUNK}, count(*) FROM (SELECT {state.select_extra()} "
            f"FROM {state.from_sql} WHERE {state.where}) GROUP BY ALL ORDER BY ALL",
            state.params,
        ).fetchall()
        fingerprint = stable_digest(
            self.fingerprint,
            self._file_stats(request.source),
            request.source,
            request.split,
            state.columns,
            state.buckets,
        )
        folder = Path(tempfile.mkdtemp(prefix="faucet-duckdb-", dir=self.connection.scratch_dir))
        state.folder = folder / "chunks"
        chunks: dict[SplitName, list[ChunkSpec]] = {"train": [], "eval": []}
        for is_eval, bucket, count in grouped:
            split: SplitName = "eval" if is_eval else "train"
            path = state.folder / f"{_EVAL}={str(is_eval).lower()}" / f"{_CHUNK}={bucket}"
            chunks[split].append(ChunkSpec(split, len(chunks[split]), count, token=str(path)))
        with self._lock:
            self._owned.append(folder)
            self._plans[fingerprint] = state
        return Plan(fingerprint, tuple(state.columns), chunks, stats={"rows": rows})

    def prepare(self, plan: Plan) -> None:
        with self._lock:
            state = self._plans.get(plan.fingerprint)
            if state is None:
                raise PermanentWarehouseError("prepare() must run where the plan was made")
            if state.prepared:
                return
            selected = ", ".join(quote_identifier(c) for c in state.columns)
            folder = str(state.folder).replace("'", "''")
            # The order columns make the row order inside a chunk a function of the rows.
            self._run(
                f"cannot read {state.what}",
                f"COPY (SELECT {selected}, {state.select_extra()}, "
                f"hash({state.key_sql}, 'faucet-order') AS {_ORDER}, hash({selected}) AS {_TIE} "
                f"FROM {state.from_sql} WHERE {state.where}) TO '{folder}' "
                f"(FORMAT parquet, PARTITION_BY ({_EVAL}, {_CHUNK}))",
                state.params,
            )
            state.prepared = True

    def read_chunk(self, chunk: ChunkSpec) -> pa.Table:
        files = str(Path(chunk.token) / "*.parquet")
        table: pa.Table = self._run(
            f"cannot read {chunk.describe()}",
            f"SELECT * EXCLUDE ({_ORDER}, {_TIE}) FROM read_parquet(?, hive_partitioning = false)"
            f" ORDER BY {_ORDER}, {_TIE}",
            [files],
            arrow=True,
        )
        return table

    def aggregate(
        self, request: PlanRequest, split: SplitName, column: str, stats: Sequence[str]
    ) -> dict[str, Any]:
        state = self._relation(request)
        expressions = {
            "count": "count({c})",
            "mean": "avg({c})",
            "stddev": "stddev_samp({c})",
            "min": "min({c})",
            "max": "max({c})",
            "distinct": "list(DISTINCT {c} ORDER BY {c})",
            "quantiles": "quantile_cont({c}, [0.0, 0.25, 0.5, 0.75, 1.0])",
        }
        unknown = [s for s in stats if s not in expressions]
        if unknown:
            raise PermanentWarehouseError(
                f"unknown aggregates {unknown}; known: {list(expressions)}"
            )
        quoted = quote_identifier(column)
        select = ", ".join(expressions[s].format(c=quoted) for s in stats)
        condition = state.is_eval if split == "eval" else f"NOT {state.is_eval}"
        row = self._run(
            f"cannot aggregate {column} of {state.what}",
            f"SELECT {select} FROM {state.from_sql} WHERE {state.where} AND {condition}",
            state.params,
        ).fetchone()
        return dict(zip(stats, row, strict=True))

    def close(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()
        for folder in getattr(self, "_owned", ()):
            shutil.rmtree(folder, ignore_errors=True)


class _PlanState:
    """The SQL pieces of one plan, kept to materialize its chunks."""

    def __init__(
        self,
        from_sql: str,
        params: list[Any],
        where: str,
        what: str,
        columns: list[str],
        key_sql: str,
        is_eval: str,
    ) -> None:
        self.from_sql = from_sql
        self.params = params
        self.where = where
        self.what = what
        self.columns = columns
        self.key_sql = key_sql
        self.is_eval = is_eval
        self.bucket = f"hash({key_sql}, 'faucet-chunk')"
        self.buckets: dict[SplitName, int] = {}
        self.folder = Path()
        self.prepared = False

    def select_extra(self) -> str:
        """The split flag and the chunk number of each row, as SQL select items."""
        chunk = (
            f"CASE WHEN {self.is_eval} THEN {self.bucket} % {self.buckets['eval']} "
            f"ELSE {self.bucket} % {self.buckets['train']} END"
        )
        return f"{self.is_eval} AS {_EVAL}, {chunk} AS {_CHUNK}"
