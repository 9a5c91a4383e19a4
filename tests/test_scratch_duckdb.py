"""The scratch-copy protocol of faucet_core.scratch on DuckDB, without a server: warehouses
whose copies are tables of one in-memory database that all of them share, as processes
share a server. Found copies are used as they are, a copy is complete or absent, a lost
race keeps the winner's copy, a copy gone is made again, only its maker drops it (unless
it expires), a copy made while planning is named after the plan, and a user who may not
create tables reads the source."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import duckdb
import pyarrow as pa
import pytest
from pydantic import BaseModel

from faucet_core import Reader, Warehouse, hookimpl, layout
from faucet_core.plan import ChunkSpec, Plan, make_plan
from faucet_core.planner import plan_source
from faucet_core.scratch import ScratchWarehouse
from faucet_core.sql import READ_AS, quote_identifier
from faucet_core.warehouse import (
    PermanentWarehouseError,
    PlanRequest,
    ScratchDataMissing,
    SourceSpec,
    SplitSpec,
    TransientWarehouseError,
    WarehouseError,
)
from faucet_duckdb import DuckDBConnection, DuckDBWarehouse
from tests.conftest import ROWS, epoch_ids

MakeReader = Callable[..., Reader]

#: A source without a data version (a query of no database file): a copy made while
#: planning it is made under a temporary name, then named after the plan.
QUERY = "SELECT range AS id, range % 7 AS x, (range % 3 = 0)::INT AS label FROM range(1200)"
QUERY_ROWS = 1_200
TABLE = PlanRequest(SourceSpec(table="t"), SplitSpec(("id",), 17.0), 1_000)
QUERIED = PlanRequest(SourceSpec(query=QUERY), SplitSpec(("id",), 20.0), 300)


class ScratchDuckDB(ScratchWarehouse, DuckDBWarehouse):
    """DuckDB keeping its scratch copies as tables of :attr:`shared`, recording which
    protocol hooks ran and the tables it created."""

    name = "scratch-duckdb"
    #: The database every instance's copies go to, and its queries run in (one per test).
    shared: ClassVar[duckdb.DuckDBPyConnection | None] = None
    #: The catalog of :attr:`shared` the copies go to.
    catalog: ClassVar[str] = "memory"
    #: How a copy is made.
    create: ClassVar[str] = "CREATE TABLE"

    def __init__(self, connection: BaseModel) -> None:
        super().__init__(connection)
        self.calls: list[str] = []
        self.created: list[str] = []
        assert self.shared is not None, "the scratch_db fixture sets the shared database"
        own, self._db = self._db, self.shared.cursor()
        own.close()

    def scratch_reference(self, name: str) -> str:
        return f"{self.catalog}.main.{quote_identifier(name)}"

    def scratch_exists(self, name: str) -> bool:
        self.calls.append("exists")
        found = self._run(
            "cannot look up the scratch table",
            "SELECT 1 FROM duckdb_tables() WHERE database_name = ? AND table_name = ?",
            [self.catalog, name],
        ).fetchall()
        return bool(found)

    def prepare_scratch_place(self, source: SourceSpec) -> None:
        self.calls.append("prepare")

    def drop_expired(self) -> None:
        self.calls.append("drop_expired")

    def set_expiry(self, name: str) -> None:
        self.calls.append("set_expiry")

    def create_scratch(
        self, source: SourceSpec, name: str, rows: str, params: Sequence[Any]
    ) -> None:
        self.calls.append("create")
        self.created.append(name)
        self._run(
            f"cannot read {source.describe()}",
            f"{self.create} {self.scratch_reference(name)} AS {rows}",
            params,
        )

    def rename_scratch(self, temporary: str, name: str) -> None:
        self.calls.append("rename")
        self._run(
            "cannot name the scratch table",
            f"ALTER TABLE {self.scratch_reference(temporary)} RENAME TO {quote_identifier(name)}",
        )

    def drop_scratch(self, name: str) -> None:
        self.calls.append("drop")
        self._run(
            "cannot drop a scratch table", f"DROP TABLE IF EXISTS {self.scratch_reference(name)}"
        )

    def read_buckets(self, plan: Plan, chunk: ChunkSpec) -> pa.Table:
        try:
            return self.query(*self.rows_query(plan, [chunk]))
        except PermanentWarehouseError as exc:
            if self.reads_copy(plan) and "does not exist" in str(exc):
                raise self.scratch_gone(plan, f"cannot read {chunk.describe()}") from exc
            raise

    def scan(
        self, plan: Plan, chunks: Sequence[ChunkSpec] | None = None
    ) -> Iterable[pa.RecordBatch] | None:
        self.materialize(plan)
        return self.stream(*self.rows_query(plan, chunks))

    def close(self) -> None:
        super().close()  # the protocol's: drops the copies made here
        DuckDBWarehouse.close(self)


class CopyingWhilePlanning(ScratchDuckDB):
    """Makes its copy while planning, and counts the copy's rows."""

    name = "copying-duckdb"

    def copies_when_planning(self) -> bool:
        return True


class Expiring(ScratchDuckDB):
    """Copies expire (as on Snowflake): none is dropped on close."""

    scratch_expires = True


class ExpiringWhilePlanning(CopyingWhilePlanning):
    """Copies made while planning, which expire."""

    scratch_expires = True


