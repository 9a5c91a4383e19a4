"""The chunk cache: round trips, damage detection, atomic writes, the byte budget."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from faucet_core import cache as cache_module
from faucet_core.cache import ChunkCache, checksum
from faucet_core.plan_cache import PlanCache
from tests.conftest import ascii_locale


def _table(rows: int, start: int = 0) -> pa.Table:
    return pa.table({"id": list(range(start, start + rows)), "x": [float(i) for i in range(rows)]})


def _entry_size(tmp_path: Path, rows: int = 10) -> int:
    """The size of the entry of ``_table(rows)``, written in a folder of its own."""
    probe = ChunkCache(tmp_path / "probe")
    probe.put("x", _table(rows))
    return probe.total_bytes


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
    assert cache.get("b") == _table(5)
    assert cache.get("c") is None
    assert (cache.stats.hits, cache.stats.misses, cache.stats.writes) == (2, 2, 2)


def test_flipped_byte_is_detected_and_the_entry_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ChunkCache(tmp_path, max_bytes=10**9).put("a", _table(1000))
    (entry,) = tmp_path.glob("a.*.arrow")
    data = bytearray(entry.read_bytes())
    data[len(data) // 3] ^= 0x01
    entry.write_bytes(bytes(data))
    cache = ChunkCache(tmp_path, max_bytes=10**9)
    with caplog.at_level(logging.WARNING, logger="faucet_core.cache"):
        assert cache.get("a") is None
    assert [r.getMessage() for r in caplog.records] == [
        f"discarding damaged cache entry {entry}: checksum mismatch"
    ]
    assert cache.stats.corrupt_discarded == 1
    assert not entry.exists()
    cache.put("a", _table(1000))
    assert cache.get("a") == _table(1000)


def test_an_entry_written_again_after_another_process_removed_it_is_checked_again(
    tmp_path: Path,
) -> None:
    """An entry this cache read (and checked) once, removed by another process and written
    again under the same name, is checked again: here it was damaged."""
    cache = ChunkCache(tmp_path, max_bytes=10**9)
    cache.put("a", _table(1000))
    assert cache.get("a") == _table(1000)  # read and checked
    (entry,) = tmp_path.glob("a.*.arrow")
    data = bytearray(entry.read_bytes())
    entry.unlink()  # evicted by another process
    cache.evict(keep=set())  # this cache lists the folder: a is gone
    data[len(data) // 3] ^= 0x01
    entry.write_bytes(bytes(data))  # the same name again, other bytes
    assert cache.get("a") is None
    assert cache.stats.corrupt_discarded == 1 and not entry.exists()


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

written = 0
write_all = module._write_all

def dies_mid_write(descriptor, data):
    global written
    if written > 400_000:  # the entry is about 800 KB
        os.kill(os.getpid(), signal.SIGKILL)
    written += len(memoryview(data).cast("B"))
    write_all(descriptor, data)

module._write_all = dies_mid_write
table = pa.table({"id": list(range(100_000))})
writer = module.ChunkCache(sys.argv[1]).writer("a", table.schema)
for batch in table.to_batches(max_chunksize=10_000):
    writer.write(batch)
writer.commit()
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
    size = _entry_size(tmp_path, 1000)
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


def test_a_chunk_larger_than_the_budget_is_not_cached(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    size = _entry_size(tmp_path / "probe", 1000)
    cache = ChunkCache(tmp_path / "cache", max_bytes=100)
    with caplog.at_level(logging.INFO, logger="faucet_core.cache"):
        assert not cache.put("a", _table(1000))
    assert caplog.messages == [f"chunk a ({size} bytes) exceeds the cache budget; not cached"]
    assert cache.get("a") is None
    assert not list((tmp_path / "cache").iterdir())


def test_clear_frees_everything(tmp_path: Path) -> None:
    cache = ChunkCache(tmp_path, max_bytes=10**9)
    cache.put("a", _table(10))
    cache.put("b", _table(20))
    (tmp_path / "c.1234.tmp").write_bytes(b"x" * 100)  # left by a killed writer
    (tmp_path / "notes.txt").write_text("not the cache's")
    files = [*tmp_path.glob("*.arrow"), tmp_path / "c.1234.tmp"]
    sizes = sum(path.stat().st_size for path in files)
    assert cache.clear() == sizes
    assert len(cache) == 0
    assert cache.get("a") is None
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]


def test_discarding_a_missing_or_vanished_entry_is_no_error(tmp_path: Path) -> None:
    cache = ChunkCache(tmp_path, max_bytes=10**9)
    cache.discard("never-written")
    cache.put("a", _table(10))
    for path in tmp_path.glob("a.*"):
        path.unlink()  # removed by another process
    cache.discard("a")
    assert cache.get("a") is None and len(cache) == 0
    cache.put("b", _table(10))
    cache.discard("b")
    assert list(tmp_path.iterdir()) == [] and cache.get("b") is None


def test_an_aborted_write_leaves_nothing_even_twice(tmp_path: Path) -> None:
    cache = ChunkCache(tmp_path, max_bytes=10**9)
    writer = cache.writer("a", _table(1).schema)
    writer.write(_table(5))
    writer.abort()
    writer.abort()
    assert list(tmp_path.iterdir()) == [] and cache.get("a") is None


def test_rewriting_a_key_leaves_one_file(tmp_path: Path) -> None:
    cache = ChunkCache(tmp_path, max_bytes=10**9)
    cache.put("a", _table(10))
    cache.put("a", _table(20))  # other bytes, another checksum, another file name
    assert len(list(tmp_path.glob("a.*.arrow"))) == 1
    assert cache.get("a") == _table(20)


def test_a_failed_write_is_reported_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def full_disk(descriptor: int, data: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_module, "_write_all", full_disk)
    cache = ChunkCache(tmp_path, max_bytes=10**9)
    with caplog.at_level(logging.WARNING, logger="faucet_core.cache"):
        assert not cache.put("a", _table(10))
    assert [r.getMessage() for r in caplog.records] == [
        f"could not write the cache entry of a: {OSError(errno.ENOSPC, 'No space left on device')}"
    ]
    assert not list(tmp_path.iterdir())
    assert cache.get("a") is None


def test_a_cache_folder_removed_under_the_reader_fails_no_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The folder was removed (by a cleanup) after the cache opened it: entries are not
    stored, and say why, but reading goes on."""
    folder = tmp_path / "cache"
    cache = ChunkCache(folder, max_bytes=10**9)
    shutil.rmtree(folder)
    with caplog.at_level(logging.WARNING, logger="faucet_core.cache"):
        assert not cache.put("a", _table(10))
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "could not write the cache entry of a"
    ]
    assert cache.get("a") is None


