"""The snowflake warehouse, through the real connector, against fakesnow's HTTP server.

fakesnow runs DuckDB: its ``HASH`` is not Snowflake's, so the tests check properties of
the split (every row once, disjoint, stable, about the planned share), never which rows
land where.
"""

from __future__ import annotations

import datetime
import functools
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pytest

from faucet_core import ConfigError, Reader, Warehouse, hookimpl
from faucet_core.torch import FaucetDataLoader, FaucetIterableDataset
from faucet_core.warehouse import PermanentWarehouseError, TransientWarehouseError
from faucet_snowflake import SnowflakeConnection, SnowflakeWarehouse
from faucet_snowflake.types import WIDE, conform, schema_of, widened
from tests.bqemulator import free_port
from tests.conftest import ROWS, SF_DATABASE, SF_SCHEMA
from tests.snowserver import SnowError, SnowServer

MakeReader = Callable[..., Reader]


@pytest.fixture
def make_sf_reader(snowflake_server: SnowServer, make_reader: MakeReader) -> MakeReader:
    """Readers of table ``T`` on the stand-in, with the DuckDB tests' defaults."""
    settings = snowflake_server.settings(database=SF_DATABASE, schema=SF_SCHEMA)
    return functools.partial(
        make_reader, datastore="snowflake", table_name="T", split_key="ID",
        label_columns=["LABEL"], **settings,
    )  # fmt: skip


@pytest.fixture
def sql(snowflake_server: SnowServer) -> Iterator[Callable[..., list[tuple[Any, ...]]]]:
    """Run a statement on the stand-in (in ``FAUCET_TEST.PUBLIC``) and return its rows."""
    db = snowflake_server.connect(database=SF_DATABASE, schema=SF_SCHEMA, paramstyle="qmark")

    def run(statement: str, *params: Any) -> list[tuple[Any, ...]]:
        with db.cursor() as cursor:
            cursor.execute(statement, params or None)
            return list(cursor.fetchall())

    yield run
    db.close()


def ids(reader: Reader, eval: bool = False) -> list[int]:
    """The ``ID`` of every row of one training epoch (or eval pass), in order."""
    passes = reader.iter_eval() if eval else reader.iter_epoch()
    served: list[int] = []
    for batch in passes:
        column = batch["features"]["ID"]
        served += column.to_pylist() if hasattr(column, "to_pylist") else column.tolist()
    return served


def scratch_tables(sql: Callable[..., list[tuple[Any, ...]]]) -> list[str]:
    """The Faucet tables (scratch copies, temporary ones) in ``FAUCET_TEST.PUBLIC``."""
    rows = sql("SELECT TABLE_NAME FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_SCHEMA = ?", SF_SCHEMA)
    return sorted(row[0] for row in rows if row[0].startswith("FAUCET_"))


class CountingSnowflake(SnowflakeWarehouse):
    """The Snowflake warehouse, recording the kind of every statement of every instance."""

    name = "counting-snowflake"
    kinds: ClassVar[list[str]] = []

    def _execute(self, kind: str, *args: Any, **kwargs: Any) -> Any:
        type(self).kinds.append(kind)
        return super()._execute(kind, *args, **kwargs)


class _CountingPlugin:
    @hookimpl
    def register_warehouses(self, register: Callable[[type[Warehouse]], None]) -> None:
        register(CountingSnowflake)


@pytest.fixture
def counting(register: Callable[[object], None]) -> type[CountingSnowflake]:
    register(_CountingPlugin())
    CountingSnowflake.kinds = []
    return CountingSnowflake


# Every row once, the split, ds


def test_every_row_once_and_the_split_is_disjoint_and_stable(make_sf_reader: MakeReader) -> None:
    reader = make_sf_reader(test_split_percent=20, epochs=2)
    train = ids(reader)
    evaluation = ids(reader, eval=True)
    assert sorted(train + evaluation) == list(range(ROWS))  # disjoint, and nothing lost
    assert 0.15 < len(evaluation) / ROWS < 0.25
    assert sorted(ids(reader)) == sorted(train)  # epoch 2, from the cache
    assert reader.metrics[-1].chunks_fetched == 0
    other = make_sf_reader(test_split_percent=20, chunk_size=700, use_cache=False)
    assert len(other.plan.chunks["train"]) != len(reader.plan.chunks["train"])
    assert sorted(ids(other, eval=True)) == sorted(evaluation)  # another run and chunking


def test_chunk_reads_serve_what_the_scan_serves(make_sf_reader: MakeReader) -> None:
    scanned = make_sf_reader(seed=4)
    by_chunk = make_sf_reader(seed=4, use_cache=False)
    assert ids(scanned) == ids(by_chunk)


