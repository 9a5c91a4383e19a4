"""The rules every warehouse follows: which rows are eval, which chunk a row is in, and
in what order a chunk's rows come.

A warehouse computes one 64-bit hash of each row's split key, in its own SQL
(:meth:`~faucet_core.sql.SqlWarehouse.key_hash_sql`, by default its ``hash_sql``).
Everything else is arithmetic on that hash, defined here once, both as SQL (for the
warehouse to run) and as numpy (for the core to check what the warehouse returned):

- a row is in **eval** when ``hash mod 10,000`` is below ``test_split_percent * 100``;
- its **bucket** is ``hash mod 65,537``; a chunk is a run ``lo <= bucket < hi`` of buckets of
  one split, cut where the running row count crosses each multiple of about
  ``chunk_size``. 65,537 is prime, so the bucket and the split digit are independent;
- inside a chunk, rows are ordered by their hash, ties broken by the other columns;
- each bucket's **checksum** is the sum of ``hash mod (2^31 - 1)`` over its rows.

``mod`` is the floor modulo (never negative), so signed (BigQuery, PostgreSQL) and
unsigned (DuckDB) hashes both work. Since split and bucket depend only on the key, the
split is the same in every run and for every chunk size; since every row of a bucket
range lands in exactly one chunk, and the core checks each chunk's row count, bucket
membership and checksum (:mod:`faucet_core.checks`), a plugin cannot serve a row twice or
lose one unnoticed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from faucet_core import memory

__all__ = [
    "BUCKETS",
    "BUCKET_COLUMN",
    "CHECKSUM_MODULUS",
    "COUNT_COLUMNS",
    "EVAL_COLUMN",
    "HASH_COLUMN",
    "LAYOUT_VERSION",
    "SPLIT_BUCKETS",
    "BucketRange",
    "Dialect",
    "HashCounts",
    "arrow_of",
    "bucket_counts",
    "bucket_of",
    "checksum_terms",
    "chunk_positions",
    "count_hashes",
    "eval_buckets",
    "group_buckets",
    "hash_values",
    "integer_parts",
    "integers",
    "is_eval",
    "stable_digest",
]

#: Split buckets: a row is eval when ``hash mod SPLIT_BUCKETS < eval_buckets``.
SPLIT_BUCKETS = 10_000
#: Fine buckets per split; chunks are runs of them. Prime, so coprime with SPLIT_BUCKETS.
BUCKETS = 65_537
#: Each row adds ``hash mod CHECKSUM_MODULUS`` to its bucket's checksum.
CHECKSUM_MODULUS = 2_147_483_647
#: Changes whenever a rule here changes, so plans made under other rules never match.
LAYOUT_VERSION = 2

#: The column holding each row's key hash, next to the source's columns.
HASH_COLUMN = "__faucet_hash"
#: Column names a warehouse may use where it stores the split flag and the bucket.
EVAL_COLUMN = "__faucet_eval"
BUCKET_COLUMN = "__faucet_bucket"


def stable_digest(*parts: Any) -> str:
    """A short hex digest of JSON-serialisable ``parts``, the same in every process."""
    payload = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def eval_buckets(test_split_percent: float) -> int:
    """How many of the 10,000 split buckets are eval."""
    return round(test_split_percent * SPLIT_BUCKETS / 100)


def hash_values(*values: Any) -> int:
    """A signed 64-bit hash of ``values``, stable across processes and runs.

    For warehouses without a 64-bit hash function of their own (SQLite): register it as a
    SQL function. Values of different types hash differently (``1`` is not ``"1"``).
    """
    text = "\x1f".join(f"{type(value).__name__}:{value!r}" for value in values)
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


# The rules as numpy, over an array of key hashes (int64 or uint64).


#: Values folded at a time: a block's quotients stay in the core's cache.
_FOLD_BLOCK = 65_536


def _fold(
    hashes: np.ndarray[Any, Any], modulus: int, out: np.ndarray[Any, Any] | None = None
) -> np.ndarray[Any, Any]:
    # ``hashes - floor(hashes / modulus) * modulus``: numpy divides by a scalar with a
    # multiplication, five times faster than its remainder of signed 64-bit values. The
    # product may wrap past the type's range; the difference, below ``modulus``, does not.
    divisor = np.array(modulus, dtype=hashes.dtype)
    result = np.empty(hashes.shape, hashes.dtype) if out is None else out
    quotients = memory.empty(min(len(hashes), _FOLD_BLOCK), hashes.dtype)
    for start in range(0, len(hashes), _FOLD_BLOCK):
        part = hashes[start : start + _FOLD_BLOCK]
        taken = quotients[: len(part)]
        np.floor_divide(part, divisor, out=taken)
        np.multiply(taken, divisor, out=taken)
        # "unsafe": the remainders fit any ``out`` asked for (float64 holds them exactly).
        np.subtract(part, taken, out=result[start : start + _FOLD_BLOCK], casting="unsafe")
    return result


def is_eval(
    hashes: np.ndarray[Any, Any],
    eval_bucket_count: int,
    scratch: np.ndarray[Any, Any] | None = None,
) -> np.ndarray[Any, Any]:
    """Whether each hash puts its row in the eval split (``scratch``: an integer array of
    their length to compute in)."""
    return np.asarray(_fold(hashes, SPLIT_BUCKETS, scratch) < eval_bucket_count)


def bucket_of(
    hashes: np.ndarray[Any, Any], out: np.ndarray[Any, Any] | None = None
) -> np.ndarray[Any, Any]:
    """Each hash's bucket, in ``0 .. BUCKETS - 1`` (into ``out``, if given)."""
    return _fold(hashes, BUCKETS, out)


