"""The Redshift warehouse: the PostgreSQL warehouse with Redshift's dialect.

Redshift speaks PostgreSQL's protocol, so the same drivers serve it: ``psycopg`` for the
statements with bind parameters, ``connectorx`` in its ``redshift://`` mode (a cursor:
Redshift has no ``COPY ... TO STDOUT``) for the rows. The key hash is ``FNV_HASH``; the
scratch copy is a regular table (``BACKUP NO``, sorted on split and bucket), since a
``TEMP`` table lives in one session and the rows are read from others; it is dropped when
the reader that made it closes.

connectorx cannot read Redshift's own types (``SUPER``, ``GEOMETRY``, ``VARBYTE``...):
their columns are read through Redshift's functions that give their text
(:data:`TEXT_OF`), and their types are found in the catalog (``pg_type``), never by
reading them.
"""

from __future__ import annotations

from typing import ClassVar

import pyarrow as pa
from pydantic import BaseModel

from faucet_core.preprocessing import StatsSql
from faucet_core.warehouse import SourceSpec
from faucet_postgres.connection import RedshiftConnection
from faucet_postgres.dialects import REDSHIFT, ServerDialect
from faucet_postgres.iam import IamCredentials
from faucet_postgres.warehouse import PostgresWarehouse

__all__ = ["TEXT_OF", "RedshiftConnection", "RedshiftWarehouse"]

#: Types connectorx reads as they are, by their ``pg_type`` name.
_READABLE = frozenset({
    "bool", "int2", "int4", "int8", "float4", "float8", "numeric", "char", "bpchar",
    "varchar", "text", "name", "date", "time", "timestamp", "timestamptz", "bytea",
})  # fmt: skip
#: How each of Redshift's other types is read as text (``{c}``: the column); any type not
#: named here is cast to ``VARCHAR``.
TEXT_OF = {
    "super": "JSON_SERIALIZE({c})",
    "varbyte": "FROM_VARBYTE({c}, 'hex')",
    "geometry": "ST_AsEWKT({c})",
    "geography": "ST_AsEWKT({c})",
}


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

    def _iam_credentials(self) -> IamCredentials | None:
        iam = self.connection.iam
        return IamCredentials(iam, self.connection.database()) if iam is not None else None

    def _described(
        self, source: SourceSpec, what: str
    ) -> tuple[dict[str, str | None], pa.Schema | None]:
        """Each column of ``source`` and the expression it is read through: as it is
        where connectorx reads its type, else its text (:data:`TEXT_OF`). The types come
        from psycopg's description of a ``LIMIT 0`` query and ``pg_type``; the types
        connectorx reads, from a read."""
        relation = self._relation(source, placeholders=True)
        description = self._execute(what, f"SELECT * FROM {relation} LIMIT 0").description
        oids = sorted({column.type_code for column in description})
        names = dict(
            self._fetch("SELECT oid::integer, typname FROM pg_type WHERE oid = ANY(%s)", [oids])
        )
        casts: dict[str, str | None] = {}
        for column in description:
            kind = names.get(column.type_code, "")
            casts[column.name] = (
                None if kind in _READABLE else TEXT_OF.get(kind, "CAST({c} AS VARCHAR)")
            )
        return casts, None
