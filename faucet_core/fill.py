"""Filling the cache with every chunk of a plan from one scan of the source.

Reading chunk by chunk costs one scan of the source per chunk where a warehouse has no
scratch copy, and a write and a read back of the whole source where it makes one. When a
warehouse can stream its source (:meth:`~faucet_core.warehouse.Warehouse.scan`) and the
cache can hold the plan, the core reads the source once instead: the rows scanned are
grouped by chunk a buffer at a time, and each chunk's rows are appended to its cache
entry, so the data is written once. Rows, checksum and bucket range of every chunk are
checked against the plan before any entry is committed. Memory stays within a byte
budget of buffered rows, whatever the size of the source. Cache entries hold a chunk's
rows in scan order; readers put them in their epoch's order
(:func:`~faucet_core.batches.shuffled_positions`) with the take that shuffles them. The
same writing copies a plan's chunks into a folder of a warehouse's
(:func:`write_chunk_copy`), to read chunks from where the cache cannot hold them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from faucet_core import memory
from faucet_core.cache import ChunkCache, EntryWriter
from faucet_core.checks import RowCheck
from faucet_core.chunk_states import ChunkState, ChunkStates
from faucet_core.plan import ChunkSpec, Plan
from faucet_core.warehouse import Warehouse

try:
    import resource
except ImportError:  # not on Windows
    resource = None  # type: ignore[assignment]

__all__ = ["BUFFER_BYTES", "CacheFill", "ChunkWriters", "write_chunk_copy"]

log = logging.getLogger(__name__)

#: Bytes of scanned rows buffered before they are appended to the cache entries.
BUFFER_BYTES = 32 * 2**20
#: File descriptors left for everything but the entries being written.
_SPARE_FILES = 256
#: Parts a source is written in at least (when its size allows: see _MIN_PART_BYTES).
_PARTS = 8
_MIN_PART_BYTES = 4 * 2**20


class ChunkWriters:
    """Rows of a scan, cut by chunk and written straight into cache entries.

    Scanned batches are buffered with each row's chunk; past the byte budget, a writer
    thread groups the buffered rows by chunk and appends them to their entries while the
    scan goes on (one flush at a time). One thread, with one take of the whole flush,
    costs less than two each taking a run of the chunks: each would read all of the
    flush's rows, spread as a run's rows are.
    The rows are checked against the plan as they come, and each chunk's rows and checksum
    before its entry is committed (:class:`~faucet_core.checks.RowCheck`), as for any
    fetched chunk.

    Args:
        plan: The plan whose chunks the rows belong to.
        cache: The cache the entries go to.
        wanted: Indexes (in :attr:`chunks`) of the chunks to write; rows of others are
            dropped (their entries are cached already).
        budget: Bytes buffered before a flush.
    """

    def __init__(self, plan: Plan, cache: ChunkCache, wanted: Iterable[int], budget: int) -> None:
        self.plan = plan
        self._check = RowCheck(plan)
        self.chunks: list[ChunkSpec] = self._check.chunks
        self.budget = budget
        self.flushes = 0
        self._cache = cache
        # Whether each chunk's rows are dropped (the last: rows of no chunk).
        self._unwanted = np.ones(len(self.chunks) + 1, bool)
        self._unwanted[list(wanted)] = False
        self._every_chunk_wanted = not self._unwanted[:-1].any()
        # Scanned batches not written yet, with each row's chunk index.
        self._pending: list[tuple[pa.RecordBatch, np.ndarray[Any, Any]]] = []
        self._writers: dict[int, EntryWriter] = {}
        self._buffered = 0
        self._flusher = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="faucet-fill-write"
        )
        self._flushing: concurrent.futures.Future[None] | None = None

    def add(self, batch: pa.RecordBatch) -> None:
        """Cut ``batch`` (the plan's columns and the hash, in any order) by chunk.

        Raises:
            PlanBreach: The batch breaks the plan (:meth:`~faucet_core.checks.RowCheck.add`).
        """
        batch, indexes = self._check.add(batch)
        if not self._every_chunk_wanted:  # (every row is in a chunk: the check says so)
            unwanted = memory.take_values(self._unwanted, indexes)
            if unwanted.all():
                return
            # Rows of chunks not wanted go to the end of the flush's order, and are left out.
            np.putmask(indexes, unwanted, len(self.chunks))
        self._pending.append((batch, indexes))
        self._buffered += batch.nbytes
        if self._buffered > self.budget:
            self.flush()

    def flush(self) -> None:
        """Append every chunk's buffered rows to its entry, in the writer thread."""
        self.wait()
        pending, self._pending = self._pending, []
        self._buffered = 0
        if not pending:
            return
        self.flushes += 1
        table = pa.Table.from_batches([batch for batch, _ in pending])
        parts = [chunk_indexes for _, chunk_indexes in pending]
        indexes = memory.concatenate(parts)
        counts = np.bincount(indexes, minlength=len(self.chunks) + 1)[:-1]
        # Chunk indexes fit 16 bits in all but huge plans, where numpy sorts by radix.
        # pragma: no mutate start (the key's width only changes the sort's speed)
        small = indexes
        if len(self.chunks) < 2**16:
            small = memory.empty(len(indexes), np.uint16)
            np.copyto(small, indexes, casting="unsafe")
        # pragma: no mutate end
        order = np.argsort(small, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)])
        self._flushing = self._flusher.submit(self._write, table, order, starts)

    def wait(self) -> None:
        """Wait for the flush under way; raise its error, if any."""
        flushing, self._flushing = self._flushing, None
        if flushing is not None:
            flushing.result()

    def _write(
        self, table: pa.Table, order: np.ndarray[Any, Any], starts: np.ndarray[Any, Any]
    ) -> None:
        """Take the rows of ``table`` in ``order`` (by chunk: one copy into one run of rows
        per chunk, from ``starts``) and append each chunk's run to its entry; rows past the
        last chunk's run are of chunks not wanted."""
        grouped = memory.take(table, order[: starts[-1]])
        for index in np.flatnonzero(np.diff(starts)).tolist():
            start, end = int(starts[index]), int(starts[index + 1])
            writer = self._writers.get(index)
            if writer is None:
                key = self.plan.chunk_key(self.chunks[index])
                writer = self._writers[index] = self._cache.writer(key, grouped.schema)
            writer.write(grouped.slice(start, end - start))

    def commit(self) -> dict[int, str]:
        """Flush what is buffered, check every written chunk against the plan, and commit
        the entries; returns the file name of each chunk's entry, by index, for the chunks
        cached.

        Raises:
            PlanBreach: A chunk's rows or checksum differ from the plan's
                (:meth:`~faucet_core.checks.RowCheck.finish`); nothing is committed.
        """
        self.flush()
        self.wait()
        self._check.finish(np.flatnonzero(~self._unwanted[:-1]).tolist())
        # One eviction for all of them: each would list the cache folder again.
        writers = sorted(self._writers.items())
        cached = {i: writer.name for i, writer in writers if writer.commit(evict=False)}
        self._writers.clear()
        self._cache.evict(keep={self.plan.chunk_key(self.chunks[i]) for i in cached})
        return cached

    def close(self) -> None:
        """Drop the entries not committed."""
        self._flusher.shutdown(wait=True)
        for writer in self._writers.values():
            writer.abort()
        self._writers.clear()