def checksum_terms(
    hashes: np.ndarray[Any, Any], out: np.ndarray[Any, Any] | None = None
) -> np.ndarray[Any, Any]:
    """What each row adds to its bucket's checksum (into ``out``, if given: a float64
    array holds them exactly)."""
    return _fold(hashes, CHECKSUM_MODULUS, out)


# The rules as SQL.


@dataclass(frozen=True)
class Dialect:
    """The SQL a warehouse speaks, as far as the layout needs it.

    Attributes:
        mod: Integer remainder of ``{a}`` by ``{n}``, truncated toward zero as SQL does
            (``MOD({a}, {n})``; SQLite: ``({a} % {n})``).
        unsigned_hashes: The warehouse's key hashes are never negative (an unsigned
            type), so one remainder folds them.
        checksum_terms_as: The SQL type a checksum's terms are cast to before they are
            summed, where the hash's own type sums slowly (PostgreSQL sums ``bigint`` as
            ``numeric``, an ``int`` as ``bigint``); ``None``: as they are.
    """

    mod: str = "MOD({a}, {n})"
    unsigned_hashes: bool = False
    checksum_terms_as: str | None = None

    def fold(self, expression: str, modulus: int) -> str:
        """``expression`` floor-modulo ``modulus``: never negative, for signed hashes too."""
        inner = self.mod.format(a=f"({expression})", n=modulus)
        if self.unsigned_hashes:
            return inner
        return self.mod.format(a=f"({inner} + {modulus})", n=modulus)

    def is_eval(self, hash_expression: str, eval_bucket_count: int) -> str:
        """A boolean expression: the row of this hash is in eval (without an eval split, a
        constant, which spares the warehouse computing it for every row)."""
        if eval_bucket_count <= 0:
            return "(1 = 0)"
        return f"({self.fold(hash_expression, SPLIT_BUCKETS)} < {eval_bucket_count})"

    def bucket(self, hash_expression: str) -> str:
        """The row's bucket, in ``0 .. BUCKETS - 1``."""
        return self.fold(hash_expression, BUCKETS)

    def count_query(self, hashed_rows: str, eval_bucket_count: int) -> str:
        """Rows and checksum per (split, bucket) of ``hashed_rows``.

        ``hashed_rows`` is a query with a column :data:`HASH_COLUMN`; the result has
        columns ``is_eval``, ``bucket``, ``row_count``, ``checksum``, one row per
        non-empty bucket.
        """
        checksum = self.fold(HASH_COLUMN, CHECKSUM_MODULUS)
        if self.checksum_terms_as is not None:  # each term is below 2^31
            checksum = f"CAST({checksum} AS {self.checksum_terms_as})"
        # Without an eval split the flag is a constant, which not every SQL groups by.
        groups = "1, 2" if eval_bucket_count > 0 else "2"
        return (
            f"SELECT {self.is_eval(HASH_COLUMN, eval_bucket_count)} AS is_eval, "
            f"{self.bucket(HASH_COLUMN)} AS bucket, COUNT(*) AS row_count, "
            f"SUM({checksum}) AS checksum FROM ({hashed_rows}) AS faucet_hashed GROUP BY {groups}"
        )

    def in_range(self, eval_expression: str, bucket_expression: str, chunk: BucketRange) -> str:
        """A condition selecting the rows of ``chunk`` by their split flag and bucket."""
        split = eval_expression if chunk.eval else f"NOT {eval_expression}"
        return (
            f"{split} AND {bucket_expression} >= {int(chunk.lo)} "
            f"AND {bucket_expression} < {int(chunk.hi)}"
        )


