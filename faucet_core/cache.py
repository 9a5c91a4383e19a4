"""The chunk cache: Arrow IPC streams on local disk, checksummed, with a byte budget.

Each entry is one chunk, written whole to a temporary file and renamed into place, so a
crash mid-write leaves only a temporary file, never a half-written entry. Files are
readable by their owner only (mode 0600, in a new folder of mode 0700). The file name
carries the CRC-32C of its bytes (``<key>.<crc>.arrow``); an entry is verified the first
time this cache reads it (entries it wrote itself are known good), and a truncated or
corrupted one is deleted and reported as a miss, so the chunk is fetched again. Entries
are memory-mapped on read. Past the byte budget, the least recently used entries go: the
budget is the folder's, so the entries other processes wrote count too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import google_crc32c
import pyarrow as pa

from faucet_core import memory
from faucet_core.files import open_private, private_folder

__all__ = ["CacheStats", "ChunkCache", "EntryWriter", "read_entry"]

log = logging.getLogger(__name__)

_SUFFIX = ".arrow"
_STALE_TEMP_SECONDS = 3600


@dataclass
class CacheStats:
    """Counters of one cache's activity since it was opened."""

    hits: int = 0
    misses: int = 0
    writes: int = 0
    evictions: int = 0
    bytes_evicted: int = 0
    corrupt_discarded: int = 0


@dataclass(frozen=True)
class _Entry:
    path: Path
    size: int
    crc: int


