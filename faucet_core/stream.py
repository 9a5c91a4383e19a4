"""The pipeline behind a reader and a PyTorch dataset: plan, cache, fetch threads, passes.

A :class:`Stream` serves passes over rows of one plan's splits: the chunks of a pass, in
that epoch's order, each permuted, laid end to end, loaded in background threads and cut
into batches. Its :class:`StreamSpec` is a picklable value, so a DataLoader worker or
another process opens the same stream and serves the same rows.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa

from faucet_core import layout, memory
from faucet_core.batches import (
    Parts,
    Segment,
    chunk_order,
    row_segments,
    shuffled_positions,
    slice_batches,
)
from faucet_core.cache import ChunkCache
from faucet_core.config import FaucetConfig
from faucet_core.errors import ReaderStateError
from faucet_core.fetch import ChunkFetcher, FetchedChunk
from faucet_core.plan import Plan
from faucet_core.plan_cache import PlanCache
from faucet_core.scheduler import ChunkScheduler, FetchPool
from faucet_core.warehouse import SplitName, Warehouse, WarehouseCosts

__all__ = ["CLOSE_TIMEOUT", "Pass", "PassMetrics", "Stream", "StreamSpec"]

log = logging.getLogger("faucet")

#: Seconds :meth:`Stream.close` waits at most for chunk reads under way before leaving them
#: behind (no longer than ``retry.chunk_timeout``: a read that long is deemed stuck).
CLOSE_TIMEOUT = 60.0


@dataclass(frozen=True)
class StreamSpec:
    """What a stream reads, as a picklable value: another process opens the same stream.

    Attributes:
        warehouse_class: The warehouse to read chunks from (made only on a cache miss).
        config: The validated configuration.
        plan: The chunks.
    """

    warehouse_class: type[Warehouse]
    config: FaucetConfig
    plan: Plan

    def shuffles(self, split: SplitName) -> bool:
        """Whether passes over ``split`` are shuffled by default: train as the config says,
        eval never."""
        return self.config.shuffle and split == "train"


@dataclass
class PassMetrics:
    """What happened during one pass (a training epoch or an eval pass).

    Attributes:
        split: ``"train"`` or ``"eval"``.
        epoch: The training epoch (1-based) the pass belongs to.
        rows: Rows delivered so far.
        batches: Batches delivered so far.
        chunks_fetched: Chunks read from the warehouse.
        chunks_cached: Chunks served from the local cache.
        retries: Transient errors that were retried.
        query_jobs: Query jobs the warehouse ran during the pass (BigQuery: the scratch copy,
            or a query per chunk without the Storage Read API).
        bytes_billed: Bytes those jobs billed.
        wait_seconds: Time spent waiting for chunks.
        elapsed_seconds: Time from the start of the pass to its last batch.
        finished: Whether every batch of the pass was delivered.
    """

    split: SplitName
    epoch: int
    rows: int = 0
    batches: int = 0
    chunks_fetched: int = 0
    chunks_cached: int = 0
    retries: int = 0
    query_jobs: int = 0
    bytes_billed: int = 0
    wait_seconds: float = 0.0
    elapsed_seconds: float = 0.0
    finished: bool = False
    _started: float = field(default_factory=time.perf_counter, repr=False)

    @property
    def rows_per_second(self) -> float:
        """Delivered rows per second of elapsed time."""
        return self.rows / self.elapsed_seconds if self.elapsed_seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The metrics as a plain dict (for logs and JSON)."""
        data = asdict(self)
        data.pop("_started")
        data["rows_per_second"] = self.rows_per_second
        return data


