"""Plans: cut from bucket counts, identified by fingerprints, written and read as JSON."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ClassVar

import duckdb
import pyarrow as pa
import pytest
from pydantic import BaseModel, PlainSerializer

from faucet_core import ConfigError, Plan, PlanRequest, Reader, SourceSpec, SplitSpec, load_config
from faucet_core.layout import BUCKETS
from faucet_core.plan import PLAN_FORMAT, ChunkSpec, make_plan
from faucet_core.warehouse import BucketCounts, PermanentWarehouseError, Warehouse

MakeReader = Callable[..., Reader]

REQUEST = PlanRequest(SourceSpec(table="t", ds="2024-01-01"), SplitSpec(("id",), 25.0), 10)


def _counts(*counts: tuple[bool, int, int]) -> BucketCounts:
    columns = list(zip(*counts, strict=True)) or [[], [], []]
    table = pa.table(
        {
            "is_eval": pa.array(columns[0], pa.bool_()),
            "bucket": pa.array(columns[1], pa.int64()),
            "row_count": pa.array(columns[2], pa.int64()),
            "checksum": pa.array([3 * n for n in columns[2]], pa.int64()),
        }
    )
    return BucketCounts(("id", "x"), table)


def test_chunks_cover_each_split_and_are_numbered() -> None:
    plan = make_plan("w", REQUEST, _counts((False, 5, 8), (False, 9, 8), (True, 1, 4)), "v1", "")
    train = plan.chunks["train"]
    assert [(c.index, c.lo, c.hi, c.rows) for c in train] == [(0, 0, 6, 8), (1, 6, BUCKETS, 8)]
    assert [(c.lo, c.hi, c.rows, c.checksum) for c in plan.chunks["eval"]] == [(0, BUCKETS, 4, 12)]
    assert (plan.rows("train"), plan.rows("eval")) == (16, 4)
    assert plan.stats["rows"] == {"train": 16, "eval": 4}


def test_the_fingerprint_follows_the_rows_and_the_chunking() -> None:
    counts = _counts((False, 5, 8), (False, 9, 8))
    plan = make_plan("w", REQUEST, counts, "v1", "")
    assert make_plan("w", REQUEST, counts, "v1", "").fingerprint == plan.fingerprint
    changed = [
        make_plan("w", REQUEST, counts, "v2", ""),
        make_plan("w", REQUEST, _counts((False, 5, 8), (False, 9, 9)), "v1", ""),
        make_plan("w", dataclasses.replace(REQUEST, chunk_size=100), counts, "v1", ""),
        make_plan("other", REQUEST, counts, "v1", ""),
    ]
    assert len({plan.fingerprint, *(p.fingerprint for p in changed)}) == 5
    # The same rows in other chunks share their rows id: scratch copies are reused.
    assert changed[2].rows_id == plan.rows_id


def test_a_plan_round_trips_through_json() -> None:
    plan = make_plan("w", REQUEST, _counts((False, 5, 8), (True, 9, 3)), "v1", "")
    text = plan.to_json()
    again = Plan.from_json(text)
    assert again == plan
    assert again.fingerprint == plan.fingerprint
    assert again.to_json() == text


def test_a_plan_sizes_its_rows_in_arrow_from_its_schema() -> None:
    """The size the cache fill is planned by: each row's key hash (8 bytes), each value's
    width (a byte at least: a flag), a guess of 32 bytes where widths vary; ``None``
    without a schema."""
    schema = pa.schema({"id": pa.int64(), "f": pa.float32(), "flag": pa.bool_(),
                        "name": pa.string(), "tags": pa.list_(pa.int8())})  # fmt: skip
    counts = dataclasses.replace(_counts((False, 5, 8), (True, 9, 3)), schema=schema)
    assert make_plan("w", REQUEST, counts, "v1", "").arrow_bytes() == 11 * (8 + 8 + 4 + 1 + 32 + 32)
    assert make_plan("w", REQUEST, _counts((False, 5, 8)), "v1", "").arrow_bytes() is None


def test_stats_a_plugin_gives_in_other_types_are_saved_as_text() -> None:
    """Stats are for display: values JSON has no type for (a time, a decimal) are saved
    as their text rather than failing the plan."""
    finished = dt.datetime(2026, 1, 2, 3, 4, 5)
    stats = {"finished": finished, "billed": decimal.Decimal("1.50")}
    counts = dataclasses.replace(_counts((False, 5, 8)), stats=stats)
    again = Plan.from_json(make_plan("w", REQUEST, counts, "v1", "").to_json())
    assert (again.stats["finished"], again.stats["billed"]) == (str(finished), "1.50")


def test_a_plan_is_a_value_that_cannot_change() -> None:
    counts = dataclasses.replace(_counts((False, 5, 8)), state={"folder": "/spill/a"})
    plan = make_plan("w", REQUEST, counts, "v1", "")
    for mapping in (plan.stats, plan.state, plan.chunks):
        with pytest.raises(TypeError):
            mapping["train"] = ()  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.rows_id = "other"  # type: ignore[misc]
    for copy in (Plan.from_json(plan.to_json()), pickle.loads(pickle.dumps(plan))):
        assert copy == plan and copy.fingerprint == plan.fingerprint
        assert copy.state == {"folder": "/spill/a"}


def test_the_warehouses_state_is_part_of_the_fingerprint() -> None:
    counts = _counts((False, 5, 8))
    plain = make_plan("w", REQUEST, counts, "v1", "")
    spilled = [
        make_plan(
            "w", REQUEST, dataclasses.replace(counts, state={"folder": f"/spill/{name}"}), "v1", ""
        )
        for name in "ab"
    ]
    assert len({plain.fingerprint, *(p.fingerprint for p in spilled)}) == 3
    assert {p.rows_id for p in spilled} == {plain.rows_id}  # the same rows
    data = json.loads(spilled[0].to_json())
    data["state"]["folder"] = "/spill/b"
    with pytest.raises(ValueError, match="altered"):
        Plan.from_json(json.dumps(data))


def test_what_pins_the_rows_travels_with_the_plan_outside_its_fingerprint() -> None:
    counts = _counts((False, 5, 8))
    plain = make_plan("w", REQUEST, counts, "v1", "")
    pinned = [
        make_plan("w", REQUEST, dataclasses.replace(counts, pinned={"snapshot": name}), "v1", "")
        for name in ("1-A-1", "1-B-1")
    ]
    # Counting the same rows twice gives the same plan, to resume and share caches with.
    assert {p.fingerprint for p in pinned} == {plain.fingerprint}
    for copy in (Plan.from_json(pinned[0].to_json()), pickle.loads(pickle.dumps(pinned[0]))):
        assert copy.pinned == {"snapshot": "1-A-1"}
    with pytest.raises(TypeError):
        pinned[0].pinned["snapshot"] = "other"  # type: ignore[index]


def test_an_altered_or_foreign_plan_is_refused() -> None:
    """An altered plan is refused as altered; text that is not a plan of this format (a
    whole plan of another format, or not a JSON object) is refused naming the format."""
    text = make_plan("w", REQUEST, _counts((False, 5, 8)), "v1", "").to_json()
    data = json.loads(text)
    data["chunks"]["train"][0][2] = 9
    with pytest.raises(ValueError) as altered:
        Plan.from_json(json.dumps(data))
    assert str(altered.value).startswith(
        "the plan was altered: its fingerprint does not match its chunks"
    )
    foreign = [
        json.dumps({**json.loads(text), "format": PLAN_FORMAT - 1}),
        json.dumps({**json.loads(text), "format": PLAN_FORMAT + 1}),
        '{"format": 1}',
        "[]",
        "null",
        '"a plan"',
    ]
    for other in foreign:
        with pytest.raises(ValueError, match=f"^not a Faucet plan.* of format {PLAN_FORMAT}$"):
            Plan.from_json(other)


def test_a_plan_without_a_split_key_round_trips_through_json() -> None:
    """A plan whose rows are split by the hash of all their columns (no split key) reads
    back as it was."""
    request = dataclasses.replace(REQUEST, split=SplitSpec(None, 25.0))
    plan = make_plan("w", request, _counts((False, 5, 8), (True, 9, 3)), "v1", "")
    again = Plan.from_json(plan.to_json())
    assert again == plan and again.fingerprint == plan.fingerprint
    assert again.request.split.key is None and again.key == ("id", "x")


def test_a_plan_written_without_a_state_reads_back_with_an_empty_one() -> None:
    """A plan of this format written before plans kept their warehouse's state (no
    ``state`` field) reads back with an empty state and the same fingerprint."""
    plan = make_plan("w", REQUEST, _counts((False, 5, 8), (True, 9, 3)), "v1", "")
    data = json.loads(plan.to_json())
    del data["state"]
    again = Plan.from_json(json.dumps(data))
    assert again == plan and again.fingerprint == plan.fingerprint
    assert again.state == {}


def test_the_rows_id_and_chunk_keys_of_a_plan_are_pinned() -> None:
    """Cache entries and saved positions name rows by this id: the same counts keep it in
    every release (a change of the layout changes ``LAYOUT_VERSION``, and the pin)."""
    counts = _counts((False, 5, 8), (False, 9, 8), (True, 1, 4), (True, 7, 2))
    plan = make_plan("w", REQUEST, counts, "v1", "src")
    assert plan.rows_id == "ee09412ab1f8ca3d017e6dfb9d270eac"
    assert (plan.datastore, plan.data_version) == ("w", "v1")
    assert [plan.chunk_key(chunk) for chunk in plan.every_chunk] == [
        "34940170d4e2dca4f0afc8c0c3414372",
        "79104fc10c0f28252a16367730ae81df",
        "dc2e3fe05cb228fd98583d9776790756",
    ]
    reordered = _counts((True, 7, 2), (False, 9, 8), (True, 1, 4), (False, 5, 8))
    assert make_plan("w", REQUEST, reordered, "v1", "src").rows_id == plan.rows_id


@pytest.mark.parametrize(
    "counts",
    [((False, BUCKETS, 1),), ((False, -1, 1),), ((False, 3, 0),), ((True, 3, 1), (True, 3, 2))],
)
def test_impossible_counts_are_refused(counts: tuple[tuple[bool, int, int], ...]) -> None:
    with pytest.raises(PermanentWarehouseError) as raised:
        make_plan("w", REQUEST, _counts(*counts), None, "")
    assert str(raised.value) == (
        f"w counted impossible buckets: buckets are 0..{BUCKETS - 1}, each counted once, with rows"
    )


def test_rows_with_a_null_key_hash_are_refused_naming_the_warehouse() -> None:
    # A NULL hash gives a NULL split and bucket: the counting query groups those rows.
    counts = _counts((False, 5, 8)).counts
    nulls = pa.table(
        {
            "is_eval": pa.array([None, False], pa.bool_()),
            "bucket": pa.array([None, None], pa.int64()),
            "row_count": pa.array([2, 1], pa.int64()),
            "checksum": pa.array([None, None], pa.int64()),
        }
    )
    counted = BucketCounts(("id", "x"), pa.concat_tables([counts, nulls]))
    with pytest.raises(PermanentWarehouseError) as raised:
        make_plan("w", REQUEST, counted, None, "")
    assert str(raised.value).startswith(
        "the w warehouse counted rows that break the layout: 3 rows have a NULL key hash "
        "(a hash of id in table t (ds=2024-01-01))"
    )
    two_columns = dataclasses.replace(REQUEST, split=SplitSpec(("id", "x"), 25.0))
    with pytest.raises(PermanentWarehouseError, match=r"\(a hash of id, x in table t"):
        make_plan("w", two_columns, counted, None, "")


def test_counts_of_the_wrong_shape_are_refused() -> None:
    with pytest.raises(PermanentWarehouseError, match="counted buckets wrongly"):
        make_plan("w", REQUEST, BucketCounts(("id",), pa.table({"bucket": [1]})), None, "")


def test_a_ds_without_rows_is_an_error() -> None:
    with pytest.raises(PermanentWarehouseError, match=r"table t has no rows for ds='2024-01-01'"):
        make_plan("w", REQUEST, _counts(), None, "")


def test_a_reader_given_a_plan_asks_the_warehouse_nothing_until_a_miss(
    make_reader: MakeReader, read_counter: object
) -> None:
    planned = make_reader(datastore="counting-duckdb", test_split_percent=20)
    ids = sorted(i for b in planned.iter_epoch() for i in b["features"]["id"].tolist())
    plan = Plan.from_json(planned.plan.to_json())  # e.g. sent to another process
    again = Reader(load_config(datastore="counting-duckdb", **_settings(planned)), plan=plan)
    try:
        assert again.plan == planned.plan
        assert sorted(i for b in again.iter_epoch() for i in b["features"]["id"].tolist()) == ids
        assert again.metrics[-1].chunks_fetched == 0
    finally:
        again.close()


def test_a_plan_of_another_request_is_refused(make_reader: MakeReader) -> None:
    plan = make_reader(test_split_percent=20).plan
    with pytest.raises(ConfigError) as raised:
        Reader(load_config(datastore="duckdb", **{**_settings(make_reader()), "chunk_size": 7}),
               plan=plan)  # fmt: skip
    assert raised.value.problems == [
        ("", "the plan given was made for another datastore, source, split or chunk_size")
    ]


def test_a_label_column_the_source_lacks_is_named(make_reader: MakeReader) -> None:
    with pytest.raises(ConfigError) as raised:
        make_reader(label_columns=["nope"])
    ((field, message),) = raised.value.problems
    assert (field, message.split(" not among")[0]) == ("source.label_columns", "['nope']")


def _settings(reader: Reader) -> dict[str, object]:
    config = reader.config
    return {
        "database": str(config.connection.database),  # type: ignore[attr-defined]
        "table_name": config.source.table,
        "split_key": config.source.split_key,
        "label_columns": config.source.label_columns,
        "test_split_percent": config.test_split_percent,
        "chunk_size": config.chunk_size,
        "batch_size": config.batch_size,
        "cache_dir": str(config.cache.dir),
    }


def test_shares_near_the_asked_one_are_no_surprise() -> None:
    # 25% asked: 24 of 100 rows in eval is chance, not a surprise.
    plan = make_plan("w", REQUEST, _counts((False, 5, 76), (True, 1, 24)), "v1", "")
    assert plan.split_surprise() is None
    # Of a million rows, 24% is four standard deviations away and more than a quarter
    # of the smaller side's share away: said.
    plan = make_plan("w", REQUEST, _counts((False, 5, 820_000), (True, 1, 180_000)), "v1", "")
    assert plan.split_surprise() == (
        "the split is not as asked: eval holds 18.0% of the 1,000,000 rows of table t "
        "(ds=2024-01-01) where test_split_percent asks 25.0%. The split key (id) sends all "
        "rows of one key value to one side; a key with few distinct values splits unevenly: "
        "choose one with many (an id)"
    )


@pytest.mark.parametrize(
    ("counts", "said"),
    [
        (((False, 5, 10),), "the eval split is empty: eval holds 0.0% of the 10 rows"),
        (((True, 5, 10),), "the train split is empty: eval holds 100.0% of the 10 rows"),
        ((), "table t has no rows: both splits are empty"),
    ],
)
def test_an_empty_split_is_said(counts: tuple[tuple[bool, int, int], ...], said: str) -> None:
    # Without a ds: a ds with no rows is an error of its own.
    request = dataclasses.replace(REQUEST, source=SourceSpec(table="t"))
    plan = make_plan("w", request, _counts(*counts), "v1", "")
    surprise = plan.split_surprise()
    assert surprise is not None and surprise.startswith(said)


def test_chance_is_four_standard_deviations_of_the_share() -> None:
    """Of 100 rows with 25% asked, a standard deviation of the share is 4.3 points: 6 rows
    in eval (19 points off) is past four of them, 9 rows (16 points off) is not."""
    for eval_rows, surprised in ((6, True), (9, False)):
        counts = _counts((False, 5, 100 - eval_rows), (True, 1, eval_rows))
        surprise = make_plan("w", REQUEST, counts, "v1", "").split_surprise()
        assert (surprise is not None) == surprised


def test_a_quarter_of_the_smaller_sides_share_is_the_margin() -> None:
    """75% asked: the smaller side is train's 25%, so a share 10 points off (more than
    6.25) is said, of a million rows, and 5 points off is not; the key's columns are
    named."""
    request = dataclasses.replace(REQUEST, split=SplitSpec(("a", "b"), 75.0))
    for eval_rows, surprised in ((650_000, True), (700_000, False)):
        counts = _counts((False, 5, 1_000_000 - eval_rows), (True, 1, eval_rows))
        surprise = make_plan("w", request, counts, "v1", "").split_surprise()
        assert (surprise is not None) == surprised
        assert surprise is None or "The split key (a, b) sends" in surprise


def test_no_eval_asked_and_none_given_is_no_surprise() -> None:
    request = dataclasses.replace(REQUEST, split=SplitSpec(("id",), 0.0))
    assert make_plan("w", request, _counts((False, 5, 10)), "v1", "").split_surprise() is None


def test_a_reader_warns_of_a_split_key_with_few_values(
    make_reader: MakeReader, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="faucet"):
        reader = make_reader(split_key="label", test_split_percent=20)
    share = reader.rows("eval") / (reader.rows("train") + reader.rows("eval"))
    # label is 0 or 1: each value's rows all go to one side, so eval holds 0%, 25%, 75%
    # or 100% of them, never 20%.
    assert share in (0.0, 0.25, 0.75, 1.0)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert f"eval holds {share:.1%} of the 5,000 rows of table t" in warnings[0]
    assert "test_split_percent asks 20.0%" in warnings[0]
    assert "The split key (label)" in warnings[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="faucet"):
        make_reader(split_key="id", test_split_percent=20)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_a_reader_warns_of_an_empty_table(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    database = tmp_path / "empty.duckdb"
    with duckdb.connect(str(database)) as db:
        db.execute("CREATE TABLE t (id BIGINT, label INT)")
    with caplog.at_level("WARNING", logger="faucet"):
        reader = Reader(
            load_config(
                datastore="duckdb", database=str(database), table_name="t", split_key="id",
                cache_dir=str(tmp_path / "cache"),
            )
        )  # fmt: skip
    with reader:
        reader.prep_for_epoch()
        assert reader.get_batch() is None
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["table t has no rows: both splits are empty"]


def _without_password(dsn: str) -> str:
    user, _, host = dsn.rpartition("@")
    return f"{user.partition(':')[0]}@{host}"


class _DsnConnection(BaseModel):
    """A plugin's settings whose JSON form leaves the DSN's password out."""

    dsn: Annotated[str, PlainSerializer(_without_password, when_used="json")]


class _DsnWarehouse(Warehouse):
    name: ClassVar[str] = "dsn"
    connection_model = _DsnConnection

    def count_buckets(self, request: PlanRequest) -> BucketCounts:
        raise NotImplementedError

    def read_buckets(self, plan: Plan, chunk: ChunkSpec) -> pa.Table:
        raise NotImplementedError


def test_the_default_source_identity_is_the_connections_json_form() -> None:
    """Where the data lives, by default, is the connection settings as their JSON form
    says them: a password that form masks does not move the data (cached chunks stay)."""

    def identity(dsn: str) -> str:
        return _DsnWarehouse(_DsnConnection(dsn=dsn)).source_identity(REQUEST.source)

    assert identity("me:old@db1") == identity("me:new@db1")
    assert identity("me:old@db1") != identity("me:old@db2")
