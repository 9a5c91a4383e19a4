"""The DuckDB warehouse: a table in a DuckDB file, a SQL query, or Parquet/CSV files.

Planning counts rows per (split, bucket) in one aggregate query over the source, with
DuckDB's ``hash`` of the split key. Where the cache cannot be filled from one scan,
:meth:`DuckDBWarehouse.materialize` copies the split source once, from one scan grouped
by chunk as the cache fill does (:func:`~faucet_core.fill.write_chunk_copy`), into a
file per chunk in a scratch folder named after the plan, so each chunk read touches only
its own file, from this process or any other (DataLoader workers, DDP ranks). DuckDB's
``hash`` is version-specific, so the DuckDB version is part of the data version.
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

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from faucet_core import layout
from faucet_core.cache import read_entry
from faucet_core.files import (
    FolderHold,
    hold_folder,
    private_folder,
    remove_abandoned,
    remove_folder,
)
from faucet_core.fill import write_chunk_copy
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


class DuckDBWarehouse(SqlWarehouse):
    """Reads a DuckDB table, a query, or Parquet/CSV files through an embedded DuckDB."""

    name = "duckdb"
    connection_model = DuckDBConnection
    connection: DuckDBConnection
    stats_sql = StatsSql(length="len({c})")  # exact medians and top values
    dialect = layout.Dialect(unsigned_hashes=True)  # hash() is a UBIGINT

    def __init__(self, connection: BaseModel) -> None:
        super().__init__(connection)
        import duckdb

        self._duckdb = duckdb
        self._lock = threading.Lock()
        self._holds: list[FolderHold] = []  # of the folders below, while this instance lives
        self._owned: list[Path] = []  # scratch folders this instance made
        self._spill = self._make_spill_folder()
        config: dict[str, Any] = {"temp_directory": str(self._spill)}
        if self.connection.threads:
            config["threads"] = self.connection.threads
        if self.connection.memory_limit:
            config["memory_limit"] = self.connection.memory_limit
        try:
            self._db = duckdb.connect(":memory:", config=config)
        except duckdb.Error as exc:
            self.close()
            raise PermanentWarehouseError(
                f"DuckDB refuses connection.memory_limit {self.connection.memory_limit!r} "
                f"or connection.threads {self.connection.threads!r}: {exc}"
            ) from None
        self._local = threading.local()
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

    def _scratch_root(self) -> Path:
        return self.connection.scratch_dir or Path(tempfile.gettempdir())

    def _scratch(self, plan: Plan) -> Path:
        return self._scratch_root() / f"faucet-duckdb-{plan.fingerprint}"

    def _make_spill_folder(self) -> Path:
        """This instance's folder for DuckDB's spill files, held while it lives, made after
        deleting the folders (spill folders, copies, copies half made) that processes
        killed before they could delete them left in the scratch folder."""
        root = self._scratch_root()
        spill = root / f"faucet-duckdb-spill-{uuid.uuid4().hex}"
        try:
            for pattern in ("faucet-duckdb-*", ".faucet-duckdb-*"):
                remove_abandoned(root, pattern)
            private_folder(spill)
            self._hold(spill)
        except OSError as exc:
            shutil.rmtree(spill, ignore_errors=True)
            raise PermanentWarehouseError(
                f"connection.scratch_dir: cannot make a folder in {root}: {exc}"
            ) from exc
        return spill

    def _hold(self, folder: Path) -> None:
        hold = hold_folder(folder)
        if hold is not None:
            with self._lock:
                self._holds.append(hold)

    def materialize(self, plan: Plan) -> None:
        """Copy the plan's rows into a file per chunk, once per scratch folder: one scan of
        the source, grouped by chunk a buffer at a time (memory stays bounded whatever the
        source's size and its number of chunks)."""
        folder = self._scratch(plan)
        if (folder / _DONE).exists():
            return
        temp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}")
        try:
            # The copy holds the rows: its folders and files are the owner's alone.
            private_folder(temp)
            self._hold(temp)  # the hold goes with the folder when it is renamed
            try:
                write_chunk_copy(plan, lambda: self.stream(*self.source_rows(plan, None)), temp)
            # DuckDB's errors while its batches are read come as OSError; so do the disk's.
            except (self._duckdb.Error, OSError, pa.ArrowException) as exc:
                raise PermanentWarehouseError(
                    f"cannot copy {plan.request.source.describe()} into {temp.parent}: {exc}"
                ) from exc
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
        with self._lock:
            self._owned.append(folder)

    def read_buckets(self, plan: Plan, chunk: ChunkSpec) -> pa.Table:
        """The chunk's rows, from the scratch folder.

        Raises:
            ScratchDataMissing: The folder is gone, or went while it was read (its maker,
                another process maybe, closed), or its file of the chunk is missing or
                damaged: the folder is then deleted, to be written again.
        """
        folder = self._scratch(plan)
        marker = _marker(folder)
        if marker is None:
            raise ScratchDataMissing(f"the scratch folder {folder} is gone")
        try:
            table = read_entry(folder, plan.chunk_key(chunk))
        except (OSError, ValueError, pa.ArrowException) as exc:
            table, damage = None, f"its file of {chunk.describe()} is damaged ({exc})"
        else:
            damage = f"it has no file of {chunk.describe()}"
        # Gone (or gone and made again) meanwhile: the chunk's file may be another copy's.
        if _marker(folder) != marker:
            raise ScratchDataMissing(f"the scratch folder {folder} went during a read")
        if table is None:
            remove_folder(folder)
            raise ScratchDataMissing(f"the scratch folder {folder} is deleted: {damage}")
        return table

    def close(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()
        for folder in getattr(self, "_owned", ()):
            remove_folder(folder)
        spill = getattr(self, "_spill", None)
        if spill is not None:
            shutil.rmtree(spill, ignore_errors=True)
        for hold in getattr(self, "_holds", ()):
            hold.release()


def _marker(folder: Path) -> tuple[int, int, int] | None:
    """Which copy a scratch folder holds (its ``.complete`` marker's identity), or ``None``
    while it has none."""
    try:
        stat = (folder / _DONE).stat()
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino, stat.st_mtime_ns
