"""The state of each chunk in a process, and where each came from (faucet_core.chunk_states)."""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator

import pyarrow as pa
import pytest

from faucet_core import ChunkReadError, ChunkSpec, Plan, Reader, Warehouse, chunk_states, hookimpl
from faucet_core.chunk_states import ChunkState, ChunkStates, Origin
from faucet_core.warehouse import PermanentWarehouseError
from tests.conftest import ChunkByChunkDuckDB

MakeReader = Callable[..., Reader]


def states(reader: Reader) -> ChunkStates:
    return reader.stream.fetcher.states


def origins(reader: Reader) -> list[Origin | None]:
    return [states(reader).origin(chunk) for chunk in states(reader).chunks]


def served(reader: Reader) -> tuple[int, int]:
    """Serve an epoch: how many chunks it fetched, and how many it served from the cache."""
    reader.prep_for_epoch()
    while reader.get_batch() is not None:
        pass
    metrics = reader.metrics[-1]
    return metrics.chunks_fetched, metrics.chunks_cached


def test_the_states_a_chunk_goes_through(make_reader: MakeReader) -> None:
    book = ChunkStates(make_reader(test_split_percent=20).plan)
    first, second, third = book.chunks[:3]
    indexes = [book.index(c) for c in (first, second, third)]
    assert indexes == [0, 1, 2]
    assert book.filling() == list(range(len(book.chunks)))  # every chunk was missing
    book.found([indexes[2]])  # another process cached it
    book.committing(indexes[:2])
    book.filled(indexes[:2], {indexes[0]: "a.arrow"})  # the second was not stored
    assert [book.state(c) for c in (first, second, third)] == [
        ChunkState.CACHED, ChunkState.FILLING, ChunkState.CACHED
    ]  # fmt: skip
    assert [book.origin(c) for c in (first, second, third)] == [Origin.FILL, None, None]
    assert book.checked("a.arrow") and not book.checked("b.arrow")
    book.fill_over()
    assert book.state(second) is ChunkState.MISSING
    assert book.serve_cached(first) is Origin.FILL  # counted as fetched once
    assert book.serve_cached(first) is Origin.CACHE
    assert book.serve_cached(third) is Origin.CACHE
    book.reading(second)
    assert book.state(second) is ChunkState.READING
    book.read_failed(second)
    assert book.state(second) is ChunkState.FAILED
    book.reading(second)
    book.read(second, cached=True)
    assert (book.state(second), book.origin(second)) == (ChunkState.CACHED, Origin.WAREHOUSE)
    assert book.serve_cached(second) is Origin.CACHE  # served when it was read
    book.discarded(second)
    assert book.state(second) is ChunkState.MISSING
    assert book.counts() == {  # the fill is over: the chunks it did not cache are missing
        ChunkState.MISSING: len(book.chunks) - 2, ChunkState.FILLING: 0,
        ChunkState.READING: 0, ChunkState.CACHED: 2, ChunkState.FAILED: 0,
    }  # fmt: skip


def test_a_chunk_being_filled_is_not_read_by_itself_meanwhile(make_reader: MakeReader) -> None:
    book = ChunkStates(make_reader(test_split_percent=20).plan)
    chunk = book.chunks[0]
    book.filling()
    book.reading(chunk)  # a pass's first chunk, read while the fill runs
    assert book.state(chunk) is ChunkState.FILLING
    assert book.wait_filled(chunk, stopped=lambda: False, timeout=0) is ChunkState.FILLING
    book.read(chunk, cached=False)
    assert (book.state(chunk), book.origin(chunk)) == (ChunkState.FILLING, Origin.WAREHOUSE)
    book.committing([0])
    book.filled([0], {0: "a.arrow"})
    assert book.origin(chunk) is Origin.WAREHOUSE  # read by itself first: counted then
    assert book.serve_cached(chunk) is Origin.CACHE
    assert book.wait_filled(chunk, stopped=lambda: True) is ChunkState.CACHED


