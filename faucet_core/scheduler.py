"""Loading chunks in background threads, a bounded number ahead, handed back in order.

:class:`ChunkScheduler` runs a load function for one pass over an ordered list of chunk
segments, at most ``prefetch`` ahead of the consumer, on a :class:`FetchPool` shared by
a stream's passes, and hands results back in order, so the stream never depends on
thread timing.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

from faucet_core.batches import Segment
from faucet_core.errors import ChunkReadError

__all__ = ["ChunkScheduler", "FetchPool"]

T = TypeVar("T")


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
