"""A Faucet warehouse plugin for SQLite: a table or a query of a SQLite database file.

Faucet's core writes the counting and reading queries; this plugin says what follows
``FROM``, how to hash columns and how to run a query. SQLite has no 64-bit hash function,
so the core's :func:`~faucet_core.layout.hash_values` is registered as one.
"""

import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from faucet_core import PermanentWarehouseError, SourceSpec, SqlWarehouse, Warehouse, hookimpl
from faucet_core.layout import Dialect, hash_values


class SQLiteConnection(BaseModel):
    """Connection settings of the ``sqlite`` datastore."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    database: Path = Field(description="The SQLite database file (opened read-only).")


class SQLiteWarehouse(SqlWarehouse):
    """Reads a table or query of a SQLite database; each chunk read scans the source."""

    name = "sqlite"
    connection_model = SQLiteConnection
    dialect = Dialect(mod="({a} % {n})")  # SQLite has no MOD()

    def data_version(self, source: SourceSpec) -> str:
        """The database file's modification time: it changes whenever the data does."""
        return str(self.connection.database.stat().st_mtime_ns)

    def from_sql(self, source: SourceSpec) -> tuple[str, Sequence[Any]]:
        """The table or the query, and a filter on ``ds``."""
        if source.files:
            raise PermanentWarehouseError("the sqlite warehouse reads a table or a query")
        relation = self.quote(source.table) if source.table else f"({source.query})"
        where = f" WHERE {self.quote(source.partition_column or 'ds')} = ?"
        return (relation, []) if source.ds is None else (relation + where, [source.ds])

    def hash_sql(self, columns: Sequence[str]) -> str:
        """The core's 64-bit hash, registered as the SQL function ``faucet_hash``."""
        return f"faucet_hash({', '.join(self.quote(c) for c in columns)})"

    def quote(self, name: str) -> str:
        """A name quoted for SQLite."""
        return '"' + name.replace('"', '""') + '"'

    def query(self, sql: str, params: Sequence[Any]) -> pa.Table:
        """Run a query on a connection of its own (SQLite connections stay in one thread)."""
        uri = f"{self.connection.database.resolve().as_uri()}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            db.create_function("faucet_hash", -1, hash_values, deterministic=True)
            cursor = db.execute(sql, params)  # its errors reach the user as permanent ones
            rows = cursor.fetchall()
            columns = [column[0] for column in cursor.description]
        return pa.table({name: [row[i] for row in rows] for i, name in enumerate(columns)})


@hookimpl
def register_warehouses(register: Callable[[type[Warehouse]], None]) -> None:
    """Provide the ``sqlite`` datastore."""
    register(SQLiteWarehouse)
