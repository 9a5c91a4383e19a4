"""Counting a table's rows from their key hashes, sent as arrays a range of blocks at a time.

The layout's count (:meth:`~faucet_core.layout.Dialect.count_query`) makes PostgreSQL
hash-aggregate every row into one of 131,074 groups; at 10M rows keyed by one column that
took 6.7 to 6.9 s of one process, where scanning, hashing and sending the hashes took 2.4
to 3.0 s and counting them in numpy (:class:`~faucet_core.layout.HashCounts`) 0.4 s. So
where the server reads a range of a table's blocks at the cost of those blocks alone, each
range's hashes come back in one value, ``array_send(array_agg(hash))``, which the server
holds whole until it sends it: a range is at most :data:`PART_BYTES` of the table, so a
query holds about 90 MB at most, and no array nears PostgreSQL's 1 GB limit of a value.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from faucet_core.warehouse import PermanentWarehouseError

__all__ = ["PART_BYTES", "cuts", "hash_array_sql", "hashes"]

#: Bytes of a table's blocks whose hashes one query sends: a row takes at least 32 bytes
#: of them, so an array holds at most about 4.2M hashes (12 bytes each, and 9 more while
#: it is built).
PART_BYTES = 128 * 2**20

#: One element of an ``int8[]`` in binary: its length (always 8), then its value.
_ELEMENT = np.dtype([("length", ">i4"), ("value", ">i8")])
#: The header of a one-dimensional array in binary: dimensions, has-nulls flag, element
#: type, then the dimension's length and lower bound.
_HEADER = np.dtype([("ndim", ">i4"), ("has_nulls", ">i4"), ("type", ">u4"),
                    ("length", ">i4"), ("lower", ">i4")])  # fmt: skip


def cuts(blocks: int, block_size: int) -> list[int]:
    """The blocks where a table of ``blocks`` blocks is cut into ranges of at most
    :data:`PART_BYTES` (none for a table of one range)."""
    parts = max(math.ceil(blocks * block_size / PART_BYTES), 1)
    return [blocks * i // parts for i in range(1, parts)]


def hash_array_sql(hash_sql: str, relation: str, condition: str) -> str:
    """The query whose one value holds the key hash of each row of ``relation`` that meets
    ``condition``, in binary (``NULL`` for no row)."""
    return f"SELECT array_send(array_agg({hash_sql})) FROM {relation} WHERE {condition}"


def hashes(sent: bytes | None) -> np.ndarray[Any, Any]:
    """The hashes of :func:`hash_array_sql`'s value, as int64.

    Raises:
        PermanentWarehouseError: The value is not an array of non-null 64-bit integers.
    """
    if sent is None or sent[:4] == b"\0\0\0\0":  # no row; an array of no dimension
        return np.empty(0, np.int64)
    if len(sent) >= _HEADER.itemsize:
        header = np.frombuffer(sent, _HEADER, count=1)[0]
        count = int(header["length"])
        if (
            header["ndim"] == 1
            and header["has_nulls"] == 0
            and len(sent) == _HEADER.itemsize + count * _ELEMENT.itemsize
        ):
            elements = np.frombuffer(sent, _ELEMENT, count=count, offset=_HEADER.itemsize)
            if (elements["length"] == 8).all():
                return elements["value"].astype(np.int64)
    raise PermanentWarehouseError(
        "the key hashes counted came back as something other than an array of 64-bit "
        "integers without NULL"
    )
