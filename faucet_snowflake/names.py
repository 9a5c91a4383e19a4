"""Snowflake names: table names as users write them, columns as Snowflake stores them.

Snowflake upper-cases an identifier written without quotes (``events`` is ``EVENTS``) and
keeps one in double quotes as it is (``"Events"``). Table names in the config follow the
same rule, since that is how they are written in SQL: each part of ``db.schema.table`` is
a plain identifier, sent unquoted, or a double-quoted one, kept as it is. Column names in
the config follow it too (:func:`stored_column`): ``label`` means the column ``LABEL``,
``'"label"'`` the one created as ``"label"``. In SQL, and in batches, columns carry the
names Snowflake stores (``ID`` for a column created as ``id``); they are always quoted, so
they match exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from faucet_core.sql import quote_identifier
from faucet_core.warehouse import PermanentWarehouseError

__all__ = ["TableName", "parse_table", "quote_identifier", "stored_column"]

_PLAIN = r"[A-Za-z_][A-Za-z0-9_$]*"
_QUOTED = r'"((?:[^"]|"")+)"'
_PART = re.compile(rf"(?:({_PLAIN})|{_QUOTED})(\.|$)")


def stored_column(written: str) -> str:
    """The column a config's name means, as Snowflake resolves it: a plain identifier
    (``label``) upper-cased (``LABEL``), one in double quotes (``"label"``) as it is
    inside them; any other text as it is."""
    if re.fullmatch(_PLAIN, written):
        return written.upper()
    quoted = re.fullmatch(_QUOTED, written)
    return quoted.group(1).replace('""', '"') if quoted else written


@dataclass(frozen=True)
class TableName:
    """A validated table name.

    Attributes:
        parts: Each part as written: a plain identifier, or one in double quotes.
    """

    parts: tuple[str, ...]

    @property
    def sql(self) -> str:
        """The name for SQL, as written (plain parts are upper-cased by Snowflake)."""
        return ".".join(self.parts)

    @property
    def stored(self) -> tuple[str, ...]:
        """Each part as Snowflake stores it: plain ones upper-cased, quoted ones as they are."""
        return tuple(
            part[1:-1].replace('""', '"') if part.startswith('"') else part.upper()
            for part in self.parts
        )

    @property
    def database(self) -> str | None:
        """The database part as written, if given."""
        return self.parts[0] if len(self.parts) == 3 else None

    @property
    def schema(self) -> str | None:
        """The schema part as stored, if given."""
        return self.stored[-2] if len(self.parts) >= 2 else None

    @property
    def name(self) -> str:
        """The table part as stored."""
        return self.stored[-1]


def parse_table(text: str) -> TableName:
    """``text`` as a table name: 1 to 3 dot-separated parts, each plain or double-quoted.

    Raises:
        PermanentWarehouseError: It is not such a name.
    """
    parts: list[str] = []
    position = 0
    while position < len(text) and len(parts) < 3:
        match = _PART.match(text, position)
        if match is None:
            break
        parts.append(match.group(1) or f'"{match.group(2)}"')
        position = match.end()
        if not match.group(3):
            break
    if not parts or position != len(text) or text.endswith("."):
        raise PermanentWarehouseError(
            f"source.table {text!r} is not a table name ([database.][schema.]table, each part "
            'a plain identifier or one in double quotes: db.public."Events")'
        )
    return TableName(tuple(parts))
