"""Column types through every output format: NULLs everywhere, DECIMAL, dates, timestamps
with a time zone, strings, booleans, lists, structs, 500 columns, empty and one-row tables,
and a split whose eval part has no rows.

Each case gives exactly the table's values (each row once) or a clear error naming the
column. NULL is NaN in a float column (numpy, pandas, torch); an integer or boolean
column holding NULLs, or a column of another kind, never becomes a tensor silently; numpy
refuses columns with no common array type (dates beside numbers) by name. DuckDB runs the
whole matrix; PostgreSQL, Snowflake and BigQuery the NULL, DECIMAL, timestamp and
empty-table cases.
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest
import torch

from faucet_core import ConfigError, Reader, get_batch_reader
from faucet_core.torch import FaucetIterableDataset
from faucet_core.warehouse import PermanentWarehouseError
from tests.bqemulator import BigQueryEmulator
from tests.pgserver import PostgresServer
from tests.reliability.figures import record
from tests.snowserver import SnowServer

ROWS = 60
UTC = dt.timezone.utc


def expected(i: int) -> dict[str, Any]:
    """The values of row ``id = i`` of the typed tables."""
    return {
        "id": i,
        "f_null": None if i % 3 == 0 else i / 2,
        "i_null": None if i % 3 == 0 else i,
        "dec": Decimal(i * 125).scaleb(-2).quantize(Decimal("0.0001")),
        "s": None if i % 4 == 0 else f"v{i}",
        "d": dt.date(2024, 1, 1) + dt.timedelta(days=i),
        "tstz": dt.datetime(2023, 12, 31, 22, tzinfo=UTC) + dt.timedelta(seconds=i),
        "b": i % 2 == 0,
        "b_null": None if i % 5 == 0 else i % 2 == 0,
        "lst": [i, i + 1],
        "st": {"a": i, "b": f"x{i}"},
        "all_null": None,
    }


DUCKDB_TYPED = f"""
CREATE TABLE typed AS SELECT i AS id,
  CASE WHEN i % 3 = 0 THEN NULL ELSE i / 2 END::DOUBLE AS f_null,
  CASE WHEN i % 3 = 0 THEN NULL ELSE i END::BIGINT AS i_null,
  (i * 1.25)::DECIMAL(18, 4) AS dec,
  CASE WHEN i % 4 = 0 THEN NULL ELSE 'v' || i END AS s,
  DATE '2024-01-01' + i::INT AS d,
  TIMESTAMPTZ '2024-01-01 00:00:00+02' + to_seconds(i) AS tstz,
  (i % 2 = 0) AS b,
  CASE WHEN i % 5 = 0 THEN NULL ELSE i % 2 = 0 END AS b_null,
  [i, i + 1] AS lst, {{'a': i, 'b': 'x' || i}} AS st, NULL::INT AS all_null
FROM range({ROWS}) r(i);
CREATE TABLE one_row AS SELECT * FROM typed WHERE id = 7;
CREATE TABLE empty AS SELECT * FROM typed WHERE false;
CREATE TABLE wide AS SELECT i AS id, {", ".join(f"i + {k} / 1000 AS c{k}" for k in range(500))}
FROM range(300) r(i);
"""
ALL = list(expected(0))
OUTPUTS = ["arrow", "pandas", "numpy", "torch"]


def same(value: Any, want: Any) -> bool:
    """``value`` as a format gives it equals ``want`` (NULL: ``None`` or NaN)."""
    if want is None:
        return value is None or (isinstance(value, float) and math.isnan(value))
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if hasattr(value, "to_pydatetime"):  # a pandas Timestamp
        value = value.to_pydatetime()
    return bool(value == want)


def rows_of(batch: dict[str, Any], output: str, columns: list[str]) -> list[dict[str, Any]]:
    """The rows of one batch's features, as dicts, whatever the format."""
    features = batch["features"]
    if output == "arrow":
        return list(features.to_pylist())
    if output == "pandas":
        return [
            {c: None if v is None or v is pd_na() else v for c, v in row.items()}
            for row in features.to_dict("records")
        ]
    if output == "polars":
        return list(features.to_dicts())
    return [dict(zip(columns, row, strict=True)) for row in features]


