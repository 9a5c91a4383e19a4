"""Key hashes sent as arrays, a range of a table's blocks at a time (real server)."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import psycopg
import pytest

from faucet_core.warehouse import PermanentWarehouseError
from faucet_postgres import hash_arrays


def sent(postgres_url: str, array: str) -> Any:
    """The value of ``array_send(array)`` as the warehouse receives it."""
    with psycopg.connect(postgres_url) as db:
        (value,) = db.execute(f"SELECT array_send({array})", binary=True).fetchone() or (None,)
    return value


def test_the_hashes_come_back_as_they_were_sent(postgres_url: str) -> None:
    array = "ARRAY[0, 1, -1, 9223372036854775807, -9223372036854775808]::BIGINT[]"
    found = hash_arrays.hashes(sent(postgres_url, array))
    assert found.dtype == np.int64
    assert found.tolist() == [0, 1, -1, 2**63 - 1, -(2**63)]


def test_no_row_is_no_hash(postgres_url: str) -> None:
    assert hash_arrays.hashes(None).tolist() == []
    assert hash_arrays.hashes(sent(postgres_url, "ARRAY[]::BIGINT[]")).tolist() == []


@pytest.mark.parametrize(
    "array",
    ["ARRAY[1, NULL]::BIGINT[]", "ARRAY[1, 2]::INT[]", "ARRAY[[1, 2], [3, 4]]::BIGINT[]"],
)
def test_anything_but_an_array_of_64_bit_integers_without_null_is_refused(
    postgres_url: str, array: str
) -> None:
    with pytest.raises(PermanentWarehouseError, match="64-bit integers without NULL"):
        hash_arrays.hashes(sent(postgres_url, array))


def test_a_table_is_cut_into_ranges_of_at_most_part_bytes() -> None:
    blocks_per_part = hash_arrays.PART_BYTES // 8192
    assert hash_arrays.cuts(1, 8192) == []
    assert hash_arrays.cuts(blocks_per_part, 8192) == []
    cuts = hash_arrays.cuts(10 * blocks_per_part + 1, 8192)
    assert len(cuts) == 10
    bounds = [0, *cuts, 10 * blocks_per_part + 1]
    assert max(b - a for a, b in itertools.pairwise(bounds)) <= blocks_per_part
