"""The reader end to end on a real DuckDB warehouse: exactly-once, splits, seeds, cache."""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faucet_core import (
    ChunkSpec,
    ConfigError,
    Plan,
    Reader,
    ReaderStateError,
    Warehouse,
    hookimpl,
)
from faucet_core.output import format_batch
from tests.conftest import ROWS, SMALL_ROWS, ChunkByChunkDuckDB, ReadCounter, epoch_ids

MakeReader = Callable[..., Reader]


@settings(
    max_examples=min(40, settings.default.max_examples),  # fewer under the mutation profile
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    batch_size=st.integers(1, 1_200),
    chunk_size=st.integers(1, 1_200),
    percent=st.sampled_from([0, 12.5, 50]),
    drop_last=st.booleans(),
)
def test_every_row_once_per_epoch(
    make_reader: MakeReader,
    small_table_path: Path,
    batch_size: int,
    chunk_size: int,
    percent: float,
    drop_last: bool,
) -> None:
    reader = make_reader(
        database=str(small_table_path),
        output="arrow",
        batch_size=batch_size,
        chunk_size=chunk_size,
        test_split_percent=percent,
        drop_last=drop_last,
        epochs=2,
        use_cache=False,
    )
    train_rows, eval_rows = reader.rows("train"), reader.rows("eval")
    assert train_rows + eval_rows == SMALL_ROWS
    assert reader.rows() == train_rows  # the split trained on, unless named
    for _ in range(2):
        train = epoch_ids(reader)
        evaluation = epoch_ids(reader, eval=True)
        assert len(set(train)) == len(train)
        assert len(set(evaluation)) == len(evaluation)
        assert not set(train) & set(evaluation)
        if drop_last:
            assert len(train) == train_rows - train_rows % batch_size
        else:
            assert len(train) == train_rows
            assert len(set(train) | set(evaluation)) == SMALL_ROWS
        assert reader.metrics[-2].batches == reader.batches_per_epoch("train")


def test_a_pass_over_a_range_serves_those_rows_of_the_whole_pass(
    make_reader: MakeReader,
) -> None:
    stream = make_reader(output="arrow").stream
    whole = [t for t in stream.open_pass("train", epoch=1, seed=3)]
    ids = [i for table in whole for i in table.column("id").to_pylist()]
    part = [t for t in stream.open_pass("train", epoch=1, seed=3, start=950, stop=2_170)]
    assert [i for table in part for i in table.column("id").to_pylist()] == ids[950:2_170]


def test_batches_are_full_but_the_last(make_reader: MakeReader) -> None:
    reader = make_reader(batch_size=300, chunk_size=700)
    reader.prep_for_epoch()
    sizes = []
    batch = reader.get_batch()
    while batch is not None:
        sizes.append(len(batch["features"]))
        batch = reader.get_batch()
    assert sizes[:-1] == [300] * (len(sizes) - 1)
    assert sizes[-1] == ROWS % 300
    assert reader.get_batch() is None


def test_split_is_disjoint_and_stable_across_readers_and_chunk_sizes(
    make_reader: MakeReader,
) -> None:
    first = make_reader(test_split_percent=20, chunk_size=400, seed=1)
    second = make_reader(test_split_percent=20, chunk_size=2_500, seed=99)
    eval_first = set(epoch_ids(first, eval=True))
    eval_second = set(epoch_ids(second, eval=True))
    assert eval_first == eval_second
    assert 0.15 * ROWS < len(eval_first) < 0.25 * ROWS
    assert not eval_first & set(epoch_ids(first))


def test_same_seed_same_stream_and_epochs_differ(make_reader: MakeReader) -> None:
    one = make_reader(seed=5, epochs=2, use_cache=False)
    two = make_reader(seed=5, epochs=2, use_cache=False)  # nothing shared with `one`
    other = make_reader(seed=6, epochs=1)
    first_epoch, second_epoch = epoch_ids(one), epoch_ids(one)
    assert epoch_ids(two) == first_epoch
    assert epoch_ids(two) == second_epoch
    assert first_epoch != second_epoch
    assert epoch_ids(other) != first_epoch