class Atomic(ScratchDuckDB):
    """Makes its copy in one statement under its own name, which expires (as BigQuery)."""

    scratch_created_atomically = True
    scratch_expires = True
    create = "CREATE TABLE IF NOT EXISTS"


class AtomicWhilePlanning(Atomic, CopyingWhilePlanning):
    """Makes its copy atomically while planning."""


class Late(ScratchDuckDB):
    """Looked up the copy before the winner of a race named theirs: found nothing."""

    def scratch_exists(self, name: str) -> bool:
        looked = "exists" in self.calls
        return super().scratch_exists(name) and looked


class LateWhilePlanning(Late, CopyingWhilePlanning):
    """Loses the race to make the copy while planning."""


class RefusedRename(ScratchDuckDB):
    """May make tables but not rename them."""

    def rename_scratch(self, temporary: str, name: str) -> None:
        self.calls.append("rename")
        raise PermanentWarehouseError("no permission to rename")


class Unrenaming(ScratchDuckDB):
    """Neither renames tables nor makes its copy atomically (a plugin lacking a hook)."""

    name = "unrenaming-duckdb"
    rename_scratch = ScratchWarehouse.rename_scratch


class InterruptedRename(Late):
    """Its rename is interrupted (a retry may succeed), after another process named the
    same copy."""

    def rename_scratch(self, temporary: str, name: str) -> None:
        self.calls.append("rename")
        raise TransientWarehouseError("connection reset while renaming")


class HalfCreated(ScratchDuckDB):
    """Its copy's last statement fails (with :attr:`error`) after the table is made."""

    error: ClassVar[type[WarehouseError]] = PermanentWarehouseError

    def create_scratch(
        self, source: SourceSpec, name: str, rows: str, params: Sequence[Any]
    ) -> None:
        super().create_scratch(source, name, rows, params)
        raise self.error("cannot prepare the scratch table: disk full")


class HalfCreatedWhilePlanning(HalfCreated, CopyingWhilePlanning):
    """Its copy made while planning fails after the table is made."""


class InterruptedWhilePlanning(HalfCreatedWhilePlanning):
    """Its copy made while planning is interrupted after the table is made."""

    error = TransientWarehouseError


class BilledWhilePlanning(CopyingWhilePlanning):
    """Counts its queries as query jobs, as BigQuery does."""

    def query(self, sql: str, params: Sequence[Any]) -> pa.Table:
        self.costs.query_jobs += 1
        return super().query(sql, params)


class NegatingWhilePlanning(CopyingWhilePlanning):
    """Reads ``x1`` through an SQL expression, negated (as PostgreSQL reads types Arrow
    lacks), and copies while planning."""

    def columns(self, request: PlanRequest) -> pa.Schema:
        schema = super().columns(request)
        index = schema.get_field_index("x1")
        return schema.set(index, schema.field(index).with_metadata({READ_AS: b"-{c}"}))


class ReadOnly(ScratchDuckDB):
    """Copies would go to the source's database, attached read-only: none can be made, and
    the warehouse says so (:meth:`cannot_copy`), as a user without the right to create
    tables."""

    name = "read-only-duckdb"
    catalog = "w"  # the source's database, w.duckdb

    def cannot_copy(self, error: PermanentWarehouseError) -> bool:
        return "read-only mode" in str(error)


class ReadOnlyWhilePlanning(ReadOnly, CopyingWhilePlanning):
    """Cannot copy, while planning."""

    name = "read-only-copying-duckdb"


class Refusing(ReadOnly):
    """Cannot copy, and does not say it is a matter of rights: the error is the user's."""

    def cannot_copy(self, error: PermanentWarehouseError) -> bool:
        return False


class RefusingWhilePlanning(Refusing, CopyingWhilePlanning):
    """Cannot copy while planning, and does not say why."""


class GoneAway(CopyingWhilePlanning):
    """Its server goes away before it drops its first copy."""

    def drop_scratch(self, name: str) -> None:
        if "drop" not in self.calls:
            self.calls.append("drop")
            raise ConnectionError("server closed the connection")
        super().drop_scratch(name)


class Overtaken(CopyingWhilePlanning):
    """Another process adds rows to the source (``events``) right after it is copied."""

    def create_scratch(
        self, source: SourceSpec, name: str, rows: str, params: Sequence[Any]
    ) -> None:
        super().create_scratch(source, name, rows, params)
        self._run("cannot add rows", "INSERT INTO events SELECT range, 0 FROM range(1000, 1100)")


class _Plugin:
    @hookimpl
    def register_warehouses(self, register: Callable[[type[Warehouse]], None]) -> None:
        for warehouse in (ScratchDuckDB, CopyingWhilePlanning, ReadOnlyWhilePlanning):
            register(warehouse)


