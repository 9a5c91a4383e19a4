"""The pipeline's memory pool: where shuffled rows, temporaries and cache entries live."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from faucet_core import Reader, memory
from faucet_core.cache import ChunkCache

# A buffer frees itself through the pool that allocated it, so a proxy pool must outlive
# every buffer it handed out: rows a test's reader cached are freed in later tests.
_COUNTED_POOLS: list[pa.MemoryPool] = []


@pytest.fixture
def counted_pool(monkeypatch: pytest.MonkeyPatch) -> pa.MemoryPool:
    """The pipeline's pool, as one of its own: it counts this test's allocations alone,
    whatever other threads do."""
    counted = pa.proxy_memory_pool(pa.default_memory_pool())
    _COUNTED_POOLS.append(counted)
    monkeypatch.setattr(memory, "pool", lambda: counted)
    return counted


def test_shuffled_rows_come_from_the_pipeline_pool(
    make_reader: Callable[..., Reader], counted_pool: pa.MemoryPool
) -> None:
    reader = make_reader(output="arrow")
    before = counted_pool.bytes_allocated()
    reader.prep_for_epoch()
    batch = reader.get_batch()
    assert batch is not None
    # The batch is a slice of its chunk, shuffled by a take into the pipeline's pool.
    assert counted_pool.bytes_allocated() - before >= batch["features"].nbytes
    reader.close()


def test_per_chunk_temporaries_come_from_the_pipeline_pool(counted_pool: pa.MemoryPool) -> None:
    values = memory.empty(100_000, np.int64)
    assert counted_pool.bytes_allocated() >= values.nbytes
    values[:] = 7  # writable, of the size asked
    assert values.shape == (100_000,) and int(values.sum()) == 700_000


def test_the_pipeline_pool_is_the_default_one_without_jemalloc(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def missing() -> pa.MemoryPool:
        raise NotImplementedError("this pyarrow was built without jemalloc")

    monkeypatch.setattr(pa, "jemalloc_memory_pool", missing)
    memory.pool.cache_clear()
    try:
        assert memory.pool().backend_name == pa.default_memory_pool().backend_name
    finally:
        memory.pool.cache_clear()


def test_a_take_puts_its_rows_in_the_pipeline_pool(counted_pool: pa.MemoryPool) -> None:
    table = pa.table({"x": np.arange(100_000, dtype=np.float64)})
    taken = memory.take(table, np.arange(100_000)[::-1])
    assert taken.column("x").to_pylist()[:2] == [99_999.0, 99_998.0]
    assert counted_pool.bytes_allocated() >= taken.nbytes


@pytest.mark.parametrize("position", [-1, 3])
def test_a_take_refuses_positions_outside_the_table(position: int) -> None:
    table = pa.table({"x": [1.0, 2.0, 3.0], "y": [4, 5, 6]})
    with pytest.raises(IndexError, match="outside the 3 rows"):
        memory.take(table, np.array([0, position, 1]))


def test_a_take_of_no_positions_is_empty() -> None:
    table = pa.table({"x": [1.0, 2.0, 3.0]})
    assert memory.take(table, np.array([], dtype=np.int64)).num_rows == 0


def test_a_cache_entry_is_serialized_in_the_pipeline_pool(
    counted_pool: pa.MemoryPool, tmp_path: Path
) -> None:
    table = pa.table({"x": np.arange(100_000, dtype=np.float64)})
    writer = ChunkCache(tmp_path).writer("a", table.schema)
    writer.write(table)
    assert counted_pool.total_bytes_allocated() >= table.nbytes
    writer.abort()


@pytest.mark.parametrize("dtype", [np.int32, np.uint16, np.int64, np.uint32])
def test_positions_of_any_integer_type_are_32_bit_indices_where_the_rows_allow(
    dtype: type,
) -> None:
    positions = np.array([2, 0, 1], dtype=dtype)
    indices = memory.take_indices(positions, 3)
    assert indices.type == pa.uint32() and indices.to_pylist() == [2, 0, 1]
    wide = memory.take_indices(positions, 2**32 + 1)
    assert wide.type == pa.int64() and wide.to_pylist() == [2, 0, 1]


def test_indices_share_the_memory_of_positions_of_their_type() -> None:
    positions = np.array([2, 0, 1], dtype=np.uint32)
    indices = memory.take_indices(positions, 3)
    positions[0] = 1
    assert indices.to_pylist() == [1, 0, 1]
    every_other = np.arange(6, dtype=np.uint32)[::2]  # not contiguous: copied
    assert memory.take_indices(every_other, 6).to_pylist() == [0, 2, 4]
