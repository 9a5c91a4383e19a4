"""The DuckDB warehouse: sources (table, query, files), partitions, scratch data, errors."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from faucet_core import PermanentWarehouseError, Plan, Reader
from faucet_core.config import RetryConfig
from faucet_core.fetch import ChunkFetcher
from faucet_core.planner import plan_source
from faucet_core.preprocessing.stats import StatsRequest, stats_from_tables
from faucet_core.sql import READ_AS
from faucet_core.warehouse import PlanRequest, ScratchDataMissing, SourceSpec, SplitSpec
from faucet_duckdb import DuckDBConnection, DuckDBWarehouse
from tests.conftest import (
    ROWS,
    ReadCounter,
    assert_fitted_leaving_nan_out,
    duckdb_file,
    duckdb_scratch_copies,
    epoch_ids,
    write_table,
)

MakeReader = Callable[..., Reader]


def test_query_source(make_reader: MakeReader) -> None:
    reader = make_reader(table_name=None, query="SELECT id, x1, label FROM t WHERE id < 1200")
    assert reader.feature_columns == ["id", "x1"]
    assert sorted(epoch_ids(reader)) == list(range(1200))


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_file_sources(make_reader: MakeReader, table_path: Path, tmp_path: Path, kind: str) -> None:
    files = []
    with duckdb.connect(str(table_path), read_only=True) as db:
        for part in range(2):
            path = tmp_path / f"part{part}.{kind}"
            db.execute(f"COPY (SELECT * FROM t WHERE id % 2 = {part}) TO '{path}' (FORMAT {kind})")
            files.append(str(path))
    reader = make_reader(database=None, table_name=None, files=files, test_split_percent=25)
    assert reader.plan.request.source.describe() == f"files {files[0]}, {files[1]}"
    train, evaluation = epoch_ids(reader), epoch_ids(reader, eval=True)
    assert sorted(train + evaluation) == list(range(ROWS))
    same_split = make_reader(test_split_percent=25)  # the table the files came from
    assert sorted(epoch_ids(same_split, eval=True)) == sorted(evaluation)


def test_missing_file_is_named(make_reader: MakeReader, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.parquet")
    with pytest.raises(PermanentWarehouseError, match=r"nope\.parquet"):
        make_reader(database=None, table_name=None, files=[missing])


def test_ds_keeps_only_that_partition(make_reader: MakeReader, partitioned_path: Path) -> None:
    reader = make_reader(database=str(partitioned_path), ds="2024-01-02")
    ids = epoch_ids(reader)
    assert sorted(ids) == [i for i in range(3_000) if i % 3 == 1]


def test_ds_with_no_rows_is_an_error(make_reader: MakeReader, partitioned_path: Path) -> None:
    with pytest.raises(PermanentWarehouseError, match="no rows for ds='2023-12-31'"):
        make_reader(database=str(partitioned_path), ds="2023-12-31")


def test_ds_needs_a_partition_column(make_reader: MakeReader) -> None:
    with pytest.raises(PermanentWarehouseError, match="no partition column 'day'"):
        make_reader(ds="2024-01-01", partition_column="day")


@pytest.mark.parametrize("name", ["t; DROP TABLE t", "t WHERE 1=1", "a.b.c.d", '"t"'])
def test_table_names_are_identifiers_not_sql(make_reader: MakeReader, name: str) -> None:
    with pytest.raises(PermanentWarehouseError) as raised:
        make_reader(table_name=name)
    assert str(raised.value) == (
        f"source.table {name!r} is not a table name ([catalog.][schema.]table)"
    )


@pytest.mark.parametrize("name", ["main.t", "w.main.t"])
def test_a_table_is_named_with_its_schema_and_catalog(make_reader: MakeReader, name: str) -> None:
    """Up to three parts: catalog (the database file's stem), schema, table."""
    assert make_reader(table_name=name).rows() == ROWS


def test_a_database_file_named_as_duckdbs_own_catalog_opens(
    make_reader: MakeReader, table_path: Path, tmp_path: Path
) -> None:
    """``memory`` is the in-memory database's name: such a file is attached under another."""
    shutil.copy(table_path, tmp_path / "memory.duckdb")
    reader = make_reader(database=str(tmp_path / "memory.duckdb"))
    assert sorted(epoch_ids(reader)) == list(range(ROWS))


def test_unknown_columns_are_named(make_reader: MakeReader) -> None:
    with pytest.raises(PermanentWarehouseError, match=r"source.columns \['nope'\]"):
        make_reader(columns=["id", "nope", "label"])
    with pytest.raises(PermanentWarehouseError, match=r"source.split_key \['nokey'\]"):
        make_reader(split_key="nokey")


def test_split_membership_is_pinned(make_reader: MakeReader) -> None:
    """Guards against a DuckDB upgrade silently moving rows between train and eval."""
    reader = make_reader(
        database=None,
        table_name=None,
        query="SELECT i AS id, 0 AS label FROM range(40) r(i)",
        test_split_percent=20,
    )
    assert sorted(epoch_ids(reader, eval=True)) == [0, 4, 5, 10, 26, 31, 35]


def test_changing_the_database_file_invalidates_the_cache(
    make_reader: MakeReader, read_counter: ReadCounter, tmp_path: Path
) -> None:
    path = write_table(tmp_path / "mutable.duckdb", 2_000)
    first = make_reader(datastore="counting-duckdb", database=str(path))
    epoch_ids(first)
    first.close()
    reads = read_counter.reads
    with duckdb.connect(str(path)) as db:
        db.execute("UPDATE t SET x1 = -1 WHERE id = 5")
    second = make_reader(datastore="counting-duckdb", database=str(path), output="numpy")
    epoch_ids_numpy = []
    second.prep_for_epoch()
    while (batch := second.get_batch()) is not None:
        epoch_ids_numpy.extend(batch["features"][:, 1].tolist())
    assert read_counter.reads == reads + len(second.plan.chunks["train"])
    assert -1 in epoch_ids_numpy


def _plan(warehouse: DuckDBWarehouse, chunk_size: int = 1_500) -> Plan:
    request = PlanRequest(SourceSpec(table="t"), SplitSpec(("id",), 10.0), chunk_size)
    return plan_source(warehouse, request, warehouse.data_version(request.source))


def test_close_removes_the_scratch_data_it_made(table_path: Path, tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(DuckDBConnection(database=table_path, scratch_dir=tmp_path))
    plan = _plan(warehouse)
    warehouse.materialize(plan)
    made = list(tmp_path.iterdir())
    warehouse.materialize(plan)  # idempotent
    assert list(tmp_path.iterdir()) == made
    chunk = plan.chunks["eval"][0]
    assert warehouse.read_buckets(plan, chunk).num_rows == chunk.rows
    warehouse.close()
    assert not list(tmp_path.iterdir())


def test_chunks_are_readable_by_another_instance(table_path: Path, tmp_path: Path) -> None:
    planner = DuckDBWarehouse(DuckDBConnection(database=table_path, scratch_dir=tmp_path))
    other = DuckDBWarehouse(DuckDBConnection(database=table_path, scratch_dir=tmp_path))
    try:
        plan = _plan(planner)
        planner.materialize(plan)
        other.materialize(plan)  # finds the planner's copy
        chunk = plan.chunks["train"][1]
        first = other.read_buckets(plan, chunk)
        assert first.num_rows == chunk.rows
        assert first.equals(planner.read_buckets(plan, chunk))
        other.close()
        assert list(tmp_path.iterdir())  # only the instance that made it removes it
    finally:
        planner.close()
        other.close()


def test_a_vanished_scratch_folder_is_made_again(
    table_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    connection = DuckDBConnection(database=table_path, scratch_dir=tmp_path)
    planner = DuckDBWarehouse(connection)
    plan = _plan(planner)
    planner.materialize(plan)
    worker = DuckDBWarehouse(connection)  # e.g. a DataLoader worker's
    fetcher = ChunkFetcher(plan, lambda: worker, None, RetryConfig(initial_backoff=0))
    fetcher.materialize()
    planner.close()  # the process that made it finished first
    assert not duckdb_scratch_copies(tmp_path)
    chunk = plan.chunks["train"][0]
    try:
        with caplog.at_level("INFO"):
            fetched = fetcher.fetch(chunk)
        assert fetched.table.num_rows == chunk.rows
        assert fetched.attempts == 2
        (said,) = [m for m in caplog.messages if m.startswith("materializing")]
        assert said.startswith(f"materializing duckdb again for {chunk.describe()}: ")
        assert not said.endswith(": None")  # and why
    finally:
        worker.close()
    assert not list(tmp_path.iterdir())


def test_the_copy_of_a_table_of_many_chunks_stays_within_the_memory_limit(
    tmp_path: Path,
) -> None:
    """200 chunks of a 24-column table copied under a 32 MB memory limit: DuckDB's
    partitioned COPY into a Parquet folder per chunk ran out of memory here; the copy
    from one scan grouped by chunk does not."""
    path = tmp_path / "wide.duckdb"
    features = ", ".join(f"random() AS x{i}" for i in range(22))
    rows = f"SELECT i AS id, {features}, i % 2 AS label FROM range(200000) r(i)"
    with duckdb.connect(str(path)) as db:
        db.execute(f"CREATE TABLE t AS {rows}")
    warehouse = DuckDBWarehouse(
        DuckDBConnection(database=path, memory_limit="32MB", scratch_dir=tmp_path / "scratch")
    )
    try:
        plan = _plan(warehouse, chunk_size=1_000)
        assert len(plan.every_chunk) >= 200
        warehouse.materialize(plan)
        ids = [warehouse.read_buckets(plan, c).column("id") for c in plan.every_chunk]
    finally:
        warehouse.close()
    assert sorted(pa.chunked_array(ids).to_pylist()) == list(range(200_000))


def _missing(entry: Path) -> None:
    entry.unlink()


def _flipped(entry: Path) -> None:
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0xFF
    entry.write_bytes(bytes(data))


def test_a_scratch_dir_where_no_folder_can_be_made_is_named(
    table_path: Path, tmp_path: Path
) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    with pytest.raises(PermanentWarehouseError, match=r"connection\.scratch_dir: cannot make"):
        DuckDBWarehouse(DuckDBConnection(database=table_path, scratch_dir=not_a_folder))


#: Copies the test table's plan in a scratch folder, says so, then waits to be killed.
_COPIER = """
import sys
from pathlib import Path
from faucet_core.planner import plan_source
from faucet_core.warehouse import PlanRequest, SourceSpec, SplitSpec
from faucet_duckdb import DuckDBConnection, DuckDBWarehouse
connection = DuckDBConnection(database=Path(sys.argv[1]), scratch_dir=Path(sys.argv[2]))
warehouse = DuckDBWarehouse(connection)
request = PlanRequest(SourceSpec(table="t"), SplitSpec(("id",), 10.0), 1_500)
warehouse.materialize(plan_source(warehouse, request, warehouse.data_version(request.source)))
print("copied", flush=True)
sys.stdin.read()
"""


@pytest.mark.skipif(sys.platform == "win32", reason="no file locks to hold folders by")
def test_folders_a_killed_process_left_are_deleted_by_the_next_warehouse(
    table_path: Path, tmp_path: Path
) -> None:
    connection = DuckDBConnection(database=table_path, scratch_dir=tmp_path)
    live = DuckDBWarehouse(connection)
    try:
        live.materialize(_plan(live, chunk_size=1_000))
        live_made = set(tmp_path.iterdir())  # its spill folder and copy
        copier = subprocess.Popen(
            [sys.executable, "-c", _COPIER, str(table_path), str(tmp_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert copier.stdout is not None
            assert copier.stdout.readline() == "copied\n"
        finally:
            copier.kill()  # SIGKILL: it cannot delete anything
            copier.wait()
        left = set(tmp_path.iterdir()) - live_made
        assert len(left) == 2  # the killed process's spill folder and copy
        DuckDBWarehouse(connection).close()
        assert set(tmp_path.iterdir()) == live_made  # its process lives
    finally:
        live.close()
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("damage", "said"),
    [(_missing, "it has no file of {chunk}"), (_flipped, "its file of {chunk} is damaged")],
    ids=["missing", "damaged"],
)
def test_a_copy_missing_a_chunks_file_or_with_a_damaged_one_is_deleted_and_made_again(
    table_path: Path, tmp_path: Path, damage: Callable[[Path], None], said: str
) -> None:
    warehouse = DuckDBWarehouse(DuckDBConnection(database=table_path, scratch_dir=tmp_path))
    try:
        plan = _plan(warehouse)
        warehouse.materialize(plan)
        chunk = plan.chunks["train"][2]
        (copy,) = duckdb_scratch_copies(tmp_path)
        (entry,) = copy.glob(f"{plan.chunk_key(chunk)}.*.arrow")
        damage(entry)
        message = re.escape(said.format(chunk=chunk.describe()))
        with pytest.raises(ScratchDataMissing, match=message):
            warehouse.read_buckets(plan, chunk)
        assert not copy.exists()  # not read again as if whole
        warehouse.materialize(plan)
        assert warehouse.read_buckets(plan, chunk).num_rows == chunk.rows
    finally:
        warehouse.close()


def test_a_scan_of_some_chunks_reads_exactly_their_rows(make_reader: MakeReader) -> None:
    reader = make_reader(test_split_percent=20)
    warehouse, plan = reader.stream.warehouse(), reader.plan
    train = plan.chunks["train"]
    picked = [train[0], train[2], plan.chunks["eval"][0]]
    warehouse.materialize(plan)  # for read_buckets
    scanned = warehouse.scan(plan, picked)
    assert scanned is not None
    ids = [i for batch in scanned for i in batch.column("id").to_pylist()]
    expected = [i for c in picked for i in warehouse.read_buckets(plan, c).column("id").to_pylist()]
    assert sorted(ids) == sorted(expected) and len(expected) == sum(c.rows for c in picked)
    nothing = warehouse.scan(plan, [])
    assert nothing is not None and sum(batch.num_rows for batch in nothing) == 0


def test_statistics_read_columns_as_the_plan_says_as_its_chunks_are(
    table_path: Path, tmp_path: Path
) -> None:
    """A plan's schema may say how a column is read (as PostgreSQL plans do for types Arrow
    lacks): the warehouse's statistics read it so too, as the train chunks serve it."""
    warehouse = DuckDBWarehouse(DuckDBConnection(database=table_path, scratch_dir=tmp_path))
    try:
        plan = _plan(warehouse)
        assert plan.schema is not None
        index = plan.schema.get_field_index("x1")
        negated = plan.schema.field(index).with_metadata({READ_AS: b"-{c}"})
        plan = dataclasses.replace(plan, schema=plan.schema.set(index, negated))
        request = StatsRequest(numeric=("x1",), medians=("x1",))
        stats = warehouse.column_stats(plan, request)
        scanned = warehouse.scan(plan, plan.chunks["train"])
        assert stats is not None and scanned is not None
        served = stats_from_tables([pa.Table.from_batches(list(scanned))], request)
    finally:
        warehouse.close()
    x1, expected = stats.columns["x1"], served.columns["x1"]
    assert stats.rows == served.rows == plan.rows("train")
    exact = ("count", "min", "max", "median")
    assert [getattr(x1, name) for name in exact] == [getattr(expected, name) for name in exact]
    assert x1.max is not None and x1.max <= 0  # x1 is in [0, 1): read negated
    assert x1.mean == pytest.approx(expected.mean) and x1.std == pytest.approx(expected.std)


def test_statistics_take_nan_as_missing_as_the_train_chunks_do(make_reader: MakeReader) -> None:
    """A float column holding NaN is fitted in the warehouse as from the train chunks, NaN
    left out: not as a column of unknown mean and spread, fitted as constant."""
    query = "SELECT id, CASE WHEN id % 7 = 0 THEN 'NaN'::DOUBLE ELSE x1 END AS w, label FROM t"
    settings = {"table_name": None, "query": query, "test_split_percent": 20}
    reader = make_reader(**settings, preprocessing={"auto": True, "exclude": ["id"]})
    batches = make_reader(**settings, output="arrow").iter_epoch()
    train = pa.concat_tables(batch["features"] for batch in batches)
    assert_fitted_leaving_nan_out(reader, "w", train.column("w").to_numpy())


class BilledDuckDB(DuckDBWarehouse):
    """DuckDB billing each query as a BigQuery job of 100 bytes would be."""

    def query(self, sql: str, params: Sequence[Any]) -> pa.Table:
        self.costs.query_jobs += 1
        self.costs.bytes_billed += 100
        return super().query(sql, params)


def test_the_counts_stats_are_what_the_counting_cost(table_path: Path, tmp_path: Path) -> None:
    """What the warehouse spent before the counting is left out; costs it has none of
    are not listed."""
    warehouse = BilledDuckDB(DuckDBConnection(database=table_path, scratch_dir=tmp_path))
    try:
        warehouse.query("SELECT 1", [])
        warehouse.query("SELECT 2", [])
        request = PlanRequest(SourceSpec(table="t"), SplitSpec(("id",), 10.0), 1_500)
        counts = warehouse.count_buckets(request)
        jobs = warehouse.costs.query_jobs - 2
    finally:
        warehouse.close()
    assert jobs >= 1
    assert counts.stats == {"query_jobs": jobs, "bytes_billed": 100 * jobs}


def test_list_sizes_are_measured_as_the_lists_are_read(tmp_path: Path) -> None:
    """Lists of one size once read (a column read through an expression that cuts them)
    are vectors, each list column measured for itself."""
    database = duckdb_file(
        tmp_path / "lists.duckdb",
        "CREATE TABLE l AS SELECT i AS id, range(2 + i % 3)::DOUBLE[] AS cut, "
        "[i, i + 1, i + 2]::DOUBLE[] AS three, range(1 + i % 2)::DOUBLE[] AS ragged "
        "FROM range(50) r(i)",
    )
    warehouse = DuckDBWarehouse(DuckDBConnection(database=database, scratch_dir=tmp_path))
    try:
        request = PlanRequest(SourceSpec(table="l"), SplitSpec(("id",), 10.0), 100)
        schema = warehouse.columns(request)
        index = schema.get_field_index("cut")
        schema = schema.set(index, schema.field(index).with_metadata({READ_AS: b"{c}[1:2]"}))
        planned = warehouse.uniform_lists(request, schema)
    finally:
        warehouse.close()
    lists = pa.list_(pa.float64())
    assert planned.field("cut").type == pa.list_(pa.float64(), 2)
    assert planned.field("three").type == pa.list_(pa.float64(), 3)
    assert planned.field("ragged").type == lists