def test_only_stale_temporary_files_are_cleaned(tmp_path: Path) -> None:
    ChunkCache(tmp_path, max_bytes=10**9).put("old", _table(10))
    (entry,) = tmp_path.glob("old.*.arrow")
    stale = tmp_path / ".x.1.2.tmp"  # left by a writer that crashed two hours ago
    writing = tmp_path / ".y.3.4.tmp"  # another process writing right now
    for path in (stale, writing):
        path.write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    for path in (entry, stale):
        os.utime(path, (two_hours_ago, two_hours_ago))
    cache = ChunkCache(tmp_path, max_bytes=10**9)
    assert not stale.exists() and writing.exists()
    assert cache.get("old") == _table(10)  # an old entry is not a stale temporary file


def test_recency_survives_across_instances(tmp_path: Path) -> None:
    size = _entry_size(tmp_path, 1000)
    first = ChunkCache(tmp_path / "cache", max_bytes=3 * size)
    for key in "cab":  # written in this order: c is the least recently used
        first.put(key, _table(1000))
    now = time.time()
    for age, key in enumerate("bac"):  # make the files' times say so too
        (path,) = (tmp_path / "cache").glob(f"{key}.*.arrow")
        os.utime(path, (now - age, now - age))
    later = ChunkCache(tmp_path / "cache", max_bytes=3 * size)
    later.put("d", _table(1000))
    assert later.get("c") is None
    assert all(later.get(key) is not None for key in "abd")


