"""A plugin whose output breaks its plan is named, with the rule it breaks: when a chunk is
read by itself, when the cache is filled from one scan, and when the source is planned."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pytest

from faucet_core import (
    ChunkReadError,
    ChunkSpec,
    PermanentWarehouseError,
    Plan,
    Reader,
    Warehouse,
    hookimpl,
    layout,
)
from faucet_duckdb import DuckDBWarehouse
from faucet_duckdb.warehouse import quote_identifier
from tests.conftest import ROWS, ChunkByChunkDuckDB, epoch_ids

MakeReader = Callable[..., Reader]
#: Breaks a table of rows as a faulty plugin would.
Fault = Callable[[pa.Table], pa.Table]


def _null_hashes(table: pa.Table) -> pa.Table:
    """The first three rows' key hash NULL."""
    index = table.schema.get_field_index(layout.HASH_COLUMN)
    hashes = table.column(index).to_pylist()
    hashes[:3] = [None] * 3
    return table.set_column(index, layout.HASH_COLUMN, pa.array(hashes, pa.uint64()))


def _drop_a_row(table: pa.Table) -> pa.Table:
    return table.slice(1)


def _repeat_a_row(table: pa.Table) -> pa.Table:
    return pa.concat_tables([table, table.slice(0, 1)])


def _drop_a_column(table: pa.Table) -> pa.Table:
    return table.drop_columns(["x1"])


class FaultyReads(ChunkByChunkDuckDB):
    """DuckDB read chunk by chunk, each chunk's rows broken by :attr:`fault`."""

    name = "faulty-reads"
    fault: ClassVar[Fault] = staticmethod(_drop_a_row)

    def read_buckets(self, plan: Plan, chunk: ChunkSpec) -> pa.Table:
        return type(self).fault(super().read_buckets(plan, chunk))


class FaultyScan(DuckDBWarehouse):
    """DuckDB whose scan of the whole source has its first batch broken by :attr:`fault`;
    its chunk reads are sound."""

    name = "faulty-scan"
    fault: ClassVar[Fault] = staticmethod(_drop_a_row)

    def scan(
        self, plan: Plan, chunks: Sequence[ChunkSpec] | None = None
    ) -> Iterator[pa.RecordBatch]:
        batches = super().scan(plan, chunks)
        assert batches is not None
        for i, batch in enumerate(batches):
            if i or chunks is not None:
                yield batch
            else:
                yield from type(self).fault(pa.Table.from_batches([batch])).to_batches()


class StrayRow(ChunkByChunkDuckDB):
    """Serves train chunk 1 with the first row of chunk 0 in place of one of its own."""

    name = "stray-row"
    stray: ClassVar[list[int]] = []

    def read_buckets(self, plan: Plan, chunk: ChunkSpec) -> pa.Table:
        table = super().read_buckets(plan, chunk)
        if chunk.index != 1:
            return table
        stranger = super().read_buckets(plan, plan.chunks[chunk.split][0]).slice(0, 1)
        type(self).stray[:] = stranger.column(layout.HASH_COLUMN).to_pylist()
        return pa.concat_tables([table.slice(1), stranger])


class NullKeyHash(DuckDBWarehouse):
    """DuckDB whose key hash is NULL for the rows with ``id`` below 3."""

    name = "null-key-hash"

    def hash_sql(self, columns: Sequence[str]) -> str:
        hashed = super().hash_sql(columns)
        return f"CASE WHEN {quote_identifier('id')} < 3 THEN NULL ELSE {hashed} END"


class _Plugin:
    @hookimpl
    def register_warehouses(self, register: Callable[[type[Warehouse]], None]) -> None:
        for warehouse in (FaultyReads, FaultyScan, StrayRow, NullKeyHash):
            register(warehouse)


@pytest.fixture(autouse=True)
def plugin(register: Callable[[object], None]) -> None:
    register(_Plugin())


