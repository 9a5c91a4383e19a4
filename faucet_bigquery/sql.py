"""BigQuery SQL pieces: validated table and column names."""

from __future__ import annotations

import re
from dataclasses import dataclass

from faucet_core.warehouse import PermanentWarehouseError

__all__ = ["PROJECT_ID", "TableName", "column", "is_column", "parse_table"]

#: A project ID as it appears in a table name (the pattern).
PROJECT_ID = r"[a-z][a-z0-9-]*[a-z0-9]"
_DATASET = r"[A-Za-z_][A-Za-z0-9_]*"
_TABLE = r"[A-Za-z_][A-Za-z0-9_$-]*"
_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class TableName:
    """A validated ``project.dataset.table`` name."""

    project: str
    dataset: str
    table: str

    @property
    def sql(self) -> str:
        """The name quoted for SQL."""
        return f"`{self.project}.{self.dataset}.{self.table}`"

    @property
    def path(self) -> str:
        """The name as the Storage Read API spells it."""
        return f"projects/{self.project}/datasets/{self.dataset}/tables/{self.table}"

    @property
    def id(self) -> str:
        """``project.dataset.table``, as the REST client takes it."""
        return f"{self.project}.{self.dataset}.{self.table}"


def parse_table(name: str, default_project: str) -> TableName:
    """Validate ``project.dataset.table`` or ``dataset.table``; never pasted raw into SQL."""
    full = re.fullmatch(rf"({PROJECT_ID})\.({_DATASET})\.({_TABLE})", name)
    if full:
        return TableName(*full.groups())
    short = re.fullmatch(rf"({_DATASET})\.({_TABLE})", name)
    if short:
        return TableName(default_project, *short.groups())
    raise PermanentWarehouseError(
        f"source.table {name!r} is not a BigQuery table name ([project.]dataset.table)"
    )


def is_column(name: str) -> bool:
    """Whether ``name`` is a column name Faucet quotes for BigQuery's SQL (letters,
    digits and ``_``, not starting with a digit)."""
    return bool(_COLUMN.match(name))


def column(name: str, setting: str | None = None) -> str:
    """A column name validated and quoted for SQL; ``setting`` names where it came from.

    Raises:
        PermanentWarehouseError: ``name`` is not such a name.
    """
    if not is_column(name):
        where = f"{setting} " if setting else ""
        raise PermanentWarehouseError(
            f"{where}{name!r} is not a BigQuery column name Faucet reads (letters, digits "
            "and _, not starting with a digit)"
        )
    return f"`{name}`"