class Stream:
    """A plan's chunks, served as passes of Arrow batches. Thread-safe to open passes.

    Args:
        spec: What to read.
        warehouse: The warehouse that planned, if this process made the plan; otherwise
            one is made from the spec on the first chunk the cache cannot serve.
    """

    def __init__(self, spec: StreamSpec, warehouse: Warehouse | None = None) -> None:
        self.spec = spec
        config = spec.config
        self.cache = (
            ChunkCache(config.cache.dir, config.cache.max_bytes) if config.cache.enabled else None
        )
        self._warehouses: list[Warehouse] = [warehouse] if warehouse is not None else []
        if warehouse is not None:
            warehouse.reading_with(config.fetch_threads)
        self._warehouse_lock = threading.Lock()
        lock: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext
        fill_lock = lock
        if config.cache.enabled:
            plans = PlanCache(config.cache.dir)
            lock = functools.partial(plans.lock, f"materialize-{spec.plan.rows_id}")
            fill_lock = functools.partial(plans.lock, f"fill-{spec.plan.rows_id}")
        self.fetcher = ChunkFetcher(
            spec.plan,
            self.warehouse,
            self.cache,
            config.retry,
            lock,
            fill_lock,
            config.cache.fill_buffer,
        )
        self._pool = FetchPool(config.fetch_threads)
        self._closed = False
        # Stops threads and releases the warehouse even if close() is never called.
        wait = min(CLOSE_TIMEOUT, config.retry.chunk_timeout)
        self._release = weakref.finalize(
            self, _release, self._pool, self.fetcher, self._warehouses, wait
        )

    @property
    def plan(self) -> Plan:
        """The plan whose chunks this stream serves."""
        return self.spec.plan

    @property
    def config(self) -> FaucetConfig:
        """The configuration."""
        return self.spec.config

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def costs(self) -> WarehouseCosts:
        """What this process's warehouse spent for this stream (planning included)."""
        with self._warehouse_lock:
            return sum((w.costs for w in self._warehouses), WarehouseCosts())

    def warehouse(self) -> Warehouse:
        """This process's warehouse for the stream, made on first use."""
        with self._warehouse_lock:
            if not self._warehouses:
                warehouse = self.spec.warehouse_class(self.config.connection)
                warehouse.reading_with(self.config.fetch_threads)
                self._warehouses.append(warehouse)
            return self._warehouses[0]

    def open_pass(
        self,
        split: SplitName,
        epoch: int,
        seed: int,
        start: int = 0,
        stop: int | None = None,
        shuffle: bool | None = None,
        transform: Callable[[pa.Table], pa.Table] | None = None,
        parts: Callable[[pa.Table], Parts] | None = None,
    ) -> Pass:
        """A pass over rows ``start:stop`` of ``split`` as laid out in ``epoch`` (1-based)
        by ``seed``. ``transform`` is applied to each chunk's rows in the fetch threads
        (preprocessing), before they are cut into batches; ``parts`` cuts each chunk into
        the tables a batch is handed over in (:meth:`Pass.next_parts`).

        ``shuffle`` defaults to the config's for train and to ``False`` for eval. A ``stop``
        past the split's end wraps around to its first rows.

        Raises:
            ReaderStateError: The stream is closed.
        """
        if self._closed:
            raise ReaderStateError("the reader is closed")
        if shuffle is None:
            shuffle = self.spec.shuffles(split)
        return Pass(self, split, epoch, seed, shuffle, start, stop, transform, parts)

    def prepare(self) -> None:
        """Make every chunk readable from any process (:meth:`ChunkFetcher.prepare`)."""
        self.fetcher.prepare()

    def submit(self, pass_: Pass, segments: list[Segment]) -> ChunkScheduler[FetchedChunk]:
        """Schedule the chunk loads of ``pass_`` on this stream's threads."""
        config = self.config
        return ChunkScheduler(
            segments, pass_.load, self._pool, config.prefetch_chunks, config.retry.chunk_timeout
        )

    def close(self) -> None:
        """Stop the background threads and release the warehouse. Safe to call twice."""
        self._closed = True
        self._release()


def _release(
    pool: FetchPool, fetcher: ChunkFetcher, warehouses: list[Warehouse], timeout: float
) -> None:
    fetcher.stop()
    if pool.shutdown(timeout=timeout) and fetcher.join(timeout=timeout):
        for warehouse in warehouses:
            warehouse.close()
    else:
        log.warning("chunk reads still running %gs after close(); leaving them behind", timeout)