def pd_na() -> Any:
    import pandas as pd

    return pd.NA


class Served:
    """Every row served in one epoch and one eval pass, checked against :func:`expected`."""

    def __init__(self) -> None:
        self.rows_checked = 0

    def check(self, rows: list[dict[str, Any]], ids: list[int], id_column: str = "id") -> None:
        seen = [int(row[id_column]) for row in rows]
        assert sorted(seen) == sorted(ids), "rows lost or served twice"
        for row in rows:
            want = expected(int(row[id_column]))
            for name, value in row.items():
                assert same(value, want[name.lower()]), (name, value, want[name.lower()])
        self.rows_checked += len(rows)


def read_rows(reader: Reader, output: str, columns: list[str]) -> list[dict[str, Any]]:
    """Every row of one training epoch and one eval pass."""
    rows: list[dict[str, Any]] = []
    for batches in (reader.iter_epoch(), reader.iter_eval()):
        for batch in batches:
            rows += rows_of(batch, output, columns)
    return rows


def tensor_rows(reader: Reader, columns: list[str]) -> list[dict[str, Any]]:
    """Every row of the train and eval splits, through ``FaucetIterableDataset``."""
    rows: list[dict[str, Any]] = []
    for split in ("train", "eval"):
        for features, _ in FaucetIterableDataset(reader, split=split):
            assert isinstance(features, torch.Tensor)
            rows += [dict(zip(columns, row, strict=True)) for row in features.tolist()]
    return rows


@pytest.fixture(scope="module")
def typed_db() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="faucet-types-") as folder:
        path = Path(folder) / "typed.duckdb"
        with duckdb.connect(str(path)) as db:
            db.execute(DUCKDB_TYPED)
        yield path


@pytest.fixture
def server_readers(tmp_path: Path) -> Iterator[Callable[..., Callable[..., Reader]]]:
    """Reader factories for one table (``server_readers(**table_settings)``); each
    factory's keywords override the table's and the defaults; closed after the test."""
    readers: list[Reader] = []

    def for_settings(**base: Any) -> Callable[..., Reader]:
        def make(**settings: Any) -> Reader:
            given = {
                "batch_size": 16, "chunk_size": 25, "test_split_percent": 25, "seed": 2,
                "cache_dir": str(tmp_path / "cache"), **base, **settings,
            }  # fmt: skip
            reader = get_batch_reader(**given)
            readers.append(reader)
            return reader

        return make

    yield for_settings
    for reader in readers:
        reader.close()


@pytest.fixture
def duck(
    typed_db: Path, server_readers: Callable[..., Callable[..., Reader]]
) -> Callable[..., Reader]:
    """Readers of the typed DuckDB tables, closed after the test."""
    return server_readers(
        datastore="duckdb", database=str(typed_db), table_name="typed", split_key="id"
    )


def test_duckdb_arrow_pandas_and_polars_keep_every_type_and_null(
    duck: Callable[..., Reader],
) -> None:
    served = Served()
    for output in ("arrow", "pandas", "polars"):
        reader = duck(output=output)
        served.check(read_rows(reader, output, ALL), list(range(ROWS)))
        if output == "arrow":
            schema = reader.plan.schema
            assert schema is not None
            assert schema.field("dec").type == pa.decimal128(18, 4)
            assert schema.field("tstz").type.tz is not None
    record(
        "types duckdb arrow+pandas+polars", columns=len(ALL), rows_checked=served.rows_checked,
        nulls_as="None (arrow, polars), NaN/None (pandas)", wrong=0,
    )  # fmt: skip


# numpy: one array per batch. Numbers (booleans, NULL as NaN) make a float matrix; text,
# decimals, lists and structs an object array of their values; dates beside numbers have no
# common array type, and the error names them.
NUMPY_EXACT = [
    ["id", "f_null", "i_null", "b", "all_null"],
    ["id", "dec"], ["id", "s"], ["id", "b_null"], ["id", "st"],
    ["d"], ["tstz"], ["id"],
]  # fmt: skip
NUMPY_REFUSED = [["id", "d"], ["id", "tstz"], ["f_null", "tstz"]]


