"""The chunk cache: round trips, damage detection, atomic writes, the byte budget."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa

from faucet_core.cache import ChunkCache


def _table(rows: int, start: int = 0) -> pa.Table:
    return pa.table({"id": list(range(start, start + rows)), "x": [float(i) for i in range(rows)]})


def test_round_trip_and_sharing_between_instances(tmp_path: Path) -> None:
    cache = ChunkCache(tmp_path, max_bytes=10**9)
    assert cache.get("a") is None
    assert cache.put("a", _table(100))
    assert cache.get("a") == _table(100)
    other = ChunkCache(tmp_path, max_bytes=10**9)  # e.g. another process or a new run
    assert other.get("a") == _table(100)
    late = ChunkCache(tmp_path, max_bytes=10**9)
    cache.put("b", _table(5))
    assert late.get("b") == _table(5)  # written after `late` scanned the folder
    assert (cache.stats.hits, cache.stats.misses, cache.stats.writes) == (1, 1, 2)


def test_flipped_byte_is_detected_and_the_entry_removed(tmp_path: Path) -> None:
    ChunkCache(tmp_path, max_bytes=10**9).put("a", _table(1000))
    (entry,) = tmp_path.glob("a.*.arrow")
    data = bytearray(entry.read_bytes())
    data[len(data) // 3] ^= 0x01
    entry.write_bytes(bytes(data))
    cache = ChunkCache(tmp_path, max_bytes=10**9)
    assert cache.get("a") is None
    assert cache.stats.corrupt_discarded == 1
    assert not entry.exists()
    cache.put("a", _table(1000))
    assert cache.get("a") == _table(1000)


def test_truncated_entry_is_detected(tmp_path: Path) -> None:
    ChunkCache(tmp_path, max_bytes=10**9).put("a", _table(1000))
    (entry,) = tmp_path.glob("a.*.arrow")
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    cache = ChunkCache(tmp_path, max_bytes=10**9)
    assert cache.get("a") is None
    assert cache.stats.corrupt_discarded == 1


CRASH_MID_WRITE = """
import os, signal, sys
import pyarrow as pa
from faucet_core import cache as module

def write_half_then_die(path, data):
    with open(path, "wb") as handle:
        handle.write(data.to_pybytes()[: data.size // 2])
        handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)

module._write_file = write_half_then_die
table = pa.table({"id": list(range(100_000))})
module.ChunkCache(sys.argv[1]).put("a", table)
"""


def test_a_write_cut_short_is_never_read(tmp_path: Path) -> None:
    # A process killed in the middle of writing an entry.
    crashed = subprocess.run([sys.executable, "-c", CRASH_MID_WRITE, str(tmp_path)], check=False)
    assert crashed.returncode == -signal.SIGKILL
    assert [p.suffix for p in tmp_path.iterdir()] == [".tmp"]  # no entry, only the half file
    cache = ChunkCache(tmp_path, max_bytes=10**9)
    assert cache.get("a") is None
    assert len(cache) == 0
    assert cache.put("a", _table(10))
    assert cache.get("a") == _table(10)


def test_least_recently_used_entries_are_evicted_past_the_budget(tmp_path: Path) -> None:
    probe = ChunkCache(tmp_path / "probe", max_bytes=10**9)
    probe.put("x", _table(1000))
    size = probe.total_bytes
    cache = ChunkCache(tmp_path / "cache", max_bytes=3 * size)
    for key in "abc":
        cache.put(key, _table(1000))
    assert cache.get("a") is not None  # now b is the least recently used
    cache.put("d", _table(1000))
    assert cache.get("b") is None
    assert all(cache.get(k) is not None for k in "acd")
    assert cache.total_bytes <= 3 * size
    assert (cache.stats.evictions, cache.stats.bytes_evicted) == (1, size)
    assert len(list((tmp_path / "cache").glob("*.arrow"))) == 3


def test_a_chunk_larger_than_the_budget_is_not_cached(tmp_path: Path) -> None:
    cache = ChunkCache(tmp_path, max_bytes=100)
    assert not cache.put("a", _table(1000))
    assert cache.get("a") is None
    assert not list(tmp_path.iterdir())


def test_clear_frees_everything(tmp_path: Path) -> None:
    cache = ChunkCache(tmp_path, max_bytes=10**9)
    cache.put("a", _table(10))
    cache.put("b", _table(10))
    assert cache.clear() > 0
    assert len(cache) == 0
    assert cache.get("a") is None