def test_ds_keeps_one_partition(make_sf_reader: MakeReader) -> None:
    reader = make_sf_reader(ds="2024-01-02")
    assert sorted(ids(reader)) == [i for i in range(ROWS) if i % 3 == 1]


def test_ds_is_a_bind_parameter(make_sf_reader: MakeReader) -> None:
    by_name = functools.partial(make_sf_reader, partition_column="NAME")
    assert ids(by_name(ds="name-7")) + ids(by_name(ds="name-7"), eval=True) == [7]
    # Pasted into the SQL, this value would select every row.
    with pytest.raises(PermanentWarehouseError, match="has no rows for ds="):
        by_name(ds="name-7' OR '1' = '1")


def test_a_query_source_with_ds(make_sf_reader: MakeReader) -> None:
    reader = make_sf_reader(
        table_name=None, query="SELECT * FROM T WHERE NAME LIKE 'name-1%'", ds="2024-01-01"
    )
    assert reader.plan.data_version is None
    expected = [i for i in range(ROWS) if str(i).startswith("1") and i % 3 == 0]
    assert sorted(ids(reader)) == expected


def test_quoted_names_keep_their_case(make_sf_reader: MakeReader, sql: Any) -> None:
    sql(
        'CREATE TABLE IF NOT EXISTS "Mixed Case" ("key" INT, "Value" FLOAT) AS '
        "SELECT seq4(), seq4() / 2 FROM TABLE(GENERATOR(ROWCOUNT => 300))"
    )
    table = f'{SF_DATABASE}.{SF_SCHEMA}."Mixed Case"'
    reader = make_sf_reader(table_name=table, split_key='"key"', label_columns='"Value"')
    assert reader.plan.columns == ("key", "Value")
    served = [k for b in reader.iter_epoch() for k in b["features"]["key"].tolist()]
    assert sorted(served) == list(range(300))
    with pytest.raises(PermanentWarehouseError, match=r"\['KEY'\] not found.*double quotes"):
        make_sf_reader(table_name=table, split_key="key", label_columns=None)


def test_names_without_quotes_mean_their_upper_case_form(make_sf_reader: MakeReader) -> None:
    # T was made without quotes: Snowflake stores ID, X1, X2, NAME, LABEL, DS.
    reader = make_sf_reader(
        columns=["id", "x1", "X2", "Label"], split_key="id", label_columns="label",
        ds="2024-01-02", partition_column="ds", batch_size=5000,
        preprocessing={"columns": {"x1": {"scale": "minmax"}}, "exclude": ["id"]},
    )  # fmt: skip
    assert reader.plan.columns == ("ID", "X1", "X2", "LABEL")
    assert (reader.feature_columns, reader.label_columns) == (["ID", "X1", "X2"], ["LABEL"])
    (batch,) = reader.iter_epoch()
    assert list(batch["features"].columns) == ["ID", "X1", "X2"]
    assert list(batch["labels"].columns) == ["LABEL"]
    assert sorted(batch["features"]["ID"]) == [i for i in range(ROWS) if i % 3 == 1]
    assert (batch["features"]["X1"].min(), batch["features"]["X1"].max()) == (0.0, 1.0)
    grouped = make_sf_reader(
        split_key="id", label_columns="label", inputs={"xs": ["x1", "x2"]}, pad=None,
        output="numpy",
    )  # fmt: skip
    assert grouped.serving.input_names("numpy") == {"xs": ["X1", "X2"]}


# Resume and DataLoader workers


def test_resume_serves_the_rest_of_the_epoch(make_sf_reader: MakeReader) -> None:
    whole = ids(make_sf_reader(output="arrow"))
    reader = make_sf_reader(output="arrow")
    reader.prep_for_epoch()
    served = []
    for _ in range(7):
        batch = reader.get_batch()
        assert batch is not None
        served += batch["features"]["ID"].to_pylist()
    state = reader.state_dict()
    resumed = make_sf_reader(output="arrow")
    resumed.load_state_dict(state)
    rest = [i for batch in resumed.iter_epoch() for i in batch["features"]["ID"].to_pylist()]
    assert served + rest == whole


def test_dataloader_workers_read_every_row_once(make_sf_reader: MakeReader) -> None:
    reader = make_sf_reader(columns=["ID", "X2", "LABEL"])
    batches = list(FaucetDataLoader(FaucetIterableDataset(reader), num_workers=2))
    served = [int(i) for features, _ in batches for i in features[:, 0]]
    assert sorted(served) == list(range(ROWS))


# Plan once, the scratch copy


