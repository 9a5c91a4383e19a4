"""Writing a Feast retrieval to local Parquet files, without holding it in memory.

The DuckDB offline store builds its point-in-time join as an ibis expression over the
default ibis DuckDB connection: DuckDB runs it and writes the result straight to Parquet
(``COPY ... TO``), within its memory limit, spilling past it. Other stores without a
Faucet warehouse for their SQL hand over the result as one Arrow table
(``RetrievalJob.to_arrow()``), written out in row groups.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

__all__ = ["DONE", "ROWS_FILE", "spill"]

log = logging.getLogger(__name__)

#: Marks a complete spill folder.
DONE = ".complete"
#: The Parquet file of a spill folder.
ROWS_FILE = "rows.parquet"
_ROW_GROUP_ROWS = 122_880


def _ibis_table(job: Any) -> Any | None:
    """The ibis expression of a job of an ibis-based store (DuckDB), if it gives one and
    needs no post-processing in Python (on-demand views)."""
    try:
        import ibis.expr.types as ir
    except ImportError:
        return None
    table = getattr(job, "table", None)
    if isinstance(table, ir.Table) and not job.on_demand_feature_views:
        return table
    return None


def _configure(backend: Any, memory_limit: str | None, threads: int | None, temp: Path) -> None:
    """Bound the DuckDB that runs the join (values checked by the connection model)."""
    settings = {"temp_directory": str(temp)}
    if memory_limit:
        settings["memory_limit"] = memory_limit
    if threads:
        settings["threads"] = str(threads)
    for name, value in settings.items():
        try:
            backend.raw_sql(f"SET {name} = '{value}'")
        except Exception as exc:  # DuckDB keeps a spill folder it has used: keep it then
            log.info("DuckDB's %s stays as it is: %s", name, exc)


def spill(
    job: Any, folder: Path, *, memory_limit: str | None, threads: int | None, temp: Path
) -> bool:
    """Write ``job``'s rows to ``folder`` (made under a temporary name, then renamed).

    Returns whether this call made the folder (``False``: another process did first).
    """
    if (folder / DONE).exists():
        return False
    staging = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}")
    staging.mkdir(parents=True)
    try:
        expression = _ibis_table(job)
        if expression is not None:
            import ibis

            backend = ibis.get_backend(expression)
            _configure(backend, memory_limit, threads, temp)
            backend.to_parquet(expression, staging / ROWS_FILE, row_group_size=_ROW_GROUP_ROWS)
        else:
            log.warning(
                "the Feast offline store gives its retrieval as one Arrow table: it is held "
                "in memory once while written to %s",
                folder,
            )
            pq.write_table(job.to_arrow(), staging / ROWS_FILE, row_group_size=_ROW_GROUP_ROWS)
        (staging / DONE).touch()
        try:
            staging.rename(folder)
        except OSError:  # another process finished first: its rows are the same
            if not (folder / DONE).exists():
                raise
            shutil.rmtree(staging, ignore_errors=True)
            return False
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return True