@pytest.fixture
def scratch_db(table_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The database the scratch warehouses share, with table ``t`` attached read-only."""
    db = duckdb.connect(":memory:")
    db.execute("ATTACH ? (READ_ONLY)", [str(table_path)])  # as catalog w, as the warehouse
    monkeypatch.setattr(ScratchDuckDB, "shared", db)
    yield db
    db.close()


@pytest.fixture
def warehouses(scratch_db: Any, table_path: Path) -> Iterator[Callable[..., ScratchDuckDB]]:
    """Scratch warehouses of ``table_path`` (``database=None``: of no database file),
    closed at teardown."""
    made: list[ScratchDuckDB] = []

    def build(cls: type[ScratchDuckDB] = ScratchDuckDB, **settings: Any) -> ScratchDuckDB:
        warehouse = cls(DuckDBConnection(**{"database": table_path, **settings}))
        made.append(warehouse)
        return warehouse

    yield build
    for warehouse in made:
        warehouse.close()


@pytest.fixture
def plan(warehouses: Callable[..., ScratchDuckDB]) -> Plan:
    """A plan of table ``t`` (17% eval, chunks of 1,000 rows), without a copy."""
    planner = warehouses()
    version = planner.data_version(TABLE.source)
    return plan_source(planner, TABLE, version)


@pytest.fixture
def readers(
    scratch_db: Any, register: Callable[[object], None], make_reader: MakeReader
) -> MakeReader:
    """Readers through the scratch warehouses (``datastore`` names one)."""
    register(_Plugin())
    return make_reader


def tables(db: Any) -> list[str]:
    """The tables of the scratch database, sorted."""
    rows = db.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = 'memory'")
    return sorted(name for (name,) in rows.fetchall())


def plan_of(warehouse: ScratchDuckDB, request: PlanRequest) -> Plan:
    """``request`` planned by ``warehouse``, without :meth:`~ScratchWarehouse.planned`."""
    counted = warehouse.count_buckets(request)
    source = request.source
    version = warehouse.data_version(source)
    return make_plan(warehouse.name, request, counted, version, warehouse.source_identity(source))


def ids(table: pa.Table) -> list[int]:
    """The ``id`` of every row of ``table``, sorted."""
    return sorted(table.column("id").to_pylist())


def test_one_copy_shared_and_dropped_by_its_maker_alone(
    plan: Plan, warehouses: Callable[..., ScratchDuckDB], scratch_db: Any
) -> None:
    """The first to need the copy makes it; another finds it and reads it as it is; only
    its maker drops it, on close."""
    maker, finder = warehouses(), warehouses()
    maker.materialize(plan)
    maker.materialize(plan)  # made here: not looked up again
    assert maker.calls == ["exists", "prepare", "drop_expired", "create", "rename"]
    assert maker.created[0].startswith("faucet_tmp_")
    assert tables(scratch_db) == [f"faucet_{plan.rows_id}"] == [maker.scratch_name(plan)]

    finder.materialize(plan)
    finder.materialize(plan)
    assert finder.calls == ["exists"]  # found: used as it is
    assert finder.has_copy(plan)
    chunk = plan.chunks["train"][0]
    assert finder.read_buckets(plan, chunk).num_rows == chunk.rows
    finder.close()
    assert tables(scratch_db) == [maker.scratch_name(plan)]  # not its copy
    maker.close()
    assert tables(scratch_db) == []
    assert not maker.has_copy(plan)


def test_chunks_read_from_the_copy_hold_the_rows_of_the_source(
    plan: Plan, warehouses: Callable[..., ScratchDuckDB]
) -> None:
    """Each chunk read from the copy has the columns planned and the rows a read of the
    source selects for it; all the copy's rows are the source's, with the same hashes."""
    warehouse = warehouses()
    warehouse.materialize(plan)
    assert warehouse.reads_copy(plan) and warehouse.reads_chunks_alone(plan)
    chunks = [*plan.chunks["train"], *plan.chunks["eval"]]
    assert len(plan.chunks["eval"]) >= 1 and len(plan.chunks["train"]) >= 2
    for chunk in chunks:
        read = warehouse.read_buckets(plan, chunk)
        assert read.column_names == [*plan.columns, layout.HASH_COLUMN]
        source = warehouse.query(*warehouse.source_rows(plan, [chunk]))
        assert ids(read) == ids(source) and read.num_rows == chunk.rows
    whole = warehouse.query(*warehouse.rows_query(plan, None))
    source = warehouse.query(*warehouse.source_rows(plan, None))
    assert whole.sort_by("id").equals(source.sort_by("id"))
    assert ids(whole) == list(range(ROWS))
    assert warehouse.query(*warehouse.rows_query(plan, [])).num_rows == 0


def test_chunks_are_selected_by_the_copys_stored_split_and_bucket(
    plan: Plan, warehouses: Callable[..., ScratchDuckDB]
) -> None:
    """Not by arithmetic on the key hash: the copy keeps the rows of a split and bucket
    range together (ordered, clustered or indexed by those columns)."""
    sql = warehouses().scratch_rows(plan, plan.chunks["train"][:1])
    condition = sql.split(" WHERE ", 1)[1]
    assert layout.EVAL_COLUMN in condition and layout.BUCKET_COLUMN in condition
    assert layout.HASH_COLUMN not in condition


def test_the_copy_reads_columns_as_the_plan_says(
    plan: Plan, warehouses: Callable[..., ScratchDuckDB], caplog: pytest.LogCaptureFixture
) -> None:
    """A plan's schema may say how a column is read (as PostgreSQL plans do for types Arrow
    lacks): the copy holds it so read, and says where it went."""
    assert plan.schema is not None
    index = plan.schema.get_field_index("x1")
    negated = plan.schema.field(index).with_metadata({READ_AS: b"-{c}"})
    plan = dataclasses.replace(plan, schema=plan.schema.set(index, negated))
    warehouse = warehouses()
    with caplog.at_level(logging.INFO, logger="faucet_core.scratch"):
        warehouse.materialize(plan)
    assert caplog.messages == [f"materialized table t into {warehouse.scratch_name(plan)}"]
    copied = warehouse.query(*warehouse.rows_query(plan, None)).sort_by("id")
    source = warehouse.query(*warehouse.source_rows(plan, None)).sort_by("id")
    assert copied.column("x1").equals(source.column("x1"))
    assert max(copied.column("x1").to_pylist()) <= 0  # x1 is in [0, 1): read negated


def test_a_lost_race_keeps_the_winners_copy(
    plan: Plan, warehouses: Callable[..., ScratchDuckDB], scratch_db: Any
) -> None:
    """A process whose rename fails because the winner named the same copy first drops
    its own, reads the winner's and leaves it to the winner."""
    winner, late = warehouses(), warehouses(Late)
    winner.materialize(plan)
    late.materialize(plan)
    assert late.calls == [
        "exists", "prepare", "drop_expired", "create", "rename", "drop", "exists"
    ]  # fmt: skip
    assert tables(scratch_db) == [winner.scratch_name(plan)]  # no temporary left
    assert late.has_copy(plan)
    late.materialize(plan)  # ready: not looked up again
    assert late.calls.count("exists") == 2
    chunk = plan.chunks["eval"][0]
    assert late.read_buckets(plan, chunk).num_rows == chunk.rows
    late.close()
    assert tables(scratch_db) == [winner.scratch_name(plan)]  # the winner's to drop