def test_a_warm_rerun_runs_no_query(
    make_sf_reader: MakeReader, counting: type[CountingSnowflake]
) -> None:
    first = make_sf_reader(datastore=counting.name)
    expected = sorted(ids(first))
    assert first.plan_origin == "warehouse"
    assert counting.kinds.count("query") == counting.kinds.count("copy") == 1  # counting
    assert counting.kinds.count("range") == 1  # the least and most ID (a NUMBER(38, 0))
    scans = counting.kinds.count("scan")  # the whole copy, and maybe the first chunk alone
    assert scans in (1, 2) and "read" not in counting.kinds
    assert first.costs.query_jobs == 3 + scans
    first.close()
    counting.kinds.clear()
    again = make_sf_reader(datastore=counting.name, seed=9)
    assert again.plan_origin == "cache"
    assert sorted(ids(again)) == expected
    assert counting.kinds == ["version"]  # a metadata lookup, on no virtual warehouse
    assert again.costs.query_jobs == 0


def test_changed_data_is_planned_again(make_sf_reader: MakeReader, sql: Any) -> None:
    sql("CREATE OR REPLACE TABLE CHANGING AS SELECT * FROM T WHERE ID < 1000")
    first = make_sf_reader(table_name="CHANGING")
    assert first.plan.data_version is not None
    first.close()
    sql("INSERT INTO CHANGING SELECT * FROM T WHERE ID = 1000")
    second = make_sf_reader(table_name="CHANGING")
    assert second.plan_origin == "warehouse"
    assert second.plan.data_version != first.plan.data_version
    assert sorted(ids(second)) == list(range(1001))


def test_the_scratch_copy_is_made_once_found_by_others_and_kept_until_it_expires(
    make_sf_reader: MakeReader, sql: Any
) -> None:
    sql("CREATE OR REPLACE TRANSIENT TABLE FAUCET_SCRATCH_OLD AS SELECT 1 AS X")
    sql("ALTER TABLE FAUCET_SCRATCH_OLD SET COMMENT = 'Faucet: a scratch copy of a split "
        "source; expires 2020-01-01T00:00:00Z'")  # fmt: skip
    reader = make_sf_reader(use_cache=False, test_split_percent=23)
    assert "FAUCET_SCRATCH_OLD" not in scratch_tables(sql)  # expired: dropped by the planner
    scratch = reader.stream.warehouse().scratch_name(reader.plan)
    ((comment,),) = sql(
        "SELECT COMMENT FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_NAME = ?", scratch
    )
    expires = datetime.datetime.fromisoformat(comment.rsplit(" ", 1)[1])
    hours = (expires - datetime.datetime.now(datetime.timezone.utc)).total_seconds() / 3600
    assert 23.9 < hours <= 24
    ids(reader)
    other = SnowflakeWarehouse(reader.config.connection)  # as another process would
    try:
        other.materialize(reader.plan)
        other.materialize(reader.plan)
        assert other.statements == ["exists"]
        chunk = reader.plan.chunks["train"][0]
        assert other.read_buckets(reader.plan, chunk).num_rows == chunk.rows
    finally:
        other.close()
    reader.close()
    assert scratch in scratch_tables(sql)  # kept for the next process until it expires
    again = make_sf_reader(use_cache=False, test_split_percent=23)
    assert again.plan.rows_id == reader.plan.rows_id
    ids(again)
    assert again.stream.warehouse().statements.count("copy") == 0  # found while planning
    assert scratch in scratch_tables(sql)


def test_the_copy_turns_on_no_billed_background_service(
    make_sf_reader: MakeReader, snowflake_server: SnowServer, sql: Any
) -> None:
    # A clustering key would turn on Automatic Clustering, billed by Snowflake.
    sql("CREATE OR REPLACE TABLE UNCLUSTERED AS SELECT * FROM T")  # no copy of it yet
    sent = len(snowflake_server.queries())
    reader = make_sf_reader(table_name="UNCLUSTERED", use_cache=False, seed=11)
    ids(reader)
    (copy,) = [q for q in snowflake_server.queries()[sent:] if q.startswith("CREATE TRANSIENT")]
    assert "CLUSTER BY" not in copy.upper() and "ORDER BY" in copy.upper()
    assert "DATA_RETENTION_TIME_IN_DAYS = 0" in copy


def test_a_lost_race_keeps_the_winners_copy(make_sf_reader: MakeReader, sql: Any) -> None:
    reader = make_sf_reader(use_cache=False)
    reader.prepare()  # the winner's copy

    class Late(SnowflakeWarehouse):
        looked = False

        def scratch_exists(self, name: str) -> bool:
            if not self.looked:  # looked before the winner renamed its copy
                self.looked = True
                return False
            return super().scratch_exists(name)

    late = Late(reader.config.connection)
    try:
        late.materialize(reader.plan)
        # The rename failed: its copy is dropped, the winner's is used.
        assert late.statements == ["expired", "copy", "rename", "drop", "exists"]
    finally:
        late.close()
    assert reader.stream.warehouse().scratch_name(reader.plan) in scratch_tables(sql)
    assert not [name for name in scratch_tables(sql) if name.startswith("FAUCET_TMP")]
    served = ids(reader)  # from the winner's copy
    assert len(served) == len(set(served)) == reader.rows("train")