class Pass:
    """One pass over rows ``start:stop`` of a split: chunk loads and batches, in Arrow.

    The pass's rows are its chunks, in this epoch's order, each permuted, laid end to end;
    a whole pass serves all of them, a resumed or sharded one a range.
    """

    def __init__(
        self,
        stream: Stream,
        split: SplitName,
        epoch: int,
        seed: int,
        shuffle: bool,
        start: int,
        stop: int | None,
        transform: Callable[[pa.Table], pa.Table] | None,
        parts: Callable[[pa.Table], Parts] | None = None,
    ) -> None:
        plan = stream.plan
        self._transform = transform
        self._parts = parts
        self.metrics = PassMetrics(split=split, epoch=epoch)
        self.start = start
        self._stream = stream
        self._epoch = epoch
        self._seed = seed
        self._shuffle = shuffle
        order = chunk_order(plan.chunks[split], seed, epoch, shuffle)
        stop = plan.rows(split) if stop is None else stop
        self._costs_at_start = stream.costs()
        segments = row_segments(order, start, stop)
        self._first = segments[0] if segments else None
        self._first_decided = threading.Event()  # see ChunkFetcher.fetch
        self._scheduler = stream.submit(self, segments)
        config = stream.config
        self._batches = slice_batches(self._chunk_parts(), config.batch_size, config.drop_last)

    def load(self, segment: Segment) -> FetchedChunk:
        """Fetch one chunk, permute it for this epoch and cut out ``segment``'s rows."""
        chunk = segment.chunk
        fetched = self._stream.fetcher.fetch(
            chunk, first=segment is self._first, decided=self._first_decided
        )
        # One take puts the rows in this epoch's order (or chunk order) and cuts the segment.
        positions: np.ndarray[Any, Any] | None = (
            shuffled_positions(fetched.table, chunk, self._seed, self._epoch)
            if self._shuffle
            else layout.chunk_positions(fetched.table)
        )
        table = fetched.table.select(list(self._stream.plan.columns))
        if positions is None:  # stored in chunk order: a slice, not a copy
            table = table.slice(segment.lo, segment.hi - segment.lo)
        else:
            table = memory.take(table, positions[segment.lo : segment.hi])
        if self._transform is not None:
            table = self._transform(table)
        return replace(fetched, table=table)

    def _chunk_parts(self) -> Iterator[Parts]:
        for fetched in self._scheduler:
            if fetched.from_cache:
                self.metrics.chunks_cached += 1
            else:
                self.metrics.chunks_fetched += 1
                self.metrics.retries += max(fetched.attempts - 1, 0)
            self._count_costs()
            table = fetched.table
            yield Parts((table,)) if self._parts is None else self._parts(table)

    def _count_costs(self) -> None:
        """What the warehouse spent since the pass began (per chunk: not per batch)."""
        spent = self._stream.costs() - self._costs_at_start
        self.metrics.query_jobs, self.metrics.bytes_billed = spent.query_jobs, spent.bytes_billed

    def next_table(self) -> pa.Table | None:
        """The next batch as an Arrow table, ``None`` at the end of the pass (of a pass
        opened without ``parts``).

        Raises:
            ChunkReadError: A chunk could not be read; names the chunk.
        """
        parts = self.next_parts()
        if parts is None:
            return None
        if len(parts) != 1:
            raise TypeError("this pass cuts its batches into parts: call next_parts()")
        return parts[0]

    def next_parts(self) -> Parts | None:
        """The next batch as the parts its chunk was cut into, ``None`` at the end of the
        pass.

        Raises:
            ChunkReadError: A chunk could not be read; names the chunk.
        """
        try:
            parts = next(self._batches, None)
        finally:
            self.metrics.wait_seconds = self._scheduler.wait_seconds
            self.metrics.elapsed_seconds = time.perf_counter() - self.metrics._started
        if parts is None:
            if not self.metrics.finished:
                self._count_costs()
                self.metrics.finished = True
                log.info(
                    "%s pass of epoch %d done: %s",
                    self.metrics.split,
                    self.metrics.epoch,
                    self.metrics.as_dict(),
                )
            return None
        self.metrics.rows += parts.num_rows
        self.metrics.batches += 1
        return parts

    def __iter__(self) -> Iterator[pa.Table]:
        while (table := self.next_table()) is not None:
            yield table

    def close(self) -> None:
        """Cancel the chunk loads not yet started."""
        self._scheduler.close()
        self._first_decided.set()  # a load under way never waits for a first one cancelled