def test_a_failed_rename_leaves_nothing(
    plan: Plan, warehouses: Callable[..., ScratchDuckDB], scratch_db: Any
) -> None:
    """A rename that fails with no copy under the name is an error, and the complete copy
    made under the temporary name is dropped."""
    refused = warehouses(RefusedRename)
    with pytest.raises(PermanentWarehouseError, match="no permission"):
        refused.materialize(plan)
    assert refused.calls[-3:] == ["rename", "drop", "exists"]
    assert tables(scratch_db) == []
    assert not refused.has_copy(plan)


def test_a_plugin_that_cannot_rename_fails_to_copy(
    plan: Plan, warehouses: Callable[..., ScratchDuckDB], scratch_db: Any
) -> None:
    """Without a rename (nor an atomic copy), a copy fails, saying so, and leaves nothing."""
    unrenaming = warehouses(Unrenaming)
    with pytest.raises(PermanentWarehouseError, match="unrenaming-duckdb cannot rename scratch"):
        unrenaming.materialize(plan)
    assert unrenaming.calls[-2:] == ["drop", "exists"]
    assert tables(scratch_db) == []


def test_an_interrupted_rename_is_not_a_lost_race(
    plan: Plan, warehouses: Callable[..., ScratchDuckDB], scratch_db: Any
) -> None:
    """A rename that fails for a reason a retry may fix raises it, its copy dropped, even
    though another process named the same copy meanwhile."""
    winner, interrupted = warehouses(), warehouses(InterruptedRename)
    winner.materialize(plan)
    with pytest.raises(TransientWarehouseError, match="connection reset"):
        interrupted.materialize(plan)
    assert interrupted.calls[-2:] == ["rename", "drop"]
    assert tables(scratch_db) == [winner.scratch_name(plan)]
    assert not interrupted.has_copy(plan)


