"""The DuckDB warehouse: a table in a DuckDB file, a SQL query, or Parquet/CSV files.

Planning counts rows per (split, bucket) in one aggregate query over the source, with
DuckDB's ``hash`` of the split key. :meth:`DuckDBWarehouse.materialize` then copies the
split source once, with one ``COPY ... PARTITION_BY`` into a Parquet folder per chunk,
in a scratch folder named after the plan, so each chunk read touches only its own files,
from this process or any other (DataLoader workers, DDP ranks). DuckDB's ``hash`` is
version-specific, so the DuckDB version is part of the data version.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from faucet_core import layout
from faucet_core.files import private_folder
from faucet_core.plan import ChunkSpec, Plan
from faucet_core.preprocessing import StatsSql
from faucet_core.sql import SqlWarehouse, quote_identifier, table_reference
from faucet_core.warehouse import (
    PermanentWarehouseError,
    ScratchDataMissing,
    SourceSpec,
    TransientWarehouseError,
)

if TYPE_CHECKING:
    import duckdb

__all__ = ["DuckDBConnection", "DuckDBWarehouse", "quote_identifier"]

_PART = "__faucet_part"
_DONE = ".complete"
#: Bounds DuckDB's working memory whatever the size of the source; planning and
#: streaming need little, and sorts and joins past it spill to disk.
DEFAULT_MEMORY_LIMIT = "128MB"
#: Rows per batch of a streamed scan.
_SCAN_BATCH_ROWS = 122_880


class DuckDBConnection(BaseModel):
    """Connection settings of the ``duckdb`` datastore."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    database: Path | None = Field(
        None, description="DuckDB database file holding the table (opened read-only)."
    )
    threads: int | None = Field(None, ge=1, description="DuckDB worker threads (default: all).")
    memory_limit: str | None = Field(
        DEFAULT_MEMORY_LIMIT,
        description="DuckDB's memory limit, e.g. `4GB`; past it, DuckDB spills to the "
        "scratch folder. `null`: DuckDB's own default (80% of the machine's memory).",
    )
    scratch_dir: Path | None = Field(
        None,
        description="Folder for the materialized split and DuckDB's spill files (default: "
        "the system temp folder).",
    )

    @field_validator("database")
    @classmethod
    def _database_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no DuckDB database file at {value}")
        return value


def _file_reader(files: Sequence[str]) -> str:
    kinds = {Path(f).suffix.lower() for f in files}
    if kinds <= {".parquet"}:
        return "read_parquet"
    if kinds <= {".csv", ".tsv"}:
        return "read_csv"
    raise PermanentWarehouseError(
        f"source.files must all be Parquet (.parquet) or all CSV (.csv, .tsv); got {sorted(kinds)}"
    )


def _chunk_lookup(plan: Plan) -> pa.Table:
    """Every (split, bucket) of the plan, with the chunk it belongs to."""
    evals, buckets, parts = [], [], []
    for split, chunks in plan.chunks.items():
        for chunk in chunks:
            size = chunk.hi - chunk.lo
            evals.append(np.full(size, split == "eval"))
            buckets.append(np.arange(chunk.lo, chunk.hi, dtype=np.int64))
            parts.append(np.full(size, _part(chunk), dtype=object))
    if not evals:
        return pa.table({"e": pa.array([], pa.bool_()), "b": [], "p": pa.array([], pa.string())})
    return pa.table(
        {
            "e": np.concatenate(evals),
            "b": np.concatenate(buckets),
            "p": pa.array(np.concatenate(parts), pa.string()),
        }
    )


def _owner_only(folder: Path) -> None:
    """Make what DuckDB wrote under ``folder`` (with the umask's modes) its owner's alone."""
    for root, folders, files in os.walk(folder):
        for name in folders:
            os.chmod(os.path.join(root, name), 0o700)
        for name in files:
            os.chmod(os.path.join(root, name), 0o600)


def _part(chunk: ChunkSpec) -> str:
    return f"{chunk.split}-{chunk.index}"


