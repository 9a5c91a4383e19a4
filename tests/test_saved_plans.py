"""Saved plans on DuckDB: reused for the same source, data version and request; planned
again for changed data, another place, another warehouse or other connection settings."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import duckdb
import pytest

from faucet_core import Plan, Reader, SourceSpec, Warehouse, hookimpl
from faucet_core.plan_cache import PlanCache
from faucet_core.warehouse import PlanRequest
from faucet_duckdb import DuckDBWarehouse
from tests.conftest import epoch_ids, write_table

MakeReader = Callable[..., Reader]


class PlanCountingDuckDB(DuckDBWarehouse):
    """Counts the counting queries, and the reads of the whole source (materializations
    and scans), of every instance."""

    name = "plan-counting-duckdb"
    counted: ClassVar[int] = 0
    whole_reads: ClassVar[int] = 0

    def count_buckets(self, request: PlanRequest) -> Any:
        type(self).counted += 1
        return super().count_buckets(request)

    def materialize(self, plan: Plan) -> None:
        type(self).whole_reads += 1
        super().materialize(plan)

    def scan(self, plan: Plan) -> Any:
        type(self).whole_reads += 1
        return super().scan(plan)


class RestoredDuckDB(PlanCountingDuckDB):
    """DuckDB whose files all have one data version, as servers restored from one dump
    can: only where a file lives (its identity) tells two apart."""

    name = "restored-duckdb"

    def data_version(self, source: SourceSpec) -> str | None:
        return "restored"


class _Plugin:
    @hookimpl
    def register_warehouses(self, register: Callable[[type[Warehouse]], None]) -> None:
        register(PlanCountingDuckDB)
        register(RestoredDuckDB)


@pytest.fixture
def counting(register: Callable[[object], None]) -> type[PlanCountingDuckDB]:
    register(_Plugin())
    PlanCountingDuckDB.counted = PlanCountingDuckDB.whole_reads = 0
    return PlanCountingDuckDB


def test_a_second_reader_reuses_the_saved_plan(
    make_reader: MakeReader, counting: type[PlanCountingDuckDB]
) -> None:
    first = make_reader(datastore=counting.name, test_split_percent=20)
    assert first.plan_origin == "warehouse"
    expected = sorted(epoch_ids(first))
    second = make_reader(datastore=counting.name, test_split_percent=20, seed=2)
    assert second.plan_origin == "cache"
    assert second.plan == first.plan
    assert sorted(epoch_ids(second)) == expected
    assert (counting.counted, counting.whole_reads) == (1, 1)  # the second read the cache
    other_split = make_reader(datastore=counting.name, test_split_percent=30)
    assert other_split.plan_origin == "warehouse"


def test_changed_data_is_planned_again(
    make_reader: MakeReader, counting: type[PlanCountingDuckDB], tmp_path: Path
) -> None:
    path = write_table(tmp_path / "changing.duckdb", 1_000)
    first = make_reader(datastore=counting.name, database=str(path))
    first.close()
    with duckdb.connect(str(path)) as db:
        db.execute("INSERT INTO t SELECT * FROM t LIMIT 1")
    second = make_reader(datastore=counting.name, database=str(path))
    assert second.plan_origin == "warehouse"
    assert second.plan.fingerprint != first.plan.fingerprint
    assert second.rows() == 1_001


def test_a_query_is_planned_again_unless_plan_ttl_says_otherwise(
    make_reader: MakeReader, counting: type[PlanCountingDuckDB]
) -> None:
    query = {"database": None, "table_name": None, "label_columns": [],
             "query": "SELECT i AS id FROM range(500) r(i)"}  # fmt: skip
    assert make_reader(datastore=counting.name, **query).plan_origin == "warehouse"
    assert make_reader(datastore=counting.name, **query).plan_origin == "warehouse"
    kept = {**query, "plan_ttl": "1h"}
    assert make_reader(datastore=counting.name, **kept).plan_origin == "warehouse"
    assert make_reader(datastore=counting.name, **kept).plan_origin == "cache"
    expired = {**query, "plan_ttl": 0}
    assert make_reader(datastore=counting.name, **expired).plan_origin == "warehouse"
    assert counting.counted == 4


def test_a_damaged_saved_plan_is_planned_again(
    make_reader: MakeReader, counting: type[PlanCountingDuckDB], tmp_path: Path
) -> None:
    make_reader(datastore=counting.name)
    (saved,) = (tmp_path / "cache" / "plans").glob("*.json")
    saved.write_text(saved.read_text().replace('"rows_id": "', '"rows_id": "x'))
    again = make_reader(datastore=counting.name)
    assert again.plan_origin == "warehouse"
    assert counting.counted == 2


def test_a_plan_kept_by_plan_ttl_goes_once_older_than_it(
    make_reader: MakeReader, counting: type[PlanCountingDuckDB], tmp_path: Path
) -> None:
    query = {"database": None, "table_name": None, "label_columns": [], "plan_ttl": "1h",
             "query": "SELECT i AS id FROM range(500) r(i)"}  # fmt: skip
    assert make_reader(datastore=counting.name, **query).plan_origin == "warehouse"
    (saved,) = (tmp_path / "cache" / "plans").glob("*.json")
    half_an_hour_ago = time.time() - 1_800
    os.utime(saved, (half_an_hour_ago, half_an_hour_ago))
    assert make_reader(datastore=counting.name, **query).plan_origin == "cache"
    two_hours_ago = time.time() - 7_200
    os.utime(saved, (two_hours_ago, two_hours_ago))
    assert make_reader(datastore=counting.name, **query).plan_origin == "warehouse"


def test_a_table_spelled_alike_in_another_database_is_planned_again(
    make_reader: MakeReader,
    counting: type[PlanCountingDuckDB],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A relative ``database`` names another file from another folder: the same settings
    and here the same data version, but another source, which serves its own rows."""
    ids = []
    for folder, rows in (("a", 300), ("b", 500)):
        (tmp_path / folder).mkdir()
        write_table(tmp_path / folder / "data.duckdb", rows)
        monkeypatch.chdir(tmp_path / folder)
        reader = make_reader(datastore=RestoredDuckDB.name, database="data.duckdb")
        assert reader.plan_origin == "warehouse"
        ids.append(sorted(epoch_ids(reader)))
    assert ids == [list(range(300)), list(range(500))]


