"""Counting a table's rows from their key hashes, sent a range of blocks at a time.

The layout's count (:meth:`~faucet_core.layout.Dialect.count_query`) makes PostgreSQL
hash-aggregate every row into one of 131,074 groups; at 10M rows keyed by one column that
took 6.7 to 6.9 s of one process, where scanning, hashing and sending the hashes took 2.4
to 3.0 s and counting them in numpy (:class:`~faucet_core.layout.HashCounts`) 0.4 s. So
where the server reads a range of a table's blocks at the cost of those blocks alone, each
range's hashes come back in one value, their bytes one after another
(``string_agg(int8send(hash), '')``: 8 bytes a row, where an ``int8[]`` takes 12), which
the server holds whole until it sends it: a range is at most :data:`PART_BYTES` of the
table, so a query holds a few tens of MB at most, and no value nears PostgreSQL's 1 GB
limit.

A table keyed by one integer column whose hash Faucet computes as the server does
(:mod:`faucet_postgres.integer_hashes`) sends its keys instead, and Faucet hashes them: 2,
4 or 8 bytes a row, and no hash computed by the server. At 10M rows keyed by an
``integer``, the count sent 40 MB instead of 120 MB (80 MB with the hashes' bytes).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from faucet_core.warehouse import PermanentWarehouseError
from faucet_postgres import integer_hashes

__all__ = ["PART_BYTES", "cuts", "hashes", "integers_sql", "width_of"]

#: Bytes of a table's blocks whose hashes one query sends: a row takes at least 32 bytes
#: of them, so a query sends at most about 4.2M integers (8 bytes each at most, and as
#: much again while the value grows).
PART_BYTES = 128 * 2**20


def cuts(blocks: int, block_size: int) -> list[int]:
    """The blocks where a table of ``blocks`` blocks is cut into ranges of at most
    :data:`PART_BYTES` (none for a table of one range)."""
    parts = max(math.ceil(blocks * block_size / PART_BYTES), 1)
    return [blocks * i // parts for i in range(1, parts)]


def width_of(function: str | None) -> int:
    """The bytes of each integer sent for a key hashed here by ``function``
    (:data:`integer_hashes.FUNCTIONS`), or of each hash (``None``)."""
    if function is None:
        return 8
    return int(integer_hashes.FUNCTIONS[function].bit_width) // 8


def integers_sql(expression: str, width: int, relation: str, condition: str) -> str:
    """The query whose values are ``expression``, an integer of ``width`` bytes (2, 4 or
    8), of each row of ``relation`` that meets ``condition``, as their big-endian bytes one
    after another (``NULL`` for no row; a row where it is ``NULL`` left out), then the
    number of those rows."""
    kind = f"int{width}"  # PostgreSQL names its integers by their bytes
    return (
        f"SELECT string_agg({kind}send(({expression})::{kind}), ''::bytea), count(*) "
        f"FROM {relation} WHERE {condition}"
    )


def hashes(sent: bytes | None, rows: int, function: str | None) -> np.ndarray[Any, Any]:
    """The key hashes of the rows :func:`integers_sql` counted (``rows``) from what it
    sent: the hashes themselves (``function`` ``None``), or ``function`` of the keys sent
    (:data:`integer_hashes.FUNCTIONS`), 0 for each row whose key is ``NULL``; as int64.

    Raises:
        PermanentWarehouseError: The bytes are not one whole integer per row (a hash) or
            per row at most (a key).
    """
    width = width_of(function)
    size = len(sent or b"")
    count = size // width
    if size % width == 0 and (count == rows if function is None else count <= rows):
        values = np.frombuffer(sent or b"", f">i{width}").astype(f"i{width}")
        if function is None:
            return values
        found = integer_hashes.hashes_of(values)
        missing = rows - len(values)  # keys that are NULL
        return np.concatenate([found, np.zeros(missing, np.int64)]) if missing else found
    what = "key hashes" if function is None else "keys"
    raise PermanentWarehouseError(
        f"the {what} counted came back as {size} bytes for {rows} rows, not {width} bytes "
        f"{'each' if function is None else 'each at most'}"
    )