def test_eviction_brings_the_folder_under_budget(tmp_path: Path) -> None:
    size = _entry_size(tmp_path, 1000)
    ChunkCache(tmp_path / "cache", max_bytes=None).put("a", _table(1000))
    for key in "bcd":
        ChunkCache(tmp_path / "cache", max_bytes=None).put(key, _table(1000))
    small = ChunkCache(tmp_path / "cache", max_bytes=2 * size)
    small.put("e", _table(1000))
    assert small.total_bytes <= 2 * size
    assert (small.stats.evictions, small.stats.bytes_evicted) == (3, 3 * size)
    assert len(list((tmp_path / "cache").glob("*.arrow"))) == 2


def test_an_entry_that_is_no_arrow_stream_is_discarded(tmp_path: Path) -> None:
    # An Arrow IPC file, not a stream, with a checksum that fits: not an entry the cache wrote.
    ChunkCache(tmp_path).put("a", _table(10))
    (entry,) = tmp_path.glob("a.*.arrow")
    entry.unlink()
    older = tmp_path / "older.arrow"
    with pa.ipc.new_file(older, _table(10).schema) as writer:
        writer.write_table(_table(10))
    crc = checksum(older.read_bytes())
    older.rename(tmp_path / f"a.{crc:08x}.arrow")
    cache = ChunkCache(tmp_path)
    assert cache.get("a") is None
    assert cache.stats.corrupt_discarded == 1 and not list(tmp_path.glob("a.*.arrow"))


def test_an_entry_is_named_by_the_crc32c_of_its_bytes(tmp_path: Path) -> None:
    assert checksum(b"123456789") == 0xE3069283  # the check value of CRC-32C
    ChunkCache(tmp_path).put("a", _table(10))
    (entry,) = tmp_path.glob("a.*.arrow")
    assert entry.name == f"a.{checksum(entry.read_bytes()):08x}.arrow"


def test_an_entry_of_an_earlier_version_is_read_again_without_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Earlier versions named an entry by the CRC-32 of its bytes: such an entry is not
    damaged, only of another format, and goes quietly."""
    ChunkCache(tmp_path).put("a", _table(10))
    (entry,) = tmp_path.glob("a.*.arrow")
    entry.rename(tmp_path / f"a.{zlib.crc32(entry.read_bytes()):08x}.arrow")
    cache = ChunkCache(tmp_path)
    with caplog.at_level(logging.INFO, logger="faucet_core.cache"):
        assert cache.get("a") is None
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert "of an earlier version" in caplog.text
    assert cache.stats.corrupt_discarded == 0 and not list(tmp_path.glob("a.*.arrow"))


def test_entries_are_readable_by_their_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o000)
    try:
        cache = ChunkCache(tmp_path / "new" / "cache")
        assert cache.put("a", _table(10))
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "new" / "cache").stat().st_mode) == 0o700
    (entry,) = (tmp_path / "new" / "cache").glob("a.*.arrow")
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600


def test_an_entry_is_private_from_its_creation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only once its mode is set: no other user can open it in between."""
    modes: list[int] = []
    set_mode = os.fchmod

    def record_then_set(descriptor: int, mode: int) -> None:
        modes.append(stat.S_IMODE(os.fstat(descriptor).st_mode))
        set_mode(descriptor, mode)

    monkeypatch.setattr(os, "fchmod", record_then_set)
    previous = os.umask(0o000)
    try:
        assert ChunkCache(tmp_path).put("a", _table(10))
    finally:
        os.umask(previous)
    assert modes == [0o600]


def test_holding_finds_entries_other_caches_wrote(tmp_path: Path) -> None:
    """Of the keys asked for, holding finds those other caches wrote too, and from then on
    this cache knows their entries (under their keys, with their sizes), not the others'."""
    mine = ChunkCache(tmp_path)
    mine.put("a", _table(10))
    size = mine.total_bytes
    other = ChunkCache(tmp_path)  # another reader, another process
    for start, key in enumerate("bcd", start=1):
        other.put(key, _table(10, start))  # the same size, other bytes
    assert mine.holding(["a", "b", "c", "x"]) == {"a", "b", "c"}
    assert (len(mine), mine.total_bytes) == (3, 3 * size)
    mine.discard("c")  # found wrong by its reader: the file found by holding goes
    assert sorted(path.name.split(".")[0] for path in tmp_path.glob("*.arrow")) == ["a", "b", "d"]
    assert mine.get("b") == _table(10, 1)
    assert (len(mine), mine.total_bytes) == (2, 2 * size)  # b is known once, not twice


