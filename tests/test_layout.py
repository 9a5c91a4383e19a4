"""The layout rules: split, buckets, chunks, row order and checks, in SQL and numpy alike."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import sqlite3

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from faucet_core import ChunkSpec, Plan, PlanRequest, SourceSpec, SplitSpec, layout
from faucet_core.checks import PlanBreach, check_chunk
from faucet_core.layout import BucketRange, Dialect

INT64 = st.integers(-(2**63), 2**63 - 1)
UINT64 = st.integers(0, 2**64 - 1)


@given(hashes=st.lists(INT64, min_size=1, max_size=50), eval_buckets=st.integers(0, 10_000))
def test_sql_and_numpy_agree_on_signed_hashes(hashes: list[int], eval_buckets: int) -> None:
    array = np.array(hashes, dtype=np.int64)
    expected = list(zip(layout.is_eval(array, eval_buckets), layout.bucket_of(array), strict=True))
    for dialect, run in ((Dialect(), _duckdb), (Dialect(mod="({a} % {n})"), _sqlite)):
        rows = run(
            f"SELECT {dialect.is_eval('h', eval_buckets)}, {dialect.bucket('h')} FROM t",
            hashes,
        )
        assert [(bool(e), int(b)) for e, b in rows] == expected


@given(hashes=st.lists(UINT64, min_size=1, max_size=50), eval_buckets=st.integers(0, 10_000))
def test_sql_and_numpy_agree_on_unsigned_hashes(hashes: list[int], eval_buckets: int) -> None:
    array = np.array(hashes, dtype=np.uint64)
    expected = [
        (bool(e), int(b))
        for e, b in zip(layout.is_eval(array, eval_buckets), layout.bucket_of(array), strict=True)
    ]
    # Folded as signed hashes, and with one remainder as a dialect of unsigned ones does.
    for dialect in (Dialect(), Dialect(unsigned_hashes=True)):
        rows = _duckdb(
            f"SELECT {dialect.is_eval('h', eval_buckets)}, {dialect.bucket('h')} FROM t",
            hashes,
            kind="UBIGINT",
        )
        assert [(bool(e), int(b)) for e, b in rows] == expected


@pytest.mark.parametrize("kind", [np.int64, np.uint64])
def test_folds_of_many_hashes_are_their_floor_remainders(kind: type) -> None:
    # More than one block of the fold, the extremes of the type at either end of a block.
    info = np.iinfo(kind)
    hashes = np.random.default_rng(7).integers(info.min, info.max, 200_003, dtype=kind)
    hashes[[0, 65_535, 65_536, 131_071, -1]] = [info.min, info.max, info.min, info.max, 1]
    numbers = hashes.tolist()
    for fold, modulus in (
        (layout.bucket_of, layout.BUCKETS),
        (layout.checksum_terms, layout.CHECKSUM_MODULUS),
    ):
        expected = [number % modulus for number in numbers]
        assert fold(hashes).tolist() == expected
        terms = np.full(len(hashes), -1.0)
        assert fold(hashes, out=terms) is terms
        assert terms.astype(np.int64).tolist() == expected
    flags = layout.is_eval(hashes, 2_500)
    assert flags.tolist() == [number % layout.SPLIT_BUCKETS < 2_500 for number in numbers]


def _duckdb(
    sql: str, hashes: list[int], kind: str = "BIGINT", order: str = " ORDER BY i"
) -> list[tuple[object, ...]]:
    with duckdb.connect() as db:
        db.execute(f"CREATE TABLE t (i INTEGER, h {kind})")
        if hashes:
            db.executemany("INSERT INTO t VALUES (?, ?)", list(enumerate(hashes)))
        return db.execute(sql + order).fetchall()


def _sqlite(sql: str, hashes: list[int]) -> list[tuple[object, ...]]:
    with sqlite3.connect(":memory:") as db:
        db.execute("CREATE TABLE t (i INTEGER, h INTEGER)")
        db.executemany("INSERT INTO t VALUES (?, ?)", list(enumerate(hashes)))
        return db.execute(sql + " ORDER BY i").fetchall()


# PostgreSQL's terms are summed as integers: its sum of bigints is a slower numeric.
@pytest.mark.parametrize("dialect", [Dialect(), Dialect(checksum_terms_as="INTEGER")])
@given(hashes=st.lists(INT64, min_size=0, max_size=80), eval_buckets=st.integers(0, 10_000))
@example(hashes=[0, 65_537, 1], eval_buckets=1)  # bucket 0 of eval, and of train
@example(hashes=[-1, 2**31 - 2, -(2**63)], eval_buckets=0)  # the largest terms
def test_the_count_query_counts_as_the_core_does(
    dialect: Dialect, hashes: list[int], eval_buckets: int
) -> None:
    counted = _duckdb(
        dialect.count_query("SELECT h AS __faucet_hash FROM t", eval_buckets), hashes, order=""
    )
    columns = list(zip(*counted, strict=True)) or [[], [], [], []]
    table = pa.table(dict(zip(layout.COUNT_COLUMNS, columns, strict=True)))
    from_sql = layout.bucket_counts(table if counted else _empty_counts())
    expected = layout.count_hashes(np.array(hashes, dtype=np.int64), eval_buckets)
    assert sorted(from_sql.to_pylist(), key=str) == sorted(expected.to_pylist(), key=str)


@given(hashes=st.lists(UINT64, min_size=1, max_size=80), eval_buckets=st.integers(0, 10_000))
@example(hashes=[0, 65_537, 2**64 - 1], eval_buckets=0)  # no eval split: one group per bucket
def test_the_count_query_of_unsigned_hashes_counts_as_the_core_does(
    hashes: list[int], eval_buckets: int
) -> None:
    query = Dialect(unsigned_hashes=True).count_query(
        "SELECT h AS __faucet_hash FROM t", eval_buckets
    )
    counted = _duckdb(query, hashes, kind="UBIGINT", order="")
    table = pa.table(dict(zip(layout.COUNT_COLUMNS, zip(*counted, strict=True), strict=True)))
    expected = layout.count_hashes(np.array(hashes, dtype=np.uint64), eval_buckets)
    assert sorted(layout.bucket_counts(table).to_pylist(), key=str) == sorted(
        expected.to_pylist(), key=str
    )


def _empty_counts() -> pa.Table:
    return pa.table({name: pa.array([], pa.int64()) for name in layout.COUNT_COLUMNS})


def test_counts_take_what_warehouses_return() -> None:
    raw = pa.table(
        {
            "is_eval": [0, 1],  # SQLite's booleans
            "bucket": [3, 4],
            "row_count": [2, 5],
            "checksum": pa.array([10, 20], pa.decimal128(38, 0)),  # DuckDB's and PostgreSQL's sums
        }
    )
    counts = layout.bucket_counts(raw)
    assert counts.column("is_eval").to_pylist() == [False, True]
    assert counts.column("checksum").type == pa.int64()
    with pytest.raises(ValueError, match="has the columns"):
        layout.bucket_counts(raw.drop_columns(["checksum"]))
    past_int64 = raw.set_column(3, "checksum", pa.array([10, 2**70], pa.decimal128(38, 0)))
    with pytest.raises(ValueError, match="out of bounds"):
        layout.bucket_counts(past_int64)


def test_the_split_is_a_share_of_hash_buckets() -> None:
    assert layout.eval_buckets(20) == 2_000
    assert layout.eval_buckets(12.5) == 1_250
    assert layout.eval_buckets(0) == 0
    hashes = np.random.default_rng(0).integers(-(2**63), 2**63 - 1, 200_000, dtype=np.int64)
    assert abs(layout.is_eval(hashes, 2_000).mean() - 0.2) < 0.01
    # Bucket and split are independent: eval rows fill every part of the bucket space.
    eval_buckets = layout.bucket_of(hashes[layout.is_eval(hashes, 2_000)])
    counts, _ = np.histogram(eval_buckets, bins=16, range=(0, layout.BUCKETS))
    assert counts.min() > 0.9 * counts.mean()


@given(
    rows=st.lists(st.integers(1, 40), min_size=0, max_size=300),
    chunk_size=st.integers(1, 2_000),
)
def test_buckets_group_into_contiguous_chunks_of_about_the_target_size(
    rows: list[int], chunk_size: int
) -> None:
    generator = np.random.default_rng(len(rows))
    buckets = generator.choice(layout.BUCKETS, len(rows), replace=False)
    counts = np.array(rows, dtype=np.int64)
    chunks = layout.group_buckets(buckets, counts, 7 * counts, chunk_size)
    total = int(counts.sum())
    if not total:
        assert chunks == []
        return
    assert chunks[0][0] == 0 and chunks[-1][1] == layout.BUCKETS
    assert all(a[1] == b[0] for a, b in itertools.pairwise(chunks))
    assert sum(c[2] for c in chunks) == total
    assert sum(c[3] for c in chunks) == 7 * total
    for lo, hi, n, _ in chunks:
        assert n == counts[(buckets >= lo) & (buckets < hi)].sum() > 0
    wanted = -(-total // chunk_size)
    assert len(chunks) <= wanted  # a bucket is never cut, so big buckets make fewer chunks
    if all(n == 1 for n in rows):
        assert len(chunks) == wanted
        assert max(c[2] for c in chunks) - min(c[2] for c in chunks) <= 1


def test_the_mth_chunk_ends_where_the_running_count_reaches_m_times_total_over_k() -> None:
    """5 rows of one bucket each, chunks of 2: k = 3 chunks, ending where the running count
    reaches 5/3, 10/3 and 5, so at 2, 4 and 5 rows."""
    buckets = np.arange(5, dtype=np.int64)
    ones = np.ones(5, np.int64)
    chunks = layout.group_buckets(buckets, ones, ones, 2)
    assert [rows for _, _, rows, _ in chunks] == [2, 2, 1]


def _chunk_table(hashes: list[int], **columns: list[object]) -> pa.Table:
    return pa.table({**columns, layout.HASH_COLUMN: pa.array(hashes, pa.int64())})


def order_chunk(table: pa.Table) -> pa.Table:
    """``table``'s rows in the chunk order."""
    positions = layout.chunk_positions(table)
    return table if positions is None else table.take(pa.array(positions))


