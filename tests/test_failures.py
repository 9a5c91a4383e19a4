"""Warehouse failures: transient errors are retried, permanent ones surface, nothing hangs."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import ClassVar

import pyarrow as pa
import pytest

from faucet_core import (
    ChunkReadError,
    ChunkSpec,
    PermanentWarehouseError,
    Plan,
    Reader,
    TransientWarehouseError,
    Warehouse,
    hookimpl,
)
from faucet_core.fetch import ChunkFetcher
from tests.conftest import ROWS, ChunkByChunkDuckDB, epoch_ids

MakeReader = Callable[..., Reader]


class FlakyDuckDB(ChunkByChunkDuckDB):
    """Fails the first ``failures`` reads of every chunk with a transient error."""

    name = "flaky"
    failures: ClassVar[int] = 2
    seen: ClassVar[Counter[tuple[str, int]]] = Counter()

    def read_buckets(self, plan: Plan, chunk: ChunkSpec) -> pa.Table:
        key = (chunk.split, chunk.index)
        self.seen[key] += 1
        if self.seen[key] <= self.failures:
            raise TransientWarehouseError(f"throttled (read {self.seen[key]})")
        return super().read_buckets(plan, chunk)


class BrokenChunkDuckDB(ChunkByChunkDuckDB):
    """Reads fine, except chunk 2, which fails permanently."""

    name = "broken"

    def read_buckets(self, plan: Plan, chunk: ChunkSpec) -> pa.Table:
        if chunk.index == 2:
            raise PermanentWarehouseError("permission denied on table t")
        return super().read_buckets(plan, chunk)


class StuckDuckDB(ChunkByChunkDuckDB):
    """Blocks every read until ``release`` is set; ``entered`` tells a read began."""

    name = "stuck"
    entered = threading.Event()
    release = threading.Event()

    def read_buckets(self, plan: Plan, chunk: ChunkSpec) -> pa.Table:
        self.entered.set()
        self.release.wait(timeout=60)
        return super().read_buckets(plan, chunk)


class AlwaysTransientDuckDB(ChunkByChunkDuckDB):
    """Every read fails transiently; ``entered`` tells a read was tried."""

    name = "always-transient"
    entered = threading.Event()

    def read_buckets(self, plan: Plan, chunk: ChunkSpec) -> pa.Table:
        self.entered.set()
        raise TransientWarehouseError("service unavailable")


class _FailurePlugin:
    @hookimpl
    def register_warehouses(self, register: Callable[[type[Warehouse]], None]) -> None:
        for warehouse in (FlakyDuckDB, BrokenChunkDuckDB, StuckDuckDB, AlwaysTransientDuckDB):
            register(warehouse)


@pytest.fixture(autouse=True)
def failure_plugin(register: Callable[[object], None]) -> None:
    register(_FailurePlugin())
    FlakyDuckDB.seen = Counter()
    StuckDuckDB.entered.clear()
    StuckDuckDB.release.clear()
    AlwaysTransientDuckDB.entered.clear()


def test_transient_errors_are_retried_and_rows_stay_exactly_once(make_reader: MakeReader) -> None:
    reader = make_reader(datastore="flaky", initial_backoff=0, retry_attempts=3, epochs=2)
    chunks = len(reader.plan.chunks["train"])
    assert sorted(epoch_ids(reader)) == list(range(ROWS))
    assert reader.metrics[-1].retries == 2 * chunks
    assert sorted(epoch_ids(reader)) == list(range(ROWS))  # served from the cache
    assert sum(FlakyDuckDB.seen.values()) == 3 * chunks


def test_each_retry_is_logged_with_its_chunk_try_and_error(
    make_reader: MakeReader, caplog: pytest.LogCaptureFixture
) -> None:
    reader = make_reader(datastore="flaky", initial_backoff=0, retry_attempts=3, shuffle=False)
    with caplog.at_level("WARNING"):
        reader.prep_for_epoch()
        assert reader.get_batch() is not None
    first = reader.plan.chunks["train"][0].describe()
    for attempt in (1, 2):
        assert (
            f"retrying {first} after a transient error (try {attempt} of 3): "
            f"throttled (read {attempt})"
        ) in caplog.messages


@pytest.mark.parametrize(("initial", "most"), [(0.001, 10.0), (10.0, 0.001)])
def test_retries_wait_a_random_time_growing_from_the_initial_backoff_up_to_the_most(
    make_reader: MakeReader, monkeypatch: pytest.MonkeyPatch, initial: float, most: float
) -> None:
    waits: list[float] = []
    monkeypatch.setattr(ChunkFetcher, "_sleep", lambda self, seconds: waits.append(seconds))
    reader = make_reader(
        datastore="flaky", initial_backoff=initial, max_backoff=most, retry_attempts=3
    )
    assert sorted(epoch_ids(reader)) == list(range(ROWS))
    assert len(waits) == 2 * len(reader.plan.chunks["train"])
    assert all(0 <= wait <= min(most, initial * 4) for wait in waits)
    assert any(wait > 0 for wait in waits)


def test_transient_errors_past_the_last_try_name_the_chunk(make_reader: MakeReader) -> None:
    reader = make_reader(datastore="flaky", initial_backoff=0, retry_attempts=2)
    reader.prep_for_epoch()
    with pytest.raises(ChunkReadError, match=r"train chunk \d+ .* after 2 tries.*throttled"):
        reader.get_batch()


def test_permanent_error_surfaces_in_get_batch_naming_the_chunk(make_reader: MakeReader) -> None:
    reader = make_reader(datastore="broken", shuffle=False, initial_backoff=0)
    reader.prep_for_epoch()
    with pytest.raises(ChunkReadError, match=r"train chunk 2 .*permission denied") as raised:
        while reader.get_batch() is not None:
            pass
    assert isinstance(raised.value.__cause__, PermanentWarehouseError)
    good_rows = sum(c.rows for c in reader.plan.chunks["train"][:2])
    assert reader.metrics[-1].rows == good_rows - good_rows % 100  # the good chunks came first


@pytest.mark.timeout(30)
def test_a_stuck_warehouse_times_out_instead_of_hanging(make_reader: MakeReader) -> None:
    reader = make_reader(datastore="stuck", chunk_timeout=0.2)
    try:
        reader.prep_for_epoch()
        with pytest.raises(ChunkReadError, match=r"not ready after 0\.2s"):
            reader.get_batch()
    finally:
        StuckDuckDB.release.set()


@pytest.mark.timeout(30)
def test_close_interrupts_a_retry_backoff(make_reader: MakeReader) -> None:
    reader = make_reader(datastore="always-transient", initial_backoff=600, max_backoff=600)
    reader.prep_for_epoch()
    assert AlwaysTransientDuckDB.entered.wait(timeout=20)
    reader.close()  # would wait out a ten-minute backoff if the wait were not interruptible
    assert not [t for t in threading.enumerate() if t.name.startswith("faucet-fetch")]


def test_a_missing_table_fails_when_the_reader_is_built(make_reader: MakeReader) -> None:
    with pytest.raises(PermanentWarehouseError, match="table nope"):
        make_reader(table_name="nope")
    assert not [t for t in threading.enumerate() if t.name.startswith("faucet-fetch")]