def test_eviction_counts_the_entries_others_wrote_among_files_being_written(
    tmp_path: Path,
) -> None:
    """The budget counts the entries other processes wrote, whatever else lies in the
    folder (files still being written): the least recently used go by their files' times,
    but those kept, and the entries left read back as good."""
    size = _entry_size(tmp_path)
    folder = tmp_path / "cache"
    cache = ChunkCache(folder, max_bytes=2 * size)
    other = ChunkCache(folder)  # another process, with no budget of its own
    tables = {f"k{i:02d}": _table(10, start=i) for i in range(16)}  # k00 the oldest
    now = time.time_ns()
    for age, (key, table) in enumerate(reversed(tables.items()), start=1):
        other.put(key, table)
        (path,) = folder.glob(f"{key}.*.arrow")
        os.utime(path, ns=(now - age * 10**9, now - age * 10**9))
    for i in range(16):
        (folder / f".w{i}.1.2.tmp").write_bytes(b"partial")  # other writers, at work
    cache.evict(keep={"k00"})
    assert sorted(path.name.split(".")[0] for path in folder.glob("*.arrow")) == ["k00", "k15"]
    assert (cache.stats.evictions, cache.stats.bytes_evicted) == (14, 14 * size)
    assert cache.get("k00") == tables["k00"] and cache.get("k15") == tables["k15"]
    assert cache.stats.corrupt_discarded == 0


def test_saved_plans_and_preprocessors_are_counted_apart_and_cleared(tmp_path: Path) -> None:
    plans = PlanCache(tmp_path)
    assert plans.count() == (0, 0) and plans.clear() == 0
    with ascii_locale():  # written as UTF-8 whatever the locale
        plans.put_preprocessor("k", '{"caf\u00e9": "d\u00e9j\u00e0"}')
    (tmp_path / "plans" / "k.json").write_text("{}")
    assert plans.get_preprocessor("k") == '{"caf\u00e9": "d\u00e9j\u00e0"}'.encode()
    assert plans.get_preprocessor("other") is None
    assert plans.count() == (1, 1)
    sizes = sum(p.stat().st_size for p in (tmp_path / "plans").iterdir())
    assert plans.clear() == sizes and plans.count() == (0, 0)


def test_an_entry_written_again_after_a_discard_is_checked_again(tmp_path: Path) -> None:
    """A file this process checked, discarded, then found again (another process wrote
    the same rows under the same name) is not trusted for having been checked once."""
    cache = ChunkCache(tmp_path, max_bytes=10**9)
    cache.put("a", _table(1000))
    assert cache.get("a") == _table(1000)
    cache.discard("a")
    ChunkCache(tmp_path, max_bytes=10**9).put("a", _table(1000))
    (entry,) = tmp_path.glob("a.*.arrow")
    data = bytearray(entry.read_bytes())
    data[-200] ^= 0x01  # in the values: the stream still reads, with a wrong value
    entry.write_bytes(bytes(data))
    assert cache.get("a") is None
    assert cache.stats.corrupt_discarded == 1


