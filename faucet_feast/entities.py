"""The entity rows of a Feast source: Parquet or CSV files read into a DataFrame (what
Feast's local stores join), or a table or query of the offline store, as SQL."""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from faucet_core.warehouse import PermanentWarehouseError, SourceSpec

__all__ = ["entity_files", "entity_sql", "file_stats", "read_entity_files"]

#: The column Feast takes an entity row's time from, when it has several timestamps.
EVENT_TIMESTAMP = "event_timestamp"


def entity_files(source: SourceSpec) -> list[str]:
    """The files ``source.files`` names, glob patterns expanded, in a stable order.

    Raises:
        PermanentWarehouseError: A file is missing, a pattern matches nothing, or the files
            are neither all Parquet nor all CSV.
    """
    found: list[str] = []
    for pattern in source.files or ():
        matches = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        missing = [m for m in matches if not os.path.isfile(m)]
        if not matches or missing:
            raise PermanentWarehouseError(f"source.files: no such file: {pattern}")
        found += matches
    kinds = {Path(f).suffix.lower() for f in found}
    if not (kinds <= {".parquet"} or kinds <= {".csv"}):
        raise PermanentWarehouseError(
            f"source.files must all be Parquet (.parquet) or all CSV (.csv); got {sorted(kinds)}"
        )
    return found


def file_stats(files: list[str]) -> list[tuple[str, int, int]]:
    """Path, size and modification time of each file: their data version."""
    return [(os.path.abspath(f), os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in sorted(files)]


def read_entity_files(files: list[str], join_keys: tuple[str, ...]) -> Any:
    """The entity rows of ``files`` as a pandas DataFrame, checked for the join keys and
    an event timestamp.

    Raises:
        PermanentWarehouseError: A file cannot be read, or the rows lack a join key or
            their event timestamp.
    """
    import pyarrow.csv
    import pyarrow.parquet

    try:
        if files[0].lower().endswith(".csv"):
            tables = [pyarrow.csv.read_csv(f) for f in files]
        else:
            tables = [pyarrow.parquet.read_table(f) for f in files]
        rows = pa.concat_tables(tables, promote_options="default")
    except (pa.ArrowException, OSError) as exc:
        raise PermanentWarehouseError(f"source.files: cannot read the entity rows: {exc}") from exc
    names = rows.column_names
    missing = [key for key in join_keys if key not in names]
    if missing:
        raise PermanentWarehouseError(
            f"source.files: the entity rows lack the join keys {missing} of the features "
            f"asked for; they have: {names}"
        )
    timestamps = [f.name for f in rows.schema if pa.types.is_timestamp(f.type)]
    if EVENT_TIMESTAMP not in names and len(timestamps) != 1:
        raise PermanentWarehouseError(
            f"source.files: the entity rows need an {EVENT_TIMESTAMP!r} column (the time "
            f"each row's features are taken at); they have: {names}"
        )
    return rows.to_pandas()


def entity_sql(source: SourceSpec, quote_table: Callable[[str], str]) -> str:
    """The SQL of entity rows given as ``source.table`` (quoted by ``quote_table``) or
    ``source.query``."""
    if source.table:
        return f"SELECT * FROM {quote_table(source.table)}"
    return source.query or ""
