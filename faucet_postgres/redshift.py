"""The Redshift warehouse: the PostgreSQL warehouse with Redshift's dialect.

Redshift speaks PostgreSQL's protocol, so the same drivers serve it: ``psycopg`` for the
statements with bind parameters, ``connectorx`` in its ``redshift://`` mode (a cursor:
Redshift has no ``COPY ... TO STDOUT``) for the rows. The key hash is ``FNV_HASH``; the
scratch copy is a regular table (``BACKUP NO``, sorted on split and bucket), since a
``TEMP`` table lives in one session and the rows are read from others; it is dropped when
the reader that made it closes.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel

from faucet_core.preprocessing import StatsSql
from faucet_postgres.connection import RedshiftConnection
from faucet_postgres.dialects import REDSHIFT, ServerDialect
from faucet_postgres.warehouse import PostgresWarehouse

__all__ = ["RedshiftConnection", "RedshiftWarehouse"]


class RedshiftWarehouse(PostgresWarehouse):
    """Reads a Redshift table or query: counts with ``psycopg``, reads with ``connectorx``."""

    name = "redshift"
    connection_model: ClassVar[type[BaseModel]] = RedshiftConnection
    connection: RedshiftConnection
    server: ClassVar[ServerDialect] = REDSHIFT
    # Redshift refuses sort-based aggregates (MEDIAN, PERCENTILE_CONT) over different
    # columns in one query: the core computes the statistics from the train chunks.
    stats_sql: ClassVar[StatsSql | None] = None

    def scratch_attributes(self) -> str:
        return self.connection.scratch_attributes
