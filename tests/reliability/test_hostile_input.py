"""Hostile names and values, for every warehouse: quotes, backticks, semicolons, comment
markers, placeholders, unicode, NUL and very long names as table, column, split key,
label and partition names, and as ``ds`` values and other config values.

Each example either gets a clear ``ConfigError`` / ``PermanentWarehouseError`` naming the
setting, or, where the warehouse itself accepts the name (a real table with such a
column), serves exactly the table's rows once per pass with their values intact. A
``canary`` table in every warehouse, which an injected ``DROP TABLE canary`` would
remove, must outlive every example: no SQL ever runs from a value.
"""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from faucet_core import ConfigError, Reader, get_batch_reader
from faucet_core.warehouse import PermanentWarehouseError
from tests.bqemulator import BigQueryEmulator
from tests.pgserver import PostgresServer
from tests.reliability.figures import record
from tests.snowserver import SnowServer

ROWS = 40
#: What an injection would look like, and what trips up SQL built by pasting text.
PIECES = [
    "'", '"', "`", ";", "--", "/*", "*/", "%", "%s", "%(x)s", "?", ":x", "@x", "$1", "$$",
    "\\", "\n", "\t", " ", "(", ")", ",", ".", "ü", "名", "🙂", "\x00", "''", '""',
    "; DROP TABLE canary; --", '"; DROP TABLE canary; --', "`; DROP TABLE canary; --",
    "') OR 1=1 --",
]  # fmt: skip
#: Hostile text: pieces and arbitrary characters run together, or a very long name.
HOSTILE = st.one_of(
    st.lists(
        st.one_of(st.sampled_from(PIECES), st.text(min_size=1, max_size=3)), min_size=1, max_size=5
    ).map("".join),
    st.integers(min_value=60, max_value=300).map(lambda n: "x" * n),
)
#: The settings a hostile value may go in, with the names of the table's own columns.
SOURCE_SETTINGS = ["table_name", "ds", "partition_column", "columns", "split_key"]


