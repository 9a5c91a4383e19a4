"""What differs between PostgreSQL and Redshift, as far as the warehouse needs it: the key
hash, the scratch table's statements, the driver that reads rows into Arrow and the data
version.

Everything else (counting, copying, reading, errors) is written once in
:mod:`faucet_postgres.warehouse` and runs the same on both.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence
from typing import ClassVar

from faucet_core import layout
from faucet_core.sql import quote_identifier
from faucet_postgres import versions
from faucet_postgres.connection import ServerConnection
from faucet_postgres.readers import AdbcReader, ArrowReader, ConnectorxReader

__all__ = [
    "POSTGRES", "REDSHIFT", "VALUE_HASH_LOOKUP", "PostgresDialect", "RedshiftDialect",
    "ServerDialect",
]  # fmt: skip

_EVAL = layout.EVAL_COLUMN
_BUCKET = layout.BUCKET_COLUMN


class ServerDialect(ABC):
    """The SQL of one server of the PostgreSQL family."""

    #: The server's name, in errors and logs.
    title: str
    #: Looks up a table's data version (see :mod:`faucet_postgres.versions`).
    version: versions.VersionLookup
    #: The first server version (``server_version_num``) whose key hash is
    #: :meth:`typed_hash_sql`; ``None``: no version's is.
    typed_hash_since: ClassVar[int | None] = None
    #: The first server version that reads a table's rows by a range of blocks alone
    #: (:meth:`block_ranges`); ``None``: none does.
    block_ranges_since: ClassVar[int | None] = None

    @abstractmethod
    def hash_sql(self, columns: Sequence[str]) -> str:
        """A signed 64-bit integer hash of ``columns`` (not yet quoted)."""

    def typed_hash_sql(self, columns: Sequence[str], as_text: Collection[str]) -> str:
        """A signed 64-bit integer hash of ``columns`` (not yet quoted), each value hashed
        by its type's own hash function, those of ``as_text`` by their text."""
        raise NotImplementedError(f"{self.title} has no typed key hash")

    def value_hash_sql(self, column: str, function: str) -> str:
        """The typed key hash of the one column ``column`` (not yet quoted), by its type's
        own extended hash ``function`` (:data:`VALUE_HASH_LOOKUP`)."""
        raise NotImplementedError(f"{self.title} has no typed key hash")

    def once_per_row(self, expression: str) -> str:
        """``expression`` as a select-list item computed once per row, whatever uses its
        column (see :meth:`faucet_core.sql.SqlWarehouse.once_per_row`)."""
        return expression

    def block_ranges(self, bounds: Sequence[int]) -> list[str]:
        """Conditions on a table's rows, one per range of its blocks cut at ``bounds``
        (ascending), the last one open: every row meets exactly one."""
        raise NotImplementedError(f"{self.title} cannot read a table by blocks")

    @abstractmethod
    def scratch_statements(self, table: str, rows: str, attributes: str) -> list[str]:
        """The statements that make ``table`` (quoted) hold the result of ``rows`` (a query
        with the split flag and bucket columns), ready for bucket range reads."""

    @abstractmethod
    def reader(
        self, connection: ServerConnection, login: Callable[[], tuple[str, str]] | None = None
    ) -> ArrowReader:
        """What reads rows from the server into Arrow; ``login``: the user and password to
        log in with at each connection, instead of the connection's."""


#: The extended hash function of a table column's type, as ``hash_record_extended`` finds
#: it: that of the type's default hash operator class, or of the class of a type it is
#: binary-coercible to (``varchar``: ``text``'s); parameters: the table, the column.
VALUE_HASH_LOOKUP = """
SELECT p.amproc::regproc::text
FROM pg_attribute a
JOIN pg_opclass c ON c.opcdefault
    AND c.opcmethod = (SELECT oid FROM pg_am WHERE amname = 'hash')
    AND (c.opcintype = a.atttypid OR c.opcintype IN (
        SELECT casttarget FROM pg_cast WHERE castsource = a.atttypid AND castmethod = 'b'))
JOIN pg_amproc p ON p.amprocfamily = c.opcfamily AND p.amproclefttype = c.opcintype
    AND p.amprocrighttype = c.opcintype AND p.amprocnum = 2
WHERE a.attrelid = %s::regclass AND a.attname = %s
ORDER BY c.opcintype = a.atttypid DESC
LIMIT 1
"""