@pytest.mark.parametrize("error", [PermanentWarehouseError, TransientWarehouseError])
def test_a_failed_copy_leaves_nothing(
    plan: Plan,
    warehouses: Callable[..., ScratchDuckDB],
    scratch_db: Any,
    error: type[WarehouseError],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A copy that fails once its table is made raises the error as it is, and leaves
    no table behind; the next read tries again."""
    monkeypatch.setattr(HalfCreated, "error", error)
    failing = warehouses(HalfCreated)
    with pytest.raises(error, match="disk full"):
        failing.materialize(plan)
    assert failing.calls == ["exists", "prepare", "drop_expired", "create", "drop"]
    assert tables(scratch_db) == []
    with pytest.raises(error):
        failing.materialize(plan)
    assert failing.calls.count("create") == 2


def test_a_copy_gone_is_made_again(
    plan: Plan, warehouses: Callable[..., ScratchDuckDB], scratch_db: Any
) -> None:
    """A read that finds the copy gone says so; the next materialize looks it up and makes
    it again, and the reader then owns it."""
    maker, reader = warehouses(), warehouses()
    maker.materialize(plan)
    reader.materialize(plan)
    maker.close()  # its maker dropped it: the reader's next read finds it gone
    chunk = plan.chunks["train"][0]
    with pytest.raises(ScratchDataMissing, match=r"train.*: the scratch table is gone"):
        reader.read_buckets(plan, chunk)
    assert not reader.has_copy(plan)
    reader.materialize(plan)
    assert reader.calls == ["exists", "exists", "prepare", "drop_expired", "create", "rename"]
    assert reader.read_buckets(plan, chunk).num_rows == chunk.rows
    reader.close()
    assert tables(scratch_db) == []


def test_a_copy_that_expires_is_never_dropped(
    plan: Plan, warehouses: Callable[..., ScratchDuckDB], scratch_db: Any
) -> None:
    """Where copies expire, the maker gives its copy its expiry, and does not drop it."""
    expiring = warehouses(Expiring)
    expiring.materialize(plan)
    expiring.close()
    assert expiring.calls == [
        "exists", "prepare", "drop_expired", "create", "rename", "set_expiry"
    ]  # fmt: skip
    assert tables(scratch_db) == [expiring.scratch_name(plan)]


def test_an_atomic_copy_is_made_under_its_own_name(
    plan: Plan, warehouses: Callable[..., ScratchDuckDB], scratch_db: Any
) -> None:
    """Where ``CREATE TABLE IF NOT EXISTS ... AS`` is atomic, the copy is made in one
    statement, under its name, and not renamed."""
    atomic = warehouses(Atomic)
    atomic.materialize(plan)
    assert atomic.calls == ["exists", "prepare", "drop_expired", "create", "set_expiry"]
    assert atomic.created == [atomic.scratch_name(plan)]
    chunk = plan.chunks["train"][-1]
    assert atomic.read_buckets(plan, chunk).num_rows == chunk.rows
    atomic.close()
    assert tables(scratch_db) == [atomic.scratch_name(plan)]


def test_a_user_who_may_not_create_tables_reads_the_source(
    plan: Plan,
    warehouses: Callable[..., ScratchDuckDB],
    scratch_db: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Where the warehouse says the user may not copy, reads scan the source (with a
    warning, once), and the copy is not tried again."""
    reader = warehouses(ReadOnly)
    with caplog.at_level(logging.WARNING, logger="faucet_core.scratch"):
        reader.materialize(plan)
    assert "cannot copy table t" in caplog.text
    assert reader.calls == ["exists", "prepare", "drop_expired", "create", "drop"]
    reader.materialize(plan)
    assert reader.calls.count("create") == 1  # not tried again
    assert not reader.reads_copy(plan) and not reader.has_copy(plan)
    assert not reader.reads_chunks_alone(plan)  # each read scans the source
    for chunk in [*plan.chunks["train"], *plan.chunks["eval"]]:
        read = reader.read_buckets(plan, chunk)
        assert ids(read) == ids(reader.query(*reader.source_rows(plan, [chunk])))
        assert read.num_rows == chunk.rows
    assert reader.query(*reader.rows_query(plan, None)).num_rows == ROWS
    reader.close()
    assert reader.calls.count("drop") == 1  # nothing of its own to drop
    assert tables(scratch_db) == []


def test_a_copy_refused_for_another_reason_fails(
    plan: Plan, warehouses: Callable[..., ScratchDuckDB]
) -> None:
    """A refusal the warehouse does not put down to the user's rights fails the read, and
    the next one tries to copy again."""
    refusing = warehouses(Refusing)
    with pytest.raises(PermanentWarehouseError, match="read-only mode"):
        refusing.materialize(plan)
    assert refusing.reads_copy(plan)  # it will try again
    with pytest.raises(PermanentWarehouseError, match="read-only mode"):
        refusing.materialize(plan)
    assert refusing.calls.count("create") == 2


def test_planning_copies_and_counts_the_copy(
    warehouses: Callable[..., ScratchDuckDB], scratch_db: Any, table_path: Path
) -> None:
    """A warehouse that copies while planning makes the copy named by what decides its
    rows, counts it (the same counts as the source's) and reads it without looking it up
    again; the plan keeps the copy's id."""
    planner = warehouses(CopyingWhilePlanning)
    plan = plan_source(planner, TABLE, planner.data_version(TABLE.source))
    assert planner.calls == ["exists", "prepare", "drop_expired", "create", "rename"]
    copy_id = planner.copy_id(
        TABLE.source, planner.data_version(TABLE.source), plan.columns, ("id",), 1_700
    )
    assert copy_id is not None and dict(plan.state) == {"copy_id": copy_id}
    assert tables(scratch_db) == [f"faucet_{copy_id}"] == [planner.scratch_name(plan)]
    plain = DuckDBWarehouse(DuckDBConnection(database=table_path))
    try:
        counted = plain.count_buckets(TABLE).counts
    finally:
        plain.close()
    again = planner.count_buckets(TABLE)
    assert again.counts.sort_by("bucket").equals(counted.sort_by("bucket"))
    assert again.stats == {}  # DuckDB says no costs
    assert planner.calls.count("create") == 1  # found when counted again
    planner.calls.clear()
    planner.materialize(plan)
    chunk = plan.chunks["eval"][0]
    assert planner.read_buckets(plan, chunk).num_rows == chunk.rows
    assert planner.calls == []  # made here: neither looked up nor made again
    planner.close()
    assert tables(scratch_db) == []


def test_a_copy_made_while_planning_reads_columns_as_the_source_schema_says(
    warehouses: Callable[..., ScratchDuckDB],
) -> None:
    """The copy made while planning holds each column read as the source's schema says."""
    planner = warehouses(NegatingWhilePlanning)
    plan = plan_source(planner, TABLE, planner.data_version(TABLE.source))
    assert plan.schema is not None and plan.schema.field("x1").metadata == {READ_AS: b"-{c}"}
    copied = planner.query(*planner.rows_query(plan, None)).sort_by("id")
    assert copied.num_rows == ROWS
    assert max(copied.column("x1").to_pylist()) <= 0  # x1 is in [0, 1): read negated


def test_counting_a_copy_says_what_the_counting_cost(
    warehouses: Callable[..., ScratchDuckDB],
) -> None:
    """The stats of a count are what it spent, not all the instance spent before."""
    planner = warehouses(BilledWhilePlanning)
    planner.query("SELECT 1", [])
    stats = planner.count_buckets(TABLE).stats
    assert stats == {"query_jobs": planner.costs.query_jobs - 1}
    assert stats["query_jobs"] >= 1


def test_the_plan_counts_the_rows_copied_whatever_the_source_does_after(
    warehouses: Callable[..., ScratchDuckDB], scratch_db: Any
) -> None:
    """Rows added to the source after the copy are neither counted nor read: every chunk
    holds the rows planned."""
    scratch_db.execute("CREATE TABLE events AS SELECT range AS id, 1 AS label FROM range(1000)")
    request = PlanRequest(SourceSpec(table="events"), SplitSpec(("id",), 25.0), 200)
    planner = warehouses(Overtaken, database=None)
    plan = plan_source(planner, request, planner.data_version(request.source))
    assert scratch_db.execute("SELECT count(*) FROM events").fetchone() == (1_100,)
    assert plan.rows("train") + plan.rows("eval") == 1_000
    read = [planner.read_buckets(plan, c) for c in [*plan.chunks["train"], *plan.chunks["eval"]]]
    assert sorted(i for table in read for i in table.column("id").to_pylist()) == list(range(1_000))


def test_planning_the_same_data_again_counts_its_copy_and_copies_nothing(
    warehouses: Callable[..., ScratchDuckDB],
) -> None:
    """Another process planning the same data, with another chunk size, finds the copy
    by its name, counts it and copies nothing."""
    planner, again = warehouses(CopyingWhilePlanning), warehouses(CopyingWhilePlanning)
    plan = plan_source(planner, TABLE, planner.data_version(TABLE.source))
    request = PlanRequest(TABLE.source, TABLE.split, 333)
    counted = again.count_buckets(request)
    assert again.calls == ["exists"]  # found: counted, not copied
    assert counted.state == plan.state
    assert counted.counts.sort_by("bucket").equals(
        planner.count_buckets(request).counts.sort_by("bucket")
    )
    other = PlanRequest(TABLE.source, SplitSpec(("id",), 11.0), 1_000)
    assert again.count_buckets(other).state != plan.state  # other rows: another copy
    assert again.calls.count("create") == 1


def test_planning_that_loses_the_race_counts_the_winners_copy(
    warehouses: Callable[..., ScratchDuckDB], scratch_db: Any
) -> None:
    """A process that makes the copy while planning, and loses the race to name it,
    counts the winner's, reads it as made, and leaves it to the winner."""
    winner, late = warehouses(CopyingWhilePlanning), warehouses(LateWhilePlanning)
    plan = plan_source(winner, TABLE, winner.data_version(TABLE.source))
    counted = late.count_buckets(TABLE)
    assert late.calls == ["exists", "prepare", "drop_expired", "create", "rename", "drop", "exists"]
    assert counted.state == plan.state
    late.materialize(plan)
    assert late.calls.count("exists") == 2  # counted: known to be there
    late.close()
    assert tables(scratch_db) == [winner.scratch_name(plan)]


@pytest.mark.parametrize("cls", [AtomicWhilePlanning, ExpiringWhilePlanning])
def test_a_copy_that_expires_made_while_planning_is_kept(
    warehouses: Callable[..., ScratchDuckDB], scratch_db: Any, cls: type[ScratchDuckDB]
) -> None:
    """A copy made while planning, where copies expire, is given its expiry and kept."""
    planner = warehouses(cls)
    plan = plan_source(planner, TABLE, planner.data_version(TABLE.source))
    assert planner.calls[-1] == "set_expiry" and planner.calls.count("set_expiry") == 1
    assert planner.created[-1].startswith("faucet_tmp_") != cls.scratch_created_atomically
    planner.close()
    assert tables(scratch_db) == [planner.scratch_name(plan)]


def test_a_copy_made_while_planning_a_query_is_named_after_the_plan(
    warehouses: Callable[..., ScratchDuckDB], scratch_db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A source without a data version is copied under a temporary name while planning,
    and named after the plan's rows once planned."""
    planner = warehouses(CopyingWhilePlanning, database=None)
    assert planner.copy_id(QUERIED.source, None, ("id", "x", "label"), ("id",), 2_000) is None
    plan = plan_of(planner, QUERIED)
    assert planner.calls == ["prepare", "drop_expired", "create"]  # not looked up: no name
    (temporary,) = tables(scratch_db)
    assert temporary.startswith("faucet_tmp_")
    assert dict(plan.state) == {}
    assert not planner.has_copy(plan)
    with caplog.at_level(logging.INFO, logger="faucet_core.scratch"):
        planner.planned(plan)
    assert caplog.messages == [
        f"copied the source query into {planner.scratch_name(plan)} while planning"
    ]
    assert planner.calls[3:] == ["rename"]
    assert tables(scratch_db) == [f"faucet_{plan.rows_id}"] == [planner.scratch_name(plan)]
    assert planner.has_copy(plan)
    planner.planned(plan)  # named already: nothing to do
    planner.materialize(plan)
    assert planner.calls[4:] == []
    rows = planner.query(*planner.rows_query(plan, None))
    assert ids(rows) == list(range(QUERY_ROWS))
    planner.close()
    assert tables(scratch_db) == []


def test_planning_again_before_naming_drops_the_earlier_copy(
    warehouses: Callable[..., ScratchDuckDB], scratch_db: Any
) -> None:
    """Planned again before the plan named its copy, the earlier copy is stale: dropped."""
    planner = warehouses(CopyingWhilePlanning, database=None)
    planner.count_buckets(QUERIED)
    (first,) = tables(scratch_db)
    plan = plan_of(planner, QUERIED)
    assert planner.calls[-1] == "drop"
    (second,) = tables(scratch_db)
    assert second != first and second.startswith("faucet_tmp_")
    planner.planned(plan)
    assert tables(scratch_db) == [planner.scratch_name(plan)]


def test_a_copy_made_while_planning_is_dropped_when_planning_fails(
    warehouses: Callable[..., ScratchDuckDB], scratch_db: Any
) -> None:
    """Closed before the plan named it (planning failed after the copy), the copy is
    dropped."""
    planner = warehouses(CopyingWhilePlanning, database=None)
    planner.count_buckets(QUERIED)
    assert len(tables(scratch_db)) == 1
    planner.close()
    assert planner.calls[-1] == "drop"
    assert tables(scratch_db) == []
    planner.calls.clear()
    planner.close()  # closed already: nothing left to drop
    assert planner.calls == []


def test_naming_a_planned_copy_after_another_process_keeps_theirs(
    warehouses: Callable[..., ScratchDuckDB], scratch_db: Any
) -> None:
    """Two processes plan a query at once: the second to name its copy drops it and
    reads the first's, which the first drops."""
    first = warehouses(CopyingWhilePlanning, database=None)
    second = warehouses(CopyingWhilePlanning, database=None)
    plan, again = plan_of(first, QUERIED), plan_of(second, QUERIED)
    assert plan.rows_id == again.rows_id
    first.planned(plan)
    second.planned(again)
    assert second.calls[-3:] == ["rename", "drop", "exists"]
    assert tables(scratch_db) == [first.scratch_name(plan)]
    assert second.has_copy(again)
    second.close()
    assert tables(scratch_db) == [first.scratch_name(plan)]
    first.close()
    assert tables(scratch_db) == []


@pytest.mark.parametrize(
    ("request_", "settings", "looked_up"),
    [(QUERIED, {"database": None}, []), (TABLE, {}, ["exists"])],
    ids=["query", "table"],
)
def test_a_count_whose_copy_fails_leaves_nothing(
    warehouses: Callable[..., ScratchDuckDB],
    scratch_db: Any,
    request_: PlanRequest,
    settings: dict[str, Any],
    looked_up: list[str],
) -> None:
    """A copy that fails while planning, once its table is made, leaves no table and fails
    the count, naming the source."""
    failing = warehouses(HalfCreatedWhilePlanning, **settings)
    what = request_.source.describe()
    with pytest.raises(PermanentWarehouseError, match=f"cannot count the rows of {what}: "):
        failing.count_buckets(request_)
    assert failing.calls == [*looked_up, "prepare", "drop_expired", "create", "drop"]
    assert tables(scratch_db) == []
    failing.close()
    assert failing.calls.count("drop") == 1  # nothing left to drop


def test_an_interrupted_count_raises_the_error_as_it_is(
    warehouses: Callable[..., ScratchDuckDB], scratch_db: Any
) -> None:
    """A copy interrupted while planning (a retry may succeed) is dropped and its error
    raised unchanged."""
    interrupted = warehouses(InterruptedWhilePlanning, database=None)
    with pytest.raises(TransientWarehouseError, match=r"^cannot prepare the scratch table"):
        interrupted.count_buckets(QUERIED)
    assert interrupted.calls == ["prepare", "drop_expired", "create", "drop"]
    assert tables(scratch_db) == []


def test_planning_without_the_right_to_create_tables_counts_the_source(
    warehouses: Callable[..., ScratchDuckDB],
    scratch_db: Any,
    table_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Where the user may not copy, planning counts the source as it is (with a warning),
    and the plan keeps no copy's id: it says it reads the source."""
    planner = warehouses(ReadOnlyWhilePlanning)
    with caplog.at_level(logging.WARNING, logger="faucet_core.scratch"):
        counted = planner.count_buckets(TABLE)
    (said,) = caplog.messages
    refusal = said.removeprefix("cannot copy table t while planning (").split("): ")[0]
    assert "read-only mode" in refusal  # the warehouse's error
    assert said == (
        f"cannot copy table t while planning ({refusal}): counting the source as it is; a "
        "change of its rows before they are read fails the read (grant the right to create "
        "tables where scratch copies go for reads of the rows planned)"
    )
    plain = DuckDBWarehouse(DuckDBConnection(database=table_path))
    try:
        source = plain.count_buckets(TABLE)
    finally:
        plain.close()
    assert counted.counts.sort_by("bucket").equals(source.counts.sort_by("bucket"))
    assert dict(counted.state) == {"reads_source": True}
    assert counted.columns == source.columns
    assert tables(scratch_db) == []


def test_a_plan_that_reads_the_source_is_never_copied(
    warehouses: Callable[..., ScratchDuckDB], scratch_db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Where planning could not copy, neither the planner nor another process tries the
    copy again for the plan: their reads scan the source, with a warning."""
    planner = warehouses(ReadOnlyWhilePlanning)
    plan = plan_source(planner, TABLE, planner.data_version(TABLE.source))
    other = warehouses(ReadOnlyWhilePlanning)
    for warehouse in (planner, other):
        warehouse.calls.clear()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="faucet_core.scratch"):
            warehouse.materialize(plan)
        assert caplog.messages == [
            "cannot copy table t (it could not while planning): every chunk read scans the "
            "source (grant the right to create tables where scratch copies go for one scan)"
        ]
        assert warehouse.calls == [] and not warehouse.reads_copy(plan)
        chunk = plan.chunks["train"][0]
        assert ids(warehouse.read_buckets(plan, chunk)) == ids(
            warehouse.query(*warehouse.source_rows(plan, [chunk]))
        )
    assert tables(scratch_db) == []


def test_copies_made_in_one_statement_must_expire() -> None:
    """No process can tell it made such a copy, so none could drop it on close."""
    with pytest.raises(TypeError, match=r"^Forever: scratch copies made in one statement "):

        class Forever(ScratchDuckDB):
            scratch_created_atomically = True


def test_planning_a_copy_refused_for_another_reason_fails(
    warehouses: Callable[..., ScratchDuckDB],
) -> None:
    """A refusal the warehouse does not put down to the user's rights fails planning."""
    refusing = warehouses(RefusingWhilePlanning)
    with pytest.raises(PermanentWarehouseError, match="cannot count the rows of table t: "):
        refusing.count_buckets(TABLE)


def test_the_copy_is_named_by_what_decides_its_rows(
    warehouses: Callable[..., ScratchDuckDB], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy's id changes with the warehouse, where the data lives, its version, the
    source, the columns, the key, the split and the layout's version (how rows are hashed
    and bucketed), and with nothing else."""
    warehouse = warehouses()
    source, columns, key = SourceSpec(table="t"), ("id", "x1"), ("id",)
    same = warehouse.copy_id(source, "v1", columns, key, 1_700)
    assert same == warehouses().copy_id(source, "v1", columns, key, 1_700)
    with monkeypatch.context() as patch:
        patch.setattr(layout, "LAYOUT_VERSION", layout.LAYOUT_VERSION + 1)
        next_layout = warehouse.copy_id(source, "v1", columns, key, 1_700)
    named = {
        same,
        next_layout,
        warehouses(CopyingWhilePlanning).copy_id(source, "v1", columns, key, 1_700),
        warehouses(database=None).copy_id(source, "v1", columns, key, 1_700),
        warehouse.copy_id(source, "v2", columns, key, 1_700),
        warehouse.copy_id(SourceSpec(table="t", ds="2024-01-01"), "v1", columns, key, 1_700),
        warehouse.copy_id(source, "v1", ("id",), key, 1_700),
        warehouse.copy_id(source, "v1", columns, ("x1",), 1_700),
        warehouse.copy_id(source, "v1", columns, key, 1_100),
    }
    assert len(named) == 9 and None not in named
    assert warehouse.copy_id(source, None, columns, key, 1_700) is None


def test_close_drops_every_copy_even_when_one_drop_fails(
    plan: Plan,
    warehouses: Callable[..., ScratchDuckDB],
    scratch_db: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A drop that fails on close (the server gone away) is logged, and the other copies
    are still dropped."""
    gone = warehouses(GoneAway)
    gone.materialize(plan)
    gone.count_buckets(QUERIED)  # a copy made while planning, never named
    assert len(tables(scratch_db)) == 2
    with caplog.at_level(logging.WARNING, logger="faucet_core.scratch"):
        gone.close()
    assert caplog.messages == [
        f"could not drop the scratch table {gone.scratch_name(plan)}: server closed the connection"
    ]
    assert tables(scratch_db) == [gone.scratch_name(plan)]
    gone.calls.clear()
    gone.close()  # closed already: nothing left to drop
    assert gone.calls == []


def test_a_warehouse_that_fails_to_open_says_why(scratch_db: Any, tmp_path: Path) -> None:
    """A warehouse whose constructor fails before the protocol's state is made closes
    without failing again: the error says why it could not open."""
    database = tmp_path / "not-a-database.duckdb"
    database.write_text("not a DuckDB file")
    with pytest.raises(PermanentWarehouseError, match="cannot open DuckDB database"):
        ScratchDuckDB(DuckDBConnection(database=database))


def test_a_reader_serves_every_row_once_from_the_copy_made_while_planning(
    readers: MakeReader, scratch_db: Any
) -> None:
    """End to end: a reader plans by copying, reads every chunk from the copy, serves each
    row once and drops the copy when closed."""
    reader = readers(datastore="copying-duckdb", use_cache=False, test_split_percent=17)
    assert tables(scratch_db) == [f"faucet_{reader.plan.state['copy_id']}"]
    train, held_out = epoch_ids(reader), epoch_ids(reader, eval=True)
    assert sorted(train + held_out) == list(range(ROWS))
    plain = readers(use_cache=False, test_split_percent=17)
    assert sorted(train) == sorted(epoch_ids(plain))
    warehouse = reader.stream.warehouse()
    assert isinstance(warehouse, ScratchDuckDB)
    assert warehouse.calls == ["exists", "prepare", "drop_expired", "create", "rename"]
    reader.close()
    assert tables(scratch_db) == []


def test_a_reader_that_may_not_copy_serves_the_source(readers: MakeReader, scratch_db: Any) -> None:
    """End to end: a reader whose user may not create tables plans and reads the source
    and serves every row once."""
    reader = readers(datastore="read-only-copying-duckdb", use_cache=False)
    train, held_out = epoch_ids(reader), epoch_ids(reader, eval=True)
    assert sorted(train + held_out) == list(range(ROWS))
    assert dict(reader.plan.state) == {"reads_source": True}
    reader.close()
    assert tables(scratch_db) == []