def test_a_reader_without_a_seed_draws_one_that_replays_its_order(
    make_reader: MakeReader,
) -> None:
    """The drawn seed is reported, and a reader given it serves the same epochs."""
    drawn = make_reader(seed=None, epochs=2)
    assert isinstance(drawn.seed, int)
    replayed = make_reader(seed=drawn.seed, epochs=2)
    assert epoch_ids(drawn) == epoch_ids(replayed)
    assert epoch_ids(drawn) == epoch_ids(replayed)


def test_unshuffled_reader_serves_plan_order(make_reader: MakeReader) -> None:
    reader = make_reader(shuffle=False, epochs=2)
    assert epoch_ids(reader) == epoch_ids(reader)


def test_batches_of_a_label_sorted_table_are_mixed(make_reader: MakeReader) -> None:
    reader = make_reader(batch_size=250, chunk_size=1_000)
    reader.prep_for_epoch()
    means = []
    batch = reader.get_batch()
    while batch is not None:
        means.append(batch["labels"]["label"].mean())
        batch = reader.get_batch()
    # A quarter of the rows have label 1; storage order would give runs of 0s then 1s.
    assert max(abs(m - 0.25) for m in means) < 0.15


def test_second_epoch_comes_from_the_cache(
    make_reader: MakeReader, read_counter: ReadCounter
) -> None:
    reader = make_reader(datastore="counting-duckdb", epochs=3, test_split_percent=10)
    chunks = len(reader.plan.chunks["train"])
    assert sorted(epoch_ids(reader)) == sorted(epoch_ids(reader))
    assert read_counter.reads == chunks
    epoch_ids(reader)
    assert read_counter.reads == chunks
    train = [m for m in reader.metrics if m.split == "train"]
    assert [(m.chunks_fetched, m.chunks_cached) for m in train] == [
        (chunks, 0),
        (0, chunks),
        (0, chunks),
    ]


def test_a_new_reader_reuses_the_cache_of_the_same_plan(
    make_reader: MakeReader, read_counter: ReadCounter
) -> None:
    first = make_reader(datastore="counting-duckdb")
    expected = sorted(epoch_ids(first))
    reads = read_counter.reads
    second = make_reader(datastore="counting-duckdb", seed=3)
    assert sorted(epoch_ids(second)) == expected
    assert read_counter.reads == reads
    different_chunking = make_reader(datastore="counting-duckdb", chunk_size=1_500)
    assert sorted(epoch_ids(different_chunking)) == expected
    assert read_counter.reads > reads


def test_corrupted_cache_entry_is_refetched(
    make_reader: MakeReader, read_counter: ReadCounter, tmp_path: Path
) -> None:
    first = make_reader(datastore="counting-duckdb")
    expected = sorted(epoch_ids(first))
    entries = sorted((tmp_path / "cache").glob("*.arrow"))
    assert len(entries) == len(first.plan.chunks["train"])
    damaged = entries[0]
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    truncated = entries[1]
    truncated.write_bytes(truncated.read_bytes()[:100])
    reads = read_counter.reads

    second = make_reader(datastore="counting-duckdb")
    assert sorted(epoch_ids(second)) == expected
    assert read_counter.reads == reads + 2
    assert second.cache is not None
    assert second.cache.stats.corrupt_discarded == 2