class CacheFill:
    """Fills a plan's chunks into the cache from one scan, in a thread of its own.

    Readers call :meth:`wait` on a cache miss: it starts the fill if it has not run yet and
    returns once the fill has cached the chunk, or is over. A fill that cannot run (the
    warehouse has no scan, the cache cannot hold the plan) or fails leaves the chunks to
    be read one by one. It moves the chunks it fills through their states (being filled,
    then cached, or missing again) in ``states``.

    Args:
        plan: The plan to fill.
        cache: The cache to fill.
        warehouse: Returns the warehouse to scan.
        lock: Makes processes sharing the cache fill one at a time, so the second finds
            the chunks the first cached.
        states: The state of each chunk of the plan in this process.
        budget: Bytes of rows buffered before they are written.
    """

    def __init__(
        self,
        plan: Plan,
        cache: ChunkCache,
        warehouse: Callable[[], Warehouse],
        lock: Callable[[], AbstractContextManager[None]],
        states: ChunkStates,
        budget: int = BUFFER_BYTES,
    ) -> None:
        self.plan = plan
        self.cache = cache
        self.budget = budget
        self.states = states
        self._warehouse = warehouse
        self._lock = lock
        self._chunks = states.chunks
        self._condition = states.condition
        self._thread: threading.Thread | None = None
        self._over = False
        self._stopped = threading.Event()
        self._total_rows = sum(c.rows for c in self._chunks)
        self._scanned = 0  # rows of the scan so far
        self._scan_started: float | None = None
        # When the scan's first batch came, its rows, and the seconds held by then.
        self._first_batch: tuple[float, int, float] | None = None
        self._holds = 0  # reads of a chunk by itself the scan waits for
        self._held_seconds = 0.0  # how long the scan waited for them

    def possible(self) -> bool:
        """Whether the cache has room for the whole plan (as far as its schema tells), and
        the process may open a file per chunk."""
        size = self.plan.arrow_bytes()
        budget = self.cache.max_bytes
        fits = size is not None and (budget is None or size <= 0.8 * budget)
        return fits and _allow_open_files(len(self._chunks) + _SPARE_FILES)

    def start(self) -> bool:
        """Start the fill if it has not started; returns whether it is still running."""
        with self._condition:
            self._start()
            return not self._over and not self._stopped.is_set()

    def wait(self, chunk: ChunkSpec, timeout: float | None = None) -> bool:
        """Start the fill if it has not started, and wait until it has cached ``chunk``, is
        over, or ``timeout`` seconds have passed. Returns whether ``chunk`` is cached now (by
        this fill or, as the fill found, by another process)."""
        with self._condition:
            self._start()
        state = self.states.wait_filled(chunk, self._stopped.is_set, timeout)
        return state is ChunkState.CACHED

    @property
    def scanned_rows(self) -> int:
        """The rows the fill's scan has read so far."""
        return self._scanned

    @property
    def over(self) -> bool:
        """Whether the fill has ended (or will never run)."""
        with self._condition:
            return self._over

    def seconds_left(self) -> float | None:
        """How long the scan should take still, at its pace since its first batch (the
        wait for that one is the query's start, not its pace), or since it was sent while
        only one has come; ``None`` before it has read anything. Time the scan was held
        does not count."""
        started, scanned, first = self._scan_started, self._scanned, self._first_batch
        if started is None or not scanned:
            return None
        now = time.monotonic()
        if first is not None and scanned > first[1]:
            at, rows, held = first
            pace = (scanned - rows) / max(now - at - (self._held_seconds - held), 1e-9)
        else:
            pace = scanned / max(now - started - self._held_seconds, 1e-9)
        return max(self._total_rows - scanned, 0) / pace

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the scan between two of its batches while the block runs: a chunk read by
        itself (a pass's first) then has the machine's cores, and its pass starts sooner,
        instead of sharing them with the scan."""
        with self._condition:
            self._holds += 1
        try:
            yield
        finally:
            with self._condition:
                self._holds -= 1
                self._condition.notify_all()

    def _wait_while_held(self) -> None:
        """Return once no read holds the scan (or the fill is stopped)."""
        with self._condition:
            if not self._holds:
                return
            started = time.monotonic()
            while self._holds and not self._stopped.is_set():
                self._condition.wait()
            self._held_seconds += time.monotonic() - started

    def wait_all(self) -> None:
        """Start the fill if it has not started, and wait until it is over."""
        with self._condition:
            self._start()
            while not self._over and not self._stopped.is_set():
                self._condition.wait()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the fill between two batches, and wake the readers waiting for it (their
        chunks are then read by themselves, or not at all once the reader is closed);
        whether its thread ended within ``timeout``."""
        self._stopped.set()
        with self._condition:
            thread = self._thread
            self._condition.notify_all()
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def _start(self) -> None:
        """Start the fill thread (called with the condition held)."""
        if self._thread is None and not self._over:
            if self._stopped.is_set():
                self._over = True
                return
            self.states.filling()  # until the fill finds them cached, fills them or ends
            thread = threading.Thread(target=self._run, name="faucet-fill", daemon=True)
            thread.start()
            self._thread = thread  # only once started: stop() may join it from now on

    def _run(self) -> None:
        try:
            with self._lock():
                keys = [self.plan.chunk_key(c) for c in self._chunks]
                cached = self.cache.holding(keys)
                missing = [i for i, key in enumerate(keys) if key not in cached]
                self.states.found(set(range(len(self._chunks))) - set(missing))
                if missing and not self._stopped.is_set():
                    self._fill(missing)
        except Exception as exc:
            log.warning(
                "could not fill the cache from one scan of %s (%s); reading chunk by chunk",
                self.plan.request.source.describe(),
                exc,
            )
        finally:
            with self._condition:
                self._over = True
                self.states.fill_over()

    def _fill(self, missing: list[int]) -> None:
        self._wait_while_held()  # a chunk read by itself goes first
        if self._stopped.is_set():
            return
        batches: Iterable[pa.RecordBatch] | None = self._warehouse().scan(self.plan)
        if batches is None:
            return
        # A small source is written in a few parts too, while it is scanned, not at the end.
        size = self.plan.arrow_bytes() or self.budget
        budget = min(self.budget, max(size // _PARTS, _MIN_PART_BYTES))
        writers = ChunkWriters(self.plan, self.cache, missing, budget)
        self._scan_started = time.monotonic()
        self._held_seconds = 0.0  # the pace counts from here
        try:
            rows = 0
            scanned = iter(batches)
            while True:
                self._wait_while_held()  # before the next batch is asked for
                if self._stopped.is_set():
                    return
                batch = next(scanned, None)
                if batch is None:
                    break
                if self._first_batch is None and batch.num_rows:
                    self._first_batch = (time.monotonic(), batch.num_rows, self._held_seconds)
                writers.add(batch)
                rows += batch.num_rows
                self._scanned = rows
            if self._stopped.is_set():
                return
            self.states.committing(missing)  # before the entries appear, for their readers
            cached = writers.commit()
        finally:
            writers.close()
        log.info(
            "cached %d chunks of %s from one scan of %d rows",
            len(cached),
            self.plan.request.source.describe(),
            rows,
        )
        self.states.filled(missing, cached)


def write_chunk_copy(
    plan: Plan,
    scan: Callable[[], Iterable[pa.RecordBatch]],
    directory: Path,
    budget: int = BUFFER_BYTES,
) -> None:
    """Copy every chunk of ``plan`` into ``directory``, an entry each (read one back with
    :func:`~faucet_core.cache.read_entry`), from one scan of the source: for a warehouse
    whose read of a chunk costs a scan of its whole source, to read chunks from when the
    cache cannot hold them.

    The rows are grouped and checked as the cache fill does (:class:`ChunkWriters`):
    memory stays within ``budget`` of buffered rows whatever the source's size and its
    number of chunks. Where the process may not open a file per chunk, the chunks are
    written a group at a time, each from a scan of its own.

    Args:
        plan: The plan whose chunks to copy.
        scan: Gives the batches of one scan of the source, as
            :meth:`~faucet_core.warehouse.Warehouse.scan` of the whole plan does.
        directory: A folder of the caller's, empty.
        budget: Bytes of rows buffered before they are written.

    Raises:
        PlanBreach: The rows break the plan (the source changed after planning).
        OSError: A chunk's file could not be written (the cause is logged).
    """
    cache = ChunkCache(directory)
    for group in _chunk_groups(len(plan.every_chunk)):
        writers = ChunkWriters(plan, cache, group, budget)
        try:
            for batch in scan():
                writers.add(batch)
            written = writers.commit()
        finally:
            writers.close()
        if len(written) < len(group):
            raise OSError(f"could not write {len(group) - len(written)} chunks into {directory}")


def _chunk_groups(count: int) -> list[range]:
    """The chunks (``count`` of them) in groups whose files this process may hold open at
    once: one group where it may open them all."""
    if _allow_open_files(count + _SPARE_FILES):
        return [range(count)]
    soft = 512 if resource is None else resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    size = max(soft - _SPARE_FILES, 1)
    return [range(lo, min(lo + size, count)) for lo in range(0, count, size)]


def _allow_open_files(count: int) -> bool:
    """Whether this process may open ``count`` files, raising its soft limit if need be."""
    if resource is None:
        return count <= 512
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or count <= soft:
        return True
    with contextlib.suppress(ValueError, OSError):  # past the hard limit: ValueError
        resource.setrlimit(resource.RLIMIT_NOFILE, (count, hard))
        return True
    return False