def test_the_row_order_is_a_function_of_the_rows() -> None:
    hashes = [5, 3, 5, 1, 5]
    table = _chunk_table(hashes, x=["b", "a", "a", "z", "c"], n=[[1], [2], [3], [4], [0]])
    ordered = order_chunk(table)
    for permutation in itertools.permutations(range(5)):
        shuffled = table.take(pa.array(permutation))
        assert order_chunk(shuffled).equals(ordered)
    assert ordered.column("x").to_pylist() == ["z", "a", "a", "b", "c"]
    # Rows equal in every sortable column are told apart by the nested ones.
    ties = _chunk_table([1, 1], x=["a", "a"], n=[[2], [1]])
    assert order_chunk(ties).column("n").to_pylist() == [[1], [2]]
    assert order_chunk(ties.take(pa.array([1, 0]))).equals(order_chunk(ties))
    # Whatever their values' types: dates in lists, here.
    dated = _chunk_table([1, 1], d=[[dt.date(2024, 1, 2)], [dt.date(2024, 1, 1)]])
    assert order_chunk(dated).column("d").to_pylist() == [
        [dt.date(2024, 1, 1)], [dt.date(2024, 1, 2)]
    ]  # fmt: skip
    # And by dictionary-encoded ones (which Arrow cannot sort), whatever their dictionary.
    coded = pa.table(
        {"d": pa.array(["q", "p"]).dictionary_encode(), layout.HASH_COLUMN: pa.array([1, 1])}
    )
    assert order_chunk(coded).column("d").to_pylist() == ["p", "q"]
    assert order_chunk(coded.take(pa.array([1, 0]))).column("d").to_pylist() == ["p", "q"]


