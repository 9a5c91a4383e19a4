"""Checking rows against their plan: the one check of a chunk, whichever way it came.

A warehouse's rows follow the plan when they have the plan's columns (in any order: they
are put in the plan's), a 64-bit key hash that is never NULL, every row in a chunk it was
read for, and each chunk its planned row count and checksum. :class:`RowCheck` checks
rows piece by piece as they come (the batches of a scan that fills the cache) and each
chunk's totals at the end; :func:`check_chunk` checks one chunk's rows at once (read by
themselves, or from the cache).

Rows that break a rule are refused with :class:`PlanBreach`, naming the warehouse and
the rule: either the source changed after planning, or the plugin breaks the rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pyarrow as pa

from faucet_core import layout, memory
from faucet_core.warehouse import PermanentWarehouseError

if TYPE_CHECKING:
    from faucet_core.plan import ChunkSpec, Plan

__all__ = ["PlanBreach", "RowCheck", "check_chunk", "null_hashes"]

#: Rows whose checksum terms are added up at once: their sums are exact in float64
#: (2**53 / 2**31).
_MAX_BATCH_ROWS = 2**22

Rows = TypeVar("Rows", pa.Table, pa.RecordBatch)


class PlanBreach(PermanentWarehouseError):
    """Rows a warehouse gave that break their plan.

    Attributes:
        warehouse: The warehouse's name (``datastore``).
        rule: The rule broken, e.g. ``"3 rows have a NULL key hash"``.
    """

    def __init__(self, warehouse: str, rule: str) -> None:
        super().__init__(
            f"the {warehouse} warehouse broke its plan: {rule} (either the source changed "
            "after planning, and a new reader plans it again, or the plugin breaks this rule)"
        )
        self.warehouse = warehouse
        self.rule = rule


class RowCheck:
    """Rows meant for some of a plan's chunks, checked piece by piece as they come
    (:meth:`add`), and each chunk's row count and checksum at the end (:meth:`finish`).

    Args:
        plan: The plan the rows must follow.
        chunks: The chunks the rows are meant for; ``None``: all of the plan's.
        ordered: Whether the columns must come in the plan's order already (a cache
            entry, which the core wrote so) rather than in any order (a warehouse's rows).
    """

    def __init__(
        self, plan: Plan, chunks: Sequence[ChunkSpec] | None = None, ordered: bool = False
    ) -> None:
        self.plan = plan
        self.ordered = ordered
        self.chunks: list[ChunkSpec] = plan.every_chunk if chunks is None else list(chunks)
        self.columns = [*plan.columns, layout.HASH_COLUMN]
        # The chunk holding each (split, bucket), eval buckets after the train ones;
        # len(chunks) where none does.
        self._lookup = np.full(2 * layout.BUCKETS, len(self.chunks), np.int32)
        for index, chunk in enumerate(self.chunks):
            offset = layout.BUCKETS if chunk.buckets.eval else 0
            self._lookup[offset + chunk.lo : offset + chunk.hi] = index
        self.rows = np.zeros(len(self.chunks), np.int64)
        self.checksums = np.zeros(len(self.chunks), np.int64)

    def add(self, piece: Rows) -> tuple[Rows, np.ndarray[Any, Any]]:
        """``piece`` with its columns in the plan's order, and the index (in
        :attr:`chunks`) of each row's chunk; its rows are counted towards their chunks'.

        Raises:
            PlanBreach: Other columns than the plan's, a key hash that is not a 64-bit
                integer, or NULL, or a row outside the chunks.
        """
        names = piece.schema.names
        if (names if self.ordered else sorted(names)) != (
            self.columns if self.ordered else sorted(self.columns)
        ):
            self._refuse(f"columns {names} where the plan has {self.columns}")
        piece = piece.select(self.columns)
        column = piece.column(layout.HASH_COLUMN)
        if not (pa.types.is_int64(column.type) or pa.types.is_uint64(column.type)):
            self._refuse(f"a key hash of type {column.type} where the layout needs 64-bit integers")
        if column.null_count:
            self._refuse(null_hashes(column.null_count))
        hashes = layout.integers(column)
        indexes = self._chunk_indexes(hashes)
        size = len(self.chunks) + 1
        counts = np.bincount(indexes, minlength=size)
        if counts[-1]:
            self._refuse_outside(hashes, indexes, int(counts[-1]))
        terms = layout.checksum_terms(hashes, out=memory.empty(len(hashes), np.float64))
        for start in range(0, len(hashes), _MAX_BATCH_ROWS):
            part = slice(start, start + _MAX_BATCH_ROWS)
            sums = np.bincount(indexes[part], weights=terms[part], minlength=size)
            self.checksums += sums[:-1].astype(np.int64)
        self.rows += counts[:-1]
        return piece, indexes

    def finish(self, indexes: Iterable[int] | None = None) -> None:
        """Check the rows and checksum of the chunks at ``indexes`` (default: all of them).

        Raises:
            PlanBreach: A chunk's rows or their checksum differ from the plan's.
        """
        for index in range(len(self.chunks)) if indexes is None else indexes:
            chunk, rows = self.chunks[index], int(self.rows[index])
            name = f"{chunk.split} chunk {chunk.index}"
            if rows != chunk.rows:
                self._refuse(f"{name}: {rows:,} rows where the plan counted {chunk.rows:,}")
            if self.checksums[index] != chunk.checksum:
                self._refuse(
                    f"{name}: other rows than planned in its buckets (the checksum of their "
                    "key hashes is not the plan's)"
                )

    def _chunk_indexes(self, hashes: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Each row's index in :attr:`chunks`; ``len(chunks)`` for a row in none of them."""
        keys = layout.bucket_of(hashes, out=memory.empty(len(hashes), hashes.dtype))
        if self.plan.eval_buckets:
            scratch = memory.empty(len(hashes), hashes.dtype)
            keys[layout.is_eval(hashes, self.plan.eval_buckets, scratch)] += layout.BUCKETS
        return memory.take_values(self._lookup, keys)

    def _refuse_outside(
        self, hashes: np.ndarray[Any, Any], indexes: np.ndarray[Any, Any], count: int
    ) -> None:
        first = hashes[np.argmax(indexes == len(self.chunks))][None]
        split = "eval" if layout.is_eval(first, self.plan.eval_buckets)[0] else "train"
        more = f" ({count:,} such rows)" if count > 1 else ""
        bucket = int(layout.bucket_of(first)[0])
        where = ", ".join(f"chunk {c.split} {c.lo}-{c.hi - 1}" for c in self.chunks)
        self._refuse(f"row in bucket {bucket} of {split}, outside {where}{more}")

    def _refuse(self, rule: str) -> None:
        raise PlanBreach(self.plan.datastore, rule)


def check_chunk(plan: Plan, chunk: ChunkSpec, table: pa.Table, ordered: bool = False) -> pa.Table:
    """``table`` as ``chunk``'s rows: its columns in the plan's order, checked against the
    plan (``ordered``: see :class:`RowCheck`).

    Raises:
        PlanBreach: ``table`` is not ``chunk``'s rows as planned.
    """
    check = RowCheck(plan, [chunk], ordered)
    table, _ = check.add(table)
    check.finish()
    return table


def null_hashes(count: int) -> str:
    """The rule broken by ``count`` rows whose key hash is NULL (a row is placed in its
    split and bucket by its key hash alone)."""
    return f"{_rows(count)} {'has' if count == 1 else 'have'} a NULL key hash"


def _rows(count: int) -> str:
    return f"{count:,} row" if count == 1 else f"{count:,} rows"
