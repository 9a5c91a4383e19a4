"""PostgreSQL's extended hash of integers computed in numpy, against the server's."""

from __future__ import annotations

import numpy as np
import psycopg
import pyarrow as pa
import pytest

from faucet_postgres.integer_hashes import FUNCTIONS, integer_hashes

#: Each function, the server's type it hashes, and that type's least and greatest value.
CASES = [
    ("hashint2extended", "int2", -(2**15), 2**15 - 1),
    ("hashint4extended", "int4", -(2**31), 2**31 - 1),
    ("hashint8extended", "int8", -(2**63), 2**63 - 1),
]


@pytest.mark.parametrize(("function", "server_type", "least", "greatest"), CASES)
def test_the_hashes_are_the_servers(
    postgres_url: str, function: str, server_type: str, least: int, greatest: int
) -> None:
    rng = np.random.default_rng(7)
    values: list[int | None] = [int(v) for v in rng.integers(least, greatest, 2000)]
    values += [least, least + 1, -1, 0, 1, greatest - 1, greatest, None]
    if server_type == "int8":  # where the high half folds into the low one
        values += [2**31, -(2**31), 2**31 - 1, -(2**31) - 1, 2**32, -(2**32), 2**32 + 5]
    with psycopg.connect(postgres_url) as db:
        rows = db.execute(
            f"SELECT COALESCE({function}(v, 0), 0) FROM unnest(%s::{server_type}[]) "
            "WITH ORDINALITY AS s(v, i) ORDER BY i",
            [values],
        ).fetchall()
    column = pa.array(values, FUNCTIONS[function])
    computed = integer_hashes(column, function)
    assert computed.type == pa.int64()
    assert computed.to_pylist() == [row[0] for row in rows]
    # A slice starts within a byte of the column's validity bits.
    assert integer_hashes(column.slice(3), function).to_pylist() == [row[0] for row in rows[3:]]


def test_a_chunked_column_hashes_as_one() -> None:
    chunked = pa.chunked_array([[1, 2], [None, 4]], pa.int32())
    whole = integer_hashes(chunked.combine_chunks(), "hashint4extended")
    assert integer_hashes(chunked, "hashint4extended").equals(whole)
    assert whole[2].as_py() == 0


@pytest.mark.parametrize(
    ("function", "kind"),
    [("hashint4extended", pa.int64()), ("hashtextextended", pa.string()), ("hashint8", pa.int64())],
)
def test_other_functions_or_types_are_refused(function: str, kind: pa.DataType) -> None:
    with pytest.raises(ValueError, match="cannot compute"):
        integer_hashes(pa.array([], kind), function)