def test_a_scratch_table_gone_is_made_again(make_sf_reader: MakeReader, sql: Any) -> None:
    sql("CREATE OR REPLACE TABLE VANISHING AS SELECT * FROM T")  # no copy of it yet
    reader = make_sf_reader(table_name="VANISHING", use_cache=False, chunk_size=500,
                            prefetch_chunks=1, fetch_threads=1)  # fmt: skip
    reader.prep_for_epoch()
    first = reader.get_batch()
    assert first is not None
    served = first["features"]["ID"].tolist()
    sql(f"DROP TABLE {reader.stream.warehouse().scratch_name(reader.plan)}")
    while (batch := reader.get_batch()) is not None:
        served += batch["features"]["ID"].tolist()
    assert len(served) == reader.rows("train")
    assert len(set(served)) == len(served)
    assert reader.stream.warehouse().statements.count("copy") == 2  # made again


# Types


def test_types_come_out_as_documented_arrow_types(make_sf_reader: MakeReader, sql: Any) -> None:
    sql(
        """
        CREATE OR REPLACE TABLE TYPED (ID NUMBER(38, 0), AMOUNT NUMBER(12, 2), SMALL NUMBER(4, 0),
            X FLOAT, WORDS VARCHAR, FLAG BOOLEAN, DAY DATE, NTZ TIMESTAMP_NTZ,
            LTZ TIMESTAMP_LTZ, TZ TIMESTAMP_TZ, DOC VARIANT, OBJ OBJECT, ARR ARRAY,
            BYTES BINARY, CLOCK TIME)
        """
    )
    sql(
        """
        INSERT INTO TYPED SELECT seq4(), seq4() / 4, MOD(seq4(), 100), seq4() / 8,
            'text ' || seq4(), MOD(seq4(), 2) = 0, DATEADD(day, seq4(), '2024-01-01'::DATE),
            DATEADD(hour, seq4(), '2024-01-01 00:00:00.123456'::TIMESTAMP_NTZ),
            DATEADD(hour, seq4(), '2024-01-01 00:00:00'::TIMESTAMP_LTZ),
            DATEADD(hour, seq4(), '2024-01-01 00:00:00 +02:00'::TIMESTAMP_TZ),
            OBJECT_CONSTRUCT('i', seq4()), OBJECT_CONSTRUCT('a', 1), ARRAY_CONSTRUCT(seq4(), 1),
            TO_BINARY('ABCD', 'HEX'), '01:02:03'::TIME
        FROM TABLE(GENERATOR(ROWCOUNT => 100))
        """
    )
    reader = make_sf_reader(table_name="TYPED", label_columns=None, output="arrow")
    schema = reader.plan.schema
    assert schema is not None
    expected = {
        "ID": pa.int64(), "AMOUNT": pa.decimal128(12, 2), "SMALL": pa.int64(),
        "X": pa.float64(), "WORDS": pa.string(), "FLAG": pa.bool_(), "DAY": pa.date32(),
        "NTZ": pa.timestamp("us"), "LTZ": pa.timestamp("us", tz="UTC"),
        "TZ": pa.timestamp("us", tz="UTC"), "DOC": pa.string(), "OBJ": pa.string(),
        "ARR": pa.string(), "BYTES": pa.binary(), "CLOCK": pa.time64("us"),
    }  # fmt: skip
    assert {f.name: f.type for f in schema} == expected
    for use_cache in (True, False):  # the scan and the chunk reads
        rows = make_sf_reader(
            table_name="TYPED", label_columns=None, output="arrow", use_cache=use_cache
        )
        table = pa.concat_tables(b["features"] for b in rows.iter_epoch()).sort_by("ID")
        assert table.schema == schema
        row = table.to_pylist()[5]
        assert row["AMOUNT"] == Decimal("1.25")
        assert row["SMALL"] == 5 and row["FLAG"] is False and row["WORDS"] == "text 5"
        assert row["DAY"] == datetime.date(2024, 1, 6)
        assert row["NTZ"] == datetime.datetime(2024, 1, 1, 5, 0, 0, 123456)
        utc = datetime.timezone.utc
        assert row["LTZ"] == datetime.datetime(2024, 1, 1, 5, tzinfo=utc)
        assert row["TZ"] == datetime.datetime(2024, 1, 1, 3, tzinfo=utc)  # 05:00 at +02:00
        assert json.loads(row["DOC"]) == {"i": 5}
        assert json.loads(row["ARR"]) == [5, 1]
        assert row["BYTES"] == b"\xab\xcd"
        assert row["CLOCK"] == datetime.time(1, 2, 3)