@pytest.mark.parametrize("output", ["pandas", "polars", "numpy", "arrow"])
def test_output_formats(make_reader: MakeReader, output: str) -> None:
    reader = make_reader(output=output, columns=["id", "x1", "label"], batch_size=64)
    reader.prep_for_epoch()
    batch = reader.get_batch()
    assert batch is not None
    features, labels = batch["features"], batch["labels"]
    if output == "pandas":
        assert isinstance(features, pd.DataFrame)
        assert list(features.columns) == ["id", "x1"]
        assert list(labels.columns) == ["label"]
    elif output == "numpy":
        assert isinstance(features, np.ndarray)
        assert features.shape == (64, 2)
        assert labels.shape == (64,)
    elif output == "polars":
        assert isinstance(features, pl.DataFrame) and isinstance(labels, pl.DataFrame)
        assert features.columns == ["id", "x1"] and labels.columns == ["label"]
        assert features.height == labels.height == 64
    else:
        assert isinstance(features, pa.Table)
        assert features.column_names == ["id", "x1"]
        assert labels.column_names == ["label"]


def test_every_output_serves_the_same_rows(make_reader: MakeReader) -> None:
    served = {}
    for output in ("arrow", "pandas", "polars", "numpy"):
        reader = make_reader(output=output, columns=["id", "x1", "label"], batch_size=500)
        reader.prep_for_epoch()
        batch = reader.get_batch()
        assert batch is not None
        features = batch["features"]
        rows = (
            features.to_pylist() if output == "arrow"
            else features.to_dict("records") if output == "pandas"
            else features.to_dicts() if output == "polars"
            else [{"id": int(i), "x1": x} for i, x in features]
        )  # fmt: skip
        served[output] = rows
    assert served["arrow"] == served["pandas"] == served["polars"] == served["numpy"]


