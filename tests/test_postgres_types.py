"""Every PostgreSQL column type arrives as an Arrow type, a source of built-in types only
is described without the ADBC driver, and a column left out of ``source.columns`` is
never read."""

from __future__ import annotations

import functools
import hashlib
import json
import uuid
from collections.abc import Callable
from decimal import Decimal

import psycopg
import pyarrow as pa
import pytest

from faucet_core import Reader
from faucet_postgres import types
from faucet_postgres.readers import AdbcReader
from tests.pgserver import PostgresServer

MakeReader = Callable[..., Reader]

#: Each column of table ``odd``: its SQL (over ``i``), its Arrow type and row 3's value.
COLUMNS: dict[str, tuple[str, pa.DataType, object]] = {
    "doc": ("jsonb_build_object('i', i)", pa.string(), '{"i": 3}'),
    "plain_doc": ("json_build_object('j', i)", pa.string(), '{"j" : 3}'),
    "blob": ("int4send(i)", pa.binary(), b"\x00\x00\x00\x03"),
    "token": ("md5(i::text)::uuid", pa.string(), str(uuid.UUID(hashlib.md5(b"3").hexdigest()))),
    "wait": ("i * INTERVAL '1 hour'", pa.month_day_nano_interval(),
             pa.scalar((0, 0, 3 * 3600 * 10**9), pa.month_day_nano_interval()).as_py()),
    "huge": ("(i + 10::NUMERIC ^ 30)::NUMERIC(38, 0)", pa.decimal128(38, 0),
             Decimal(10**30 + 3)),
    "price": ("(i + 0.25)::MONEY", pa.float64(), 3.25),
    "mood": ("(ARRAY['sad', 'happy'])[1 + i % 2]::mood", pa.string(), "happy"),
    "positive": ("(i + 1)::positive", pa.int32(), 4),
    "address": ("('10.0.0.' || i)::INET", pa.string(), "10.0.0.3/32"),
    "spot": ("point(i, 2)", pa.string(), "(3,2)"),
    "grid": ("ARRAY[[i, 1], [2, 3]]", pa.list_(pa.int32(), 4), [3, 1, 2, 3]),
    "amounts": ("ARRAY[i / 2.0]", pa.list_(pa.float64(), 1), [1.5]),
    "hosts": ("ARRAY[('10.0.0.' || i)::INET]", pa.list_(pa.string()), ["10.0.0.3/32"]),
    "tags": ("ARRAY['a' || i, 'b']", pa.list_(pa.string()), ["a3", "b"]),
}  # fmt: skip


#: A column of each built-in type described by its OID (:func:`types.builtin_schema`):
#: its SQL type, then the SQL of its value in row ``i``.
BUILTIN: dict[str, tuple[str, str]] = {
    "b": ("BOOL", "i % 2 = 1"),
    "by": ("BYTEA", "int4send(i)"),
    "ch": ('"char"', "chr(65 + i)"),
    "nm": ("NAME", "'n' || i"),
    "i8": ("INT8", "i * 10000000000"),
    "i2": ("INT2", "i"),
    "i4": ("INT4", "i"),
    "tx": ("TEXT", "'t' || i"),
    "f4": ("FLOAT4", "i / 4.0"),
    "f8": ("FLOAT8", "i / 8.0"),
    "bp": ("CHAR(3)", "'c' || i"),
    "vc": ("VARCHAR(5)", "'v' || i"),
    "dt": ("DATE", "DATE '2026-01-01' + i"),
    "tm": ("TIME", "TIME '10:00' + i * INTERVAL '1 minute'"),
    "ts": ("TIMESTAMP", "TIMESTAMP '2026-01-01' + i * INTERVAL '1 hour'"),
    "tz": ("TIMESTAMPTZ", "TIMESTAMPTZ '2026-01-01 00:00+00' + i * INTERVAL '1 hour'"),
    "iv": ("INTERVAL", "i * INTERVAL '1 day'"),
    "dec": ("NUMERIC(12, 3)", "i / 3.0"),
    "wide": ("NUMERIC(50, 2)", "i + 10::NUMERIC ^ 40"),
    "num": ("NUMERIC", "i / 7.0"),
}


def described_by_server(url: str, sql: str) -> list[tuple[str, int, int]]:
    """Each column of ``sql``'s result: its name, type OID and type modifier."""
    with psycopg.connect(url, autocommit=True) as db:
        cursor = db.execute(sql)
        result = cursor.pgresult
        assert cursor.description is not None and result is not None
        return [(c.name, c.type_code, result.fmod(i)) for i, c in enumerate(cursor.description)]


