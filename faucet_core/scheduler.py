"""Fetching chunks in background threads: cache first, then the warehouse, with retries.

:class:`ChunkFetcher` gets one chunk (from the cache, else from the warehouse, retrying
transient errors with exponential backoff and jitter). :class:`ChunkScheduler` runs it for
one pass over an ordered chunk list, a bounded number of chunks ahead of the consumer,
and hands results back in order, so the stream does not depend on thread timing.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pyarrow as pa
import tenacity

from faucet_core.batches import Segment
from faucet_core.cache import ChunkCache
from faucet_core.errors import ChunkReadError
from faucet_core.warehouse import (
    ChunkSpec,
    PermanentWarehouseError,
    TransientWarehouseError,
    Warehouse,
    stable_digest,
)

__all__ = ["ChunkFetcher", "ChunkScheduler", "FetchPool", "FetchedChunk", "RetryPolicy"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How transient warehouse errors are retried."""

    attempts: int = 5
    initial_backoff: float = 0.5
    max_backoff: float = 30.0


@dataclass(frozen=True)
class FetchedChunk:
    """A chunk's table, and whether it came from the cache or how many tries it took."""

    chunk: ChunkSpec
    table: pa.Table
    from_cache: bool
    attempts: int


class _Stopped(Exception):
    """The fetcher was closed while waiting to retry."""


class ChunkFetcher:
    """Gets chunks of one plan: from the cache when there, else from the warehouse.

    Args:
        warehouse: The planned warehouse.
        plan_fingerprint: Identifies the plan's chunk contents; part of each cache key.
        columns: The columns every chunk must have, in order.
        cache: The chunk cache, or ``None`` to always read the warehouse.
        retry: The retry policy for transient errors.
        prepare: Called before each warehouse read (it must be idempotent); it readies
            the warehouse, e.g. materializes the split, on the first cache miss.
    """

    def __init__(
        self,
        warehouse: Warehouse,
        plan_fingerprint: str,
        columns: Sequence[str],
        cache: ChunkCache | None,
        retry: RetryPolicy,
        prepare: Callable[[], None] = lambda: None,
    ) -> None:
        self.warehouse = warehouse
        self.prepare = prepare
        self.plan_fingerprint = plan_fingerprint
        self.columns = list(columns)
        self.cache = cache
        self.retry = retry
        self._stopped = threading.Event()

    def cache_key(self, chunk: ChunkSpec) -> str:
        """The cache key of ``chunk`` in this plan."""
        return stable_digest(self.plan_fingerprint, chunk.split, chunk.index)

    def stop(self) -> None:
        """Interrupt retry waits; fetches under way fail with :class:`ChunkReadError`."""
        self._stopped.set()

    def fetch(self, chunk: ChunkSpec) -> FetchedChunk:
        """Return ``chunk``'s rows as a single-batch table.

        Raises:
            ChunkReadError: The chunk could not be read: a permanent error, transient errors
                on every try, or the fetcher was stopped. Names the chunk and the cause.
        """
        key = self.cache_key(chunk)
        if self.cache is not None:
            cached = self.cache.get(key)
            if cached is not None and self._conforms(chunk, cached):
                return FetchedChunk(chunk, cached, from_cache=True, attempts=0)
        table, attempts = self._read_with_retries(chunk)
        if self.cache is not None:
            self.cache.put(key, table)
        return FetchedChunk(chunk, table, from_cache=False, attempts=attempts)

    def _conforms(self, chunk: ChunkSpec, table: pa.Table) -> bool:
        return bool(table.num_rows == chunk.rows and table.column_names == self.columns)

    def _read_with_retries(self, chunk: ChunkSpec) -> tuple[pa.Table, int]:
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retry.attempts),
            # "Full jitter": a random wait up to the exponential bound spreads retries out.
            wait=tenacity.wait_random_exponential(
                multiplier=self.retry.initial_backoff, max=self.retry.max_backoff
            ),
            retry=tenacity.retry_if_exception_type(TransientWarehouseError),
            sleep=self._sleep,
            before_sleep=lambda state: log.warning(
                "retrying %s after a transient error (try %d of %d): %s",
                chunk.describe(),
                state.attempt_number,
                self.retry.attempts,
                state.outcome.exception() if state.outcome else None,
            ),
            reraise=True,
        )
        try:
            table = retrying(self._read_once, chunk)
        except _Stopped:
            raise ChunkReadError(f"{chunk.describe()}: the reader was closed") from None
        except TransientWarehouseError as exc:
            raise ChunkReadError(
                f"could not read {chunk.describe()} from {self.warehouse.name} after "
                f"{self.retry.attempts} tries; last error: {exc}"
            ) from exc
        except Exception as exc:
            raise ChunkReadError(
                f"could not read {chunk.describe()} from {self.warehouse.name}: {exc}"
            ) from exc
        return table, retrying.statistics.get("attempt_number", 1)

    def _read_once(self, chunk: ChunkSpec) -> pa.Table:
        if self._stopped.is_set():
            raise _Stopped
        self.prepare()
        table = self.warehouse.read_chunk(chunk)
        if table.num_rows != chunk.rows:
            raise PermanentWarehouseError(
                f"expected {chunk.rows} rows but read {table.num_rows}: the source changed "
                "after planning; start a new reader"
            )
        if table.column_names != self.columns:
            raise PermanentWarehouseError(
                f"expected columns {self.columns} but read {table.column_names}"
            )
        return table.combine_chunks()

    def _sleep(self, seconds: float) -> None:
        if self._stopped.wait(seconds):
            raise _Stopped