def test_a_chunk_is_checked_against_its_plan() -> None:
    hashes = np.random.default_rng(1).integers(-(2**63), 2**63 - 1, 5_000, dtype=np.int64)
    train = hashes[~layout.is_eval(hashes, 1_000)]
    buckets = layout.bucket_of(train)
    members = train[(buckets >= 100) & (buckets < 30_000)]
    checksum = pc.sum(layout.count_hashes(members, 1_000).column("checksum")).as_py()
    chunk = ChunkSpec("train", 0, 100, 30_000, len(members), checksum)
    request = PlanRequest(SourceSpec(table="t"), SplitSpec(("id",), 10.0), 10_000)
    plan = Plan("w", request, ("id", "x"), None, "rows", {"train": (chunk,), "eval": ()})
    table = _chunk_table(members.tolist(), id=list(range(len(members))), x=[0] * len(members))

    def problem(candidate: pa.Table, chunk: ChunkSpec = chunk, ordered: bool = False) -> str:
        with pytest.raises(PlanBreach) as raised:
            check_chunk(plan, chunk, candidate, ordered)
        assert str(raised.value).startswith("the w warehouse broke its plan: ")
        assert raised.value.warehouse == "w"
        return raised.value.rule

    assert check_chunk(plan, chunk, table, ordered=True).equals(table)
    # A warehouse's columns come in any order; the cache's, in the plan's.
    shuffled = table.select([layout.HASH_COLUMN, "x", "id"])
    assert check_chunk(plan, chunk, shuffled).column_names == table.column_names
    assert problem(shuffled, ordered=True) == (
        f"columns ['{layout.HASH_COLUMN}', 'x', 'id'] where the plan has "
        f"['id', 'x', '{layout.HASH_COLUMN}']"
    )
    assert problem(table.drop_columns(["x"])).startswith(f"columns ['id', '{layout.HASH_COLUMN}']")
    fewer = dataclasses.replace(chunk, rows=2)
    assert problem(table, fewer) == f"train chunk 0: {len(members):,} rows where the plan counted 2"
    outsider = int(hashes[layout.is_eval(hashes, 1_000)][0])
    swapped = table.set_column(2, layout.HASH_COLUMN, pa.array([*members[1:], outsider]))
    bucket = int(layout.bucket_of(np.array([outsider]))[0])
    assert problem(swapped) == f"row in bucket {bucket} of eval, outside chunk train 100-29999"
    two = table.set_column(2, layout.HASH_COLUMN, pa.array([*members[2:], outsider, outsider]))
    assert problem(two).endswith("outside chunk train 100-29999 (2 such rows)")
    # Another row of the same split and bucket: only the checksum tells.
    step = layout.SPLIT_BUCKETS * layout.BUCKETS
    first = int(members[0])
    other = first - step if first > 0 else first + step
    assert (layout.bucket_of(np.array([other])) == layout.bucket_of(members[:1])).all()
    replaced = table.set_column(2, layout.HASH_COLUMN, pa.array([other, *members[1:]]))
    assert "the checksum of their key hashes is not the plan's" in problem(replaced)
    texts = table.set_column(2, layout.HASH_COLUMN, pa.array(["x"] * len(members)))
    assert problem(texts) == "a key hash of type string where the layout needs 64-bit integers"
    nulls = table.set_column(2, layout.HASH_COLUMN, pa.array([None, *members[1:]], pa.int64()))
    assert problem(nulls) == "1 row has a NULL key hash"


