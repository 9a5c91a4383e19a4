"""Pushing the point-in-time join down: Feast's PostgreSQL offline store gives its
retrieval as SQL, which the postgres warehouse plans, copies and reads on a real server."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from faucet_core import PermanentWarehouseError, Plan, Reader, load_config
from tests.feast.conftest import FEATURES, expected_features, served_rows


@pytest.fixture
def make_pg_reader(postgres_repo: Path, tmp_path: Path) -> Any:
    readers: list[Reader] = []

    def build(plan: Plan | None = None, **settings: Any) -> Reader:
        defaults: dict[str, Any] = {
            "datastore": "feast",
            "repo_path": str(postgres_repo),
            "features": FEATURES,
            "query": "SELECT * FROM orders",
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


def _all_rows(reader: Reader) -> pd.DataFrame:
    return pd.concat([served_rows(reader), served_rows(reader, eval=True)]).set_index("order_id")


def _scratch_tables(url: str) -> list[str]:
    import psycopg

    with psycopg.connect(url) as db:
        found = db.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE %s", ["faucet_%"])
        return [row[0] for row in found.fetchall()]


def test_the_join_runs_in_postgres_and_its_rows_are_point_in_time_correct(
    make_pg_reader: Any, postgres_repo: Path, feast_postgres_url: str, tmp_path: Path
) -> None:
    reader = make_pg_reader()
    assert reader.plan.state == {"retrieval": "pushed down", "datastore": "postgres"}
    assert reader.plan.data_version is None  # entity rows from a query
    train, held_out = served_rows(reader), served_rows(reader, eval=True)
    served = pd.concat([train, held_out]).set_index("order_id")
    assert not (tmp_path / "scratch").exists()  # nothing spilled locally: read from PostgreSQL
    expected = expected_features(postgres_repo / "data")
    assert len(served) == 3_000
    got = served[["conv_rate", "acc_rate", "trips_today", "rating"]].loc[expected.index]
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert not set(train["driver_id"]) & set(held_out["driver_id"])
    reader.close()
    assert not _scratch_tables(feast_postgres_url)  # none left behind


def test_a_reader_given_a_pushed_down_plan_reads_it_from_postgres(
    make_pg_reader: Any, tmp_path: Path
) -> None:
    planner = make_pg_reader()
    plan = planner.plan
    planner.close()  # nothing read
    other = make_pg_reader(plan=plan, cache_dir=str(tmp_path / "other-cache"))
    served = served_rows(other)
    assert len(served) == plan.rows("train") and served["order_id"].is_unique
    assert not (tmp_path / "scratch").exists()


def test_a_table_of_entity_rows_is_pushed_down_too(make_pg_reader: Any) -> None:
    reader = make_pg_reader(query=None, table="orders", features=FEATURES[:1])
    assert reader.plan.state["retrieval"] == "pushed down"
    assert reader.rows("train") + reader.rows("eval") == 3_000


def test_without_push_down_the_same_rows_are_read_into_local_files(
    make_pg_reader: Any, caplog: pytest.LogCaptureFixture
) -> None:
    pushed = _all_rows(make_pg_reader())
    with caplog.at_level(logging.WARNING):
        spilled_reader = make_pg_reader(push_down=False)
    assert spilled_reader.plan.state["retrieval"] == "spilled"
    assert "held in memory once" in caplog.text
    spilled = _all_rows(spilled_reader)
    columns = ["driver_id", "completed", "conv_rate", "acc_rate", "trips_today", "rating"]
    pd.testing.assert_frame_equal(
        spilled[columns].sort_index(), pushed[columns].sort_index(), check_dtype=False
    )


def test_entity_files_cannot_be_pushed_down_to_postgres(
    make_pg_reader: Any, postgres_repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        reader = make_pg_reader(query=None, files=[str(postgres_repo / "data" / "orders.parquet")])
    assert reader.plan.state["retrieval"] == "spilled"
    assert "not pushed down to postgres" in caplog.text


def test_a_temp_table_entity_mode_is_an_error_saying_what_to_set(
    make_pg_reader: Any, postgres_repo: Path
) -> None:
    with pytest.raises(PermanentWarehouseError, match="entity_select_mode: embed_query"):
        make_pg_reader(feature_store_yaml=str(postgres_repo / "temp_table.yaml"))