def test_polars_output_without_polars_names_the_extra(
    make_reader: MakeReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "polars", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'faucetml\[polars\]'") as raised:
        make_reader(output="polars")
    assert [path for path, _ in raised.value.problems] == ["output"]


def test_no_label_columns_gives_no_labels(make_reader: MakeReader) -> None:
    reader = make_reader(label_columns=[], columns=["id", "x1"])
    reader.prep_for_epoch()
    batch = reader.get_batch()
    assert batch is not None
    assert batch["labels"] is None
    assert list(batch["features"].columns) == ["id", "x1"]


def test_pythonic_api_and_context_manager(make_reader: MakeReader) -> None:
    with make_reader(epochs=2, test_split_percent=30) as reader:
        for _ in range(2):
            rows = sum(len(b["features"]) for b in reader.iter_epoch())
            eval_rows = sum(len(b["features"]) for b in reader.iter_eval())
            assert rows == reader.rows("train")
            assert eval_rows == reader.rows("eval")
        assert reader.epoch == 2
    for call in (reader.get_batch, reader.prep_for_epoch, reader.prep_for_eval, reader.prepare):
        with pytest.raises(ReaderStateError, match=r"^the reader is closed$"):
            call()
    assert not [t for t in threading.enumerate() if t.name.startswith("faucet-fetch")]


def test_the_end_of_a_pass_is_logged_with_its_metrics(
    make_reader: MakeReader, caplog: pytest.LogCaptureFixture
) -> None:
    reader = make_reader(epochs=1, test_split_percent=0)
    with caplog.at_level(logging.INFO, logger="faucet"):
        served = len(epoch_ids(reader))
    (done,) = [r for r in caplog.records if " done: " in r.getMessage()]
    assert done.getMessage().startswith("train pass of epoch 1 done: {")
    (metrics,) = [arg for arg in done.args or () if isinstance(arg, dict)]
    assert metrics["rows"] == served == reader.rows("train") and metrics["finished"]


@pytest.mark.parametrize("rows", [2, 500])
def test_the_rows_of_one_chunk_come_in_a_new_order_each_epoch(
    make_reader: MakeReader, rows: int
) -> None:
    """Not only the chunk order changes: a source of one chunk is shuffled too, down to
    two rows."""
    reader = make_reader(
        table_name=None, query=f"SELECT * FROM t WHERE id < {rows}", chunk_size=rows,
        batch_size=rows, test_split_percent=0, epochs=8,
    )  # fmt: skip
    assert len(reader.plan.chunks["train"]) == 1
    orders = {tuple(epoch_ids(reader)) for _ in range(8)}
    assert all(sorted(order) == list(range(rows)) for order in orders)
    assert len(orders) > 1


def test_calls_out_of_order_are_clear_errors(make_reader: MakeReader) -> None:
    reader = make_reader(epochs=1)
    with pytest.raises(ReaderStateError, match=r"^call prep_for_epoch\(\) before get_batch\("):
        reader.get_batch()
    with pytest.raises(ReaderStateError, match=r"^call prep_for_eval\(\) before get_batch\("):
        reader.get_batch(eval=True)
    reader.prep_for_epoch()
    with pytest.raises(ReaderStateError, match="all 1 epochs"):
        reader.prep_for_epoch()


def test_abandoning_an_epoch_midway_starts_the_next_cleanly(make_reader: MakeReader) -> None:
    reader = make_reader(epochs=2, prefetch_chunks=3)
    reader.prep_for_epoch()
    assert reader.get_batch() is not None
    assert sorted(epoch_ids(reader)) == list(range(ROWS))


def test_metrics_report_rows_and_waits(make_reader: MakeReader) -> None:
    reader = make_reader(test_split_percent=20)
    epoch_ids(reader)
    metrics = reader.metrics[-1]
    assert metrics.finished
    assert metrics.rows == reader.rows("train")
    assert metrics.batches == reader.batches_per_epoch("train")
    assert metrics.chunks_fetched == len(reader.plan.chunks["train"])
    assert 0 <= metrics.wait_seconds <= metrics.elapsed_seconds
    assert metrics.as_dict()["rows_per_second"] > 0


def test_polars_batches_keep_numbers_on_the_arrow_buffers() -> None:
    table = pa.table({"x": np.arange(100, dtype=np.float64), "y": np.arange(100)})
    batch = format_batch(table, ["x"], ["y"], "polars")
    shared = batch["features"]["x"].to_arrow().buffers()[1].address
    assert shared == table.column("x").chunk(0).buffers()[1].address  # not copied
    assert batch["labels"]["y"].to_list() == list(range(100))
    # Nor are the rows of a table in several chunks gathered into one.
    halves = pa.concat_tables([table.slice(0, 50), table.slice(50)])
    assert format_batch(halves, ["x"], ["y"], "polars")["features"]["x"].n_chunks() == 2


def test_an_epoch_iterator_left_behind_by_load_state_dict_asks_for_a_new_epoch(
    make_reader: MakeReader,
) -> None:
    reader = make_reader(epochs=2)
    batches = reader.iter_epoch()
    state = reader.state_dict()
    reader.load_state_dict(state)  # drops the epoch under way
    with pytest.raises(ReaderStateError) as raised:
        next(batches)
    assert str(raised.value) == "call prep_for_epoch() before get_batch(eval=False)"


class GatedReads(ChunkByChunkDuckDB):
    """DuckDB read chunk by chunk; every read after the first waits for ``release``, and
    ``waiting`` is set once one does."""

    name = "gated-reads"
    reads = ReadCounter()
    waiting = threading.Event()
    release = threading.Event()

    def read_buckets(self, plan: Plan, chunk: ChunkSpec) -> pa.Table:
        cls = type(self)
        cls.reads.add()
        if cls.reads.reads > 1:
            cls.waiting.set()
            if not cls.release.wait(timeout=30):
                raise TimeoutError("the test never released the read")
        return super().read_buckets(plan, chunk)


class _GatedReadsPlugin:
    @hookimpl
    def register_warehouses(self, register: Callable[[type[Warehouse]], None]) -> None:
        register(GatedReads)


def test_a_new_epoch_cancels_the_loads_the_last_one_left_queued(
    make_reader: MakeReader, register: Callable[[object], None]
) -> None:
    """An epoch started before the last one ended cancels that one's chunk loads not yet
    begun: they would cost reads nobody uses (the load under way ends and is dropped)."""
    register(_GatedReadsPlugin())
    GatedReads.reads, GatedReads.waiting, GatedReads.release = (
        ReadCounter(), threading.Event(), threading.Event()
    )  # fmt: skip
    reader = make_reader(
        datastore="gated-reads", use_cache=False, epochs=2, fetch_threads=1, prefetch_chunks=3
    )
    try:
        reader.prep_for_epoch()
        assert reader.get_batch() is not None  # the first chunk read; the second waits
        assert GatedReads.waiting.wait(timeout=30)
        reader.prep_for_epoch()
    finally:
        GatedReads.release.set()
    ids = []
    while (batch := reader.get_batch()) is not None:
        ids.extend(batch["features"]["id"].tolist())
    assert sorted(ids) == list(range(ROWS))
    assert GatedReads.reads.reads == 2 + len(reader.plan.chunks["train"])


def test_a_range_is_shuffled_as_asked_whatever_its_split(make_reader: MakeReader) -> None:
    """``iter_range``'s ``shuffle`` overrides the split's default both ways."""
    reader = make_reader(test_split_percent=20)
    in_plan_order = make_reader(test_split_percent=20, shuffle=False)

    def ids(split: str, shuffle: bool | None) -> list[int]:
        rows = reader.rows(split)  # type: ignore[arg-type]
        batches = reader.iter_range(split, 1, 0, rows, shuffle)  # type: ignore[arg-type]
        return [i for batch in batches for i in batch["features"]["id"].tolist()]

    train, test = epoch_ids(in_plan_order), epoch_ids(in_plan_order, eval=True)
    assert ids("train", False) == train
    assert ids("train", None) != train and sorted(ids("train", None)) == sorted(train)
    assert ids("eval", None) == test
    assert ids("eval", True) != test and sorted(ids("eval", True)) == sorted(test)


def test_a_split_that_would_surprise_is_logged_when_planned(
    make_reader: MakeReader, caplog: pytest.LogCaptureFixture
) -> None:
    """Every row has the one ``ds`` value: all go to one side, which is said."""
    with caplog.at_level(logging.WARNING):
        reader = make_reader(split_key="ds", test_split_percent=20)
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage() == reader.plan.split_surprise()
    assert "split key (ds)" in warning.getMessage()


def test_a_range_serves_its_rows_of_the_epoch_and_wraps_past_the_end(
    make_reader: MakeReader,
) -> None:
    reader = make_reader(test_split_percent=20)
    epoch = epoch_ids(make_reader(test_split_percent=20))
    rows = reader.rows("train")

    def ids(start: int, stop: int) -> list[int]:
        batches = reader.iter_range("train", 1, start, stop)
        return [i for batch in batches for i in batch["features"]["id"].tolist()]

    assert ids(130, 1_270) == epoch[130:1_270]
    assert ids(rows - 50, rows + 70) == epoch[-50:] + epoch[:70]


def test_a_plan_is_logged_with_its_source_warehouse_and_chunks(
    make_reader: MakeReader, caplog: pytest.LogCaptureFixture
) -> None:
    started = time.perf_counter()
    with caplog.at_level(logging.INFO, logger="faucet"):
        reader = make_reader(test_split_percent=20, chunk_size=1_000)
    took = time.perf_counter() - started
    (message,) = [m for m in caplog.messages if m.startswith("planned ")]
    plan = reader.plan
    seconds = re.search(r" in ([\d.]+)s: ", message)
    assert seconds is not None and float(seconds[1]) <= took + 0.005  # rounded to 0.01
    assert re.fullmatch(
        rf"planned table t of duckdb in \d+\.\d\ds: train {plan.rows('train')} rows in "
        rf"{len(plan.chunks['train'])} chunks, eval {plan.rows('eval')} rows in "
        rf"{len(plan.chunks['eval'])} chunks",
        message,
    ), message