def property_settings(examples: int) -> settings:
    """Deterministic runs (the same examples in CI every time), no deadline; no more
    examples than the profile allows (the mutation profile's few)."""
    return settings(
        max_examples=min(examples, settings.default.max_examples),
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


@dataclass
class Tally:
    """What a property tried in one warehouse, for the figures."""

    examples: int = 0
    refused_by_warehouse: int = 0
    errors: int = 0
    served: int = 0
    rows_checked: int = 0
    messages: list[str] = field(default_factory=list)

    def error(self, exc: BaseException) -> None:
        self.errors += 1
        self.messages.append(str(exc))


def is_clear(exc: BaseException, *settings: str) -> bool:
    """Whether ``exc`` is a config or permanent warehouse error naming one of ``settings``."""
    return isinstance(exc, (ConfigError, PermanentWarehouseError)) and any(
        name in str(exc) for name in settings
    )


def serve_all(reader: Reader) -> pa.Table:
    """Every row of one training epoch and one eval pass, as one table."""
    tables = []
    for batches in (reader.iter_epoch(), reader.iter_eval()):
        for batch in batches:
            features: pa.Table = batch["features"]
            labels: pa.Table | None = batch["labels"]
            for name in labels.column_names if labels is not None else []:
                features = features.append_column(name, labels[name])
            tables.append(features)
    return pa.concat_tables(tables)


def check_served(table: pa.Table, id_column: str, value_column: str) -> int:
    """Each id of ``range(ROWS)`` exactly once, each with its own value (``3 * id + 1``)."""
    ids = table[id_column].to_pylist()
    assert sorted(ids) == list(range(ROWS)), "rows lost or served twice"
    values = dict(zip(ids, table[value_column].to_pylist(), strict=True))
    assert all(values[i] == 3 * i + 1 for i in ids), "a value was read from the wrong column"
    return len(ids)


class Target:
    """A warehouse under test: makes tables with a given column name, builds readers,
    and tells whether the canary table is still there."""

    name: str
    id_column = "id"
    #: Whether Faucet reads a column of any name the warehouse accepts (else, it refuses
    #: names that are not plain identifiers, with a clear error).
    takes_any_name = True

    def __init__(self, cache_root: Path) -> None:
        self.cache_root = cache_root

    def cache_dir(self) -> str:
        return str(self.cache_root / uuid.uuid4().hex)

    def quoted(self, name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    def create(self, table: str, column: str) -> str | None:
        """Make ``table`` with ``id``, ``column`` (``3 * id + 1``) and ``ds``; the column's
        name as the warehouse stored it, or ``None`` if the warehouse refuses the name."""
        raise NotImplementedError

    def written(self, stored: str) -> str:
        """How a config names the column stored as ``stored``."""
        return stored

    def drop(self, table: str) -> None:
        raise NotImplementedError

    def canary_rows(self) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        raise NotImplementedError

    def reader(self, **overrides: Any) -> Reader:
        given = {
            "batch_size": 7,
            "chunk_size": 10,
            "test_split_percent": 25,
            "seed": 3,
            "output": "arrow",
            "cache_dir": self.cache_dir(),
            **self.settings(),
            **overrides,
        }
        return get_batch_reader(**given)

    def read_paths(self) -> list[dict[str, Any]]:
        """The reading paths worth trying: the cache filled from one scan, chunk reads."""
        return [{}, {"use_cache": False}]


class DuckDBTarget(Target):
    name = "duckdb"

    def __init__(self, cache_root: Path) -> None:
        super().__init__(cache_root)
        self.path = cache_root / "hostile.duckdb"
        with duckdb.connect(str(self.path)) as db:
            db.execute("CREATE TABLE canary AS SELECT 42 AS v")

    def create(self, table: str, column: str) -> str | None:
        try:
            with duckdb.connect(str(self.path)) as db:
                db.execute(
                    f"CREATE TABLE {table} AS SELECT i AS id, 3 * i + 1 AS {self.quoted(column)}, "
                    "DATE '2024-01-01' + (i % 2)::INT AS ds FROM range(40) r(i)"
                )
                return str(db.execute(f"DESCRIBE {table}").fetchall()[1][0])
        except duckdb.Error:
            return None

    def drop(self, table: str) -> None:
        with duckdb.connect(str(self.path)) as db:
            db.execute(f"DROP TABLE IF EXISTS {table}")

    def canary_rows(self) -> list[tuple[Any, ...]]:
        with duckdb.connect(str(self.path), read_only=True) as db:
            return db.execute("SELECT * FROM canary").fetchall()

    def settings(self) -> dict[str, Any]:
        return {"datastore": "duckdb", "database": str(self.path)}


class PostgresTarget(Target):
    name = "postgres"

    def __init__(self, cache_root: Path, url: str, datastore: str = "postgres") -> None:
        super().__init__(cache_root)
        self.url = "postgresql://" + url.split("://", 1)[1]
        self.dsn = url
        self.datastore = datastore
        self.name = datastore
        self.run("DROP TABLE IF EXISTS canary")
        self.run("CREATE TABLE canary AS SELECT 42 AS v")

    def run(self, sql: str) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as db:
            cursor = db.execute(sql.encode())  # as bytes: no placeholder parsing
            return cursor.fetchall() if cursor.description else []

    def create(self, table: str, column: str) -> str | None:
        import psycopg

        try:
            self.run(
                f"CREATE TABLE {table} AS SELECT i AS id, 3 * i + 1 AS {self.quoted(column)}, "
                "DATE '2024-01-01' + (i % 2) AS ds FROM generate_series(0, 39) AS s(i)"
            )
        except (psycopg.Error, ValueError):
            return None
        rows = self.run(
            f"SELECT attname FROM pg_attribute WHERE attrelid = '{table}'::regclass AND attnum = 2"
        )
        return str(rows[0][0])

    def drop(self, table: str) -> None:
        self.run(f"DROP TABLE IF EXISTS {table}")

    def canary_rows(self) -> list[tuple[Any, ...]]:
        return self.run("SELECT * FROM canary")

    def settings(self) -> dict[str, Any]:
        extra = {"scratch_attributes": ""} if self.datastore == "redshift" else {}
        return {"datastore": self.datastore, "dsn": self.dsn, **extra}


class SnowflakeTarget(Target):
    name = "snowflake"
    id_column = "ID"

    def __init__(self, cache_root: Path, server: SnowServer) -> None:
        super().__init__(cache_root)
        self.server = server
        self.db = server.connect(database="FAUCET_TEST", schema="PUBLIC")
        self.run("CREATE OR REPLACE TABLE CANARY AS SELECT 42 AS V")

    def run(self, sql: str) -> list[tuple[Any, ...]]:
        with self.db.cursor() as cursor:
            cursor.execute(sql)
            return list(cursor.fetchall())

    def create(self, table: str, column: str) -> str | None:
        try:
            self.run(
                f"CREATE TABLE {table} AS SELECT seq4() AS id, 3 * seq4() + 1 AS "
                f"{self.quoted(column)}, DATEADD(day, MOD(seq4(), 2), '2024-01-01'::DATE) AS ds "
                "FROM TABLE(GENERATOR(ROWCOUNT => 40))"
            )
            with self.db.cursor() as cursor:
                cursor.execute(f"SELECT * FROM {table} LIMIT 0")
                return str(cursor.description[1].name)
        except Exception:  # the stand-in refuses the name
            return None

    def drop(self, table: str) -> None:
        self.run(f"DROP TABLE IF EXISTS {table}")

    def written(self, stored: str) -> str:
        return self.quoted(stored)  # as in Snowflake SQL: unquoted would mean upper case

    def canary_rows(self) -> list[tuple[Any, ...]]:
        return self.run("SELECT * FROM CANARY")

    def settings(self) -> dict[str, Any]:
        return {
            "datastore": "snowflake",
            **self.server.settings(database="FAUCET_TEST", schema="PUBLIC"),
        }

    def read_paths(self) -> list[dict[str, Any]]:
        return [{}]  # both paths read the same scratch table


class BigQueryTarget(Target):
    name = "bigquery"
    takes_any_name = False
    dataset = "faucet_hostile"

    def __init__(self, cache_root: Path, emulator: BigQueryEmulator) -> None:
        super().__init__(cache_root)
        self.emulator = emulator
        self.client = emulator.client()
        self.client.create_dataset(self.dataset, exists_ok=True)
        self.run(f"CREATE OR REPLACE TABLE {self.dataset}.canary AS SELECT 42 AS v")

    def run(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(row.values()) for row in self.client.query(sql).result()]

    def create(self, table: str, column: str) -> str | None:
        quoted = "`" + column.replace("\\", "\\\\").replace("`", "\\`") + "`"
        try:
            self.run(
                f"CREATE TABLE {self.dataset}.{table} AS SELECT i AS id, 3 * i + 1 AS {quoted}, "
                "DATE_ADD(DATE '2024-01-01', INTERVAL MOD(i, 2) DAY) AS ds "
                "FROM UNNEST(GENERATE_ARRAY(0, 39)) AS i"
            )
            return str(self.client.get_table(f"{self.dataset}.{table}").schema[1].name)
        except Exception:  # the emulator refuses the name
            return None

    def drop(self, table: str) -> None:
        self.client.delete_table(f"{self.dataset}.{table}", not_found_ok=True)

    def canary_rows(self) -> list[tuple[Any, ...]]:
        return self.run(f"SELECT * FROM {self.dataset}.canary")

    def settings(self) -> dict[str, Any]:
        return {"datastore": "bigquery", **self.emulator.settings()}

    def reader(self, **overrides: Any) -> Reader:
        table = overrides.get("table_name")
        if table is not None and "." not in table:
            overrides["table_name"] = f"{self.dataset}.{table}"
        return super().reader(**overrides)

    def read_paths(self) -> list[dict[str, Any]]:
        return [{}]


@contextlib.contextmanager
def opened(target: Target, **overrides: Any) -> Iterator[Reader]:
    reader = target.reader(**overrides)
    try:
        yield reader
    finally:
        reader.close()


def column_names_property(target: Target, examples: int) -> Tally:
    """A column named by hostile text, as a selected column, the split key and the label:
    its rows served exactly once with their values, or a clear error naming the setting."""
    tally = Tally()

    @property_settings(examples)
    @given(name=HOSTILE)
    @example(name="x\"'`); DROP TABLE canary; --")
    @example(name="100% %s%(x)s ? $1")
    @example(name="名前 /* c */ -- d")
    def check(name: str) -> None:
        tally.examples += 1
        table = f"h_{uuid.uuid4().hex[:12]}"
        stored = target.create(table, name)
        try:
            if stored is None or stored.lower() in ("id", "ds"):
                tally.refused_by_warehouse += 1
                return
            for path in target.read_paths():
                try:
                    written = target.written(stored)
                    reader = target.reader(
                        table_name=table, columns=[target.id_column, written],
                        split_key=[written], label_columns=[written], **path,
                    )  # fmt: skip
                except (ConfigError, PermanentWarehouseError) as exc:
                    assert is_clear(exc, "source.columns", "source.split_key"), exc
                    # DuckDB reports a name with NUL in DESCRIBE, cut at the NUL elsewhere.
                    assert "\x00" in stored or not target.takes_any_name, exc
                    tally.error(exc)
                    continue
                try:
                    tally.rows_checked += check_served(serve_all(reader), target.id_column, stored)
                    tally.served += 1
                finally:
                    reader.close()
        finally:
            target.drop(table)
        assert target.canary_rows() == [(42,)]

    check()
    return tally


#: The expected outcome of a hostile value in each setting: the words a clear error says.
NAMED = {
    "table_name": ("source.table", "table"),
    "ds": ("ds",),
    "partition_column": ("partition column", "partition_column", "source.ds", "has no column"),
    "columns": ("source.columns",),
    "split_key": ("source.split_key",),
    "label_columns": ("label_columns", "source.columns"),
}


def setting_values_property(target: Target, table: str, examples: int) -> Tally:
    """A hostile value in a source setting: a clear error naming it, or correct rows."""
    tally = Tally()

    @property_settings(examples)
    @given(setting=st.sampled_from([*SOURCE_SETTINGS, "label_columns"]), value=HOSTILE)
    @example(setting="ds", value="2024-01-02")
    @example(setting="ds", value="2024-01-01'; DROP TABLE canary; --")
    @example(setting="ds", value="2024-01-01' OR '1'='1")
    @example(setting="table_name", value="canary; DROP TABLE canary")
    @example(setting="table_name", value='"canary"; DROP TABLE canary; --')
    @example(setting="partition_column", value='ds" = ds; DROP TABLE canary; --')
    def check(setting: str, value: str) -> None:
        tally.examples += 1
        settings: dict[str, Any] = {"table_name": table, "split_key": [target.id_column]}
        if setting in ("columns", "split_key", "label_columns"):
            settings[setting] = [value]
            if setting == "label_columns":
                settings["columns"] = [target.id_column, value]
        elif setting == "partition_column":
            settings.update(partition_column=value, ds="2024-01-01")
        else:
            settings[setting] = value
        try:
            with opened(target, **settings) as reader:
                served = serve_all(reader)
        except (ConfigError, PermanentWarehouseError) as exc:
            assert is_clear(exc, *NAMED[setting]), f"{setting}={value!r}: {exc}"
            tally.error(exc)
        else:  # only a value that names the table's own rows may serve any
            assert setting == "ds", f"{setting}={value!r} served {served.num_rows} rows"
            ids = served[target.id_column].to_pylist()
            tally.served += 1
            tally.rows_checked += len(ids)
            assert len(set(ids)) == len(ids)
        assert target.canary_rows() == [(42,)]

    check()
    return tally


def report(check: str, target: Target, tally: Tally) -> None:
    record(
        f"hostile {check} {target.name}", examples=tally.examples,
        refused_by_warehouse=tally.refused_by_warehouse, clear_errors=tally.errors,
        served_exactly_once=tally.served, rows_checked=tally.rows_checked, sql_executed=0,
    )  # fmt: skip


# DuckDB: every property, many examples (an embedded database: fast).


@pytest.fixture(scope="module")
def duckdb_target() -> Iterator[DuckDBTarget]:
    with tempfile.TemporaryDirectory(prefix="faucet-hostile-") as folder:
        yield DuckDBTarget(Path(folder))


def test_duckdb_hostile_column_names(duckdb_target: DuckDBTarget) -> None:
    tally = column_names_property(duckdb_target, 15)
    report("column names", duckdb_target, tally)
    assert tally.served > 0


def test_duckdb_hostile_setting_values(duckdb_target: DuckDBTarget) -> None:
    duckdb_target.create("plain", "v")
    tally = setting_values_property(duckdb_target, "plain", 40)
    report("setting values", duckdb_target, tally)
    assert tally.errors > 0


# PostgreSQL and the Redshift dialect on it.


@pytest.fixture(scope="module")
def postgres_target(postgres_server: PostgresServer) -> Iterator[PostgresTarget]:
    with tempfile.TemporaryDirectory(prefix="faucet-hostile-") as folder:
        yield PostgresTarget(Path(folder), postgres_server.url)


@pytest.fixture(scope="module")
def redshift_target(redshift_url: str) -> Iterator[PostgresTarget]:
    with tempfile.TemporaryDirectory(prefix="faucet-hostile-") as folder:
        yield PostgresTarget(Path(folder), redshift_url, datastore="redshift")


@pytest.mark.parametrize("which", ["postgres", "redshift"])
def test_postgres_family_hostile_column_names(which: str, request: pytest.FixtureRequest) -> None:
    target: PostgresTarget = request.getfixturevalue(f"{which}_target")
    tally = column_names_property(target, 6)
    report("column names", target, tally)
    assert tally.served > 0 and tally.errors == 0


@pytest.mark.parametrize("which", ["postgres", "redshift"])
def test_postgres_family_hostile_setting_values(which: str, request: pytest.FixtureRequest) -> None:
    target: PostgresTarget = request.getfixturevalue(f"{which}_target")
    target.drop("plain")
    target.create("plain", "v")
    tally = setting_values_property(target, "plain", 20)
    report("setting values", target, tally)
    assert tally.errors > 0


# Snowflake (fakesnow's server) and BigQuery (bqemulator): fewer examples, each a few
# round trips to a server.


@pytest.fixture(scope="module")
def snowflake_target(snowflake_server: SnowServer) -> Iterator[SnowflakeTarget]:
    with tempfile.TemporaryDirectory(prefix="faucet-hostile-") as folder:
        target = SnowflakeTarget(Path(folder), snowflake_server)
        yield target
        target.db.close()


@pytest.fixture(scope="module")
def bigquery_target(bigquery_emulator: BigQueryEmulator) -> Iterator[BigQueryTarget]:
    with tempfile.TemporaryDirectory(prefix="faucet-hostile-") as folder:
        yield BigQueryTarget(Path(folder), bigquery_emulator)


@pytest.mark.parametrize("which", ["snowflake", "bigquery"])
def test_cloud_warehouses_hostile_column_names(which: str, request: pytest.FixtureRequest) -> None:
    target: Target = request.getfixturevalue(f"{which}_target")
    tally = column_names_property(target, 4)
    report("column names", target, tally)
    assert tally.examples >= 7


@pytest.mark.parametrize("which", ["snowflake", "bigquery"])
def test_cloud_warehouses_hostile_setting_values(
    which: str, request: pytest.FixtureRequest
) -> None:
    target: Target = request.getfixturevalue(f"{which}_target")
    target.drop("PLAIN" if which == "snowflake" else "plain")
    target.create("PLAIN" if which == "snowflake" else "plain", "V")
    tally = setting_values_property(target, "PLAIN" if which == "snowflake" else "plain", 12)
    report("setting values", target, tally)
    assert tally.errors > 0


def unplain(value: str) -> bool:
    """Whether ``value`` is not a plain name in any warehouse's sense."""
    return any(c in "'\"`; /*%?\\\n\t\x00()., " or not c.isascii() for c in value)


def test_config_values_that_reach_sql_are_validated(
    postgres_server: PostgresServer,
    bigquery_emulator: BigQueryEmulator,
    duckdb_target: DuckDBTarget,
    bigquery_target: BigQueryTarget,
) -> None:
    """Connection settings that end up in SQL text (schema and dataset names) are refused
    with the setting's name when they are not plain; so is a DuckDB memory limit DuckDB
    cannot read."""
    tally = Tally()
    duck = {"datastore": "duckdb", "database": str(duckdb_target.path)}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"datastore": "postgres", "dsn": postgres_server.url}, "scratch_schema"),
        ({"datastore": "redshift", "dsn": postgres_server.url}, "scratch_schema"),
        ({"datastore": "bigquery", **bigquery_emulator.settings()}, "scratch_dataset"),
        ({"datastore": "bigquery", **bigquery_emulator.settings()}, "project"),
        (duck, "memory_limit"),
    ]

    @property_settings(40)
    @given(case=st.sampled_from(cases), value=HOSTILE.filter(unplain))
    @example(case=cases[0], value='public"; DROP TABLE canary; --')
    @example(case=cases[2], value="faucet_scratch`; DROP TABLE faucet_hostile.canary; --")
    @example(case=cases[4], value="1GB'; DROP TABLE canary; --")
    def check(case: tuple[dict[str, Any], str], value: str) -> None:
        connection, setting = case
        tally.examples += 1
        with pytest.raises((ConfigError, PermanentWarehouseError)) as raised:
            get_batch_reader(
                **{**connection, setting: value},
                table_name="t",
                cache_dir=duckdb_target.cache_dir(),
            )
        message = str(raised.value)
        if setting != "memory_limit":
            assert raised.type is ConfigError, message
        assert f"connection.{setting}" in message or f"connection: {setting}" in message
        tally.error(raised.value)

    check()
    assert duckdb_target.canary_rows() == [(42,)]
    assert bigquery_target.canary_rows() == [(42,)]
    record(
        "hostile connection settings", examples=tally.examples, clear_errors=tally.errors,
        sql_executed=0,
    )  # fmt: skip