def test_builtin_types_are_described_as_the_driver_reads_them(
    own_pg_table: Callable[[str], str], postgres_url: str
) -> None:
    columns = ", ".join(f"({sql})::{kind} AS {name}" for name, (kind, sql) in BUILTIN.items())
    table = own_pg_table(f"SELECT {columns} FROM generate_series(0, 4) AS s(i)")
    described = described_by_server(postgres_url, f"SELECT * FROM {table} LIMIT 0")
    assert {oid for _, oid, _ in described} >= set(types._BUILTIN)  # every one is tried
    reader = AdbcReader(postgres_url)
    try:
        by_driver = reader.describe(f"SELECT * FROM {table} LIMIT 0")
        served = reader.read(f"SELECT * FROM {table}")
    finally:
        reader.close()
    assert types.builtin_schema(described) == types.decoded_schema(by_driver)
    assert served.schema == types.builtin_schema(described)


@pytest.mark.parametrize("kind", ["UUID", "INT4[]", "JSONB", "MONEY", "INET"])
def test_other_types_are_left_to_the_driver(
    own_pg_table: Callable[[str], str], postgres_url: str, kind: str
) -> None:
    table = own_pg_table(f"SELECT 1 AS id, NULL::{kind} AS other")
    described = described_by_server(postgres_url, f"SELECT * FROM {table} LIMIT 0")
    assert types.builtin_schema(described[:1]) == pa.schema([pa.field("id", pa.int32())])
    assert types.builtin_schema(described) is None


@pytest.fixture(scope="module")
def odd_table(postgres_server: PostgresServer) -> str:
    """Table ``odd``: an ``id``, a ``label`` and a column of each type of :data:`COLUMNS`."""
    selected = ", ".join(f"{sql} AS {name}" for name, (sql, _, _) in COLUMNS.items())
    with psycopg.connect(postgres_server.url, autocommit=True) as db:
        db.execute("DROP TABLE IF EXISTS odd")
        db.execute("DROP TYPE IF EXISTS mood; DROP DOMAIN IF EXISTS positive")
        db.execute("CREATE TYPE mood AS ENUM ('sad', 'happy')")
        db.execute("CREATE DOMAIN positive AS INTEGER CHECK (VALUE > 0)")
        db.execute(
            f"CREATE TABLE odd AS SELECT i AS id, i % 2 AS label, {selected} "
            "FROM generate_series(0, 99) AS s(i)"
        )
    return "odd"


@pytest.fixture
def make_pg_reader(postgres_url: str, make_reader: MakeReader, odd_table: str) -> MakeReader:
    """Readers of table ``odd``, every row in train."""
    return functools.partial(
        make_reader, datastore="postgres", dsn=postgres_url, database=None,
        table_name=odd_table, test_split_percent=0,
    )  # fmt: skip


def rows(reader: Reader) -> list[dict[str, object]]:
    """An epoch's rows, by ``id``."""
    batches = [batch["features"] for batch in reader.iter_epoch()]
    return pa.concat_tables(batches).sort_by("id").to_pylist()


@pytest.mark.parametrize("use_cache", [True, False], ids=["scanned", "chunk reads"])
def test_every_type_arrives_as_arrow(make_pg_reader: MakeReader, use_cache: bool) -> None:
    reader = make_pg_reader(output="arrow", label_columns=None, use_cache=use_cache)
    assert reader.plan.schema is not None
    planned = {field.name: field.type for field in reader.plan.schema}
    assert planned == {"id": pa.int32(), "label": pa.int32()} | {
        name: kind for name, (_, kind, _) in COLUMNS.items()
    }
    served = rows(reader)
    assert [row["id"] for row in served] == list(range(100))
    row = served[3]
    for name, (_, _, value) in COLUMNS.items():
        if name in ("doc", "plain_doc"):
            assert json.loads(str(row[name])) == json.loads(str(value)), name
        else:
            assert row[name] == value, name


def test_unselected_columns_are_never_read(
    make_pg_reader: MakeReader, postgres_server: PostgresServer
) -> None:
    since = postgres_server.log_offset()
    reader = make_pg_reader(columns=["id", "huge", "label"], output="numpy")
    served = [batch["features"] for batch in reader.iter_epoch()]
    assert sum(len(features) for features in served) == 100
    reads = [
        statement
        for statement in postgres_server.statements("postgres", since)
        if "LIMIT 0" not in statement and "odd" in statement
    ]
    assert reads, "no statement read the table"
    for name in COLUMNS.keys() - {"huge"}:
        assert not any(name in statement for statement in reads), name


def driver_descriptions(server: PostgresServer, since: int, table: str) -> list[str]:
    """The statements of the ADBC driver's description of ``table`` since ``since``."""
    return [
        statement
        for statement in server.statements("postgres", since)
        if statement.startswith("COPY (SELECT * FROM") and table in statement
    ]


def test_a_source_of_builtin_types_is_planned_without_the_drivers_description(
    make_reader: MakeReader, postgres_server: PostgresServer, odd_table: str
) -> None:
    since = postgres_server.log_offset()
    make_reader(datastore="postgres", dsn=postgres_server.url, database=None)
    assert not driver_descriptions(postgres_server, since, '"t"')
    since = postgres_server.log_offset()
    make_reader(datastore="postgres", dsn=postgres_server.url, database=None, table_name=odd_table)
    assert driver_descriptions(postgres_server, since, odd_table)