# Counting and chunking.

#: The columns of a bucket count table, one row per non-empty (split, bucket).
COUNT_COLUMNS = ("is_eval", "bucket", "row_count", "checksum")
_COUNT_SCHEMA = pa.schema(
    [("is_eval", pa.bool_()), ("bucket", pa.int64()), ("row_count", pa.int64()),
     ("checksum", pa.int64())]
)  # fmt: skip


def bucket_counts(table: pa.Table) -> pa.Table:
    """A count table (:data:`COUNT_COLUMNS`, in that order) with the core's column types.

    Accepts what warehouses return: 0/1 for booleans, decimals for sums.

    Raises:
        ValueError: The table has other columns, or values that do not fit.
    """
    if table.num_columns != len(COUNT_COLUMNS):
        raise ValueError(
            f"a bucket count has the columns {COUNT_COLUMNS}, not {table.column_names}"
        )
    columns = []
    for index, field in enumerate(_COUNT_SCHEMA):
        column = table.column(index)
        if field.type == pa.bool_() and not pa.types.is_boolean(column.type):
            column = pc.not_equal(column, 0)
        columns.append(pc.cast(column, field.type))  # a safe cast: what does not fit raises
    return pa.Table.from_arrays(columns, schema=_COUNT_SCHEMA)


def count_hashes(hashes: np.ndarray[Any, Any], eval_bucket_count: int) -> pa.Table:
    """The count table of rows with ``hashes``, as :meth:`Dialect.count_query` computes it in
    SQL: the reference every warehouse's counting is tested against."""
    counts = HashCounts(eval_bucket_count)
    counts.add(hashes)
    return counts.table()


#: Hashes counted at a time: a block's keys and terms stay in the core's cache.
_COUNT_BLOCK = 2**20


class HashCounts:
    """Rows and checksum per (split, bucket) of key hashes added a block at a time: the
    count of :meth:`Dialect.count_query`, for a warehouse that sends its rows' hashes
    rather than counting them (the server's aggregate of 131,074 groups can cost more
    than sending the hashes).

    Args:
        eval_bucket_count: The split's eval buckets (:func:`eval_buckets`).
    """

    def __init__(self, eval_bucket_count: int) -> None:
        self.eval_bucket_count = eval_bucket_count
        # Index: the bucket, plus BUCKETS for the eval split.
        self._rows = np.zeros(2 * BUCKETS, np.int64)
        self._checksums = np.zeros(2 * BUCKETS, np.int64)

    def add(self, hashes: np.ndarray[Any, Any]) -> None:
        """Count the rows of ``hashes`` (int64 or uint64)."""
        for start in range(0, len(hashes), _COUNT_BLOCK):
            block = hashes[start : start + _COUNT_BLOCK]
            keys = bucket_of(block, memory.empty(len(block), np.int64))
            if self.eval_bucket_count > 0:
                np.add(keys, BUCKETS, out=keys, where=is_eval(block, self.eval_bucket_count))
            self._rows += np.bincount(keys, minlength=2 * BUCKETS)
            terms = checksum_terms(block, memory.empty(len(block), np.int64))
            # bincount sums in float64, exact below 2^53: each half of a term (below 2^16
            # and 2^15) summed over a block stays far below it.
            for shift in (0, 16):
                half = (terms >> shift) & 0xFFFF
                summed = np.bincount(keys, weights=half, minlength=2 * BUCKETS)
                self._checksums += summed.astype(np.int64) << shift

    def table(self) -> pa.Table:
        """The count table (:data:`COUNT_COLUMNS`) of the hashes added: one row per
        non-empty (split, bucket), train's first, each in bucket order."""
        keys = np.flatnonzero(self._rows)
        return pa.Table.from_arrays(
            [arrow_of(keys >= BUCKETS), arrow_of(keys % BUCKETS), arrow_of(self._rows[keys]),
             arrow_of(self._checksums[keys])],
            schema=_COUNT_SCHEMA,
        )  # fmt: skip


@dataclass(frozen=True)
class BucketRange:
    """The buckets ``lo <= bucket < hi`` of one split: what a chunk holds."""

    eval: bool
    lo: int
    hi: int