def test_redshift_table_attributes_never_hold_a_statement(
    redshift_target: PostgresTarget,
) -> None:
    """``scratch_attributes`` is SQL by design (Redshift's table attributes): text that
    could end the statement or hide the rest is refused; anything else fails or serves,
    and never runs a statement of its own."""
    redshift_target.drop("attrs")
    redshift_target.create("attrs", "v")
    tally = Tally()

    @property_settings(25)
    @given(value=HOSTILE)
    @example(value="  ")
    @example(value="BACKUP NO; DROP TABLE canary")
    @example(value="BACKUP NO -- ")
    @example(value="AS SELECT 1 AS x /*")
    def check(value: str) -> None:
        tally.examples += 1
        try:
            with opened(
                redshift_target, table_name="attrs", split_key=["id"], use_cache=False,
                scratch_attributes=value,
            ) as reader:  # fmt: skip
                tally.rows_checked += check_served(serve_all(reader), "id", "v")
                tally.served += 1
        except (ConfigError, PermanentWarehouseError) as exc:
            tally.error(exc)
        except Exception as exc:  # a chunk read failing on the attributes' SQL
            assert "scratch" in str(exc) or "attrs" in str(exc), exc
            tally.error(exc)
        assert redshift_target.canary_rows() == [(42,)]

    check()
    report("table attributes", redshift_target, tally)


def test_snowflake_reads_quoted_tables_of_any_name(snowflake_target: SnowflakeTarget) -> None:
    """Snowflake takes a double-quoted table name of any text: such a table is read
    exactly once, its name never leaving the quotes."""
    names = ['"t; DROP TABLE CANARY; --"', '"名前 ""q"" /* x */ -- y"', '"lower ? %s $1"']
    rows = 0
    for name in names:
        assert snowflake_target.create(name, "V") == "V", name
        try:
            with opened(
                snowflake_target, table_name=name, columns=["ID", "V"], split_key=["ID"],
                label_columns=["V"],
            ) as reader:  # fmt: skip
                rows += check_served(serve_all(reader), "ID", "V")
        finally:
            snowflake_target.drop(name)
        assert snowflake_target.canary_rows() == [(42,)]
    record("hostile quoted tables snowflake", tables=len(names), rows_checked=rows, sql_executed=0)