# Errors and secrets


def test_bad_input_names_what_is_wrong(make_sf_reader: MakeReader) -> None:
    started = time.monotonic()
    with pytest.raises(PermanentWarehouseError, match="table nope does not exist") as missing:
        make_sf_reader(table_name="nope")
    with pytest.raises(PermanentWarehouseError, match="drop table"):
        make_sf_reader(table_name="T; drop table T")
    with pytest.raises(
        PermanentWarehouseError, match=r"source.columns \['id'\] not found.*upper-case form"
    ):
        make_sf_reader(columns=['"id"', "LABEL"])
    with pytest.raises(PermanentWarehouseError, match=r"source.split_key \['MISSING'\]"):
        make_sf_reader(split_key="MISSING")
    with pytest.raises(PermanentWarehouseError, match="no partition column 'DAY'"):
        make_sf_reader(ds="2024-01-01", partition_column="DAY")
    with pytest.raises(PermanentWarehouseError, match="cannot read the source query"):
        make_sf_reader(table_name=None, query="SELECT nope FROM T")
    assert "\n" not in str(missing.value)
    assert time.monotonic() - started < 30  # none waits for the connector's retries


def test_wrong_credentials_fail_at_once_without_the_secret(make_sf_reader: MakeReader) -> None:
    started = time.monotonic()
    with pytest.raises(PermanentWarehouseError) as raised:
        make_sf_reader(password="s3cret-value-42")
    message = str(raised.value)
    assert "Incorrect username or password" in message
    assert "connection.password" in message
    assert "s3cret-value-42" not in message and "\n" not in message
    assert time.monotonic() - started < 30


def test_an_unreachable_server_is_a_transient_error(snowflake_server: SnowServer) -> None:
    settings = snowflake_server.settings(port=free_port(), network_timeout=1)
    warehouse = SnowflakeWarehouse(SnowflakeConnection(**settings))
    try:
        with pytest.raises(TransientWarehouseError, match="cannot connect to Snowflake"):
            warehouse.query("SELECT 1", [])
    finally:
        warehouse.close()


