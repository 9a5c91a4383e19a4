"""Getting one chunk: from the cache when it holds it, else from the warehouse, with retries.

Every chunk is checked against the plan before it is served, whichever way it came
(:func:`~faucet_core.checks.check_chunk`): its columns, each row's key hash, split and
bucket, its row count and the checksum of its rows. A chunk read from the warehouse that
fails the check is refused, naming the warehouse and the rule it broke; a cached one that
fails it is discarded and read again.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import pyarrow as pa
import tenacity

from faucet_core.cache import ChunkCache
from faucet_core.checks import PlanBreach, check_chunk
from faucet_core.chunk_states import ChunkStates, Origin
from faucet_core.config import RetryConfig
from faucet_core.errors import ChunkReadError
from faucet_core.fill import BUFFER_BYTES, CacheFill
from faucet_core.plan import ChunkSpec, Plan
from faucet_core.warehouse import (
    ScratchDataMissing,
    TransientWarehouseError,
    Warehouse,
)

__all__ = ["ChunkFetcher", "FetchedChunk"]

log = logging.getLogger(__name__)


#: Seconds a pass's first chunk waits for the cache fill before it is read by itself.
FIRST_CHUNK_GRACE = 0.2
#: Seconds more it waits when, by its pace, the fill's scan ends by then (while the pace
#: does not say much later: :data:`FIRST_CHUNK_WATCHED_BELOW`). A chunk read by
#: itself costs a scan of its own where the source has no copy ordered by bucket (DuckDB):
#: at 10M rows, waiting for a fill of about 2 s made epoch 1 14% faster, its first batch
#: 1.2 s later.
FIRST_CHUNK_PATIENCE = 4.0
#: Seconds the pace is watched for past the grace while it says the scan ends later than
#: that, but within :data:`FIRST_CHUNK_WATCHED_BELOW` seconds. A scan starts slower than
#: it goes on: at 10M rows, 2.6 to 4.2 s were left by the pace at the grace's end, 1.9 s
#: in fact; where the pace says much later, the chunk is read by itself at once.
FIRST_CHUNK_WATCH = 1.0
FIRST_CHUNK_WATCHED_BELOW = 10.0
#: Seconds between two looks at the pace while it is watched.
_PACE_LOOKS = 0.1


@dataclass(frozen=True)
class FetchedChunk:
    """A chunk's rows (with the hash column), and whether they were fetched to serve them.

    Attributes:
        table: Its rows, in any order.
        from_cache: The rows were served from the cache: this process did not fetch them
            for this serving (see :meth:`~faucet_core.chunk_states.ChunkStates.serve_cached`).
        attempts: Tries it took to read them from the warehouse (0 from the cache).
    """

    table: pa.Table
    from_cache: bool
    attempts: int


class _Stopped(Exception):
    """The fetcher was closed while waiting to retry."""


class ChunkFetcher:
    """Gets the chunks of one plan: from the cache when there, else from the warehouse.

    Args:
        plan: The plan whose chunks are fetched.
        warehouse: Returns the warehouse to read from (made on first use, so a run served
            from the cache never connects).
        cache: The chunk cache, or ``None`` to always read the warehouse.
        retry: The retry policy for transient errors.
        materialize_lock: Makes processes sharing a cache folder materialize one at a time,
            so the second finds the first's scratch copy instead of making its own.
        fill_lock: Likewise for filling the cache from one scan of the source.
        fill_buffer: Bytes of scanned rows held in memory by that fill.

    Attributes:
        states: The state of each chunk of the plan in this process, and where it came
            from.
    """

    def __init__(
        self,
        plan: Plan,
        warehouse: Callable[[], Warehouse],
        cache: ChunkCache | None,
        retry: RetryConfig,
        materialize_lock: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext,
        fill_lock: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext,
        fill_buffer: int = BUFFER_BYTES,
    ) -> None:
        self.plan = plan
        self.cache = cache
        self.retry = retry
        self._warehouse = warehouse
        self._materialize_across_processes = materialize_lock
        self._materialized = False
        self._materialize_lock = threading.Lock()
        self._stopped = threading.Event()
        self.states = ChunkStates(plan)
        self._fill: CacheFill | None = None
        if cache is not None:
            fill = CacheFill(plan, cache, warehouse, fill_lock, self.states, fill_buffer)
            self._fill = fill if fill.possible() else None

    def stop(self) -> None:
        """Interrupt retry waits and the cache fill; fetches under way fail with
        :class:`ChunkReadError`."""
        self._stopped.set()
        if self._fill is not None:
            self._fill.stop(timeout=0)

    def join(self, timeout: float) -> bool:
        """Wait for the cache fill to end after :meth:`stop`; whether it did in time."""
        return self._fill is None or self._fill.stop(timeout)

    def cached(self, chunk: ChunkSpec) -> bool:
        """Whether the cache holds ``chunk`` (not yet checked)."""
        return self.cache is not None and self.plan.chunk_key(chunk) in self.cache

    def prepare(self) -> None:
        """Make every chunk readable: fill the cache from one scan where that works, else
        run the warehouse's one-time work, unless the cache holds every chunk already."""
        if self.all_cached():
            return
        if self._fill is not None:
            self._fill.wait_all()
            if self.all_cached():
                return
        self.materialize()

    def all_cached(self) -> bool:
        """Whether the cache holds every chunk of the plan (not yet checked)."""
        if self.cache is None:
            return False
        keys = [self.plan.chunk_key(c) for c in self.plan.every_chunk]
        return len(self.cache.holding(keys)) == len(set(keys))

    def materialize(self) -> None:
        """Run the warehouse's one-time work for this plan, once per fetcher."""
        with self._materialize_lock:
            if not self._materialized:
                with self._materialize_across_processes():
                    self._warehouse().materialize(self.plan)
                self._materialized = True

    def fetch(
        self, chunk: ChunkSpec, first: bool = False, decided: threading.Event | None = None
    ) -> FetchedChunk:
        """Return ``chunk``'s rows, with the hash column, in any order.

        ``first``: a pass starts with this chunk. Missed while the cache fill runs, and
        unless the fill is about to end, it is read by itself, so the pass's first batch
        does not wait for the whole fill. ``decided``: the pass's own event, set by its
        first fetch once it knows how it reads its chunk (and holds the fill's scan back
        where it reads it by itself); the pass's other fetches wait for it before they
        start the fill, so that its scan is never sent before that read.

        Raises:
            ChunkReadError: The chunk could not be read: a permanent error, transient errors
                on every try, or the fetcher was stopped. Names the chunk and the cause.
        """
        try:
            return self._fetch(chunk, first, decided)
        finally:
            if first and decided is not None:
                decided.set()

    def _fetch(
        self, chunk: ChunkSpec, first: bool, decided: threading.Event | None
    ) -> FetchedChunk:
        key = self.plan.chunk_key(chunk)
        if self.cache is not None:
            fetched = self._from_cache(chunk, key)
            if fetched is None and self._fill is not None:
                if first and self._reads_alone():
                    fetched = self._read_while_filling(chunk, decided)
                elif first:
                    if decided is not None:
                        decided.set()  # waiting for the fill, or reading after a wait for it
                    if not self._filled_soon(chunk):
                        fetched = self._read_while_filling(chunk)
                elif decided is not None:
                    decided.wait()
                if fetched is None and self._fill.wait(chunk):
                    fetched = self._from_cache(chunk, key)
            if fetched is not None:
                return fetched
        self.states.reading(chunk)
        try:
            table, attempts = self._read_with_retries(chunk)
        except BaseException:
            self.states.read_failed(chunk)
            raise
        cached = self.cache is not None and self.cache.put(key, table)
        self.states.read(chunk, cached)
        return FetchedChunk(table, from_cache=False, attempts=attempts)

    def _filled_soon(self, chunk: ChunkSpec) -> bool:
        """Whether the fill caches ``chunk`` (or ends) soon enough for a pass's first batch:
        within :data:`FIRST_CHUNK_GRACE` seconds, or, if by its pace the scan ends within
        :data:`FIRST_CHUNK_PATIENCE` seconds more (the pace watched for up to
        :data:`FIRST_CHUNK_WATCH` seconds until it says so, unless it says the scan ends
        past :data:`FIRST_CHUNK_WATCHED_BELOW` seconds), by then. Reading the chunk by
        itself instead costs a scan of its own, which slows the fill down."""
        fill = self._fill
        assert fill is not None
        if fill.wait(chunk, timeout=FIRST_CHUNK_GRACE) or fill.over:
            return True
        watched_until = time.monotonic() + FIRST_CHUNK_WATCH
        while True:
            left = fill.seconds_left()
            if left is not None and left <= FIRST_CHUNK_PATIENCE:
                return self._filled_within_patience(chunk)
            watch = watched_until - time.monotonic()
            if watch <= 0 or (left is not None and left > FIRST_CHUNK_WATCHED_BELOW):
                return False
            if fill.wait(chunk, timeout=min(watch, _PACE_LOOKS)) or fill.over:
                return True

    def _filled_within_patience(self, chunk: ChunkSpec) -> bool:
        """Whether the fill caches ``chunk`` (or ends) within :data:`FIRST_CHUNK_PATIENCE`
        seconds, waited for while its pace, as the scan goes on, does not say it ends much
        later (past :data:`FIRST_CHUNK_WATCHED_BELOW` seconds): a pace from the first
        batches of several streams at once can say soon of a long scan. A scan that does
        not move meanwhile is waited for, as it always was."""
        fill = self._fill
        assert fill is not None
        deadline = time.monotonic() + FIRST_CHUNK_PATIENCE
        much_later = max(FIRST_CHUNK_PATIENCE, FIRST_CHUNK_WATCHED_BELOW)
        scanned = fill.scanned_rows
        while (remaining := deadline - time.monotonic()) > 0:
            if fill.wait(chunk, timeout=min(remaining, _PACE_LOOKS)) or fill.over:
                return True
            if not fill.start():  # stopped: its reader closes
                return False
            before, scanned, left = scanned, fill.scanned_rows, fill.seconds_left()
            if scanned > before and left is not None and left > much_later:
                return False
        return fill.over

    def _reads_alone(self) -> bool:
        """Whether the warehouse reads a chunk by itself at the cost of its rows alone
        (:meth:`~faucet_core.warehouse.Warehouse.reads_chunks_alone`)."""
        try:
            return self._warehouse().reads_chunks_alone(self.plan)
        except Exception as exc:  # the fill serves the chunk then, as for other warehouses
            log.info("could not tell how the warehouse reads a chunk alone (%s)", exc)
            return False

    def _read_while_filling(
        self, chunk: ChunkSpec, decided: threading.Event | None = None
    ) -> FetchedChunk | None:
        """``chunk`` read with a scan of its own while the fill runs (its scan, or the
        sending of it, waiting meanwhile); ``None`` if the fill is over or that read fails
        (the fill then serves the chunk). ``decided`` is set once the fill is held."""
        assert self._fill is not None
        try:
            with self._fill.held():  # before the fill starts: its scan is sent after this
                if decided is not None:
                    decided.set()
                if not self._fill.start():
                    return None
                scanned = self._warehouse().scan(self.plan, [chunk])
                batches = [] if scanned is None else list(scanned)
            if not batches:
                return None
            table = check_chunk(self.plan, chunk, pa.Table.from_batches(batches))
        except Exception as exc:
            log.info(
                "reading %s by itself failed (%s); waiting for the fill", chunk.describe(), exc
            )
            return None
        self.states.read(chunk, cached=False)  # the fill caches it
        return FetchedChunk(table, from_cache=False, attempts=1)

    def _from_cache(self, chunk: ChunkSpec, key: str) -> FetchedChunk | None:
        """``chunk`` from the cache if it holds it intact."""
        assert self.cache is not None
        found = self.cache.get_named(key)
        if found is None:
            return None
        cached, name = found
        # The same file is checked once per process, and not at all if this process wrote
        # it from a scan (checked as it was written).
        if not self.states.checked(name):
            try:
                check_chunk(self.plan, chunk, cached, ordered=True)
            except PlanBreach as exc:
                log.warning("discarding the cached %s: %s", chunk.describe(), exc.rule)
                self.cache.discard(key)
                self.states.discarded(chunk)
                return None
            self.states.check_passed(name)
        origin = self.states.serve_cached(chunk)
        return FetchedChunk(cached, origin is Origin.CACHE, attempts=int(origin is Origin.FILL))

    def _read_with_retries(self, chunk: ChunkSpec) -> tuple[pa.Table, int]:
        name = self.plan.datastore
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
                f"could not read {chunk.describe()} from {name} after "
                f"{self.retry.attempts} tries; last error: {exc}"
            ) from exc
        except Exception as exc:
            raise ChunkReadError(f"could not read {chunk.describe()} from {name}: {exc}") from exc
        return table, retrying.statistics["attempt_number"]

    def _read_once(self, chunk: ChunkSpec) -> pa.Table:
        if self._stopped.is_set():
            raise _Stopped
        self.materialize()
        try:
            table = self._warehouse().read_buckets(self.plan, chunk)
        except ScratchDataMissing as exc:
            log.info(
                "materializing %s again for %s: %s", self.plan.datastore, chunk.describe(), exc
            )
            with self._materialize_lock:
                self._materialized = False
            raise
        return check_chunk(self.plan, chunk, table)

    def _sleep(self, seconds: float) -> None:
        if self._stopped.wait(seconds):
            raise _Stopped