def test_hash_values_is_stable_and_typed() -> None:
    assert layout.hash_values(1, "a") == layout.hash_values(1, "a")
    assert layout.hash_values(1) != layout.hash_values("1")
    assert layout.hash_values(None) != layout.hash_values("None")
    assert layout.hash_values(42) == 6_969_389_294_253_838_187  # pinned: a change moves rows
    assert layout.hash_values(1, "a") == -4_209_974_568_958_848_522
    assert -(2**63) <= layout.hash_values(3.5, b"x") < 2**63


def test_dialect_ranges_select_one_chunk() -> None:
    dialect = Dialect()
    condition = dialect.in_range("e", "b", BucketRange(True, 3, 9))
    assert condition == "e AND b >= 3 AND b < 9"
    assert dialect.in_range("e", "b", BucketRange(False, 0, 5)).startswith("NOT e AND")


@pytest.mark.parametrize("kind", [pa.int64(), pa.uint64()])
def test_checksums_fit_in_64_bits(kind: pa.DataType) -> None:
    big = pa.array([2**63 - 1] * 1000 if kind == pa.int64() else [2**64 - 1] * 1000, kind)
    counted = layout.count_hashes(np.asarray(big.to_numpy()), 0)
    assert counted.column("checksum").to_pylist() == [1000 * (big[0].as_py() % (2**31 - 1))]


