"""The scratch-copy protocol of faucet_core.scratch, on a real PostgreSQL server: found
copies are used as they are, a copy is complete or absent, a lost race keeps the winner's
copy, a copy gone is made again, and only its maker drops it (unless it expires)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from faucet_core import Reader
from faucet_core.plan import Plan
from faucet_core.warehouse import PermanentWarehouseError, ScratchDataMissing, SourceSpec
from faucet_postgres import PostgresConnection, PostgresWarehouse

MakeReader = Callable[..., Reader]


class Recording(PostgresWarehouse):
    """PostgreSQL, recording which protocol hooks ran."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.calls: list[str] = []

    def scratch_exists(self, name: str) -> bool:
        self.calls.append("exists")
        return super().scratch_exists(name)

    def create_scratch(self, source: SourceSpec, name: str, rows: str, params: Any) -> None:
        self.calls.append("create")
        super().create_scratch(source, name, rows, params)

    def rename_scratch(self, temporary: str, name: str) -> None:
        self.calls.append("rename")
        super().rename_scratch(temporary, name)

    def drop_scratch(self, name: str) -> None:
        self.calls.append("drop")
        super().drop_scratch(name)


@pytest.fixture
def plan(postgres_url: str, make_reader: MakeReader) -> Plan:
    """A plan of table ``t`` that no other test plans, without its scratch copy: the one
    made while planning is dropped with the reader that planned."""
    reader = make_reader(
        datastore="postgres",
        dsn=postgres_url,
        database=None,
        use_cache=False,
        test_split_percent=17,
        copy_when_planning=True,
    )
    reader.close()
    return reader.plan


@pytest.fixture
def warehouses(postgres_url: str) -> Iterator[Callable[..., Recording]]:
    """Recording warehouses of the test server, copying while planning (closed at
    teardown)."""
    made: list[Recording] = []

    def build(cls: type[Recording] = Recording) -> Recording:
        warehouse = cls(PostgresConnection(dsn=postgres_url, copy_when_planning=True))
        made.append(warehouse)
        return warehouse

    yield build
    for warehouse in made:
        warehouse.close()


def faucet_tables(postgres_url: str, plan: Plan) -> list[str]:
    """The plan's scratch table, and temporary copies, on the server."""
    with psycopg.connect(postgres_url, autocommit=True) as db:
        rows = db.execute("SELECT relname FROM pg_class WHERE relkind = 'r'").fetchall()
    names = (
        PostgresWarehouse(PostgresConnection(dsn=postgres_url)).scratch_name(plan),
        "faucet_tmp_",
    )
    return sorted(row[0] for row in rows if row[0].startswith(names))


def test_one_copy_shared_and_dropped_by_its_maker_alone(
    plan: Plan, warehouses: Callable[..., Recording], postgres_url: str
) -> None:
    maker, finder = warehouses(), warehouses()
    maker.materialize(plan)
    maker.materialize(plan)  # made here: not looked up again
    assert maker.calls == ["exists", "create", "rename"]
    assert faucet_tables(postgres_url, plan) == [maker.scratch_name(plan)]

    finder.materialize(plan)
    assert finder.calls == ["exists"]  # found: used as it is
    chunk = plan.chunks["train"][0]
    assert finder.read_buckets(plan, chunk).num_rows == chunk.rows
    finder.close()
    assert faucet_tables(postgres_url, plan) == [maker.scratch_name(plan)]  # not its copy
    maker.close()
    assert faucet_tables(postgres_url, plan) == []


def test_a_lost_race_keeps_the_winners_copy(
    plan: Plan, warehouses: Callable[..., Recording], postgres_url: str
) -> None:
    class Late(Recording):
        def scratch_exists(self, name: str) -> bool:
            looked = "exists" in self.calls
            self.calls.append("exists")
            # Looked up before the winner renamed its copy: not there yet.
            return looked and PostgresWarehouse.scratch_exists(self, name)

    winner, late = warehouses(), warehouses(Late)
    winner.materialize(plan)
    late.materialize(plan)
    assert late.calls == ["exists", "create", "rename", "drop", "exists"]  # rename refused
    assert faucet_tables(postgres_url, plan) == [winner.scratch_name(plan)]  # no temporary left
    late.close()
    assert faucet_tables(postgres_url, plan) == [winner.scratch_name(plan)]  # the winner's to drop


def test_a_failed_copy_leaves_nothing(
    plan: Plan, warehouses: Callable[..., Recording], postgres_url: str
) -> None:
    class Refused(Recording):
        def rename_scratch(self, temporary: str, name: str) -> None:
            raise PermanentWarehouseError("no permission to rename")

    refused = warehouses(Refused)
    with pytest.raises(PermanentWarehouseError, match="no permission"):
        refused.materialize(plan)
    assert faucet_tables(postgres_url, plan) == []


def test_a_copy_gone_is_made_again(
    plan: Plan, warehouses: Callable[..., Recording], postgres_url: str
) -> None:
    maker, reader = warehouses(), warehouses()
    maker.materialize(plan)
    reader.materialize(plan)
    maker.close()  # its maker dropped it: the reader's next read finds it gone
    chunk = plan.chunks["train"][0]
    with pytest.raises(ScratchDataMissing, match="gone"):
        reader.read_buckets(plan, chunk)
    reader.materialize(plan)
    assert reader.calls == ["exists", "exists", "create", "rename"]
    assert reader.read_buckets(plan, chunk).num_rows == chunk.rows
    reader.close()
    assert faucet_tables(postgres_url, plan) == []


def test_a_copy_that_expires_by_itself_is_never_dropped(
    plan: Plan, warehouses: Callable[..., Recording], postgres_url: str
) -> None:
    class Expiring(Recording):
        scratch_expires = True

    expiring = warehouses(Expiring)
    expiring.materialize(plan)
    expiring.close()
    assert expiring.calls == ["exists", "create", "rename"]
    assert faucet_tables(postgres_url, plan) == [expiring.scratch_name(plan)]
    warehouses().drop_scratch(expiring.scratch_name(plan))


def test_planning_the_same_data_again_counts_its_copy_and_copies_nothing(
    postgres_url: str, make_reader: MakeReader, warehouses: Callable[..., Recording]
) -> None:
    reader = make_reader(
        datastore="postgres", dsn=postgres_url, database=None, use_cache=False,
        test_split_percent=11, copy_when_planning=True,
    )  # fmt: skip
    assert reader.plan.state  # the copy made while planning is named by what decides its rows
    again = warehouses()  # another process or host, with another chunk size
    request = dataclasses.replace(reader.config.plan_request(), chunk_size=333)
    counted = again.count_buckets(request)
    assert again.calls == ["exists"]  # found: counted, not copied
    assert counted.state == reader.plan.state
    assert counted.counts.sort_by("bucket").equals(
        reader.stream.warehouse().count_buckets(request).counts.sort_by("bucket")
    )