def test_duckdb_numpy_gives_values_or_names_the_columns(duck: Callable[..., Reader]) -> None:
    served = Served()
    for columns in NUMPY_EXACT:
        key = ["id"] if "id" in columns else [columns[0]]
        reader = duck(output="numpy", columns=columns, split_key=key, test_split_percent=0)
        rows = read_rows(reader, "numpy", columns)
        if columns[0] == "id":
            served.check(rows, list(range(ROWS)))
        else:  # a date or timestamp column alone: a datetime64 array, values as numpy gives
            kind = columns[0]
            got = sorted(r[kind] for r in rows)
            want = sorted(np.datetime64(expected(i)[kind].replace(tzinfo=None)) if kind == "tstz"
                          else np.datetime64(expected(i)[kind]) for i in range(ROWS))  # fmt: skip
            assert got == want
            served.rows_checked += len(rows)
    refused = 0
    for columns in NUMPY_REFUSED:
        reader = duck(output="numpy", columns=columns, split_key=[columns[0]])
        with pytest.raises(ConfigError, match=rf"output: numpy .*{columns[1]} \(") as raised:
            read_rows(reader, "numpy", columns)
        assert columns[0] in str(raised.value)
        refused += 1
    record(
        "types duckdb numpy", column_sets=len(NUMPY_EXACT), rows_checked=served.rows_checked,
        refused_by_name=refused, wrong=0,
    )  # fmt: skip


def test_duckdb_lists_of_one_size_are_vectors_in_numpy_and_torch(
    duck: Callable[..., Reader],
) -> None:
    # lst holds two values on every row: planned as a vector, served as two columns.
    want = [[i, i, i + 1] for i in range(ROWS)]
    reader = duck(output="numpy", columns=["id", "lst"], test_split_percent=0)
    assert reader.feature_names == ["id", "lst[0]", "lst[1]"]
    matrix = np.concatenate([b["features"] for b in reader.iter_epoch()])
    assert sorted(matrix.tolist()) == want
    dataset = FaucetIterableDataset(duck(columns=["id", "lst"], test_split_percent=0))
    assert dataset.feature_names == ["id", "lst[0]", "lst[1]"]
    assert sorted(row for features, _ in dataset for row in features.tolist()) == want


# torch: numbers and booleans become tensors (NULL as NaN in float columns); any other
# column, or an integer or boolean one holding NULLs, is refused by name.
TORCH_EXACT = [["id", "f_null", "b"], ["id"]]
TORCH_REFUSED = ["i_null", "b_null", "all_null", "dec", "s", "d", "tstz", "st"]


def test_duckdb_torch_gives_numbers_or_names_the_column(duck: Callable[..., Reader]) -> None:
    served = Served()
    for columns in TORCH_EXACT:
        served.check(tensor_rows(duck(output="arrow", columns=columns), columns), list(range(ROWS)))
    for name in TORCH_REFUSED:
        reader = duck(output="arrow", columns=["id", name])
        with pytest.raises(ConfigError, match=rf"source.columns: {name} \(") as raised:
            tensor_rows(reader, ["id", name])
        assert "tensor" in str(raised.value)
    record(
        "types duckdb torch", column_sets=len(TORCH_EXACT), rows_checked=served.rows_checked,
        refused_by_name=len(TORCH_REFUSED), wrong=0,
    )  # fmt: skip


def test_duckdb_500_columns_in_every_format(duck: Callable[..., Reader]) -> None:
    wide = ["id", *(f"c{k}" for k in range(500))]
    checked = 0
    for output in OUTPUTS:
        reader = duck(
            table_name="wide", output="arrow" if output == "torch" else output,
            label_columns=["c499"], batch_size=64, chunk_size=100,
        )  # fmt: skip
        if output == "torch":
            matrix = np.vstack(
                [f.numpy() for split in ("train", "eval")
                 for f, _ in FaucetIterableDataset(reader, split=split)]
            )  # fmt: skip
        else:
            parts = []
            for batches in (reader.iter_epoch(), reader.iter_eval()):
                for batch in batches:
                    features = batch["features"]
                    if output == "arrow":
                        features = np.column_stack([c.to_numpy() for c in features.columns])
                    parts.append(np.asarray(features, dtype=float))
            matrix = np.vstack(parts)
        assert matrix.shape == (300, 500)  # c499 is the label
        ids = matrix[:, 0].astype(int)
        assert sorted(ids.tolist()) == list(range(300))
        offsets = np.arange(499) / 1000
        assert np.allclose(matrix[:, 1:], ids[:, None] + offsets[None, :], rtol=0, atol=1e-12)
        checked += matrix.size
    assert len(wide) == 501
    record("types duckdb 500 columns", outputs=len(OUTPUTS), values_checked=checked, wrong=0)


