"""The BigQuery warehouse, through Google's client libraries, against bqemulator."""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from faucet_bigquery.warehouse import BigQueryWarehouse, check_bytes_budget
from faucet_core import (
    ChunkSpec,
    ConfigError,
    PermanentWarehouseError,
    Plan,
    Reader,
    Warehouse,
    hookimpl,
    layout,
)
from faucet_core.warehouse import SourceSpec
from tests.bqemulator import BigQueryEmulator
from tests.conftest import BQ_ROWS_PER_DAY, ReadCounter, assert_fitted_leaving_nan_out, epoch_ids
from tests.proxies import HttpProxy, HttpRule, StorageReadProxy, TcpProxy, google_error

MakeReader = Callable[..., Reader]


def _jobs(emulator: BigQueryEmulator) -> int:
    return sum(1 for _ in emulator.client().list_jobs(all_users=True))


def test_every_row_of_the_partition_once_per_epoch(make_bq_reader: Callable[..., Reader]) -> None:
    reader = make_bq_reader(ds="2024-01-02", epochs=2, test_split_percent=20)
    day = {i for i in range(3 * BQ_ROWS_PER_DAY) if i % 3 == 1}
    for _ in range(2):
        train, evaluation = epoch_ids(reader), epoch_ids(reader, eval=True)
        assert len(train) == len(set(train)) and len(evaluation) == len(set(evaluation))
        assert set(train) | set(evaluation) == day  # rows of other days never appear
        assert not set(train) & set(evaluation)
    fetched = [(m.chunks_fetched, m.chunks_cached) for m in reader.metrics if m.split == "train"]
    assert fetched[1] == (0, fetched[0][0])  # the second epoch came from the cache


def test_split_is_stable_across_readers_and_chunk_sizes(
    make_bq_reader: Callable[..., Reader],
) -> None:
    first = make_bq_reader(test_split_percent=25, chunk_size=700)
    second = make_bq_reader(test_split_percent=25, chunk_size=4_000, use_cache=False)
    assert set(epoch_ids(first, eval=True)) == set(epoch_ids(second, eval=True))
    assert 0.2 < first.rows("eval") / (3 * BQ_ROWS_PER_DAY) < 0.3


def test_storage_read_and_rest_paging_give_the_same_stream(
    make_bq_reader: Callable[..., Reader],
) -> None:
    storage = make_bq_reader(seed=3, use_cache=False)
    rest = make_bq_reader(seed=3, use_cache=False, use_storage_api=False)
    assert epoch_ids(storage) == epoch_ids(rest)


class CountingReads(BigQueryWarehouse):
    """BigQuery, counting its scans of the whole scratch table and its chunk reads."""

    name = "counting-bigquery"
    scans: ClassVar[ReadCounter] = ReadCounter()
    reads: ClassVar[ReadCounter] = ReadCounter()

    def scan(
        self, plan: Plan, chunks: Sequence[ChunkSpec] | None = None
    ) -> Iterator[pa.RecordBatch] | None:
        if chunks is None:
            type(self).scans.add()
        return super().scan(plan, chunks)

    def read_buckets(self, plan: Plan, chunk: ChunkSpec) -> pa.Table:
        type(self).reads.add()
        return super().read_buckets(plan, chunk)


class _CountingPlugin:
    @hookimpl
    def register_warehouses(self, register: Callable[[type[Warehouse]], None]) -> None:
        register(CountingReads)


def test_one_read_session_fills_the_cache(
    make_bq_reader: Callable[..., Reader],
    bq_events: str,
    register: Callable[[object], None],
) -> None:
    register(_CountingPlugin())
    CountingReads.scans, CountingReads.reads = ReadCounter(), ReadCounter()
    reader = make_bq_reader(datastore="counting-bigquery", test_split_percent=20, epochs=2)
    ids = epoch_ids(reader) + epoch_ids(reader, eval=True)
    assert sorted(ids) == list(range(3 * BQ_ROWS_PER_DAY))
    assert sorted(epoch_ids(reader)) == sorted(ids[: reader.rows("train")])
    # One session streams the scratch table into the cache; no chunk is read by itself
    # with read_buckets (the first chunk of a pass may come from a session of its own).
    assert (CountingReads.scans.reads, CountingReads.reads.reads) == (1, 0)
    assert reader.metrics[-1].chunks_cached == len(reader.plan.chunks["train"])