class ChunkCache:
    """A folder of cached chunks with a byte budget and LRU eviction. Thread-safe.

    Args:
        directory: Where entries live; created if missing. Several caches (readers,
            processes) may share it; the budget is the folder's, whoever wrote its entries.
        max_bytes: The byte budget (``None``: no budget). A chunk larger than the whole
            budget is not cached.
    """

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int | None = None) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.stats = CacheStats()
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._verified: set[Path] = set()
        private_folder(self.directory)
        self._scan()

    @property
    def total_bytes(self) -> int:
        """Bytes held by the entries this cache knows of."""
        with self._lock:
            return sum(entry.size for entry in self._entries.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return self._lookup(key) is not None

    def holding(self, keys: Iterable[str]) -> set[str]:
        """Which of ``keys`` have an entry, with one listing of the folder for all of them
        (entries written by other processes included)."""
        wanted = set(keys)
        with self._lock:
            found = wanted & self._entries.keys()
        if found == wanted:
            return found
        for path in self.directory.iterdir():
            parsed = _parse_name(path)
            if parsed is None or parsed[0] not in wanted or parsed[0] in found:
                continue
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            with self._lock:
                self._entries.setdefault(parsed[0], _Entry(path, size, parsed[1]))
            found.add(parsed[0])
        return found

    def get(self, key: str) -> pa.Table | None:
        """The cached table for ``key``, or ``None`` (missing, or found damaged and removed)."""
        found = self.get_named(key)
        return None if found is None else found[0]

    def get_named(self, key: str) -> tuple[pa.Table, str] | None:
        """Like :meth:`get`, with the name of the entry's file: another name means other
        bytes (its checksum is part of it)."""
        for _ in range(2):  # an entry replaced by another process is looked up once more
            entry = self._lookup(key)
            if entry is None:
                break
            try:
                table = self._read(entry)
            except FileNotFoundError:  # evicted or replaced by another reader meanwhile
                self._forget(key)
                continue
            except _EarlierChecksum:
                log.info("discarding cache entry %s of an earlier version", entry.path)
                self._forget(key, delete=True)
                break
            except (OSError, ValueError, pa.ArrowException) as exc:
                log.warning("discarding damaged cache entry %s: %s", entry.path, exc)
                self._forget(key, delete=True)
                with self._lock:
                    self.stats.corrupt_discarded += 1
                break
            with self._lock:
                self._verified.add(entry.path)
                if key in self._entries:
                    self._entries.move_to_end(key)
                self.stats.hits += 1
            _touch(entry.path)
            return table, entry.path.name
        with self._lock:
            self.stats.misses += 1
        return None

    def _read(self, entry: _Entry) -> pa.Table:
        return _read_file(entry.path, None if entry.path in self._verified else entry.crc)

    def put(self, key: str, table: pa.Table) -> bool:
        """Store ``table`` under ``key`` atomically; returns whether it was stored.

        The table is written once, straight to a temporary file, its checksum computed on
        the way, then renamed into place.
        """
        writer = self.writer(key, table.schema)
        try:
            writer.write(table)
        except BaseException:
            writer.abort()
            raise
        return writer.commit()

    def writer(self, key: str, schema: pa.Schema) -> EntryWriter:
        """A new entry for ``key``, written batch by batch, stored by
        :meth:`EntryWriter.commit` (or dropped by :meth:`EntryWriter.abort`)."""
        temp = self.directory / f".{key}.{os.getpid()}.{threading.get_ident()}.tmp"
        return EntryWriter(self, key, temp, schema)

    def _commit(self, key: str, temp: Path, crc: int, size: int, evict: bool) -> bool:
        try:
            if self.max_bytes is not None and size > self.max_bytes:
                log.info("chunk %s (%d bytes) exceeds the cache budget; not cached", key, size)
                temp.unlink(missing_ok=True)
                return False
            final = self.directory / entry_name(key, crc)
            os.replace(temp, final)
        except OSError as exc:
            log.warning("could not write the cache entry of %s: %s", key, exc)
            temp.unlink(missing_ok=True)
            return False
        with self._lock:
            old = self._entries.pop(key, None)
            self._entries[key] = _Entry(final, size, crc)
            self._verified.add(final)
            self.stats.writes += 1
        if old is not None and old.path != final:
            old.path.unlink(missing_ok=True)
        if evict:
            self.evict(keep={key})
        return True

    def discard(self, key: str) -> None:
        """Delete the entry of ``key``, if any (found wrong by its reader)."""
        self._forget(key, delete=True)

    def clear(self) -> int:
        """Delete every entry (and stale temporary file); returns the bytes freed."""
        freed = 0
        with self._lock:
            self._entries.clear()
            self._verified.clear()
        for path in self.directory.iterdir():
            if path.suffix == _SUFFIX or path.suffix == ".tmp":
                try:
                    freed += path.stat().st_size
                    path.unlink()
                except FileNotFoundError:
                    pass
        return freed

    def _scan(self) -> None:
        found = []
        now = time.time()
        for path in self.directory.iterdir():
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            if path.suffix == ".tmp" and now - stat.st_mtime > _STALE_TEMP_SECONDS:
                path.unlink(missing_ok=True)  # left by a writer that crashed
                continue
            parsed = _parse_name(path)
            if parsed is not None:
                found.append((stat.st_mtime, parsed[0], _Entry(path, stat.st_size, parsed[1])))
        for _, key, entry in sorted(found, key=lambda item: item[0]):
            self._entries[key] = entry

    def _lookup(self, key: str) -> _Entry | None:
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None:
            return entry
        # Another reader or process may have written it since this cache was opened.
        for path, crc in _entry_files(self.directory, key):
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            entry = _Entry(path, size, crc)
            with self._lock:
                self._entries[key] = entry
            return entry
        return None

    def _forget(self, key: str, delete: bool = False) -> None:
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is not None:
                self._verified.discard(entry.path)
        if delete and entry is not None:
            entry.path.unlink(missing_ok=True)

    def evict(self, keep: Collection[str] = ()) -> None:
        """Delete the least recently used entries of the folder, but those of ``keep``,
        until it fits the budget (done by each write; after writes that deferred it, once).

        The folder is listed first: entries other caches (processes) wrote count against
        the budget too, and those they removed no longer do.
        """
        if self.max_bytes is None:
            return
        duplicates = self._refresh()
        victims = []
        with self._lock:
            total = sum(entry.size for entry in self._entries.values())
            total += sum(entry.size for entry in duplicates)
            for entry in duplicates:  # a second file of a key: the first to go
                if total <= self.max_bytes:
                    break
                total -= entry.size
                victims.append(entry)
            for key in list(self._entries):
                if total <= self.max_bytes:
                    break
                if key in keep:
                    continue
                entry = self._entries.pop(key)
                self._verified.discard(entry.path)
                total -= entry.size
                victims.append(entry)
            self.stats.evictions += len(victims)
            self.stats.bytes_evicted += sum(entry.size for entry in victims)
        for entry in victims:
            entry.path.unlink(missing_ok=True)
        if victims:
            log.debug(
                "evicted %d cache entries to stay under %d bytes", len(victims), self.max_bytes
            )

    def _refresh(self) -> list[_Entry]:
        """Bring the entries known to this cache in line with the folder: forget those
        removed by others, learn those others wrote (as recently used, in the order of
        their files' times). Returns the files holding a second entry of a key known
        already (written by another cache from rows in another order)."""
        try:
            names = set(os.listdir(self.directory))
        except OSError:
            return []
        with self._lock:
            known = {entry.path.name: key for key, entry in self._entries.items()}
            for name in known.keys() - names:
                entry = self._entries.pop(known[name])
                self._verified.discard(entry.path)
        found = []
        for name in names - known.keys():
            if not name.endswith(_SUFFIX):  # temporary files, plans, locks
                continue
            path = self.directory / name
            parsed = _parse_name(path)
            if parsed is None:
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            entry = _Entry(path, stat.st_size, parsed[1])
            found.append((stat.st_mtime_ns, name, parsed[0], entry))
        duplicates = []
        with self._lock:
            for _, _, key, entry in sorted(found):  # by time, then by name (unique)
                if key in self._entries:
                    duplicates.append(entry)
                else:
                    self._entries[key] = entry
        return duplicates


def read_entry(directory: Path, key: str) -> pa.Table | None:
    """The table of ``key``'s entry in a folder of entries, its checksum verified, without
    a :class:`ChunkCache` of the folder (nor its budget); ``None`` if the folder has none.

    Raises:
        OSError: The entry could not be read.
        ValueError: Its bytes are not those its checksum names (damaged, cut short).
        pyarrow.ArrowException: They are no Arrow IPC stream.
    """
    for path, crc in _entry_files(directory, key):
        return _read_file(path, crc)
    return None


def _entry_files(directory: Path, key: str) -> Iterator[tuple[Path, int]]:
    """The files of ``key``'s entries in ``directory``, each with the checksum its name
    carries."""
    for path in directory.glob(f"{key}.*{_SUFFIX}"):
        parsed = _parse_name(path)
        if parsed is not None and parsed[0] == key:
            yield path, parsed[1]


def _read_file(path: Path, crc: int | None) -> pa.Table:
    """The table in the entry file at ``path``, memory-mapped; its bytes checked against
    ``crc`` unless it is ``None``."""
    with pa.memory_map(str(path)) as source:
        data = source.read_buffer()
    if crc is not None and checksum(data) != crc:
        if zlib.crc32(data) == crc:
            raise _EarlierChecksum
        raise ValueError("checksum mismatch")
    return pa.ipc.open_stream(data).read_all()


def checksum(data: Any, crc: int = 0) -> int:
    """The CRC-32C of ``data`` (a bytes-like object), continuing ``crc``: computed by the
    CPU's instruction where it has one, three times as fast as zlib's CRC-32 here."""
    return int(google_crc32c.extend(crc, data))


class _EarlierChecksum(ValueError):
    """An entry whose name carries the CRC-32 of its bytes, as earlier versions wrote."""


def entry_name(key: str, crc: int) -> str:
    """The file name of ``key``'s entry whose bytes have the CRC-32C ``crc``."""
    return f"{key}.{crc:08x}{_SUFFIX}"


def _parse_name(path: Path) -> tuple[str, int] | None:
    """``(key, crc)`` from ``<key>.<crc>.arrow``, or ``None`` for other files."""
    if path.suffix != _SUFFIX or path.name.startswith("."):
        return None
    key, _, crc = path.name[: -len(_SUFFIX)].rpartition(".")
    try:
        return key, int(crc, 16)
    except ValueError:
        return None


#: The end-of-stream marker of the Arrow IPC stream format.
_END_OF_STREAM = b"\xff\xff\xff\xff\x00\x00\x00\x00"


def _write_all(descriptor: int, data: Any) -> None:
    """Write all of ``data`` (a buffer) to ``descriptor``."""
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(descriptor, view) :]