def test_each_warehouse_plans_its_own_reads_of_one_database(
    make_reader: MakeReader, counting: type[PlanCountingDuckDB]
) -> None:
    """A plan is its warehouse's: another plugin reading the same table plans it itself
    (a plan names the plugin whose rules it checks)."""
    assert make_reader(datastore="duckdb").plan_origin == "warehouse"
    other = make_reader(datastore=counting.name)
    assert (other.plan_origin, other.plan.datastore) == ("warehouse", counting.name)


def test_other_connection_settings_plan_again(
    make_reader: MakeReader, counting: type[PlanCountingDuckDB]
) -> None:
    """Connection settings can change what a source holds for its reader (another role,
    another user), so a plan is kept for the settings it was made with."""
    assert make_reader(datastore=counting.name, threads=1).plan_origin == "warehouse"
    assert make_reader(datastore=counting.name, threads=1).plan_origin == "cache"
    assert make_reader(datastore=counting.name, threads=2).plan_origin == "warehouse"


def test_plan_ttl_leaves_plans_of_sources_with_a_data_version_alone(
    make_reader: MakeReader, counting: type[PlanCountingDuckDB], caplog: pytest.LogCaptureFixture
) -> None:
    """A table has a data version: its plan is reused while the version holds, however
    old, and the reuse is logged."""
    first = make_reader(datastore=counting.name, plan_ttl=0)
    with caplog.at_level(logging.INFO, logger="faucet"):
        again = make_reader(datastore=counting.name, plan_ttl=0)
    assert again.plan_origin == "cache"
    assert (
        f"reusing the saved plan of table t ({first.plan.fingerprint}): the data has not "
        "changed" in caplog.messages
    )


def test_an_unreadable_saved_plan_is_ignored_and_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = PlanCache(tmp_path)
    cache.directory.mkdir()
    path = cache.directory / "k.json"
    path.write_text("{cut short")
    try:
        Plan.from_json(path.read_bytes())
    except ValueError as exc:
        problem = str(exc)
    with caplog.at_level(logging.WARNING, logger="faucet"):
        assert cache.get("k") is None
    assert caplog.messages == [f"ignoring the unreadable saved plan {path}: {problem}"]