def test_query_jobs_do_not_grow_with_chunks_or_epochs(
    make_bq_reader: Callable[..., Reader], bigquery_emulator: BigQueryEmulator
) -> None:
    added = []
    for chunk_size, epochs in ((300, 3), (5_000, 1)):
        before = _jobs(bigquery_emulator)
        reader = make_bq_reader(
            chunk_size=chunk_size, epochs=epochs, use_cache=False, ds="2024-01-03"
        )
        for _ in range(epochs):
            epoch_ids(reader)
        added.append(_jobs(bigquery_emulator) - before)
    # Counting, then copying the split once: a second chunking reuses the scratch table.
    assert added == [2, 1]


def test_a_query_source(make_bq_reader: Callable[..., Reader], bq_events: str) -> None:
    reader = make_bq_reader(
        table_name=None, query=f"SELECT id, x, label FROM {bq_events} WHERE id < 500"
    )
    assert reader.plan.columns == ("id", "x", "label")
    assert sorted(epoch_ids(reader)) == list(range(500))


def test_planning_cost_is_reported(
    make_bq_reader: Callable[..., Reader], bigquery_emulator: BigQueryEmulator
) -> None:
    # The copy and its count, or the count alone of a copy an earlier test made.
    before = _jobs(bigquery_emulator)
    stats = make_bq_reader(use_cache=False).plan.stats
    assert stats["query_jobs"] == _jobs(bigquery_emulator) - before >= 1


def test_the_scratch_table_is_clustered_unordered_and_outlives_the_reader(
    make_bq_reader: Callable[..., Reader], bigquery_emulator: BigQueryEmulator
) -> None:
    client = bigquery_emulator.client()
    before = {job.job_id for job in client.list_jobs(all_users=True)}
    reader = make_bq_reader(ds="2024-01-01", test_split_percent=10, use_cache=False)
    epoch_ids(reader)
    reader.close()
    queries = [job.query for job in client.list_jobs(all_users=True) if job.job_id not in before]
    (copy,) = [q for q in queries if q.startswith("CREATE TABLE")]
    assert "CLUSTER BY __faucet_eval, __faucet_bucket" in copy
    assert "expiration_timestamp" in copy
    assert "ORDER BY" not in copy  # a global sort fails on large tables
    scratch = copy.split("`")[1]
    assert client.get_table(scratch).num_rows == BQ_ROWS_PER_DAY  # kept for other processes


def test_a_missing_table_is_named(make_bq_reader: Callable[..., Reader]) -> None:
    with pytest.raises(PermanentWarehouseError, match=r"faucet_test\.nope"):
        make_bq_reader(table_name="faucet_test.nope")


@pytest.mark.parametrize("name", ["faucet_test.events; DROP TABLE x", "a.b.c.d", "`x`.y"])
def test_table_names_are_validated(make_bq_reader: Callable[..., Reader], name: str) -> None:
    with pytest.raises(PermanentWarehouseError, match="not a BigQuery table name"):
        make_bq_reader(table_name=name)


def test_a_ds_without_rows_or_malformed_is_a_clear_error(
    make_bq_reader: Callable[..., Reader],
) -> None:
    with pytest.raises(PermanentWarehouseError, match="no rows for ds='2023-05-05'"):
        make_bq_reader(ds="2023-05-05")
    with pytest.raises(PermanentWarehouseError, match=r"ds '2024-13-45' is not a date"):
        make_bq_reader(ds="2024-13-45")


def test_bad_credential_files_are_named(
    make_bq_reader: Callable[..., Reader], tmp_path: Path
) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(ConfigError, match=r"connection\.credential_path: .*missing\.json"):
        make_bq_reader(anonymous=False, credential_path=str(missing))
    not_json = tmp_path / "key.json"
    not_json.write_text("not json")
    with pytest.raises(ConfigError, match="is not JSON"):
        make_bq_reader(anonymous=False, credential_path=str(not_json))
    bad_key = tmp_path / "service-account.json"
    key = {"type": "service_account", "client_email": "a@b.c", "private_key": "not a key"}
    bad_key.write_text(json.dumps(key))
    with pytest.raises(PermanentWarehouseError, match=r"service-account\.json"):
        make_bq_reader(anonymous=False, credential_path=str(bad_key))


@pytest.fixture
def breaking_proxy(bigquery_emulator: BigQueryEmulator) -> Iterator[TcpProxy]:
    proxy = TcpProxy(bigquery_emulator.grpc, cut_after=20_000)
    yield proxy
    proxy.close()


def test_a_broken_read_stream_is_retried(
    make_bq_reader: Callable[..., Reader], breaking_proxy: TcpProxy
) -> None:
    reader = make_bq_reader(
        read_api_endpoint=breaking_proxy.address,
        chunk_size=9_000,
        use_cache=False,
        initial_backoff=0,
    )
    assert sorted(epoch_ids(reader)) == list(range(3 * BQ_ROWS_PER_DAY))
    assert breaking_proxy.broken == 1