class PostgresDialect(ServerDialect):
    """PostgreSQL: ``hash_record_extended`` of the key's row (from PostgreSQL 14; before,
    ``hashtextextended`` of its text); an ``UNLOGGED`` scratch table written in (split,
    bucket) order, with a B-tree index on them; the ADBC driver's binary ``COPY`` reads,
    of a table by ``ctid`` ranges (from PostgreSQL 14)."""

    title = "PostgreSQL"
    version = staticmethod(versions.postgres_version)
    # Hashing each value as it is costs a fifth of hashing the row's text (floats written
    # as text are most of that), and no session setting (time zone, float digits, date
    # style) changes it.
    typed_hash_since = 140_000
    # A condition on ctid is a TID range scan from PostgreSQL 14; before, a whole scan.
    block_ranges_since = 140_000

    def hash_sql(self, columns: Sequence[str]) -> str:
        row = ", ".join(quote_identifier(c) for c in columns)
        return f"hashtextextended(ROW({row})::text, 0)"

    def typed_hash_sql(self, columns: Sequence[str], as_text: Collection[str]) -> str:
        row = ", ".join(
            f"{quote_identifier(c)}::text" if c in as_text else quote_identifier(c) for c in columns
        )
        return f"hash_record_extended(ROW({row}), 0)"

    def value_hash_sql(self, column: str, function: str) -> str:
        """The typed hash of a key of the one column ``column``, by its type's extended
        hash ``function`` (:data:`VALUE_HASH_LOOKUP`) itself: ``hash_record_extended``
        gives a row of one value that value's hash, and 0 for ``NULL``. Keyed by an
        ``integer`` of 10M rows, a table's first chunk was read in 1.1 and 1.3 s
        against 1.7 and 3.0 s through the row, and the whole table in 17.3 and 17.4 s
        against 18.7 and 18.8 s."""
        return f"COALESCE({function}({quote_identifier(column)}, 0), 0)"

    def once_per_row(self, expression: str) -> str:
        # PostgreSQL pulls a subquery up into the query around it, and so computes the key
        # hash once for each use of its column: counting 2M and 10M rows by a key of 24
        # columns took 2.2 to 2.5 times as long. It keeps whole a subquery with a volatile
        # function in its select list (which would otherwise run more than once); this one
        # is never null, costs a clock read, and may run in parallel workers. At 10M rows
        # keyed by one column it counted in 3.2 s against 4.2 and 4.3 s with a set-returning
        # function, which also keeps the subquery whole (`unnest(ARRAY[...])`).
        return f"CASE WHEN clock_timestamp() IS NULL THEN NULL ELSE {expression} END"

    def block_ranges(self, bounds: Sequence[int]) -> list[str]:
        tids = [f"'({int(bound)},0)'::tid" for bound in bounds]
        lows, highs = [None, *tids], [*tids, None]
        return [
            " AND ".join(([f"ctid >= {low}"] if low else []) + ([f"ctid < {high}"] if high else []))
            for low, high in zip(lows, highs, strict=True)
        ]

    def scratch_statements(self, table: str, rows: str, attributes: str) -> list[str]:
        return [
            # Written in index order, a chunk's rows lie together: reading one by itself
            # reads its pages alone, in order (at 5M rows, planning took 10% less time:
            # the sort costs less than what it saves in building the index).
            f"CREATE UNLOGGED TABLE {table} AS {rows} ORDER BY {_EVAL}, {_BUCKET}",
            f"CREATE INDEX ON {table} ({_EVAL}, {_BUCKET})",
        ]

    def reader(
        self, connection: ServerConnection, login: Callable[[], tuple[str, str]] | None = None
    ) -> ArrowReader:
        return AdbcReader(connection.conninfo())


class RedshiftDialect(ServerDialect):
    """Redshift: ``FNV_HASH`` per key column, the column hashes chained as ``FNV_HASH``
    seeds; a regular scratch table (``BACKUP NO``, sorted on split and bucket); connectorx's
    cursor reads (Redshift has no ``COPY ... TO STDOUT``)."""

    title = "Redshift"
    version = staticmethod(versions.redshift_version)

    def hash_sql(self, columns: Sequence[str]) -> str:
        # Each column is hashed alone (NULL: 0), then the column hashes are chained as
        # 8-byte values: chaining the columns themselves would make ('ab', 'c') and
        # ('a', 'bc') collide, FNV_HASH('c', FNV_HASH('ab')) being FNV_HASH('abc').
        hashes = [f"COALESCE(FNV_HASH({quote_identifier(c)}), 0)" for c in columns]
        expression = hashes[0]
        for column_hash in hashes[1:]:
            expression = f"FNV_HASH({column_hash}, {expression})"
        return expression

    def scratch_statements(self, table: str, rows: str, attributes: str) -> list[str]:
        return [f"CREATE TABLE {table} {attributes} AS {rows}".replace("  ", " ")]

    def reader(
        self, connection: ServerConnection, login: Callable[[], tuple[str, str]] | None = None
    ) -> ArrowReader:
        return ConnectorxReader(
            lambda: self.reader_url(connection, login() if login is not None else None)
        )

    def reader_url(self, connection: ServerConnection, login: tuple[str, str] | None = None) -> str:
        """The connection's URL (as ``login``, if given) in connectorx's ``redshift://``
        (cursor) mode."""
        return "redshift://" + connection.url(login).split("://", 1)[1]


POSTGRES = PostgresDialect()
REDSHIFT = RedshiftDialect()
