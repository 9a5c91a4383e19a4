"""The memory pool of the pipeline's own Arrow buffers.

Every pass shuffles each chunk with a take, and a cache fill cuts and serializes what it
scans: buffers of chunk size, made and dropped many times a second, and so are the numpy
temporaries that compute each chunk's order and each scanned row's chunk (:func:`empty`).
Arrow's jemalloc pool (in the pyarrow builds that have it) hands them to the next take
still mapped, where the default pool returns them to the system, which then maps them in
again page by page: slow where memory given back is faulted in again at a fraction of
memory speed (virtual machines that return free memory to their host).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["concatenate", "empty", "pool", "take", "take_indices", "take_values"]


@functools.cache
def pool() -> pa.MemoryPool:
    """Arrow's jemalloc pool where pyarrow has it, else its default pool."""
    try:
        return pa.jemalloc_memory_pool()
    except NotImplementedError:  # pyarrow built without jemalloc (macOS, Windows)
        return pa.default_memory_pool()


def empty(count: int, dtype: Any) -> np.ndarray[Any, Any]:
    """An uninitialized numpy array of ``count`` values of ``dtype`` in the pipeline's pool,
    for the temporaries made per chunk (numpy's own arrays of that size come from the
    system, mapped in anew each time)."""
    kind = np.dtype(dtype)
    buffer = pa.allocate_buffer(count * kind.itemsize, memory_pool=pool())
    return np.frombuffer(buffer, dtype=kind)


def take(table: pa.Table, positions: np.ndarray[Any, Any]) -> pa.Table:
    """The rows of ``table`` at ``positions`` (numpy integers), in one contiguous run per
    column, in the pipeline's pool.

    Raises:
        IndexError: A position is not a row of ``table``.
    """
    rows = table.num_rows
    if len(positions) and (positions.min() < 0 or positions.max() >= rows):
        raise IndexError(f"row positions outside the {rows:,} rows taken from")
    # Checked once here: Arrow would check them again for every column (a fifth of a
    # shuffling take's time).
    indices = take_indices(positions, rows)
    return pc.take(table, indices, boundscheck=False, memory_pool=pool())


def take_indices(positions: np.ndarray[Any, Any], rows: int) -> pa.Array:
    """Row positions (numpy integers) as the indices of a take from ``rows`` rows: 32-bit
    where the rows allow (a take reads its indices once per column, and narrower ones make
    it faster), sharing their memory when they have that type already (``pa.array`` would
    import pandas)."""
    kind = np.dtype(np.uint32 if rows <= 2**32 else np.int64)
    values = positions
    if positions.dtype != kind or not positions.flags.c_contiguous:
        values = empty(len(positions), kind)
        np.copyto(values, positions, casting="unsafe")
    return pa.Array.from_buffers(
        pa.from_numpy_dtype(kind), len(values), [None, pa.py_buffer(values)]
    )


def take_values(
    values: np.ndarray[Any, Any], positions: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    """``values`` at ``positions`` (:func:`numpy.take`), in the pipeline's pool."""
    # pragma: no mutate block (a buffer of the pool only saves time: numpy's values)
    return np.take(values, positions, out=empty(len(positions), values.dtype))


def concatenate(parts: Sequence[np.ndarray[Any, Any]]) -> np.ndarray[Any, Any]:
    """``parts`` end to end, of the first one's type, in the pipeline's pool."""
    # pragma: no mutate block (a buffer of the pool only saves time: numpy's values)
    out = empty(sum(len(part) for part in parts), parts[0].dtype)
    return np.concatenate(parts, out=out)