def test_bytes_budget_guard() -> None:
    check_bytes_budget(10, 10, "reading t")
    check_bytes_budget(10, None, "reading t")
    with pytest.raises(PermanentWarehouseError, match="11 bytes, over maximum_bytes_billed 10"):
        check_bytes_budget(11, 10, "reading t")


def test_preprocessing_is_fitted_in_one_query_on_the_train_split(
    make_bq_reader: Callable[..., Reader],
) -> None:
    train = [
        b["features"]
        for b in make_bq_reader(test_split_percent=31, output="arrow", columns=["id", "x", "ds",
                                                                                  "label"],
                                ds="2024-01-01").iter_epoch()
    ]  # fmt: skip
    x = np.concatenate([t.column("x").to_numpy() for t in train])
    reader = make_bq_reader(
        test_split_percent=31, ds="2024-01-01", columns=["id", "x", "ds", "label"],
        preprocessing={"auto": True, "exclude": ["id"]}, output="numpy",
    )  # fmt: skip
    assert reader.preprocessor is not None and reader.preprocessor.fitted_on["query_jobs"] == 1
    transforms = {t.name: t for t in reader.preprocessor.features}  # type: ignore[union-attr]
    assert transforms["x"].center == pytest.approx(x.mean(), abs=1e-9)
    assert transforms["x"].width == pytest.approx(x.std(), abs=1e-9)
    assert transforms["ds"].kind == "date"
    features = next(reader.iter_epoch())["features"]
    assert features.shape[1] == len(reader.preprocessor.feature_names)  # type: ignore[union-attr]


def test_preprocessing_takes_nan_as_missing_as_the_train_chunks_do(
    make_bq_reader: Callable[..., Reader], bq_events: str
) -> None:
    """A float column holding NaN is fitted in the query with NaN left out, as from the
    train chunks: not as a column of unknown mean and spread, fitted as constant."""
    query = (
        f"SELECT id, IF(MOD(id, 7) = 0, CAST('NaN' AS FLOAT64), x) AS w, label "
        f"FROM {bq_events} WHERE id < 600"
    )
    settings = {"table_name": None, "query": query, "test_split_percent": 20}
    reader = make_bq_reader(**settings, preprocessing={"auto": True, "exclude": ["id"]})
    batches = make_bq_reader(**settings, output="arrow").iter_epoch()
    values = np.concatenate([batch["features"].column("w").to_numpy() for batch in batches])
    assert_fitted_leaving_nan_out(reader, "w", values)


# One billed scan: the copy is made while planning, and the plan counts it


