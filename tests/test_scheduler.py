"""The chunk scheduler: order, bounded prefetch, errors and cancellation."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from faucet_core import scheduler
from faucet_core.batches import Segment
from faucet_core.errors import ChunkReadError
from faucet_core.plan import ChunkSpec
from faucet_core.scheduler import ChunkScheduler, FetchPool


@pytest.fixture
def pool() -> Iterator[FetchPool]:
    threads = FetchPool(4)
    yield threads
    assert threads.shutdown(timeout=10)


def _chunks(n: int) -> list[Segment]:
    return [Segment(ChunkSpec("train", i, 0, 1, 1, 0), 0, 1) for i in range(n)]


class GatedLoader:
    """Loads block until their chunk's gate opens; records which loads have started."""

    def __init__(self, n: int) -> None:
        self.gates = [threading.Event() for _ in range(n)]
        self.began = [threading.Event() for _ in range(n)]
        self.started: list[int] = []
        self.started_event = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, segment: Segment) -> int:
        chunk = segment.chunk
        with self._lock:
            self.started.append(chunk.index)
            self.started_event.set()
        self.began[chunk.index].set()
        if not self.gates[chunk.index].wait(timeout=10):
            raise TimeoutError("gate never opened")
        return chunk.index


def test_results_come_in_chunk_order_whatever_finishes_first(
    pool: FetchPool,
) -> None:
    loader = GatedLoader(4)
    for gate in reversed(loader.gates):  # later chunks may finish first
        gate.set()
    scheduler = ChunkScheduler(_chunks(4), loader, pool, prefetch=3, timeout=10)
    assert list(scheduler) == [0, 1, 2, 3]


def test_the_waits_for_chunks_add_up(pool: FetchPool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each wait for a chunk counts in ``wait_seconds``, not only the last."""
    ticks = itertools.count()
    clock = SimpleNamespace(perf_counter=lambda: float(next(ticks)), monotonic=time.monotonic)
    monkeypatch.setattr(scheduler, "time", clock)
    loader = GatedLoader(3)
    for gate in loader.gates:
        gate.set()
    chunks = ChunkScheduler(_chunks(3), loader, pool, prefetch=1, timeout=10)
    assert list(chunks) == [0, 1, 2]
    assert chunks.wait_seconds == 3.0  # one tick per wait


def test_prefetch_is_bounded(pool: FetchPool) -> None:
    loader = GatedLoader(10)
    scheduler = ChunkScheduler(_chunks(10), loader, pool, prefetch=2, timeout=10)
    loader.gates[0].set()
    assert next(scheduler) == 0
    # Holding chunk 0, exactly two more are loading (chunks 1 and 2), with threads to spare.
    assert loader.began[1].wait(timeout=10)
    assert loader.began[2].wait(timeout=10)
    assert sorted(loader.started) == [0, 1, 2]
    for gate in loader.gates:
        gate.set()
    assert list(scheduler) == list(range(1, 10))


def test_no_prefetch_loads_on_demand(pool: FetchPool) -> None:
    loader = GatedLoader(3)
    for gate in loader.gates:
        gate.set()
    scheduler = ChunkScheduler(_chunks(3), loader, pool, prefetch=0, timeout=10)
    assert loader.started == []
    assert next(scheduler) == 0
    assert loader.started == [0]


def test_a_load_error_is_raised_to_the_consumer(pool: FetchPool) -> None:
    def load(segment: Segment) -> int:
        if segment.chunk.index == 1:
            raise ChunkReadError("train chunk 1: boom")
        return segment.chunk.index

    scheduler = ChunkScheduler(_chunks(3), load, pool, prefetch=2, timeout=10)
    assert next(scheduler) == 0
    with pytest.raises(ChunkReadError, match="chunk 1: boom"):
        next(scheduler)
    assert list(scheduler) == []  # closed after the error


def test_waiting_too_long_for_a_chunk_fails_and_names_it(pool: FetchPool) -> None:
    loader = GatedLoader(2)
    scheduler = ChunkScheduler(_chunks(2), loader, pool, prefetch=1, timeout=0.05)
    try:
        with pytest.raises(ChunkReadError, match=r"train chunk 0 \(1 rows\) was not ready"):
            next(scheduler)
    finally:
        for gate in loader.gates:
            gate.set()


def test_shutdown_does_not_wait_forever_for_a_stuck_load() -> None:
    single = FetchPool(1)
    loader = GatedLoader(1)
    single.submit(loader, _chunks(1)[0])
    assert loader.started_event.wait(timeout=10)
    assert not single.shutdown(timeout=0.05)
    loader.gates[0].set()


def test_close_cancels_chunks_not_started() -> None:
    single = FetchPool(1)
    loader = GatedLoader(5)
    scheduler = ChunkScheduler(_chunks(5), loader, single, prefetch=4, timeout=10)
    assert loader.started_event.wait(timeout=10)
    scheduler.close()
    loader.gates[0].set()
    assert single.shutdown(timeout=10)
    assert loader.started == [0]
    assert list(scheduler) == []


def test_no_load_is_taken_after_shutdown() -> None:
    """Once shut down, the pool refuses new loads, and says so."""
    single = FetchPool(1)
    assert single.shutdown(timeout=10)
    with pytest.raises(RuntimeError, match=r"^the fetch threads were shut down$"):
        single.submit(GatedLoader(1), _chunks(1)[0])


def test_shutdown_cancels_the_loads_still_queued() -> None:
    """Loads queued behind a running one are cancelled by shutdown, never run; the
    running one is left to end."""
    single = FetchPool(1)
    loader = GatedLoader(3)
    running, *queued = (single.submit(loader, segment) for segment in _chunks(3))
    assert loader.began[0].wait(timeout=10)
    try:
        assert not single.shutdown(timeout=0)
        assert all(future.cancelled() for future in queued)
    finally:
        for gate in loader.gates:
            gate.set()
    assert running.result(timeout=10) == 0
    assert single.shutdown(timeout=10)
    assert loader.started == [0]


def test_a_cancelled_load_does_not_stop_its_thread() -> None:
    """A load cancelled before it started is skipped; the thread goes on to the next."""
    single = FetchPool(1)
    loader = GatedLoader(3)
    running, cancelled, after = (single.submit(loader, segment) for segment in _chunks(3))
    assert loader.began[0].wait(timeout=10)
    assert cancelled.cancel()
    loader.gates[0].set()
    loader.gates[2].set()
    assert (running.result(timeout=10), after.result(timeout=10)) == (0, 2)
    assert loader.started == [0, 2]
    assert single.shutdown(timeout=10)


def test_the_threads_are_named_and_do_not_keep_the_process_alive() -> None:
    """The pool's threads are named for what they do (as stack dumps show them), and a
    load stuck for good does not keep the process from exiting."""
    names: list[str] = []
    loader = GatedLoader(2)

    def load(segment: Segment) -> int:
        names.append(threading.current_thread().name)
        return loader(segment)

    pool = FetchPool(2)
    for segment in _chunks(2):
        pool.submit(load, segment)
    assert loader.began[0].wait(timeout=10) and loader.began[1].wait(timeout=10)
    for gate in loader.gates:
        gate.set()
    assert pool.shutdown(timeout=10)
    assert sorted(names) == ["faucet-fetch-0", "faucet-fetch-1"]
    stuck = (
        "import threading\n"
        "from faucet_core.scheduler import FetchPool\n"
        "pool = FetchPool(1)\n"
        "pool.submit(lambda segment: threading.Event().wait(), None)\n"
        "pool.shutdown(timeout=0)\n"
    )
    subprocess.run([sys.executable, "-c", stuck], check=True, timeout=30)
