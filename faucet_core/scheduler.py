"""Loading chunks in background threads, a bounded number ahead, handed back in order.

:class:`ChunkScheduler` runs a load function for one pass over an ordered list of chunk
segments, at most ``prefetch`` ahead of the consumer, on a :class:`FetchPool` shared by
a stream's passes, and hands results back in order, so the stream never depends on
thread timing.
"""

from __future__ import annotations

import concurrent.futures as cf
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from faucet_core.batches import Segment
from faucet_core.errors import ChunkReadError

__all__ = ["ChunkScheduler", "FetchPool"]

T = TypeVar("T")


class FetchPool:
    """The background threads of one reader, which can be shut down without hanging.

    Its threads are daemon threads: a load stuck in the warehouse for good (a read that
    never returns) cannot keep the process from exiting once the reader is closed, as the
    threads of a ``ThreadPoolExecutor`` would (the interpreter joins those at exit).

    Args:
        threads: How many chunks may load at once.
    """

    def __init__(self, threads: int) -> None:
        self._size = threads
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._shut = False

    def submit(self, fn: Callable[[Segment], T], segment: Segment) -> cf.Future[T]:
        """Run ``fn(segment)`` on a pool thread.

        Raises:
            RuntimeError: The pool was shut down.
        """
        future: cf.Future[T] = cf.Future()
        with self._lock:
            if self._shut:
                raise RuntimeError("the fetch threads were shut down")
            self._queue.put(_Job(future, fn, segment))
            if len(self._threads) < self._size:
                thread = threading.Thread(
                    target=self._work, name=f"faucet-fetch-{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
        return future

    def shutdown(self, timeout: float) -> bool:
        """Cancel queued loads and wait up to ``timeout`` seconds for running ones.

        Returns whether every load finished; a load stuck in the warehouse is left behind
        (its thread ends when the call returns, or with the process) rather than blocking
        the caller forever.
        """
        with self._lock:
            self._shut = True
            threads = list(self._threads)
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.future.cancel()
        for _ in threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0))
        return not any(thread.is_alive() for thread in threads)

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            if not job.future.set_running_or_notify_cancel():
                continue
            try:
                result = job.fn(job.segment)
            except BaseException as exc:
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)
            del job  # not held while waiting for the next one


@dataclass(frozen=True)
class _Job:
    future: cf.Future[Any]
    fn: Callable[[Segment], Any]
    segment: Segment


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
        self.wait_seconds = 0.0
        self._fill(self._prefetch)

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
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
        """Cancel chunks not yet started (the pass then ends); loads under way finish and
        are dropped."""
        while self._pending:
            self._pending.popleft()[1].cancel()
        self._todo.clear()

    def _fill(self, depth: int) -> None:
        while self._todo and len(self._pending) < depth:
            segment = self._todo.popleft()
            self._pending.append((segment, self._pool.submit(self._load, segment)))