def test_duckdb_empty_and_one_row_tables(duck: Callable[..., Reader]) -> None:
    numeric = ["id", "f_null", "b"]
    outcomes = []
    for output in OUTPUTS:
        fmt = "arrow" if output == "torch" else output
        try:
            reader = duck(table_name="empty", output=fmt, columns=numeric)
        except PermanentWarehouseError as exc:
            assert "table empty" in str(exc) and "no rows" in str(exc)
            outcomes.append("error")
        else:
            rows = tensor_rows(reader, numeric) if output == "torch" else read_rows(reader, fmt, [])
            assert rows == [] and reader.rows("train") == reader.rows("eval") == 0
            outcomes.append("empty")
        one = duck(table_name="one_row", output=fmt, columns=numeric)
        served = tensor_rows(one, numeric) if output == "torch" else read_rows(one, fmt, numeric)
        Served().check(served, [7])
    assert len(set(outcomes)) == 1, outcomes  # the same for every format
    record("types duckdb empty + one-row", outputs=len(OUTPUTS), empty=outcomes[0], one_row=1)


def test_an_eval_split_without_rows_serves_nothing_and_never_waits(
    duck: Callable[..., Reader],
) -> None:
    numeric = ["id", "f_null", "b"]
    for percent in (0, 0.0001):
        for output in OUTPUTS:
            fmt = "arrow" if output == "torch" else output
            reader = duck(output=fmt, columns=numeric, test_split_percent=percent)
            assert reader.rows("eval") == 0 and reader.batches_per_epoch("eval") == 0
            if output == "torch":
                assert list(FaucetIterableDataset(reader, split="eval")) == []
                assert len(tensor_rows(reader, numeric)) == ROWS
                continue
            reader.prep_for_eval()
            assert reader.get_batch(eval=True) is None
            assert list(reader.iter_eval()) == []
            Served().check(read_rows(reader, fmt, numeric), list(range(ROWS)))
    record("types eval-empty split", percents=2, outputs=len(OUTPUTS), eval_rows=0, train_rows=ROWS)


# The smaller matrix on the servers: NULLs, DECIMAL, timestamps with a time zone, an empty
# table.

SERVER_COLUMNS = ["id", "f_null", "i_null", "dec", "tstz"]


def check_server(make: Callable[..., Reader], names: dict[str, str], empty: str) -> dict[str, Any]:
    """The typed table through arrow, numpy and torch, and the empty table: exact values,
    NaN for float NULLs, the integer column with NULLs refused by torch by name."""
    served = Served()
    columns = [names[c] for c in SERVER_COLUMNS]
    ident = names["id"]
    reader = make(output="arrow", columns=columns, split_key=[ident])
    served.check(read_rows(reader, "arrow", columns), list(range(ROWS)), ident)
    numbers = [ident, names["f_null"]]
    reader = make(output="numpy", columns=numbers, split_key=[ident])
    served.check(read_rows(reader, "numpy", numbers), list(range(ROWS)), ident)
    reader = make(output="arrow", columns=numbers, split_key=[ident])
    served.check(tensor_rows(reader, numbers), list(range(ROWS)), ident)
    reader = make(output="arrow", columns=[ident, names["i_null"]], split_key=[ident])
    with pytest.raises(ConfigError, match=rf"{names['i_null']} \(int64\) hold NULLs"):
        tensor_rows(reader, [ident, names["i_null"]])
    try:
        reader = make(output="arrow", table_name=empty, columns=columns, split_key=[ident])
    except PermanentWarehouseError as exc:
        assert empty in str(exc) and "no rows" in str(exc)
        outcome = "error"
    else:
        assert read_rows(reader, "arrow", columns) == []
        outcome = "empty"
    return {"rows_checked": served.rows_checked, "empty": outcome}