def _count_rule(plan: Plan, message: str, change: int) -> None:
    """Assert ``message`` names a train chunk whose rows were ``change`` off the plan's."""
    found = re.search(r"train chunk (\d+): ([\d,]+) rows where the plan counted ([\d,]+)", message)
    assert found is not None, message
    planned = plan.chunks["train"][int(found[1])].rows
    assert (found[2], found[3]) == (f"{planned + change:,}", f"{planned:,}")


#: Each fault, and a check that an error message names the rule it breaks.
RULES: dict[str, tuple[Fault, Callable[[Plan, str], None]]] = {
    "null hash": (_null_hashes, lambda plan, text: _has(text, "3 rows have a NULL key hash")),
    "dropped row": (_drop_a_row, lambda plan, text: _count_rule(plan, text, -1)),
    "repeated row": (_repeat_a_row, lambda plan, text: _count_rule(plan, text, +1)),
    "dropped column": (
        _drop_a_column,
        lambda plan, text: _has(
            text,
            f"columns {[c for c in plan.columns if c != 'x1'] + [layout.HASH_COLUMN]} "
            f"where the plan has {[*plan.columns, layout.HASH_COLUMN]}",
        ),
    ),
}


def _has(text: str, part: str) -> None:
    assert part in text, text


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("fault", list(RULES))
def test_a_chunk_read_that_breaks_a_rule_names_the_plugin_and_the_rule(
    make_reader: MakeReader, monkeypatch: pytest.MonkeyPatch, fault: str, use_cache: bool
) -> None:
    breaks, names_rule = RULES[fault]
    monkeypatch.setattr(FaultyReads, "fault", staticmethod(breaks))
    reader = make_reader(datastore="faulty-reads", use_cache=use_cache, initial_backoff=0)
    reader.prep_for_epoch()
    with pytest.raises(ChunkReadError) as raised:
        while reader.get_batch() is not None:
            pass
    message = str(raised.value)
    assert "the faulty-reads warehouse" in message
    names_rule(reader.plan, message)


def test_a_row_of_another_chunk_is_named_with_its_bucket_and_the_chunk(
    make_reader: MakeReader,
) -> None:
    reader = make_reader(datastore="stray-row", shuffle=False, initial_backoff=0)
    reader.prep_for_epoch()
    with pytest.raises(ChunkReadError) as raised:
        while reader.get_batch() is not None:
            pass
    chunk = reader.plan.chunks["train"][1]
    bucket = int(layout.bucket_of(np.array(StrayRow.stray, np.uint64))[0])
    assert not chunk.lo <= bucket < chunk.hi
    message = str(raised.value)
    assert "the stray-row warehouse" in message
    assert f"row in bucket {bucket} of train, outside chunk train {chunk.lo}-{chunk.hi - 1}" in (
        message
    )


@pytest.mark.parametrize("fault", list(RULES))
def test_a_scan_that_breaks_a_rule_names_the_plugin_and_the_rule(
    make_reader: MakeReader,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fault: str,
) -> None:
    breaks, names_rule = RULES[fault]
    monkeypatch.setattr(FaultyScan, "fault", staticmethod(breaks))
    reader = make_reader(datastore="faulty-scan")
    with caplog.at_level("WARNING"):
        ids = epoch_ids(reader)
    messages = (record.getMessage() for record in caplog.records)
    warnings = [text for text in messages if "could not fill the cache" in text]
    assert len(warnings) == 1
    assert "the faulty-scan warehouse" in warnings[0]
    names_rule(reader.plan, warnings[0])
    # Nothing of the scan was cached: the chunks were read one by one, every row once.
    assert sorted(ids) == list(range(ROWS))


def test_null_key_hashes_are_refused_when_the_source_is_planned(make_reader: MakeReader) -> None:
    with pytest.raises(PermanentWarehouseError) as raised:
        make_reader(datastore="null-key-hash")
    message = str(raised.value)
    assert "the null-key-hash warehouse" in message
    assert "3 rows have a NULL key hash" in message