class FetchPool:
    """The background threads of one reader, which can be shut down without hanging.

    Args:
        threads: How many chunks may load at once.
    """

    def __init__(self, threads: int) -> None:
        self._executor = cf.ThreadPoolExecutor(threads, thread_name_prefix="faucet-fetch")
        self._running: set[cf.Future[Any]] = set()
        self._lock = threading.Lock()

    def submit(self, fn: Callable[[Segment], T], segment: Segment) -> cf.Future[T]:
        """Run ``fn(segment)`` on a pool thread."""
        future = self._executor.submit(fn, segment)
        with self._lock:
            self._running.add(future)
        future.add_done_callback(self._discard)
        return future

    def shutdown(self, timeout: float) -> bool:
        """Cancel queued loads and wait up to ``timeout`` seconds for running ones.

        Returns whether every load finished; a load stuck in the warehouse is left behind
        (its thread ends when the call returns) rather than blocking the caller forever.
        """
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            running = list(self._running)
        _, not_done = cf.wait(running, timeout=timeout)
        if not_done:
            return False
        self._executor.shutdown(wait=True)  # only idle threads are left: they exit at once
        return True

    def _discard(self, future: cf.Future[Any]) -> None:
        with self._lock:
            self._running.discard(future)


class ChunkScheduler(Generic[T]):
    """One ordered pass over chunk ``segments``, loaded by ``load`` in background threads.

    At most ``prefetch`` segments are loaded ahead of the one the consumer holds, so memory
    stays near ``prefetch + 1`` chunks. Results come back in ``segments`` order.

    Args:
        segments: The chunk parts of this pass, in the order they are consumed.
        load: Turns one segment into a result; runs in ``pool``.
        pool: The threads shared by a reader's passes.
        prefetch: How many chunks to load ahead of the consumer.
        timeout: Seconds to wait for one chunk before giving up.
    """

    def __init__(
        self,
        segments: Sequence[Segment],
        load: Callable[[Segment], T],
        pool: FetchPool,
        prefetch: int,
        timeout: float,
    ) -> None:
        self._todo = deque(segments)
        self._load = load
        self._pool = pool
        self._prefetch = prefetch
        self._timeout = timeout
        self._pending: deque[tuple[Segment, cf.Future[T]]] = deque()
        self._closed = False
        self.wait_seconds = 0.0
        self._fill(self._prefetch)

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._closed:
            raise StopIteration
        if not self._pending:
            self._fill(1)
        if not self._pending:
            raise StopIteration
        segment, future = self._pending.popleft()
        self._fill(self._prefetch)
        started = time.perf_counter()
        try:
            return future.result(timeout=self._timeout)
        except cf.TimeoutError:
            self.close()
            raise ChunkReadError(
                f"{segment.describe()} was not ready after {self._timeout:g}s "
                "(retry.chunk_timeout); the warehouse may be stuck"
            ) from None
        except BaseException:
            self.close()
            raise
        finally:
            self.wait_seconds += time.perf_counter() - started

    def close(self) -> None:
        """Cancel chunks not yet started; loads under way finish and are dropped."""
        self._closed = True
        while self._pending:
            self._pending.popleft()[1].cancel()
        self._todo.clear()

    def _fill(self, depth: int) -> None:
        while self._todo and len(self._pending) < depth:
            segment = self._todo.popleft()
            self._pending.append((segment, self._pool.submit(self._load, segment)))