def group_buckets(
    buckets: np.ndarray[Any, Any],
    rows: np.ndarray[Any, Any],
    checksums: np.ndarray[Any, Any],
    chunk_size: int,
) -> list[list[int]]:
    """Cut one split's non-empty buckets into chunks of about ``chunk_size`` rows.

    Returns ``[lo, hi, rows, checksum]`` per chunk. Chunks cover the whole bucket space
    (the first starts at 0, the last ends at :data:`BUCKETS`), so every row of the split
    falls in exactly one. The split's ``total`` rows aim at ``k = ceil(total / chunk_size)``
    chunks: the m-th ends at the first bucket where the running row count reaches
    ``m * total / k``. A bucket is never cut, so large buckets make fewer chunks; a chunk
    is never empty.
    """
    order = np.argsort(buckets)
    buckets, rows, checksums = buckets[order], rows[order], checksums[order]
    total = int(rows.sum())
    if not total:
        return []
    count = -(-total // chunk_size)
    running = np.cumsum(rows)
    # Exact integer thresholds: the first running count at or past m * total / count.
    thresholds = np.array([-(-m * total // count) for m in range(1, count + 1)])
    ends = np.unique(np.searchsorted(running, thresholds))
    starts = np.concatenate([[0], ends[:-1] + 1])
    his = buckets[ends] + 1
    his[-1] = BUCKETS
    los = np.concatenate([[0], his[:-1]])
    chunk_rows = np.add.reduceat(rows, starts)
    chunk_checksums = np.add.reduceat(checksums, starts)
    ranges: list[list[int]] = np.stack([los, his, chunk_rows, chunk_checksums], axis=1).tolist()
    return ranges


def arrow_of(values: np.ndarray[Any, Any]) -> pa.Array:
    """A one-dimensional numpy array of numbers or booleans as Arrow, built on its buffer:
    ``pa.array`` would import pandas (see :func:`integers`)."""
    if values.dtype == np.bool_:
        bits = pa.py_buffer(np.packbits(values, bitorder="little"))
        return pa.Array.from_buffers(pa.bool_(), len(values), [None, bits])
    values = np.ascontiguousarray(values)
    kind = pa.from_numpy_dtype(values.dtype)
    return pa.Array.from_buffers(kind, len(values), [None, pa.py_buffer(values)])


def integers(column: pa.Array | pa.ChunkedArray) -> np.ndarray[Any, Any]:
    """The values of a column of integers, as numpy, from its buffers (zero copy for one
    chunk; under a NULL, whatever the buffer holds). Unlike ``to_numpy``, which imports
    pandas (a second or so of a worker's start, and tens of MiB), this needs numpy alone."""
    parts = integer_parts(column)
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.empty(0, column.type.to_pandas_dtype())


def integer_parts(column: pa.Array | pa.ChunkedArray) -> list[np.ndarray[Any, Any]]:
    """The values of each chunk of a column of integers without NULLs, as numpy views of
    its buffers."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    dtype = np.dtype(column.type.to_pandas_dtype())
    return [
        np.frombuffer(chunk.buffers()[1], dtype=dtype, count=chunk.offset + len(chunk))[
            chunk.offset :
        ]
        for chunk in chunks
    ]


def chunk_positions(table: pa.Table) -> np.ndarray[Any, Any] | None:
    """The positions of ``table``'s rows in the chunk order, or ``None`` when the rows are
    in that order already.

    The chunk order is by key hash, ties broken by the other columns: a function of the
    rows alone, so a chunk is the same sequence wherever and whenever it is read, which
    is what lets a seed give the same batches from the warehouse and from the cache.
    """
    hashes = integers(table.column(HASH_COLUMN))
    if table.num_rows < 2:
        return None
    if np.all(hashes[1:] > hashes[:-1]):  # not np.diff: it wraps around on uint64
        return None
    positions = np.argsort(hashes)  # not stable, but with no equal hashes no need to be
    ordered = hashes[positions]
    if np.all(ordered[1:] != ordered[:-1]):
        return positions
    # Equal hashes (a key that is not unique): sort by every column as well.
    keys = [HASH_COLUMN]
    tie_table = table
    for name in table.column_names:
        if name == HASH_COLUMN:
            continue
        if not _sortable(table.schema.field(name).type):
            text = [
                json.dumps(value, sort_keys=True, default=str) for value in table[name].to_pylist()
            ]
            tie_table = tie_table.set_column(
                tie_table.schema.get_field_index(name), name, pa.array(text)
            )
        keys.append(name)
    indices = pc.sort_indices(tie_table, sort_keys=[(key, "ascending") for key in keys])
    return integers(indices)


def _sortable(kind: pa.DataType) -> bool:
    return not (pa.types.is_nested(kind) or pa.types.is_dictionary(kind) or pa.types.is_null(kind))