def _source_jobs(client: object, before: set[str], table: str) -> list[str]:
    """The queries of the jobs run since ``before`` that read ``table``."""
    jobs = client.list_jobs(all_users=True)  # type: ignore[attr-defined]
    return [j.query for j in jobs if j.job_id not in before and table in (j.query or "")]


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache fill", "chunk reads"])
def test_rows_loaded_after_planning_are_not_served_and_the_source_is_scanned_once(
    make_bq_reader: MakeReader, bigquery_emulator: BigQueryEmulator, use_cache: bool
) -> None:
    client = bigquery_emulator.client()
    table = f"faucet_test.growing_{int(use_cache)}"
    client.query(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM faucet_test.events").result()
    before = {job.job_id for job in client.list_jobs(all_users=True)}
    reader = make_bq_reader(table_name=table, use_cache=use_cache, epochs=2)
    (copy,) = _source_jobs(client, before, table)  # the one job that reads the source
    assert copy.startswith("CREATE TABLE")
    planned = list(range(3 * BQ_ROWS_PER_DAY))
    start = 3 * BQ_ROWS_PER_DAY
    for late in (start, start + 100):  # before the first read, then between epochs
        client.query(
            f"INSERT INTO {table} SELECT i, 0.5, 0, DATE '2024-01-01' "
            f"FROM UNNEST(GENERATE_ARRAY({late}, {late + 99})) AS i"
        ).result()
        assert sorted(epoch_ids(reader) + epoch_ids(reader, eval=True)) == planned
    # Nothing else read the source: no count of it, no later copy.
    kinds = sorted(q.split()[0] for q in _source_jobs(client, before, table))
    assert kinds == ["CREATE", "INSERT", "INSERT"]


def test_a_warm_rerun_runs_no_job(
    make_bq_reader: MakeReader, bigquery_emulator: BigQueryEmulator, tmp_path: Path
) -> None:
    cache = str(tmp_path / "shared-cache")
    epoch_ids(make_bq_reader(cache_dir=cache, ds="2024-01-02"))
    before = _jobs(bigquery_emulator)
    rerun = make_bq_reader(cache_dir=cache, ds="2024-01-02")
    assert rerun.plan_origin == "cache"
    assert len(epoch_ids(rerun)) == rerun.rows("train")
    assert _jobs(bigquery_emulator) == before


def test_a_query_sources_copy_is_named_after_its_plan_by_a_copy_job(
    make_bq_reader: MakeReader, bigquery_emulator: BigQueryEmulator, bq_events: str
) -> None:
    client = bigquery_emulator.client()
    query = f"SELECT id, x, label FROM {bq_events} WHERE id >= 8000"
    reader = make_bq_reader(table_name=None, query=query, use_cache=False)
    assert reader.plan.data_version is None and not reader.plan.state  # named after its rows
    scratch = reader.stream.warehouse().scratch_name(reader.plan)
    assert scratch == f"faucet_{reader.plan.rows_id}"
    tables = [t.table_id for t in client.list_tables("faucet_scratch")]
    assert scratch in tables and not [t for t in tables if t.startswith("faucet_tmp_")]
    assert sorted(epoch_ids(reader)) == list(range(8000, 3 * BQ_ROWS_PER_DAY))


# Least privilege, sources without a version, settings that cannot work

DENIED = google_error(
    403, "accessDenied",
    "Access Denied: Project test-proj: User does not have bigquery.datasets.create "
    "permission in project test-proj.",
)  # fmt: skip


def test_an_account_that_may_not_create_datasets_uses_the_scratch_dataset_there_is(
    make_bq_reader: MakeReader, bigquery_emulator: BigQueryEmulator
) -> None:
    make_bq_reader().close()  # the scratch dataset exists
    proxy = HttpProxy(bigquery_emulator.rest, [HttpRule("POST", r"/datasets(\?|$)", 403, DENIED)])
    try:
        reader = make_bq_reader(api_endpoint=proxy.url, test_split_percent=13, use_cache=False)
        served = epoch_ids(reader) + epoch_ids(reader, eval=True)
        assert sorted(served) == list(range(3 * BQ_ROWS_PER_DAY))
        assert not [path for method, path in proxy.requests if method == "POST" and
                    "/datasets?" in path]  # fmt: skip
    finally:
        proxy.close()


def test_a_view_has_no_data_version_and_is_planned_again(
    make_bq_reader: MakeReader, bigquery_emulator: BigQueryEmulator, tmp_path: Path
) -> None:
    client = bigquery_emulator.client()
    client.query(
        "CREATE OR REPLACE TABLE faucet_test.base AS SELECT * FROM faucet_test.events"
    ).result()
    client.query(
        "CREATE OR REPLACE VIEW faucet_test.recent AS "
        "SELECT id, x, label FROM faucet_test.base WHERE id >= 8000"
    ).result()
    cache = str(tmp_path / "cache")
    first = make_bq_reader(table_name="faucet_test.recent", cache_dir=cache)
    assert first.plan.data_version is None
    assert sorted(epoch_ids(first)) == list(range(8000, 9000))
    client.query(
        "INSERT INTO faucet_test.base SELECT i, 0.5, 0, DATE '2024-01-01' "
        "FROM UNNEST(GENERATE_ARRAY(9000, 9049)) AS i"
    ).result()
    second = make_bq_reader(table_name="faucet_test.recent", cache_dir=cache)
    assert second.plan_origin == "warehouse"
    assert sorted(epoch_ids(second)) == list(range(8000, 9050))


@pytest.mark.parametrize(
    "metadata",
    [
        {"type": "MATERIALIZED_VIEW"},
        {"type": "EXTERNAL"},
        {"streamingBuffer": {"estimatedRows": "12", "estimatedBytes": "480",
                             "oldestEntryTime": "1733390000000"}},
    ],
    ids=["materialized view", "external table", "streaming buffer"],
)  # fmt: skip
def test_sources_whose_data_changes_under_the_same_metadata_have_no_version(
    bigquery_emulator: BigQueryEmulator, bq_events: str, metadata: dict[str, object]
) -> None:
    # As BigQuery's tables.get describes them; the emulator has no such tables.
    rule = HttpRule("GET", r"/tables/events\?", rewrite=lambda table: {**table, **metadata})
    proxy = HttpProxy(bigquery_emulator.rest, [rule])
    settings = {**bigquery_emulator.settings(), "api_endpoint": proxy.url}
    warehouse = BigQueryWarehouse(BigQueryWarehouse.connection_model(**settings))
    try:
        assert warehouse.data_version(SourceSpec(table=bq_events)) is None
        plain = BigQueryWarehouse(
            BigQueryWarehouse.connection_model(**bigquery_emulator.settings())
        )
        assert plain.data_version(SourceSpec(table=bq_events)) is not None
        plain.close()
    finally:
        warehouse.close()
        proxy.close()


def test_scratch_tables_that_expire_within_the_hour_are_refused(
    make_bq_reader: MakeReader,
) -> None:
    # BigQuery's least default table expiration is one hour.
    with pytest.raises(ConfigError, match=r"connection\.scratch_expiration_hours"):
        make_bq_reader(scratch_expiration_hours=0.5)


def test_ds_on_a_timestamp_column_of_a_query_keeps_that_day(
    make_bq_reader: MakeReader, bigquery_emulator: BigQueryEmulator
) -> None:
    client = bigquery_emulator.client()
    client.query(
        "CREATE OR REPLACE TABLE faucet_test.clicks AS SELECT i AS id, CAST(MOD(i, 2) AS INT64) "
        "AS label, TIMESTAMP_ADD(TIMESTAMP '2024-01-01 00:00:00+00', INTERVAL i * 37 MINUTE) "
        "AS at FROM UNNEST(GENERATE_ARRAY(0, 299)) AS i"
    ).result()
    reader = make_bq_reader(table_name=None, query="SELECT * FROM faucet_test.clicks",
                            partition_column="at", ds="2024-01-02")  # fmt: skip
    assert sorted(epoch_ids(reader)) == [i for i in range(300) if 24 * 60 <= i * 37 < 48 * 60]


# Storage Read streams: several at once, as long as they take, resumed where cut


class StreamCounting(BigQueryWarehouse):
    """BigQuery, recording the name of every Storage Read stream it reads."""

    name = "stream-counting-bigquery"
    streams: ClassVar[list[str]] = []

    def _stream_batches(
        self, name: str, opened: list[object], schema: pa.Schema
    ) -> Iterator[pa.RecordBatch]:
        type(self).streams.append(name)
        return super()._stream_batches(name, opened, schema)


def _streams_per_session() -> collections.Counter[str]:
    """How many streams :class:`StreamCounting` read of each read session."""
    return collections.Counter(name.rsplit("/", 1)[0] for name in StreamCounting.streams)


class _StreamCountingPlugin:
    @hookimpl
    def register_warehouses(self, register: Callable[[type[Warehouse]], None]) -> None:
        register(StreamCounting)


WIDE_ROWS = 30_000


@pytest.fixture(scope="module")
def bq_wide(bigquery_emulator: BigQueryEmulator, bq_events: str) -> str:
    """A table of over 1 MB, which the emulator (as BigQuery) reads in several streams."""
    bigquery_emulator.client().query(
        "CREATE OR REPLACE TABLE faucet_test.wide AS SELECT i AS id, MOD(i, 97) / 97 AS x, "
        "MOD(i, 2) AS label, REPEAT('w', 24) AS pad "
        f"FROM UNNEST(GENERATE_ARRAY(0, {WIDE_ROWS - 1})) AS i"
    ).result()
    return "faucet_test.wide"


@pytest.mark.parametrize("settings", [{"fetch_threads": 3}, {"read_streams": 3}],
                         ids=["as many as fetch threads", "read_streams"])  # fmt: skip
def test_the_cache_fill_reads_several_streams_at_once(
    make_bq_reader: MakeReader, register: Callable[[object], None], settings: dict[str, int],
    bq_wide: str,
) -> None:  # fmt: skip
    register(_StreamCountingPlugin())
    StreamCounting.streams = []
    wide = dict(table_name=bq_wide, chunk_size=10_000, test_split_percent=20, seed=5)
    reader = make_bq_reader(datastore="stream-counting-bigquery", **wide, **settings)
    served = epoch_ids(reader) + epoch_ids(reader, eval=True)
    assert sorted(served) == list(range(WIDE_ROWS))
    # The fill's session reads 3 streams or more (the pass's first chunk, read by itself
    # before the fill's scan, has a session of its own, of one stream: it is under 1 MB).
    assert max(_streams_per_session().values()) >= 3
    # Chunk reads of several streams serve what those of one do, in the same order.
    one = make_bq_reader(use_cache=False, **wide)
    assert epoch_ids(one) == epoch_ids(make_bq_reader(use_cache=False, **wide, **settings))


def test_the_cache_fill_asks_for_more_streams_than_fetch_threads(
    make_bq_reader: MakeReader, register: Callable[[object], None], bq_wide: str
) -> None:
    register(_StreamCountingPlugin())
    StreamCounting.streams = []
    reader = make_bq_reader(datastore="stream-counting-bigquery", table_name=bq_wide,
                            chunk_size=10_000, test_split_percent=20, seed=5)  # fmt: skip
    served = epoch_ids(reader) + epoch_ids(reader, eval=True)
    assert sorted(served) == list(range(WIDE_ROWS))
    # Two fetch threads; the emulator gives a session of this whole table ten streams at
    # most (and one to a chunk's, under 1 MB).
    assert reader.config.fetch_threads == 2
    assert max(_streams_per_session().values()) == 10


def test_a_plans_counts_come_back_with_the_call_that_waits_for_them(
    make_bq_reader: MakeReader, bigquery_emulator: BigQueryEmulator, bq_wide: str
) -> None:
    proxy = HttpProxy(bigquery_emulator.rest)
    try:
        # About 27,000 (split, bucket) counts, read packed into one row.
        reader = make_bq_reader(api_endpoint=proxy.url, table_name=bq_wide, chunk_size=10_000,
                                split_key=["id", "label"])  # fmt: skip
        assert len(reader.plan.chunks) > 1
        jobs = [path for method, path in proxy.requests if method == "POST" and "/jobs?" in path]
        results = [path for method, path in proxy.requests if "/queries/" in path]
        # One call per job, which waits for it and brings its rows in one page.
        assert len(results) == len(jobs) >= 1
        assert all("maxResults=0" not in path and "pageToken=" not in path for path in results)
    finally:
        proxy.close()


def test_planning_opens_the_storage_read_connection_before_any_read(
    make_bq_reader: MakeReader, bigquery_emulator: BigQueryEmulator
) -> None:
    request = make_bq_reader(use_cache=False).config.plan_request()
    reads = TcpProxy(bigquery_emulator.grpc)
    warehouse = BigQueryWarehouse(
        BigQueryWarehouse.connection_model(
            **{**bigquery_emulator.settings(), "read_api_endpoint": reads.address}
        )
    )
    try:
        warehouse.count_buckets(request)  # planning reads no row
        # Its handshakes are done by the first read, instead of waited for there.
        assert reads.accepted.wait(timeout=30)
    finally:
        warehouse.close()
        reads.close()


@pytest.mark.parametrize("eval_buckets", [0, 2_000])
def test_counts_read_packed_are_the_counts_read_row_by_row(
    bigquery_emulator: BigQueryEmulator, bq_events: str, eval_buckets: int
) -> None:
    warehouse = BigQueryWarehouse(
        BigQueryWarehouse.connection_model(**bigquery_emulator.settings())
    )
    try:
        key = warehouse.key_hash_sql(SourceSpec(table=bq_events), ["id"])
        hashed = f"SELECT {key} AS {layout.HASH_COLUMN} FROM `{bq_events}`"
        sql = warehouse.dialect.count_query(hashed, eval_buckets)
        packed = layout.bucket_counts(warehouse.query_counts(sql, []))
        by_row = layout.bucket_counts(warehouse.query(sql, []))
        order = ["is_eval", "bucket"]
        assert packed.sort_by([(c, "ascending") for c in order]).equals(
            by_row.sort_by([(c, "ascending") for c in order])
        )
        assert pc.sum(packed["row_count"]).as_py() == 3 * BQ_ROWS_PER_DAY
        assert pc.any(packed["is_eval"]).as_py() == (eval_buckets > 0)
        empty = warehouse.query_counts(f"SELECT * FROM ({sql}) AS c WHERE FALSE", [])
        assert empty.num_rows == 0 and empty.schema.names == list(layout.COUNT_COLUMNS)
    finally:
        warehouse.close()


def test_a_stream_may_take_longer_than_an_api_call(
    make_bq_reader: MakeReader, bigquery_emulator: BigQueryEmulator
) -> None:
    planner = make_bq_reader(ds="2024-01-01", chunk_size=5_000, retry_attempts=1)
    slow = TcpProxy(bigquery_emulator.grpc, rate=30_000)  # a day's rows take about 4 s
    config = planner.config
    connection = config.connection.model_copy(
        update={"read_api_endpoint": slow.address, "timeout": 2}
    )
    try:
        # Given the plan, it runs no job: the API calls left are small, the stream is not.
        with Reader(config.model_copy(update={"connection": connection}),
                    plan=planner.plan) as reader:  # fmt: skip
            assert sorted(epoch_ids(reader)) == list(range(0, 3 * BQ_ROWS_PER_DAY, 3))
        assert slow.response_bytes / 30_000 > 2  # longer than timeout
    finally:
        slow.close()


LONG_ROWS = 150_000  # the emulator sends a stream in messages of 65,536 rows


@pytest.fixture(scope="module")
def bq_long(bigquery_emulator: BigQueryEmulator, bq_events: str) -> str:
    """A table whose read stream comes in several messages."""
    bigquery_emulator.client().query(
        "CREATE OR REPLACE TABLE faucet_test.long AS SELECT i AS id, MOD(i, 2) AS label "
        f"FROM UNNEST(GENERATE_ARRAY(0, {LONG_ROWS - 1})) AS i"
    ).result()
    return "faucet_test.long"


def test_a_cut_stream_resumes_where_it_stopped(
    make_bq_reader: MakeReader, bigquery_emulator: BigQueryEmulator, bq_long: str
) -> None:
    one_read = dict(table_name=bq_long, chunk_size=LONG_ROWS, use_cache=False, read_streams=1)
    service = StorageReadProxy(bigquery_emulator.grpc)  # offsets as BigQuery honours them
    clean = TcpProxy(service.address)
    try:
        epoch_ids(make_bq_reader(read_api_endpoint=clean.address, **one_read))
    finally:
        clean.close()
    cut = TcpProxy(service.address, cut_after=int(clean.response_bytes * 0.5))
    try:
        # One try per chunk: the read succeeds only if the stream resumes where it was cut.
        reader = make_bq_reader(read_api_endpoint=cut.address, retry_attempts=1, **one_read)
        assert sorted(epoch_ids(reader)) == list(range(LONG_ROWS))
        assert cut.broken == 1
        # Resumed after the first message (65,536 rows): only the message the cut broke
        # was read twice (a fresh read would be 1.5 times the bytes).
        assert cut.response_bytes < 1.2 * clean.response_bytes
    finally:
        cut.close()
        service.close()


def _dry_run_bytes(job: dict[str, Any]) -> dict[str, Any]:
    """A dry run's bytes as BigQuery estimates them, by the columns a query reads: before
    it runs, clustering prunes nothing, so a chunk query counts the whole copy."""
    if not job.get("configuration", {}).get("dryRun"):
        return job
    sql = job["configuration"]["query"]["query"]
    rows = 3 * BQ_ROWS_PER_DAY
    if not re.search(r"FROM `[^`]*faucet_scratch", sql):
        estimate = rows * 32  # the copy's query: the source's columns
    elif "@faucet_eval" in sql:
        estimate = rows * 41  # a chunk: every column of the copy
    else:
        estimate = rows * 8  # the count: the copy's hash column
    statistics = job.setdefault("statistics", {})
    statistics["totalBytesProcessed"] = str(estimate)
    statistics.setdefault("query", {})["totalBytesProcessed"] = str(estimate)
    return job


def test_chunk_queries_of_the_copy_are_not_refused_by_maximum_bytes_billed(
    make_bq_reader: MakeReader, bigquery_emulator: BigQueryEmulator
) -> None:
    proxy = HttpProxy(
        bigquery_emulator.rest, [HttpRule("POST", r"/jobs\?", rewrite=_dry_run_bytes)]
    )
    limit = 3 * BQ_ROWS_PER_DAY * 35  # above the copy's query, below a chunk's estimate
    try:
        reader = make_bq_reader(api_endpoint=proxy.url, use_storage_api=False, use_cache=False,
                                maximum_bytes_billed=limit, test_split_percent=7)  # fmt: skip
        train, evaluation = epoch_ids(reader), epoch_ids(reader, eval=True)
        assert sorted(train + evaluation) == list(range(3 * BQ_ROWS_PER_DAY))
        with pytest.raises(PermanentWarehouseError, match="over maximum_bytes_billed"):
            make_bq_reader(
                api_endpoint=proxy.url, maximum_bytes_billed=limit // 2, test_split_percent=8
            )  # the copy's query is still held to it
    finally:
        proxy.close()


# Regions: the copy goes where the source is


@pytest.fixture(scope="module")
def bq_eu(bigquery_emulator: BigQueryEmulator, bq_events: str) -> str:
    """Table ``faucet_eu.events``, in a dataset in the EU."""
    from google.cloud import bigquery

    client = bigquery_emulator.client()
    dataset = bigquery.Dataset(f"{bigquery_emulator.project}.faucet_eu")
    dataset.location = "EU"
    client.create_dataset(dataset, exists_ok=True)
    client.query(
        "CREATE OR REPLACE TABLE faucet_eu.events AS SELECT * FROM faucet_test.events"
    ).result()
    return "faucet_eu.events"


def _referencing(job: dict[str, Any]) -> dict[str, Any]:
    """A dry run that names the tables its query reads, as BigQuery's does."""
    configuration = job.get("configuration", {})
    if configuration.get("dryRun") and "faucet_eu.events" in configuration["query"]["query"]:
        read = {"projectId": "test-proj", "datasetId": "faucet_eu", "tableId": "events"}
        job.setdefault("statistics", {}).setdefault("query", {})["referencedTables"] = [read]
    return job


@pytest.mark.parametrize("kind", ["table", "query"])
def test_the_scratch_dataset_is_made_where_the_source_is(
    make_bq_reader: MakeReader, bigquery_emulator: BigQueryEmulator, bq_eu: str, kind: str
) -> None:
    proxy = HttpProxy(bigquery_emulator.rest, [HttpRule("POST", r"/jobs\?", rewrite=_referencing)])
    source = {"table_name": bq_eu} if kind == "table" else {
        "table_name": None, "query": f"SELECT id, x, label FROM {bq_eu}"}  # fmt: skip
    try:
        reader = make_bq_reader(api_endpoint=proxy.url, scratch_dataset=f"scratch_eu_{kind}",
                                **source)  # fmt: skip
        assert sorted(epoch_ids(reader)) == list(range(3 * BQ_ROWS_PER_DAY))
    finally:
        proxy.close()
    client = bigquery_emulator.client()
    assert client.get_dataset(f"scratch_eu_{kind}").location == "EU"


def test_a_scratch_dataset_in_another_location_is_refused_naming_both(
    make_bq_reader: MakeReader, bq_eu: str
) -> None:
    make_bq_reader().close()  # faucet_scratch, made for a table in the US
    with pytest.raises(PermanentWarehouseError, match=r"faucet_scratch is in US and table "
                       r"faucet_eu\.events in EU.*scratch_dataset"):  # fmt: skip
        make_bq_reader(table_name=bq_eu)


# faucet validate: what the account may not do, before the first run

NO_TABLES_CREATE = google_error(
    403, "accessDenied",
    "Access Denied: Dataset test-proj:faucet_scratch: Permission bigquery.tables.create "
    "denied on dataset test-proj:faucet_scratch (or it may not exist).",
)  # fmt: skip
NO_READ_SESSIONS = (
    "request failed: the user does not have 'bigquery.readsessions.create' permission for "
    "'projects/test-proj'"
)


def _validate(config: Path) -> tuple[int, str, str]:
    from click.testing import CliRunner

    from faucet_core.cli import cli

    result = CliRunner().invoke(cli, ["validate", str(config)])
    return result.exit_code, result.stdout, result.stderr


def test_validate_names_each_thing_the_account_may_not_do(
    bigquery_emulator: BigQueryEmulator, bq_events: str, tmp_path: Path
) -> None:
    rest = HttpProxy(
        bigquery_emulator.rest,
        [HttpRule("POST", r"/jobs\?", 403, NO_TABLES_CREATE, sent="CREATE TABLE")],
    )
    grpc = StorageReadProxy(bigquery_emulator.grpc, refuse_sessions=NO_READ_SESSIONS)
    connection = {**bigquery_emulator.settings(), "api_endpoint": rest.url,
                  "read_api_endpoint": grpc.address}  # fmt: skip
    config = tmp_path / "faucet.yaml"
    config.write_text(json.dumps({
        "datastore": "bigquery", "connection": connection, "cache": {"dir": str(tmp_path)},
        "source": {"table": bq_events, "split_key": "id", "label_columns": "label"},
    }))  # fmt: skip
    try:
        code, out, err = _validate(config)
        assert code == 1
        assert out.splitlines()[1:] == [
            "missing: make the scratch copy in faucet_scratch: Access Denied: Dataset "
            "test-proj:faucet_scratch: Permission bigquery.tables.create denied on dataset "
            "test-proj:faucet_scratch (or it may not exist).",
            "missing: read with the Storage Read API (or set use_storage_api: false): "
            + NO_READ_SESSIONS,
        ]
        assert err.strip() == "error: the account cannot do 2 thing(s) the run needs (above)"
        assert not [r for r in rest.requests if r[0] == "POST" and "/datasets?" in r[1]]
    finally:
        rest.close()
        grpc.close()
    config.write_text(json.dumps({
        "datastore": "bigquery", "connection": bigquery_emulator.settings(),
        "cache": {"dir": str(tmp_path)},
        "source": {"table": bq_events, "split_key": "id", "label_columns": "label"},
    }))  # fmt: skip
    code, out, _ = _validate(config)
    assert code == 0, out
    assert "access: the account can do everything the run needs" in out.splitlines()