PG_TYPED = f"""
DROP TABLE IF EXISTS nullable_types, nullable_types_empty;
CREATE TABLE nullable_types AS SELECT i AS id,
  CASE WHEN i % 3 = 0 THEN NULL ELSE i / 2.0 END::FLOAT8 AS f_null,
  CASE WHEN i % 3 = 0 THEN NULL ELSE i END::BIGINT AS i_null,
  (i * 1.25)::NUMERIC(18, 4) AS dec,
  TIMESTAMPTZ '2024-01-01 00:00:00+02' + i * INTERVAL '1 second' AS tstz
FROM generate_series(0, {ROWS - 1}) AS s(i);
CREATE TABLE nullable_types_empty AS SELECT * FROM nullable_types WHERE false;
"""


def test_postgres_types(
    postgres_server: PostgresServer, server_readers: Callable[..., Callable[..., Reader]]
) -> None:
    import psycopg

    with psycopg.connect(postgres_server.url, autocommit=True) as db:
        db.execute(PG_TYPED.encode())
    make = server_readers(
        datastore="postgres", dsn=postgres_server.url, table_name="nullable_types"
    )
    figures = check_server(make, {c: c for c in SERVER_COLUMNS}, "nullable_types_empty")
    record("types postgres", **figures, wrong=0)


SF_TYPED = f"""
CREATE OR REPLACE TABLE NULLABLE_TYPES AS SELECT seq4() AS id,
  IFF(MOD(seq4(), 3) = 0, NULL, seq4() / 2)::FLOAT AS f_null,
  IFF(MOD(seq4(), 3) = 0, NULL, seq4())::BIGINT AS i_null,
  (seq4() * 1.25)::NUMBER(18, 4) AS dec,
  DATEADD(second, seq4(), '2024-01-01 00:00:00 +02:00'::TIMESTAMP_TZ) AS tstz
FROM TABLE(GENERATOR(ROWCOUNT => {ROWS}))
"""


def test_snowflake_types(
    snowflake_server: SnowServer, server_readers: Callable[..., Callable[..., Reader]]
) -> None:
    with snowflake_server.connect(database="FAUCET_TEST", schema="PUBLIC") as db:
        cursor = db.cursor()
        cursor.execute(SF_TYPED)
        cursor.execute(
            "CREATE OR REPLACE TABLE NULLABLE_TYPES_EMPTY AS "
            "SELECT * FROM NULLABLE_TYPES WHERE false"
        )
    settings = snowflake_server.settings(database="FAUCET_TEST", schema="PUBLIC")
    make = server_readers(datastore="snowflake", table_name="NULLABLE_TYPES", **settings)
    figures = check_server(make, {c: c.upper() for c in SERVER_COLUMNS}, "NULLABLE_TYPES_EMPTY")
    record("types snowflake", **figures, wrong=0)


BQ_TYPED = f"""
CREATE OR REPLACE TABLE faucet_types.typed AS SELECT i AS id,
  IF(MOD(i, 3) = 0, NULL, i / 2) AS f_null,
  IF(MOD(i, 3) = 0, NULL, i) AS i_null,
  CAST(i * 1.25 AS NUMERIC) AS dec,
  TIMESTAMP_ADD(TIMESTAMP '2024-01-01 00:00:00+02', INTERVAL i SECOND) AS tstz
FROM UNNEST(GENERATE_ARRAY(0, {ROWS - 1})) AS i
"""


def test_bigquery_types(
    bigquery_emulator: BigQueryEmulator, server_readers: Callable[..., Callable[..., Reader]]
) -> None:
    client = bigquery_emulator.client()
    client.create_dataset("faucet_types", exists_ok=True)
    client.query(BQ_TYPED).result()
    client.query(
        "CREATE OR REPLACE TABLE faucet_types.typed_empty AS "
        "SELECT * FROM faucet_types.typed WHERE false"
    ).result()
    make = server_readers(
        datastore="bigquery", table_name="faucet_types.typed", **bigquery_emulator.settings()
    )
    figures = check_server(make, {c: c for c in SERVER_COLUMNS}, "faucet_types.typed_empty")
    record("types bigquery", **figures, wrong=0)