class EntryWriter:
    """One cache entry being written: an Arrow IPC stream, batch by batch, to a temporary
    file whose checksum is computed on the way. Not thread-safe.

    Each batch is serialized once and written with one system call: writing, checksumming
    and serializing all run without holding the interpreter lock.
    """

    def __init__(self, cache: ChunkCache, key: str, temp: Path, schema: pa.Schema) -> None:
        self.key = key
        self._cache = cache
        self._temp = temp
        self._descriptor: int | None = None
        self._crc = 0
        self._size = 0
        self._failed: OSError | None = None
        try:
            self._descriptor = open_private(temp)
            self._append(schema.serialize())
        except OSError as exc:
            self._fail(exc)

    def write(self, data: pa.Table | pa.RecordBatch) -> None:
        """Append rows. A write that fails (a full disk) is reported by :meth:`commit`."""
        batches = [data] if isinstance(data, pa.RecordBatch) else data.to_batches()
        try:
            for batch in batches:
                self._append(batch.serialize(memory_pool=memory.pool()))
        except OSError as exc:
            self._fail(exc)

    def commit(self, evict: bool = True) -> bool:
        """Finish the file and put it in the cache; returns whether it was stored.

        ``evict=False`` leaves the budget to a later :meth:`ChunkCache.evict` (a batch of
        entries committed at once).
        """
        try:
            self._append(_END_OF_STREAM)
        except OSError as exc:
            self._fail(exc)
        self._close()
        if self._failed is not None:
            log.warning("could not write the cache entry of %s: %s", self.key, self._failed)
            self._temp.unlink(missing_ok=True)
            return False
        return self._cache._commit(self.key, self._temp, self._crc, self._size, evict)

    @property
    def name(self) -> str:
        """The file name of the entry, as committed (its checksum is part of it)."""
        return entry_name(self.key, self._crc)

    def abort(self) -> None:
        """Drop the entry."""
        self._close()
        self._temp.unlink(missing_ok=True)

    def _append(self, data: Any) -> None:
        if self._descriptor is None:
            return
        _write_all(self._descriptor, data)
        self._crc = checksum(data, self._crc)
        self._size += len(memoryview(data).cast("B"))

    def _fail(self, exc: OSError) -> None:
        self._failed = self._failed or exc
        self._close()

    def _close(self) -> None:
        if self._descriptor is not None:
            descriptor, self._descriptor = self._descriptor, None
            try:
                os.close(descriptor)
            except OSError as exc:
                self._failed = self._failed or exc


def _touch(path: Path) -> None:
    """Record use in the file's mtime, so recency survives across runs."""
    with contextlib.suppress(OSError):
        os.utime(path)