def test_hashes_counted_a_part_at_a_time_count_as_all_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Parts of any size, and blocks of a part, add up to the count of all the hashes."""
    monkeypatch.setattr(layout, "_COUNT_BLOCK", 500)
    # Few distinct buckets: most hold several rows.
    hashes = np.random.default_rng(5).integers(-(10**5), 10**5, 3_000, dtype=np.int64)
    counts = layout.HashCounts(2_500)
    for part in np.split(hashes, [0, 1, 999, 1_000, 2_500]):
        counts.add(part)
    query = layout.Dialect().count_query("SELECT h AS __faucet_hash FROM t", 2_500)
    expected = _duckdb(query, hashes.tolist(), order=" ORDER BY 1, 2")
    table = pa.table(dict(zip(layout.COUNT_COLUMNS, zip(*expected, strict=True), strict=True)))
    assert counts.table().to_pylist() == layout.bucket_counts(table).to_pylist()
    assert max(counts.table().column("row_count").to_pylist()) > 1


def test_the_checksum_of_a_bucket_of_millions_of_rows_is_exact() -> None:
    """A split key of few values puts millions of rows in one bucket: its checksum, past
    2**53, is the exact sum still (floats would round it)."""
    term = layout.CHECKSUM_MODULUS - 2
    rows = 4_500_000
    (counted,) = layout.count_hashes(np.full(rows, term, dtype=np.int64), 0).to_pylist()
    assert counted["row_count"] == rows
    assert counted["checksum"] == rows * term > 2**53


def test_rows_in_the_chunk_order_already_are_left_where_they_are() -> None:
    """No positions for rows in the chunk order: they are served as they came."""
    table = _chunk_table([-(2**40), -7, 1, 3, 2**40], x=["e", "d", "c", "b", "a"])
    assert layout.chunk_positions(table) is None
    positions = layout.chunk_positions(table.take(pa.array([4, 3, 2, 1, 0])))
    assert positions is not None and positions.tolist() == [4, 3, 2, 1, 0]


def test_ties_are_broken_by_the_other_columns_wherever_the_hash_column_stands() -> None:
    """The key hash column first: equal hashes are still ordered by the columns after it."""
    table = pa.table({layout.HASH_COLUMN: pa.array([2, 2, 1, 2]), "x": ["c", "a", "z", "b"]})
    ordered = order_chunk(table)
    assert ordered.column("x").to_pylist() == ["z", "a", "b", "c"]
    for permutation in itertools.permutations(range(4)):
        assert order_chunk(table.take(pa.array(permutation))).equals(ordered)


def test_ties_in_a_struct_column_are_ordered_by_its_fields_sorted_by_name() -> None:
    """Nested values break ties by their JSON text with keys sorted: the same order
    whatever order a warehouse gives a struct's fields in."""
    values = [{"b": 1, "a": 2}, {"b": 2, "a": 1}]
    table = pa.table({layout.HASH_COLUMN: pa.array([5, 5]), "s": values})
    assert order_chunk(table).column("s").to_pylist() == values[::-1]
    flipped = pa.table(
        {layout.HASH_COLUMN: pa.array([5, 5]), "s": [{"a": 2, "b": 1}, {"a": 1, "b": 2}]}
    )
    assert order_chunk(flipped).column("s").to_pylist() == [{"a": 1, "b": 2}, {"a": 2, "b": 1}]


def test_the_split_and_checksum_terms_are_computed_in_the_arrays_given() -> None:
    hashes = np.array([-(2**62), 17, 2**40, 5], dtype=np.int64)
    scratch = np.full(4, -1, dtype=np.int64)
    evals = layout.is_eval(hashes, 300, scratch)
    assert evals.tolist() == layout.is_eval(hashes, 300).tolist()
    assert not (scratch == -1).any()
    terms = np.full(4, -1.0)
    assert layout.checksum_terms(hashes, out=terms) is terms
    assert terms.tolist() == layout.checksum_terms(hashes).tolist()
    buckets = np.full(4, -1, dtype=np.int64)
    assert layout.bucket_of(hashes, out=buckets) is buckets
    assert buckets.tolist() == layout.bucket_of(hashes).tolist()


@pytest.mark.parametrize("kind", [pa.int64(), pa.uint64(), pa.int32()])
def test_the_integers_of_an_empty_column_keep_its_type(kind: pa.DataType) -> None:
    empty = layout.integers(pa.chunked_array([], kind))
    assert empty.dtype == np.dtype(kind.to_pandas_dtype()) and len(empty) == 0


def test_chunk_ends_are_exact_past_what_a_float_holds() -> None:
    """Rows past 2**53: the first chunk ends where the running count reaches half of the
    odd total, rounded up, which a float division would round down."""
    rows = np.array([2**54, 1, 2**54], dtype=np.int64)
    buckets = np.array([0, 1, 2])
    chunks = layout.group_buckets(buckets, rows, np.zeros(3, np.int64), 2**54 + 1)
    assert [chunk[:3] for chunk in chunks] == [[0, 2, 2**54 + 1], [2, layout.BUCKETS, 2**54]]


def test_a_digest_takes_values_json_cannot_write_by_their_text() -> None:
    """A partition's date or a plugin's version object digests as its text, the same in
    every process; the digest is of the values, whatever the keys' order."""
    assert layout.stable_digest(dt.date(2026, 12, 6)) == layout.stable_digest("2026-12-06")
    assert layout.stable_digest({"b": 1, "a": 2}) == layout.stable_digest({"a": 2, "b": 1})


@pytest.mark.parametrize(
    "values",
    [
        np.array([True, False, True, True, False, False, True, False, True]),
        np.arange(-5, 5, dtype=np.int64),
        np.arange(10, dtype=np.int32)[::3],  # not contiguous
        np.array([0.5, -1.0]),
        np.empty(0, np.int64),
    ],
)
def test_arrow_of_a_numpy_array_equals_pyarrows_conversion(values: np.ndarray) -> None:
    assert layout.arrow_of(values).equals(pa.array(values))