def test_an_entry_written_again_while_it_was_read_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process evicts an entry as it is opened, and a third writes it again (the
    same rows, the same file): the reader that missed it finds it, and leaves it there."""
    ChunkCache(tmp_path, max_bytes=10**9).put("a", _table(100))
    cache = ChunkCache(tmp_path, max_bytes=10**9)
    read = ChunkCache._read
    raced: list[Path] = []

    def racing(self: ChunkCache, entry: cache_module._Entry) -> pa.Table:
        if raced:
            return read(self, entry)
        raced.append(entry.path)
        entry.path.unlink()  # evicted by another process...
        try:
            return read(self, entry)
        finally:
            ChunkCache(tmp_path, max_bytes=10**9).put("a", _table(100))  # ...written again

    monkeypatch.setattr(ChunkCache, "_read", racing)
    assert cache.get("a") == _table(100)
    assert raced and raced[0].exists()


def test_clearing_plans_skips_a_file_removed_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A saved plan another process removes while clear goes through the folder is no
    error; the rest is cleared."""
    plans = PlanCache(tmp_path)
    plans.put_preprocessor("gone", "{}")
    plans.put_preprocessor("kept", '{"a": 1}')
    kept = (tmp_path / "plans" / "kept.preprocessor.json").stat().st_size
    listing = Path.iterdir

    def racing(self: Path) -> Iterator[Path]:
        for path in listing(self):
            if path.name.startswith("gone"):
                path.unlink()  # removed by another process once listed
            yield path

    monkeypatch.setattr(Path, "iterdir", racing)
    assert plans.clear() == kept
    assert plans.count() == (0, 0)


def test_evictions_add_up_and_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Each write past the budget evicts; the counters add up over the evictions, and each
    is logged with its count of entries and the budget."""
    size = _entry_size(tmp_path)
    cache = ChunkCache(tmp_path / "cache", max_bytes=size)
    with caplog.at_level(logging.DEBUG, logger="faucet_core.cache"):
        for key in "abc":
            cache.put(key, _table(10))
    assert (cache.stats.evictions, cache.stats.bytes_evicted) == (2, 2 * size)
    assert [path.name.split(".")[0] for path in (tmp_path / "cache").glob("*.arrow")] == ["c"]
    evicted = [r.getMessage() for r in caplog.records if r.getMessage().startswith("evicted")]
    assert evicted == [f"evicted 1 cache entries to stay under {size} bytes"] * 2


def test_a_victim_removed_by_another_process_meanwhile_is_no_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The least recently used entry, removed by another process once this cache listed
    the folder, is no error: the write goes on, and the entry is gone."""
    size = _entry_size(tmp_path)
    folder = tmp_path / "cache"
    cache = ChunkCache(folder, max_bytes=size)
    cache.put("a", _table(10))
    (victim,) = folder.glob("a.*.arrow")
    listdir = os.listdir

    def racing(path: str | os.PathLike[str]) -> list[str]:
        names = listdir(path)
        if Path(path) == folder:
            victim.unlink(missing_ok=True)  # evicted by another process once listed
        return names

    monkeypatch.setattr(os, "listdir", racing)
    assert cache.put("b", _table(10))
    monkeypatch.undo()
    assert cache.get("a") is None and cache.get("b") == _table(10)
    assert (cache.stats.evictions, cache.stats.bytes_evicted) == (1, size)


def test_a_second_file_of_a_key_another_cache_wrote_counts_and_goes_first(
    tmp_path: Path,
) -> None:
    """Another cache writes the same key from its rows in another order (another file):
    both files count against the budget, and the second one goes, not the entry known."""
    size = _entry_size(tmp_path)
    folder = tmp_path / "cache"
    cache = ChunkCache(folder, max_bytes=size)
    other = ChunkCache(folder)  # opened before the first write: it knows of no entry
    cache.put("a", _table(10))
    (mine,) = folder.glob("a.*.arrow")
    other.put("a", _table(10).take(list(reversed(range(10)))))
    assert len(list(folder.glob("a.*.arrow"))) == 2
    cache.evict()
    assert list(folder.glob("*.arrow")) == [mine]
    assert (cache.stats.evictions, cache.stats.bytes_evicted) == (1, size)
    assert cache.get("a") == _table(10)


def test_an_entry_written_again_after_this_cache_evicted_it_is_checked_again(
    tmp_path: Path,
) -> None:
    """An entry this cache read (and checked), then evicted, and written again under the
    same name by another process, is checked again: here it was damaged."""
    folder = tmp_path / "cache"
    cache = ChunkCache(folder, max_bytes=_entry_size(tmp_path, 1000))
    cache.put("a", _table(1000))
    assert cache.get("a") == _table(1000)  # read and checked
    (entry,) = folder.glob("a.*.arrow")
    data = bytearray(entry.read_bytes())
    cache.put("b", _table(1000))  # a is evicted
    assert not entry.exists()
    data[-200] ^= 0x01  # in the values: the stream still reads, with a wrong value
    entry.write_bytes(bytes(data))  # the same name again, other bytes
    assert cache.get("a") is None
    assert cache.stats.corrupt_discarded == 1 and not entry.exists()


