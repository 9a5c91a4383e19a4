"""Key hashes, or keys, sent as bytes a range of a table's blocks at a time (real server)."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import psycopg
import pytest

from faucet_core.warehouse import PermanentWarehouseError
from faucet_postgres import hash_arrays

#: Rows of each width of integer, from its least to its greatest value and a NULL.
VALUES = "(VALUES (0), (1), (-1), ({low}), ({high}), (NULL)) AS v(x)"


def sent(postgres_url: str, expression: str, width: int, relation: str) -> tuple[Any, int]:
    """What :func:`hash_arrays.integers_sql` sends of every row of ``relation``."""
    sql = hash_arrays.integers_sql(expression, width, relation, "TRUE")
    with psycopg.connect(postgres_url) as db:
        value, rows = db.execute(sql, binary=True).fetchone() or (None, 0)
    return value, rows


def test_the_hashes_come_back_as_they_were_sent(postgres_url: str) -> None:
    relation = VALUES.format(low=-(2**63), high=2**63 - 1).replace("(NULL)", "(7)")
    found = hash_arrays.hashes(*sent(postgres_url, "x::int8", 8, relation), None)
    assert found.dtype == np.int64
    assert found.tolist() == [0, 1, -1, -(2**63), 2**63 - 1, 7]


@pytest.mark.parametrize("function", ["hashint2extended", "hashint4extended", "hashint8extended"])
def test_keys_come_back_hashed_as_the_server_hashes_them(postgres_url: str, function: str) -> None:
    width = hash_arrays.width_of(function)
    bits = 8 * width - 1
    relation = VALUES.format(low=-(2**bits), high=2**bits - 1)
    keyed = f"(SELECT x::int{width} AS x FROM {relation}) AS keyed"
    found = hash_arrays.hashes(*sent(postgres_url, "x", width, keyed), function)
    with psycopg.connect(postgres_url) as db:
        rows = db.execute(f"SELECT COALESCE({function}(x, 0), 0) FROM {keyed}").fetchall()
    assert sorted(found.tolist()) == sorted(hash for (hash,) in rows)  # a NULL key's is 0
    assert len(found) == 6


def test_no_row_is_no_hash(postgres_url: str) -> None:
    nothing = "(SELECT 1::int8 AS x WHERE FALSE) AS v"
    assert hash_arrays.hashes(*sent(postgres_url, "x", 8, nothing), None).tolist() == []
    assert hash_arrays.hashes(*sent(postgres_url, "x", 4, nothing), "hashint4extended").size == 0


@pytest.mark.parametrize(
    ("value", "rows", "function"),
    [
        (b"\0" * 8, 2, None),  # a hash left out: NULL
        (b"\0" * 16, 1, None),  # more hashes than rows
        (b"\0" * 7, 1, None),  # not whole integers
        (b"\0" * 12, 2, "hashint4extended"),  # more keys than rows
        (b"\0" * 6, 2, "hashint4extended"),
    ],
)
def test_anything_but_one_whole_integer_per_row_is_refused(
    value: bytes, rows: int, function: str | None
) -> None:
    with pytest.raises(PermanentWarehouseError, match=f"came back as {len(value)} bytes"):
        hash_arrays.hashes(value, rows, function)


def test_a_table_is_cut_into_ranges_of_at_most_part_bytes() -> None:
    blocks_per_part = hash_arrays.PART_BYTES // 8192
    assert hash_arrays.cuts(1, 8192) == []
    assert hash_arrays.cuts(blocks_per_part, 8192) == []
    cuts = hash_arrays.cuts(10 * blocks_per_part + 1, 8192)
    assert len(cuts) == 10
    bounds = [0, *cuts, 10 * blocks_per_part + 1]
    assert max(b - a for a, b in itertools.pairwise(bounds)) <= blocks_per_part