def test_secrets_stay_out_of_reprs_and_logs(
    make_sf_reader: MakeReader, snowflake_server: SnowServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    reader = make_sf_reader()
    ids(reader)
    reader.close()
    password = snowflake_server.password
    assert password not in repr(reader.config)
    assert password not in repr(reader.config.connection)
    assert password not in json.dumps(reader.config.model_dump(mode="json"))
    assert caplog.records  # the connector logged
    assert password not in caplog.text


# Connection settings


def test_connection_name_reads_connections_toml(
    snowflake_server: SnowServer, tmp_path: Path
) -> None:
    home = tmp_path / "snowflake-home"
    home.mkdir()
    toml = home / "connections.toml"
    settings = snowflake_server.settings(database=SF_DATABASE, schema=SF_SCHEMA)
    toml.write_text(
        "[faucet_test]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
    )
    toml.chmod(0o600)
    program = (
        "import faucet_core.plugins, faucet_snowflake.plugin\n"
        "faucet_core.plugins.pm.register(faucet_snowflake.plugin, name='snowflake')\n"
        "from faucet_core import get_batch_reader\n"
        "r = get_batch_reader(datastore='snowflake', connection_name='faucet_test', "
        "network_timeout=60, table_name='T', split_key='ID', use_cache=False, batch_size=1000)\n"
        "print(sum(len(b['features']) for b in r.iter_epoch()), r.rows('train'))\n"
        "r.close()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        env={**os.environ, "SNOWFLAKE_HOME": str(home)},
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    served, planned = (int(n) for n in done.stdout.split()[-2:])
    assert served == planned > ROWS // 2


def test_integers_beyond_64_bits_are_planned_as_decimals() -> None:
    # fakesnow stores NUMBER(38, 0) in 64 bits, so it cannot hold such values; Snowflake
    # sends a batch of them as decimal128(38, 0), other batches as narrower integers.
    wide = {WIDE: b"1"}
    schema = pa.schema([
        pa.field("ID", pa.int64(), metadata=wide), pa.field("BIG", pa.int64(), metadata=wide),
        pa.field("X", pa.float64()),
    ])  # fmt: skip
    planned = widened(schema, {"ID": (0, 2**63 - 1), "BIG": (-(2**63) - 1, 5)})
    assert planned.types == [pa.int64(), pa.decimal128(38, 0), pa.float64()]
    batches = [
        pa.table({"ID": pa.array([1], pa.int8()), "BIG": pa.array([7], pa.int16()), "X": [0.5]}),
        pa.table({"ID": pa.array([2], pa.int64()),
                  "BIG": pa.array([Decimal(-(2**63) - 1)], pa.decimal128(38, 0)), "X": [1.5]}),
    ]  # fmt: skip
    served = pa.concat_tables(conform(batch, planned, "reading") for batch in batches)
    assert served.column("BIG").to_pylist() == [Decimal(7), Decimal(-(2**63) - 1)]


def test_ds_on_a_timestamp_column_keeps_that_day(make_sf_reader: MakeReader, sql: Any) -> None:
    sql(
        "CREATE OR REPLACE TABLE EVENTS AS SELECT seq4() AS ID, MOD(seq4(), 2) AS LABEL, "
        "DATEADD(minute, seq4() * 37, '2024-01-01 00:00:00'::TIMESTAMP_NTZ) AS AT "
        "FROM TABLE(GENERATOR(ROWCOUNT => 300))"
    )
    reader = make_sf_reader(table_name="EVENTS", ds="2024-01-02", partition_column="AT",
                            test_split_percent=0)  # fmt: skip
    assert sorted(ids(reader)) == [i for i in range(300) if 24 * 60 <= i * 37 < 48 * 60]


def test_a_type_the_connector_cannot_name_is_refused_by_column() -> None:
    from snowflake.connector.constants import FIELD_ID_TO_NAME
    from snowflake.connector.cursor import ResultMetadata

    unknown = max(FIELD_ID_TO_NAME) + 1  # a type newer than the connector, as DECFLOAT is
    described = [ResultMetadata("D", unknown, None, None, 38, 0, True)]
    with pytest.raises(
        PermanentWarehouseError, match=rf"column 'D' is a type of code {unknown}, which"
    ):
        schema_of(described, FIELD_ID_TO_NAME, "reading")


def test_vectors_are_fixed_size_lists_of_their_dimension() -> None:
    # fakesnow has no VECTOR: the column metadata as Snowflake sends it, parsed by the
    # connector, and the Arrow data its results hold for it.
    from snowflake.connector.constants import FIELD_ID_TO_NAME
    from snowflake.connector.cursor import ResultMetadataV2

    def column(name: str, element: str) -> ResultMetadataV2:
        part = {"type": element, "nullable": False, "length": None, "precision": None,
                "scale": None}  # fmt: skip
        return ResultMetadataV2.from_column({
            "name": name, "type": "vector", "nullable": True, "length": None,
            "precision": None, "scale": None, "vectorDimension": 3, "fields": [part],
        })  # fmt: skip

    schema = schema_of(
        [column("EMB", "real"), column("IDS", "fixed")],
        FIELD_ID_TO_NAME, "reading",
    )  # fmt: skip
    assert schema.types == [pa.list_(pa.float32(), 3), pa.list_(pa.int32(), 3)]
    sent = pa.table({
        "EMB": pa.array([[0.5, 1.0, -2.0], None], pa.list_(pa.float32(), 3)),
        "IDS": pa.array([[1, 2, 3], [4, 5, 6]], pa.list_(pa.int64())),
    })  # fmt: skip
    conformed = conform(sent, schema, "reading")
    assert conformed.schema == schema
    assert conformed.column("IDS").to_pylist() == [[1, 2, 3], [4, 5, 6]]


def test_arrays_of_numbers_arrive_as_vectors_and_others_as_json(
    make_sf_reader: MakeReader, snowflake_server: SnowServer, sql: Any
) -> None:
    sql("CREATE OR REPLACE TABLE EMBEDDED (ID INT, LABEL INT, EMB ARRAY, TAGS ARRAY, "
        "RAGGED ARRAY)")  # fmt: skip
    sql(
        "INSERT INTO EMBEDDED SELECT seq4(), MOD(seq4(), 2), ARRAY_CONSTRUCT(seq4() / 4, 1, "
        "-seq4()), ARRAY_CONSTRUCT('t' || seq4()), IFF(MOD(seq4(), 3) = 0, ARRAY_CONSTRUCT(1), "
        "ARRAY_CONSTRUCT(1, 2)) FROM TABLE(GENERATOR(ROWCOUNT => 300))"
    )
    arrays = {"EMB": "array", "TAGS": "array", "RAGGED": "array"}
    with snowflake_server.typing(arrays):  # as Snowflake types them: fakesnow says variant
        reader = make_sf_reader(table_name="EMBEDDED", output="numpy", use_cache=False,
                                columns=["ID", "EMB", "LABEL"], batch_size=1000)  # fmt: skip
        assert reader.plan.schema.field("EMB").type == pa.list_(pa.float64(), 3)
        assert reader.feature_names == ["ID", "EMB[0]", "EMB[1]", "EMB[2]"]
        (batch,) = reader.iter_epoch()
        features = batch["features"]
        ids = features[:, 0]
        assert sorted(ids.tolist()) == list(range(300))
        assert (features[:, 1:] == np.stack([ids / 4, np.ones(300), -ids], axis=1)).all()
        texts = make_sf_reader(table_name="EMBEDDED", columns=["ID", "TAGS", "LABEL"],
                               output="arrow", batch_size=1000)  # fmt: skip
        assert texts.plan.schema.field("TAGS").type == pa.string()
        (batch,) = texts.iter_epoch()
        assert json.loads(batch["features"]["TAGS"][0].as_py()) == [
            f"t{batch['features']['ID'][0].as_py()}"
        ]
        ragged = make_sf_reader(table_name="EMBEDDED", columns=["ID", "RAGGED", "LABEL"],
                                output="numpy")  # fmt: skip
        assert ragged.plan.schema.field("RAGGED").type == pa.list_(pa.float64())
        with pytest.raises(ConfigError, match="RAGGED"):
            next(ragged.iter_epoch())
        padded = make_sf_reader(table_name="EMBEDDED", columns=["ID", "RAGGED", "LABEL"],
                                output="numpy", pad={"RAGGED": 2}, batch_size=1000)  # fmt: skip
        (batch,) = padded.iter_epoch()
        lengths = batch["features"][:, padded.feature_names.index("RAGGED__length")]
        assert sorted(lengths.tolist()) == sorted(1 if i % 3 == 0 else 2 for i in range(300))


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache fill", "chunk reads"])
def test_rows_loaded_after_planning_are_not_served(
    make_sf_reader: MakeReader, sql: Any, use_cache: bool
) -> None:
    table = f"GROWING_{int(use_cache)}"
    sql(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM T")
    reader = make_sf_reader(table_name=table, use_cache=use_cache, test_split_percent=0,
                            epochs=2)  # fmt: skip
    for start in (ROWS, ROWS + 100):  # between planning and the first read, then epochs
        sql(
            f"INSERT INTO {table} SELECT seq4() + {start}, 0.5, 1.0, 'late', 0, "
            "'2024-01-01'::DATE FROM TABLE(GENERATOR(ROWCOUNT => 100))"
        )
        assert sorted(ids(reader)) == list(range(ROWS))


# faucet validate: what a run will cost


def _explained(read: int, assigned: int, total: int) -> str:
    """A query answering as Snowflake's ``EXPLAIN USING JSON`` does: one row, one text column."""
    stats = {"partitionsTotal": total, "partitionsAssigned": assigned, "bytesAssigned": read}
    plan = {"GlobalStats": stats, "Operations": [[{"id": 0, "operation": "Result"}]]}
    return f"SELECT '{json.dumps(plan)}' AS \"content\""


def test_validate_says_what_runs_what_it_reads_and_how_long_the_copy_stays(
    snowflake_server: SnowServer, tmp_path: Path, sql: Any
) -> None:
    from click.testing import CliRunner

    from faucet_core.cli import cli
    from faucet_core.report import size

    sql("CREATE OR REPLACE TABLE PRICED AS SELECT * FROM T")
    settings = {
        "datastore": "snowflake",
        "connection": snowflake_server.settings(database=SF_DATABASE, schema=SF_SCHEMA),
        "source": {"table": "priced", "split_key": "id", "label_columns": "label"},
        "test_split_percent": 20,
        "cache": {"dir": str(tmp_path / "cache")},
    }
    config = tmp_path / "faucet.yaml"
    config.write_text(json.dumps(settings))  # JSON is YAML
    rules = [
        (r"^EXPLAIN USING JSON .* AS faucet_rows$", _explained(1_288_490_188, 12, 40)),
        (r"^EXPLAIN USING JSON ", _explained(314_572_800, 40, 40)),
        (r"^SELECT CURRENT_WAREHOUSE\(\)$", "SELECT 'ANALYTICS_WH'"),
    ]
    before = len(snowflake_server.queries())
    with snowflake_server.answering(rules):
        result = CliRunner().invoke(cli, ["validate", str(config)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1:] == [
        "plan: none saved for this data; planning makes the scratch copy and counts its rows",
        f"will scan {size(1_288_490_188)} for the scratch copy, made while planning (its "
        "rows are then counted from it)",
        "runs on: the virtual warehouse ANALYTICS_WH (the user's default)",
        f"EXPLAIN: the copy reads {size(1_288_490_188)} (12 of 40 micro-partitions of the "
        "source); counting it reads its split and bucket columns only (counting the source "
        f"instead, as for a role that cannot create tables here: {size(314_572_800)}, 40 "
        "micro-partitions)",
        f"scratch copy: {SF_DATABASE}.{SF_SCHEMA}.FAUCET_SCRATCH_<the copy's id>, kept "
        "24 h after it is made (connection.scratch_expiration_hours) for every reader of "
        "the plan, then dropped by the next copy made there",
    ]
    validated = snowflake_server.queries()[before:]
    assert not [q for q in validated if q.startswith(("CREATE", "ALTER", "DROP", "INSERT"))]
    explained = [q.removeprefix("EXPLAIN USING JSON ") for q in validated if "EXPLAIN" in q]
    assert len(explained) == 2
    # What was explained is what planning runs: the copy's query and a count of the source.
    settings["connection"]["warehouse"] = "TEST_WH"
    config.write_text(json.dumps(settings))
    with Reader.from_config(config) as reader:
        scratch = reader.stream.warehouse().scratch_name(reader.plan)
    copied = [q for q in snowflake_server.queries() if q.startswith("CREATE TRANSIENT")][-1]
    assert f"AS {explained[0]} ORDER BY" in copied
    assert "GROUP BY" in explained[1] and "FROM priced AS faucet_source" in explained[1]
    result = CliRunner().invoke(cli, ["validate", str(config)])
    assert result.exit_code == 0, result.output
    out = result.stdout.splitlines()
    assert "runs on: the virtual warehouse TEST_WH (connection.warehouse)" in out
    (kept,) = [line for line in out if line.startswith(f"scratch copy {scratch}: kept until ")]
    expiry = datetime.datetime.fromisoformat(kept.rsplit(" ", 1)[1])
    left = expiry - datetime.datetime.now(datetime.timezone.utc)
    assert datetime.timedelta(hours=23) < left <= datetime.timedelta(hours=24)
    sql(f"DROP TABLE {scratch}")
    out = CliRunner().invoke(cli, ["validate", str(config)]).stdout.splitlines()
    assert (
        f"scratch copy {scratch}: not there (expired or dropped); the first chunk the "
        "cache lacks makes it again, kept 24 h" in out
    )


#: Snowflake's answer to a statement the role has no privilege for.
NO_PRIVILEGE = SnowError(
    3001,
    "42501",
    "SQL access control error:\nInsufficient privileges to operate on schema 'PUBLIC'",
)


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache fill", "chunk reads"])
def test_a_role_that_may_not_create_tables_reads_the_source(
    make_sf_reader: MakeReader, snowflake_server: SnowServer, sql: Any,
    caplog: pytest.LogCaptureFixture, use_cache: bool,
) -> None:  # fmt: skip
    table = f"READ_ONLY_{int(use_cache)}"
    sql(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM T")
    refused = [(r"^CREATE TRANSIENT TABLE ", NO_PRIVILEGE)]
    with snowflake_server.answering(refused), caplog.at_level(logging.WARNING):
        reader = make_sf_reader(table_name=table, use_cache=use_cache, test_split_percent=20)
        served = ids(reader) + ids(reader, eval=True)
    assert sorted(served) == list(range(ROWS))
    assert f"cannot copy table {table} while planning" in caplog.text
    assert "every chunk read scans the source" in caplog.text
    assert not [name for name in scratch_tables(sql) if name.startswith("FAUCET_TMP_")]


def test_an_expired_copy_the_role_may_not_drop_is_left_to_its_owner(
    make_sf_reader: MakeReader, snowflake_server: SnowServer, sql: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    sql("CREATE OR REPLACE TRANSIENT TABLE FAUCET_SCRATCH_THEIRS AS SELECT 1 AS X")
    sql("ALTER TABLE FAUCET_SCRATCH_THEIRS SET COMMENT = "
        "'Faucet: a scratch copy of a split source; expires 2020-01-01T00:00:00Z'")  # fmt: skip
    sql("CREATE OR REPLACE TABLE OTHERS AS SELECT * FROM T")
    refused = [(r"^DROP TABLE IF EXISTS FAUCET_SCRATCH_THEIRS$", NO_PRIVILEGE)]
    with snowflake_server.answering(refused), caplog.at_level(logging.WARNING):
        reader = make_sf_reader(table_name="OTHERS")
    assert "cannot drop the expired scratch table FAUCET_SCRATCH_THEIRS" in caplog.text
    assert sorted(ids(reader) + ids(reader, eval=True)) == list(range(ROWS))
    sql("DROP TABLE FAUCET_SCRATCH_THEIRS")
