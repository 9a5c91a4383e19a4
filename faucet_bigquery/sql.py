"""BigQuery SQL pieces: validated identifiers and the hash expressions of split and chunks."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from faucet_core.warehouse import PermanentWarehouseError

__all__ = ["FINE_BUCKETS", "TableName", "column", "hashes", "parse_table"]

#: Rows are hashed into this many buckets per split; a chunk is a run of whole buckets.
FINE_BUCKETS = 4096

_PROJECT = r"[a-z][a-z0-9-]*[a-z0-9]"
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
    full = re.fullmatch(rf"({_PROJECT})\.({_DATASET})\.({_TABLE})", name)
    if full:
        return TableName(*full.groups())
    short = re.fullmatch(rf"({_DATASET})\.({_TABLE})", name)
    if short:
        return TableName(default_project, *short.groups())
    raise PermanentWarehouseError(
        f"source.table {name!r} is not a BigQuery table name ([project.]dataset.table)"
    )


def column(name: str) -> str:
    """A column name validated and quoted for SQL."""
    if not _COLUMN.match(name):
        raise PermanentWarehouseError(f"{name!r} is not a BigQuery column name")
    return f"`{name}`"


def _fold(value: str, buckets: int) -> str:
    # FARM_FINGERPRINT is signed: fold it into 0..buckets-1 without ABS (which overflows).
    return f"MOD(MOD({value}, {buckets}) + {buckets}, {buckets})"


@dataclass(frozen=True)
class Hashes:
    """SQL deciding each row's split, chunk bucket and place inside its chunk.

    ``key_hash`` and ``row_hash`` are computed once per row (FARM_FINGERPRINT of the split
    key's and of the row's JSON text); ``is_eval`` and ``bucket`` are expressions over the
    column that holds the key hash, using its low and its high digits.
    """

    key_hash: str
    row_hash: str
    is_eval: str
    bucket: str


def hashes(
    key: Sequence[str] | None, columns: Sequence[str] | None, eval_buckets: int, hashed: str
) -> Hashes:
    """The hash SQL over the split ``key`` (default: all ``columns``, or the whole row).

    ``hashed`` names the column holding the key hash. The same key lands in the same split
    in every run, whatever the chunk size.
    """

    def as_text(names: Sequence[str] | None) -> str:
        if not names:
            return "TO_JSON_STRING(faucet_source)"
        return f"TO_JSON_STRING(STRUCT({', '.join(column(n) for n in names)}))"

    key_hash = f"FARM_FINGERPRINT({as_text(key or columns)})"
    return Hashes(
        key_hash=key_hash,
        row_hash=f"FARM_FINGERPRINT({as_text(columns)})" if key else key_hash,
        is_eval=f"({_fold(hashed, 10000)} < {eval_buckets})",
        bucket=_fold(f"DIV({hashed}, 10000)", FINE_BUCKETS),
    )