class DuckDBWarehouse(SqlWarehouse):
    """Reads a DuckDB table, a query, or Parquet/CSV files through an embedded DuckDB."""

    name = "duckdb"
    connection_model = DuckDBConnection
    connection: DuckDBConnection
    stats_sql = StatsSql(length="len({c})")  # exact medians and top values

    def __init__(self, connection: BaseModel) -> None:
        super().__init__(connection)
        import duckdb

        self._duckdb = duckdb
        scratch = self.connection.scratch_dir or Path(tempfile.gettempdir())
        self._spill = scratch / f"faucet-duckdb-spill-{uuid.uuid4().hex}"
        config: dict[str, Any] = {"temp_directory": str(self._spill)}
        if self.connection.threads:
            config["threads"] = self.connection.threads
        if self.connection.memory_limit:
            config["memory_limit"] = self.connection.memory_limit
        try:
            self._db = duckdb.connect(":memory:", config=config)
        except duckdb.Error as exc:
            raise PermanentWarehouseError(
                f"DuckDB refuses connection.memory_limit {self.connection.memory_limit!r} "
                f"or connection.threads {self.connection.threads!r}: {exc}"
            ) from None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._owned: list[Path] = []  # scratch folders this instance made
        self._types: dict[SourceSpec, dict[str, str]] = {}
        self._catalog = ""
        try:
            if self.connection.database is not None:
                self._catalog = self._attach(str(self.connection.database))
        except duckdb.Error as exc:
            self.close()
            raise PermanentWarehouseError(
                f"cannot open DuckDB database {self.connection.database}: {exc}"
            ) from exc

    def _attach(self, database: str) -> str:
        """Attach ``database`` read-only under the catalog name DuckDB gives it (its file
        name without the extension, as ``catalog.schema.table`` names spell it), or under
        ``faucet_source`` where that name is taken (``memory``); returns the name."""
        try:
            self._db.execute("ATTACH ? (READ_ONLY)", [database])
        except self._duckdb.BinderException:  # the name is the in-memory database's, or DuckDB's
            self._db.execute("ATTACH ? AS faucet_source (READ_ONLY)", [database])
            return "faucet_source"
        attached = self._db.execute(  # the only one besides DuckDB's own
            "SELECT database_name FROM duckdb_databases() "
            "WHERE NOT internal AND database_name <> 'memory'"
        ).fetchone()
        assert attached is not None
        return str(attached[0])

    def source_identity(self, source: SourceSpec) -> str:
        """The database file (a table or query of it), by its absolute path; files and
        in-memory queries are spelled out by the source itself."""
        database = self.connection.database
        return "" if database is None else os.path.abspath(database)

    def data_version(self, source: SourceSpec) -> str | None:
        """The DuckDB version (its ``hash`` changes between versions), and the size and
        modification time of the files read: the database, or the source files."""
        if source.files:
            paths = sorted({p for pattern in source.files for p in glob.glob(pattern)})
        elif self.connection.database is not None:
            paths = [str(self.connection.database)]
        else:
            return None if source.query else self._duckdb.__version__
        stats = []
        for path in paths:
            stat = os.stat(path)
            stats.append((os.path.abspath(path), stat.st_size, stat.st_mtime_ns))
        return layout.stable_digest(self._duckdb.__version__, stats)

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._db.cursor()
            cursor.execute("SET enable_progress_bar = false")
            # No query here depends on storage order (the core orders chunks); not keeping
            # it lets DuckDB write and read in parallel with less memory.
            cursor.execute("SET preserve_insertion_order = false")
            if self._catalog:
                cursor.execute(f"USE {quote_identifier(self._catalog)}")
            self._local.cursor = cursor
        return cursor

    def _run(
        self,
        what: str,
        sql: str,
        params: Sequence[Any] = (),
        result: Literal["cursor", "arrow", "stream"] = "cursor",
    ) -> Any:
        try:
            if result == "cursor":
                return self._cursor().execute(sql, list(params))
            # The relation API hands Arrow over without an extra copy.
            relation = self._cursor().sql(sql, params=list(params))
            if result == "stream":
                return relation.to_arrow_reader(_SCAN_BATCH_ROWS)
            return relation.to_arrow_table()
        except self._duckdb.Error as exc:
            error = (
                TransientWarehouseError
                if isinstance(exc, self._duckdb.InterruptException)
                else PermanentWarehouseError
            )
            raise error(f"{what}: {exc}") from exc

    def query(self, sql: str, params: Sequence[Any]) -> pa.Table:
        table: pa.Table = self._run("query failed", sql, params, result="arrow")
        return table

    def stream(self, sql: str, params: Sequence[Any]) -> pa.RecordBatchReader:
        reader: pa.RecordBatchReader = self._run("query failed", sql, params, result="stream")
        return reader

    def quote(self, name: str) -> str:
        return quote_identifier(name)

    def hash_sql(self, columns: Sequence[str]) -> str:
        return f"hash({', '.join(quote_identifier(c) for c in columns)})"

    def _relation(self, source: SourceSpec) -> tuple[str, list[Any]]:
        if source.table:
            return table_reference(source.table), []
        if source.query:
            return f"({source.query}) AS faucet_query", []
        files = list(source.files or ())
        missing = [f for f in files if not any(c in f for c in "*?[") and not os.path.exists(f)]
        if missing:
            raise PermanentWarehouseError(f"source.files: no such file: {', '.join(missing)}")
        return f"{_file_reader(files)}(?)", [files]

    def _column_types(self, source: SourceSpec) -> dict[str, str]:
        with self._lock:
            types = self._types.get(source)
        if types is None:
            relation, params = self._relation(source)
            described = self._run(
                f"cannot read {source.describe()}", f"DESCRIBE SELECT * FROM {relation}", params
            )
            types = {row[0]: row[1] for row in described.fetchall()}
            with self._lock:
                self._types[source] = types
        return types

    def from_sql(self, source: SourceSpec) -> tuple[str, Sequence[Any]]:
        relation, params = self._relation(source)
        if source.ds is None:
            return relation, params
        types = self._column_types(source)
        column = self.partition_column(source, list(types))
        condition = f"{quote_identifier(column)} = TRY_CAST(? AS {types[column]})"
        return f"{relation} WHERE {condition}", [*params, source.ds]

    def _scratch(self, plan: Plan) -> Path:
        root = self.connection.scratch_dir or Path(tempfile.gettempdir())
        return root / f"faucet-duckdb-{plan.fingerprint}"

    def materialize(self, plan: Plan) -> None:
        """Write the plan's rows, one Parquet folder per chunk, once per scratch folder."""
        folder = self._scratch(plan)
        if (folder / _DONE).exists():
            return
        temp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}")
        lookup = f"faucet_chunks_{uuid.uuid4().hex}"
        cursor = self._cursor()
        cursor.register(lookup, _chunk_lookup(plan))
        try:
            # The copy holds the rows: its folders and files are the owner's alone.
            private_folder(temp)
            hashed, params = self.hashed_rows(
                plan.request.source, plan.columns, plan.key, plan.schema
            )
            h = layout.HASH_COLUMN
            target = str(temp).replace("'", "''")
            self._run(
                f"cannot read {plan.request.source.describe()}",
                f"COPY (SELECT faucet_rows.*, {lookup}.p AS {_PART} FROM ({hashed}) AS faucet_rows "
                f"JOIN {lookup} ON {lookup}.e = {self.dialect.is_eval(h, plan.eval_buckets)} "
                f"AND {lookup}.b = {self.dialect.bucket(h)}) "
                f"TO '{target}' (FORMAT parquet, PARTITION_BY ({_PART}))",
                params,
            )
            _owner_only(temp)
            (temp / _DONE).touch(mode=0o600)
            try:
                temp.rename(folder)
            except OSError:  # another process finished first: its copy is the same
                if not (folder / _DONE).exists():
                    raise
                shutil.rmtree(temp, ignore_errors=True)
                return
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        finally:
            cursor.unregister(lookup)
        with self._lock:
            self._owned.append(folder)

    def read_buckets(self, plan: Plan, chunk: ChunkSpec) -> pa.Table:
        """The chunk's rows, from the scratch folder.

        Raises:
            ScratchDataMissing: The folder is gone, or went while it was read (its maker,
                another process maybe, closed): some of its files may have been missed.
        """
        folder = self._scratch(plan)
        marker = _marker(folder)
        if marker is None:
            raise ScratchDataMissing(f"the scratch folder {folder} is gone")
        files = str(folder / f"{_PART}={_part(chunk)}" / "*.parquet")
        selected = ", ".join(quote_identifier(c) for c in [*plan.columns, layout.HASH_COLUMN])
        try:
            table: pa.Table = self._run(
                f"cannot read {chunk.describe()}",
                f"SELECT {selected} FROM read_parquet(?, hive_partitioning = false)",
                [files],
                result="arrow",
            )
        except PermanentWarehouseError as exc:
            if _marker(folder) == marker:
                raise
            raise ScratchDataMissing(f"the scratch folder {folder} went during a read") from exc
        # Gone (or gone and made again) meanwhile: files of the chunk may have been missed.
        if _marker(folder) != marker:
            raise ScratchDataMissing(f"the scratch folder {folder} went during a read")
        return table

    def close(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()
        for folder in getattr(self, "_owned", ()):
            _remove_scratch(folder)
        spill = getattr(self, "_spill", None)
        if spill is not None:
            shutil.rmtree(spill, ignore_errors=True)


def _marker(folder: Path) -> tuple[int, int, int] | None:
    """Which copy a scratch folder holds (its ``.complete`` marker's identity), or ``None``
    while it has none."""
    try:
        stat = (folder / _DONE).stat()
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino, stat.st_mtime_ns


def _remove_scratch(folder: Path) -> None:
    """Delete a scratch folder that other processes may be reading: renamed away first, so
    a reader sees all of it or none of it (and its ``.complete`` marker gone), never the
    part of it that deleting file by file has not reached yet."""
    gone = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}.gone")
    try:
        folder.rename(gone)
    except OSError:
        gone = folder
    shutil.rmtree(gone, ignore_errors=True)
