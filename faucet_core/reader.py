"""The reader: the classic ``prep_for_epoch()`` / ``get_batch()`` API and a Pythonic one.

A :class:`Reader` plans its source once when it is created (so a missing table or a bad
credential fails here, before any thread starts), then serves passes: a training epoch
(shuffled) or an eval pass (in plan order). Each pass is a :class:`_Pass` joining the
scheduler, the permutation and the batch slicer.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import Any

import pluggy

from faucet_core.batches import (
    Segment,
    batch_count,
    chunk_order,
    permute_chunk,
    row_segments,
    slice_batches,
)
from faucet_core.cache import ChunkCache
from faucet_core.config import FaucetConfig, load_config
from faucet_core.errors import ConfigError, ReaderStateError, ResumeError
from faucet_core.output import Batch, format_batch
from faucet_core.plugins import get_warehouse_class
from faucet_core.resume import STATE_FORMAT, check_state
from faucet_core.scheduler import (
    ChunkFetcher,
    ChunkScheduler,
    FetchedChunk,
    FetchPool,
    RetryPolicy,
)
from faucet_core.warehouse import Plan, PlanRequest, SplitName, Warehouse

__all__ = ["PassMetrics", "Reader", "get_batch_reader"]

log = logging.getLogger("faucet")

#: Seconds :meth:`Reader.close` waits for chunk reads under way before leaving them behind.
CLOSE_TIMEOUT = 60.0


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
        wait_seconds: Time ``get_batch()`` spent waiting for chunks.
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


class _Pass:
    """One pass over rows ``start:stop`` of a split: chunk loads, batches, output format.

    The pass's rows are its chunks, in this epoch's order, each permuted, laid end to end;
    a whole pass serves all of them, a resumed or sharded one a range.
    """

    def __init__(
        self,
        reader: Reader,
        split: SplitName,
        epoch: int,
        shuffle: bool,
        start: int = 0,
        stop: int | None = None,
    ) -> None:
        config = reader.config
        self.metrics = PassMetrics(split=split, epoch=epoch)
        self.start = start
        seed = reader.seed
        order = chunk_order(reader.plan.chunks.get(split, ()), seed, epoch, shuffle)
        stop = reader.plan.rows(split) if stop is None else stop

        def load(segment: Segment) -> FetchedChunk:
            chunk = segment.chunk
            fetched = reader._fetcher.fetch(chunk)
            table = permute_chunk(fetched.table, chunk, seed, epoch) if shuffle else fetched.table
            if segment.hi - segment.lo < chunk.rows:
                table = table.slice(segment.lo, segment.hi - segment.lo)
            return FetchedChunk(chunk, table, fetched.from_cache, fetched.attempts)

        self._scheduler = ChunkScheduler(
            row_segments(order, start, stop),
            load,
            reader._pool,
            config.prefetch_chunks,
            config.retry.chunk_timeout,
        )
        self._batches = slice_batches(self._tables(), config.batch_size, config.drop_last)
        self._features = reader.feature_columns
        self._labels = reader.label_columns
        self._output = config.output

    def _tables(self) -> Iterator[Any]:
        for fetched in self._scheduler:
            if fetched.from_cache:
                self.metrics.chunks_cached += 1
            else:
                self.metrics.chunks_fetched += 1
                self.metrics.retries += max(fetched.attempts - 1, 0)
            yield fetched.table

    def next_batch(self) -> Batch | None:
        try:
            table = next(self._batches, None)
        finally:
            self.metrics.wait_seconds = self._scheduler.wait_seconds
            self.metrics.elapsed_seconds = time.perf_counter() - self.metrics._started
        if table is None:
            if not self.metrics.finished:
                self.metrics.finished = True
                log.info(
                    "%s pass of epoch %d done: %s",
                    self.metrics.split,
                    self.metrics.epoch,
                    self.metrics.as_dict(),
                )
            return None
        self.metrics.rows += table.num_rows
        self.metrics.batches += 1
        return format_batch(table, self._features, self._labels, self._output)

    def close(self) -> None:
        self._scheduler.close()


class Reader:
    """Streams shuffled mini-batches of one source, split into train and eval.

    Build one with :func:`get_batch_reader`, :meth:`from_config` or from a
    :class:`~faucet_core.config.FaucetConfig`. Use it as a context manager (or call
    :meth:`close`) so its threads stop and the warehouse releases its scratch data.

    Attributes:
        config: The validated configuration.
        seed: The shuffle seed in use (drawn at random when the config has none).
        plan: The warehouse's chunk plan.
        metrics: One :class:`PassMetrics` per pass started so far.
    """

    def __init__(
        self,
        config: FaucetConfig,
        *,
        manager: pluggy.PluginManager | None = None,
        plan: Plan | None = None,
    ):
        self.config = config
        self.seed: int = config.seed if config.seed is not None else secrets.randbits(32)
        self.metrics: list[PassMetrics] = []
        self._epoch = 0
        self._resume_at: int | None = None
        self._passes: dict[SplitName, _Pass] = {}
        self._closed = False
        # A reader given a plan reads chunks its planner has prepared (see prepare()).
        self._prepared = plan is not None
        self._prepare_lock = threading.Lock()
        warehouse_class = get_warehouse_class(config.datastore, manager)
        self.warehouse = warehouse_class(config.connection)
        try:
            started = time.perf_counter()
            self.plan: Plan = plan or self.warehouse.plan(
                PlanRequest(config.source.spec(), config.split_spec(), config.chunk_size)
            )
            missing = [c for c in config.source.label_columns if c not in self.plan.columns]
            if missing:
                raise ConfigError(
                    [
                        (
                            "source.label_columns",
                            f"{missing} not among the source's columns {list(self.plan.columns)}",
                        )
                    ]
                )
            log.info(
                "planned %s in %.2fs: train %d rows in %d chunks, eval %d rows in %d chunks",
                config.datastore,
                time.perf_counter() - started,
                self.plan.rows("train"),
                len(self.plan.chunks.get("train", ())),
                self.plan.rows("eval"),
                len(self.plan.chunks.get("eval", ())),
            )
        except BaseException:
            self.warehouse.close()
            raise
        self.label_columns = list(config.source.label_columns)
        self.feature_columns = [c for c in self.plan.columns if c not in self.label_columns]
        self.cache = (
            ChunkCache(config.cache.dir, config.cache.max_bytes) if config.cache.enabled else None
        )
        retry = RetryPolicy(
            config.retry.attempts, config.retry.initial_backoff, config.retry.max_backoff
        )
        self._fetcher = ChunkFetcher(
            self.warehouse,
            self.plan.fingerprint,
            self.plan.columns,
            self.cache,
            retry,
            prepare=self._prepare_warehouse,
        )
        self._pool = FetchPool(config.fetch_threads)
        # Releases threads and the warehouse's scratch data even if close() is never called.
        self._release = weakref.finalize(self, _release, self._pool, self._fetcher, self.warehouse)

    @classmethod
    def from_config(
        cls,
        path: str | os.PathLike[str],
        *,
        manager: pluggy.PluginManager | None = None,
        **overrides: Any,
    ) -> Reader:
        """A reader for the YAML/TOML/JSON config at ``path``; keywords override the file."""
        return cls(load_config(path, manager=manager, **overrides), manager=manager)

    # The classic API.

    def prep_for_epoch(self) -> None:
        """Start the next training epoch (shuffled anew). Abandons an unfinished one."""
        self._check_open()
        if self._epoch >= self.config.epochs:
            raise ReaderStateError(
                f"all {self.config.epochs} epochs were served; raise `epochs` for more"
            )
        self._epoch += 1
        start, self._resume_at = self._resume_at or 0, None
        self._start("train", shuffle=self.config.shuffle, start=start)

    def prep_for_eval(self) -> None:
        """Start a pass over the eval split (in plan order, not shuffled)."""
        self._check_open()
        self._start("eval", shuffle=False)

    def get_batch(self, eval: bool = False) -> Batch | None:
        """The next batch of the current training epoch (or eval pass), ``None`` at its end.

        Raises:
            ChunkReadError: A chunk could not be read (after retries); names the chunk.
            ReaderStateError: No epoch (or eval pass) was started.
        """
        self._check_open()
        split: SplitName = "eval" if eval else "train"
        current = self._passes.get(split)
        if current is None:
            start = "prep_for_eval()" if eval else "prep_for_epoch()"
            raise ReaderStateError(f"call {start} before get_batch(eval={eval})")
        return current.next_batch()

    # The Pythonic API.

    def iter_epoch(self) -> Iterator[Batch]:
        """Start the next training epoch and iterate over its batches."""
        self.prep_for_epoch()
        return self._iterate(eval=False)

    def iter_eval(self) -> Iterator[Batch]:
        """Start an eval pass and iterate over its batches."""
        self.prep_for_eval()
        return self._iterate(eval=True)

    def _iterate(self, eval: bool) -> Iterator[Batch]:
        batch = self.get_batch(eval=eval)
        while batch is not None:
            yield batch
            batch = self.get_batch(eval=eval)

    def iter_range(
        self, split: SplitName, epoch: int, start: int, stop: int, shuffle: bool | None = None
    ) -> Iterator[Batch]:
        """Batches of rows ``start:stop`` of ``split`` as laid out in ``epoch`` (1-based).

        Leaves the reader's own epoch and passes alone: this is how DataLoader workers and
        distributed ranks serve their share of an epoch. A ``stop`` past the split's end
        wraps around to its first rows.
        """
        self._check_open()
        shuffle = (self.config.shuffle and split == "train") if shuffle is None else shuffle
        current = _Pass(self, split, epoch, shuffle, start, stop)
        try:
            while (batch := current.next_batch()) is not None:
                yield batch
        finally:
            current.close()

    @property
    def epoch(self) -> int:
        """The current training epoch, 1-based (0 before the first)."""
        return self._epoch

    def rows(self, split: SplitName = "train") -> int:
        """Rows in ``split``."""
        return self.plan.rows(split)

    def batches_per_epoch(self, split: SplitName = "train") -> int:
        """Batches one pass over ``split`` yields."""
        return batch_count(self.plan.rows(split), self.config.batch_size, self.config.drop_last)

    def prepare(self) -> None:
        """Make sure every chunk can be read, from this process or another one.

        The warehouse's one-time work (materializing the split) runs here unless the cache
        already holds every chunk. Readers do this by themselves on their first cache miss;
        call it before handing the plan to readers in other processes.
        """
        self._check_open()
        chunks = [c for split in self.plan.chunks.values() for c in split]
        if self.cache is None or any(self._fetcher.cache_key(c) not in self.cache for c in chunks):
            self._prepare_warehouse()

    def _prepare_warehouse(self) -> None:
        with self._prepare_lock:
            if not self._prepared:
                self.warehouse.prepare(self.plan)
                self._prepared = True

    def state_dict(self) -> dict[str, Any]:
        """The position in the training stream, in a few plain values (for checkpoints).

        A reader of the same plan and settings given it by :meth:`load_state_dict` serves
        exactly the rest of the stream: no batch repeated, none skipped.
        """
        current = self._passes.get("train")
        return {
            "format": STATE_FORMAT,
            "plan": self.plan.fingerprint,
            **self._resume_settings(),
            "seed": self.seed,
            "epoch": self._epoch,
            "rows": current.start + current.metrics.rows if current else 0,
            "epoch_done": current is None or current.metrics.finished,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the stream saved by :meth:`state_dict`.

        The next :meth:`prep_for_epoch` resumes the saved epoch where it stopped (or starts
        the next one if it was finished).

        Raises:
            ResumeError: The state is from another plan (the data, the source, the split or
                the chunking changed) or other settings; mixing streams would repeat or skip
                rows, so it is refused.
        """
        self._check_open()
        check_state(state, self.plan.fingerprint, self._resume_settings())
        if state["epoch"] > self.config.epochs:
            raise ResumeError(f"the state is at epoch {state['epoch']} of {self.config.epochs}")
        for current in self._passes.values():
            current.close()
        self._passes.clear()
        self.seed = state["seed"]
        if state["epoch_done"]:
            self._epoch, self._resume_at = state["epoch"], None
        else:
            self._epoch, self._resume_at = state["epoch"] - 1, state["rows"]

    def _resume_settings(self) -> dict[str, Any]:
        """Settings a saved state must share with this reader (a random seed adopts it)."""
        settings = {
            name: getattr(self.config, name) for name in ("batch_size", "drop_last", "shuffle")
        }
        if self.config.seed is not None:
            settings["seed"] = self.config.seed
        return settings

    def close(self) -> None:
        """Stop background threads and release the warehouse. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for current in self._passes.values():
            current.close()
        self._release()

    def __enter__(self) -> Reader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _start(self, split: SplitName, shuffle: bool, start: int = 0) -> None:
        previous = self._passes.pop(split, None)
        if previous is not None:
            previous.close()
        current = _Pass(self, split, self._epoch, shuffle, start)
        self._passes[split] = current
        self.metrics.append(current.metrics)

    def _check_open(self) -> None:
        if self._closed:
            raise ReaderStateError("the reader is closed")


def _release(pool: FetchPool, fetcher: ChunkFetcher, warehouse: Warehouse) -> None:
    fetcher.stop()
    if pool.shutdown(timeout=CLOSE_TIMEOUT):
        warehouse.close()
    else:
        log.warning(
            "chunk reads from %s still running %gs after close(); leaving them behind",
            warehouse.name,
            CLOSE_TIMEOUT,
        )


def get_batch_reader(
    datastore: str,
    *,
    manager: pluggy.PluginManager | None = None,
    **settings: Any,
) -> Reader:
    """Create a :class:`Reader` from flat keyword settings (the classic entry point).

    Keywords naming reader settings (``table_name``, ``ds``, ``epochs``, ``batch_size``,
    ``chunk_size``, ``test_split_percent``, ``seed``, ``cache_dir``, ...) configure the
    reader; every other keyword (``database``, ``credential_path``, ...) goes to the
    warehouse's connection settings. ``FAUCET_*`` environment variables fill in settings
    not given here.

    Raises:
        ConfigError: A setting is invalid; the message lists every problem with its field.
    """
    return Reader(load_config(manager=manager, datastore=datastore, **settings), manager=manager)