def test_a_wait_whose_time_is_up_looks_once_even_if_the_clock_has_not_moved(
    make_reader: MakeReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wait's time is up once the clock reads its deadline: on a clock too coarse to have
    moved since the wait began (Windows' ticks 64 times a second), a timeout of 0 looks at
    the chunk once and returns instead of spinning until the clock moves."""
    book = ChunkStates(make_reader(test_split_percent=20).plan)
    chunk = book.chunks[0]
    book.filling()
    monkeypatch.setattr(chunk_states, "time", types.SimpleNamespace(monotonic=lambda: 100.0))
    looks: list[int] = []

    def stopped() -> bool:
        looks.append(1)
        return len(looks) > 1  # ends a wait that would spin

    assert book.wait_filled(chunk, stopped, timeout=0) is ChunkState.FILLING
    assert len(looks) == 1


def test_a_fill_caches_every_chunk_and_each_counts_as_fetched_once(
    make_reader: MakeReader,
) -> None:
    reader = make_reader(test_split_percent=20, epochs=2)
    chunks = states(reader).chunks
    assert states(reader).counts()[ChunkState.MISSING] == len(chunks)
    reader.prepare()  # one scan fills the cache
    assert states(reader).counts()[ChunkState.CACHED] == len(chunks)
    assert set(origins(reader)) == {Origin.FILL}
    train = len(reader.plan.chunks["train"])
    assert served(reader) == (train, 0)  # the fill's chunks, counted as fetched once
    assert served(reader) == (0, train)  # then from the cache


def test_chunks_another_process_cached_come_from_the_cache(make_reader: MakeReader) -> None:
    make_reader(test_split_percent=20).prepare()
    reader = make_reader(test_split_percent=20)
    assert served(reader) == (0, len(reader.plan.chunks["train"]))
    assert set(origins(reader)) == {None}  # this process fetched nothing
    train = [states(reader).state(chunk) for chunk in reader.plan.chunks["train"]]
    assert set(train) == {ChunkState.CACHED}


def test_without_a_cache_every_read_is_the_warehouses_and_leaves_the_chunk_missing(
    make_reader: MakeReader,
) -> None:
    reader = make_reader(use_cache=False)
    train = reader.plan.chunks["train"]
    assert served(reader) == (len(train), 0)
    assert {states(reader).origin(chunk) for chunk in train} == {Origin.WAREHOUSE}
    assert {states(reader).state(chunk) for chunk in train} == {ChunkState.MISSING}


class FailingChunk(ChunkByChunkDuckDB):
    """Reads every chunk but the first of train."""

    name = "failing-chunk"

    def read_buckets(self, plan: Plan, chunk: ChunkSpec) -> pa.Table:
        if chunk.split == "train" and chunk.index == 0:
            raise PermanentWarehouseError("no permission for this chunk")
        return super().read_buckets(plan, chunk)


class CountingMaterializations(ChunkByChunkDuckDB):
    """Counts its one-time work for a plan (the scratch copy), of every instance."""

    name = "counting-materializations"
    made = 0

    def materialize(self, plan: Plan) -> None:
        type(self).made += 1
        super().materialize(plan)


class _Plugin:
    @hookimpl
    def register_warehouses(self, register: Callable[[type[Warehouse]], None]) -> None:
        register(FailingChunk)
        register(CountingMaterializations)


@pytest.fixture
def failing(register: Callable[[object], None]) -> Iterator[str]:
    register(_Plugin())
    yield FailingChunk.name


def test_a_chunk_that_cannot_be_read_is_failed_and_read_again_next_time(
    make_reader: MakeReader, failing: str
) -> None:
    reader = make_reader(datastore=failing, shuffle=False, epochs=2)
    first = reader.plan.chunks["train"][0]
    for _ in range(2):
        reader.prep_for_epoch()
        with pytest.raises(ChunkReadError, match="no permission"):
            while reader.get_batch() is not None:
                pass
        assert states(reader).state(first) is ChunkState.FAILED
        assert states(reader).origin(first) is None


def test_a_cached_chunk_that_fails_its_check_is_missing_until_read_again(
    make_reader: MakeReader,
) -> None:
    reader = make_reader(datastore="chunk-by-chunk-duckdb")
    train = reader.plan.chunks["train"]
    assert served(reader) == (len(train), 0)  # each chunk read by itself, and cached
    chunk = train[0]
    key = reader.plan.chunk_key(chunk)
    cache = reader.cache
    assert cache is not None
    damaged = cache.get(key)
    assert damaged is not None
    cache.discard(key)
    cache.put(key, damaged.slice(1))  # a row short
    other = make_reader(datastore="chunk-by-chunk-duckdb")
    assert served(other) == (1, len(train) - 1)  # that chunk read again
    assert states(other).origin(chunk) is Origin.WAREHOUSE
    assert states(other).state(chunk) is ChunkState.CACHED


def test_without_a_cache_prepare_does_the_warehouses_one_time_work(
    make_reader: MakeReader, register: Callable[[object], None]
) -> None:
    register(_Plugin())
    CountingMaterializations.made = 0
    reader = make_reader(datastore=CountingMaterializations.name, use_cache=False)
    reader.prepare()
    assert CountingMaterializations.made == 1  # before the first batch, not at it
    assert served(reader) == (len(reader.plan.chunks["train"]), 0)
    assert CountingMaterializations.made == 1
