"""PostgreSQL's extended hash of integers, computed in numpy.

A table keyed by one integer column is hashed by its type's own function
(``hashint4extended(id, 0)``: see :meth:`~faucet_postgres.dialects.ServerDialect.value_hash_sql`).
The cache fill reads every row with its hash; computed on the server, that column cost
about a tenth more of the server's CPU for the read (10M rows: 16.0 to 16.5 s against
14.4 to 15.1 s, four reads each, one connection), and 12 bytes a row more to send and
decode. The same hash computed here from the key's values, a batch at a time, costs a few
vector operations.

The functions follow PostgreSQL's ``hashfn.c`` and ``hashfunc.c``, for seed 0: an integer
becomes one 32-bit word (an ``int8`` folds its high half into its low half), whose hash
is Bob Jenkins' ``final`` mix of it, two of the three words it mixes giving the 64-bit
hash. The warehouse uses them only once they hash a sample of the table's keys as the
server does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from faucet_core import layout

__all__ = ["FUNCTIONS", "hashes_of", "integer_hashes"]

#: The server's hash functions computed here, and the Arrow type of the column each takes.
FUNCTIONS: dict[str, pa.DataType] = {
    "hashint2extended": pa.int16(),
    "hashint4extended": pa.int32(),
    "hashint8extended": pa.int64(),
}
#: What the three words of the Jenkins hash start at, for a key of 4 bytes.
_START = np.uint32((0x9E3779B9 + 4 + 3923095) % 2**32)
#: The steps of Jenkins' ``final`` mix of words ``(a, b, c)``: the word changed, the word
#: it is mixed with, and that word's rotation (``c ^= b; c -= rot(b, 14)`` first).
_FINAL = ((2, 1, 14), (0, 2, 11), (1, 0, 25), (2, 1, 16), (0, 2, 4), (1, 0, 14), (2, 1, 24))


def _rotated(word: np.ndarray[Any, Any], bits: int) -> np.ndarray[Any, Any]:
    return (word << np.uint32(bits)) | (word >> np.uint32(32 - bits))


def _words(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The 32-bit word each value is hashed as: an ``int8``'s low half, xor its high half
    (complemented for a negative value); a smaller integer, as a 32-bit one."""
    if values.dtype != np.int64:
        return values.astype(np.int32).view(np.uint32)
    low = values.astype(np.uint32)  # wraps: the low 32 bits
    high = (values >> np.int64(32)).astype(np.uint32)
    return low ^ np.where(values >= 0, high, ~high)


def integer_hashes(column: pa.Array | pa.ChunkedArray, function: str) -> pa.Array:
    """``COALESCE(function(value, 0), 0)`` of each value of ``column`` (a ``NULL`` is 0),
    as int64. Read from and written to Arrow's buffers: its conversions to and from numpy
    would import pandas.

    Raises:
        ValueError: ``function`` is not one of :data:`FUNCTIONS`, or ``column`` is not of
            its type.
    """
    kind = FUNCTIONS.get(function)
    if kind is None or column.type != kind:
        raise ValueError(f"cannot compute {function} of a {column.type} column here")
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    # Under a NULL lies some value: hashed, then its hash set to 0.
    hashes = hashes_of(layout.integers(column))
    if column.null_count:
        start, end = column.offset, column.offset + len(column)
        validity = np.frombuffer(column.buffers()[0], np.uint8)
        hashes[np.unpackbits(validity, count=end, bitorder="little")[start:] == 0] = 0
    return pa.Array.from_buffers(pa.int64(), len(hashes), [None, pa.py_buffer(hashes)])


def hashes_of(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The hash of each of ``values`` (int16, int32 or int64: the function of that type),
    as int64."""
    a = _words(values) + _START
    b = np.full_like(a, _START)
    words = [a, b, b.copy()]
    # Jenkins' final(a, b, c); the arrays are uint32, so every step wraps as in C.
    for changed, by, bits in _FINAL:
        words[changed] ^= words[by]
        words[changed] -= _rotated(words[by], bits)
    _, b, c = words
    hashes: np.ndarray[Any, Any] = (
        (b.astype(np.uint64) << np.uint64(32)) | c.astype(np.uint64)
    ).view(np.int64)
    return hashes