def test_an_entry_replaced_after_another_process_removed_it_is_written(tmp_path: Path) -> None:
    """Writing a key again (other bytes, another file) replaces its entry, even where
    another process removed the old file first."""
    cache = ChunkCache(tmp_path)
    cache.put("a", _table(10))
    (old,) = tmp_path.glob("a.*.arrow")
    old.unlink()  # evicted by another process
    assert cache.put("a", _table(10, 5))
    assert [path.name for path in tmp_path.glob("a.*.arrow")] != [old.name]
    assert cache.get("a") == _table(10, 5)


def test_second_files_of_a_key_are_evicted_first_and_only_past_the_budget(tmp_path: Path) -> None:
    """Other caches wrote a key this cache holds from rows in other orders (other files):
    those files go first, as many as the budget needs, and none while the folder fits."""
    size = _entry_size(tmp_path / "probe", 1000)
    folder = tmp_path / "cache"
    cache = ChunkCache(folder, max_bytes=4 * size)
    others = [ChunkCache(folder), ChunkCache(folder)]  # opened before the first write
    cache.put("a", _table(1000))
    (own,) = folder.glob("a.*.arrow")
    for other, order in zip(others, (range(999, -1, -1), [*range(1, 1000), 0]), strict=True):
        other.put("a", _table(1000).take(list(order)))
    cache.put("b", _table(1000, start=1000))  # exactly the budget: nothing goes
    assert len(list(folder.glob("*.arrow"))) == 4
    cache.max_bytes = 3 * size
    cache.evict()  # one second file is enough
    assert len(list(folder.glob("a.*.arrow"))) == 2
    assert (cache.stats.evictions, cache.stats.bytes_evicted) == (1, size)
    cache.max_bytes = 2 * size
    cache.evict()
    assert sorted(folder.glob("*.arrow")) == sorted([own, *folder.glob("b.*.arrow")])
    assert (cache.stats.evictions, cache.stats.bytes_evicted) == (2, 2 * size)
    assert cache.get("a") == _table(1000)


def test_files_that_are_not_entries_are_left_alone(tmp_path: Path) -> None:
    """A file of another kind, or a hidden one (as a write in progress is), is neither read
    nor evicted, even where its name would parse as an entry's."""
    cache = ChunkCache(tmp_path, max_bytes=10**9)
    cache.put("a", _table(10))
    others = [tmp_path / "a.1f.jsonl", tmp_path / ".a.1f.arrow"]
    for path in others:
        path.write_bytes(b"not an entry")
    cache.max_bytes = 0
    cache.evict()
    assert sorted(tmp_path.iterdir()) == sorted(others)
    assert cache.stats.evictions == 1


def test_a_cache_learns_every_entry_others_wrote_since_whatever_else_the_folder_holds(
    tmp_path: Path,
) -> None:
    reader = ChunkCache(tmp_path, max_bytes=0)  # opened before they were written
    writer = ChunkCache(tmp_path, max_bytes=10**9)
    for i in range(20):
        writer.put(f"k{i}", _table(10))
    others = [tmp_path / f".k{i}.1f.arrow" for i in range(3)]
    others += [tmp_path / f"k{i}.not-hex.arrow" for i in range(3)]
    for path in others:
        path.write_bytes(b"not an entry")
    # The folder's names come in no set order: an entry may follow any of the others.
    reader.evict()
    assert reader.stats.evictions == 20
    assert sorted(tmp_path.iterdir()) == sorted(others)


def test_a_key_with_dots_is_found_by_another_cache(tmp_path: Path) -> None:
    ChunkCache(tmp_path).put("v1.2.chunk", _table(10))
    assert ChunkCache(tmp_path).get("v1.2.chunk") == _table(10)
