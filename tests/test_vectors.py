"""Vector columns (embeddings) as blocks of float columns: in numpy batches, in tensors,
through preprocessing; lists whose size varies refused by name."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa
import pytest
import torch

from faucet_core import ConfigError, Reader
from faucet_core.preprocessing import (
    ColumnConfig,
    ColumnStats,
    ColumnTransform,
    PreprocessingConfig,
    Preprocessor,
    fit_preprocessor,
)
from faucet_core.preprocessing.preprocessor import SPEC_FORMAT
from faucet_core.preprocessing.stats import StatsRequest, TrainStats, stats_from_tables
from faucet_core.torch import FaucetIterableDataset
from faucet_core.vectors import (
    block,
    conform,
    element_names,
    expanded_names,
    is_vector,
    list_problem,
    pad,
    padded_schema,
    uniform_lists,
)
from tests.bqemulator import BigQueryEmulator
from tests.conftest import duckdb_file

MakeReader = Callable[..., Reader]


def test_a_vector_block_is_a_view_of_arrows_values() -> None:
    array = pa.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], pa.list_(pa.float32(), 2))
    values = block(array.slice(1, 2))
    assert values.dtype == np.float32 and values.tolist() == [[3.0, 4.0], [5.0, 6.0]]
    assert np.shares_memory(values, np.asarray(array.values))


def test_null_vectors_and_elements_are_nan_rows() -> None:
    array = pa.array([[1, 2], None, [3, None]], pa.list_(pa.int64(), 2))
    values = block(pa.chunked_array([array.slice(0, 1), array.slice(1)]))
    assert values.dtype == np.float64
    assert np.array_equal(values, [[1, 2], [np.nan, np.nan], [3, np.nan]], equal_nan=True)


def test_chunks_of_vectors_keep_their_type_or_promote_with_nulls() -> None:
    whole = pa.array([[1.0, 2.0], [3.0, 4.0]], pa.list_(pa.float32(), 2))
    with_null = pa.array([[5.0, None]], pa.list_(pa.float32(), 2))
    assert block(pa.chunked_array([whole, whole])).dtype == np.float32
    values = block(pa.chunked_array([whole, with_null]))
    assert values.dtype == np.float64
    assert np.array_equal(values, [[1, 2], [3, 4], [5, np.nan]], equal_nan=True)


def test_padding_fills_cuts_and_counts_each_rows_own_values() -> None:
    lists = pa.array([[1.0, 2.0, 3.0], None, [], [4.0, None]], pa.list_(pa.float64()))
    table = pa.table({"id": [0, 1, 2, 3], "tags": lists})
    padded = pad(pa.concat_tables([table.slice(0, 2), table.slice(2)]), {"tags": 2})
    assert padded.column_names == ["id", "tags", "tags__length"]
    assert padded.schema == padded_schema(table.schema, {"tags": 2})
    values = block(padded.column("tags"))
    assert np.array_equal(values, [[1, 2], [0, 0], [0, 0], [4, np.nan]], equal_nan=True)
    assert padded.column("tags__length").to_pylist() == [2, 0, 0, 2]


def test_boolean_vectors_are_zeros_and_ones() -> None:
    array = pa.array([[True, False]], pa.list_(pa.bool_(), 2))
    assert block(array).tolist() == [[1.0, 0.0]]


def test_only_fixed_size_lists_of_numbers_are_vectors() -> None:
    assert is_vector(pa.list_(pa.float64(), 3))
    assert not is_vector(pa.list_(pa.float64()))
    assert not is_vector(pa.list_(pa.string(), 3))
    varying = list_problem(pa.field("tags", pa.list_(pa.float64())))
    assert varying is not None and "tags" in varying and "tags::FLOAT[n]" in varying
    texts = list_problem(pa.field("words", pa.list_(pa.string(), 2)))
    assert texts is not None and "not of numbers" in texts
    assert list_problem(pa.field("x", pa.float64())) is None


def test_vector_columns_expand_into_named_elements() -> None:
    schema = pa.schema([("x", pa.float64()), ("emb", pa.list_(pa.float32(), 3))])
    assert element_names("emb", 2) == ["emb[0]", "emb[1]"]
    assert expanded_names(schema, ["emb", "x"]) == ["emb[0]", "emb[1]", "emb[2]", "x"]


@pytest.fixture
def make_vector_reader(make_reader: MakeReader, vector_table_path: Path) -> MakeReader:
    def build(**settings: object) -> Reader:
        defaults = {"database": str(vector_table_path), "table_name": "v",
                    "columns": ["id", "x1", "emb", "label"], "test_split_percent": 0}  # fmt: skip
        return make_reader(**{**defaults, **settings})

    return build


def _expected_emb(ids: np.ndarray) -> np.ndarray:
    emb = np.column_stack([ids, 2 * ids, ids % 7, np.ones_like(ids)]).astype(np.float64)
    emb[ids % 10 == 3] = np.nan
    return emb


def test_numpy_batches_hold_a_vector_column_as_its_elements(
    make_vector_reader: MakeReader,
) -> None:
    reader = make_vector_reader(output="numpy")
    assert reader.feature_columns == ["id", "x1", "emb"]
    assert reader.feature_names == ["id", "x1", "emb[0]", "emb[1]", "emb[2]", "emb[3]"]
    batches = list(reader.iter_epoch())
    features = np.concatenate([b["features"] for b in batches])
    assert features.shape == (600, 6)
    ids = features[:, 0]
    assert sorted(ids.tolist()) == list(range(600))
    assert np.array_equal(features[:, 2:], _expected_emb(ids), equal_nan=True)


def test_tensors_hold_a_vector_column_as_its_elements(make_vector_reader: MakeReader) -> None:
    dataset = FaucetIterableDataset(make_vector_reader(), features_dtype=torch.float32)
    assert dataset.feature_names == ["id", "x1", "emb[0]", "emb[1]", "emb[2]", "emb[3]"]
    features = torch.cat([f for f, _ in dataset]).numpy()
    assert features.dtype == np.float32 and features.shape == (600, 6)
    assert np.array_equal(features[:, 2:], _expected_emb(features[:, 0]), equal_nan=True)


def test_lists_whose_size_varies_are_refused_by_name(make_vector_reader: MakeReader) -> None:
    reader = make_vector_reader(columns=["id", "tags", "label"], output="numpy")
    with pytest.raises(ConfigError, match=r"source\.columns: tags \(list<.*tags::FLOAT\[n\]"):
        next(reader.iter_epoch())
    dataset = FaucetIterableDataset(make_vector_reader(columns=["id", "tags", "label"]))
    with pytest.raises(ConfigError, match="tags"):
        next(iter(dataset))


def test_preprocessing_passes_vectors_through_and_fills_null_ones(
    make_vector_reader: MakeReader,
) -> None:
    reader = make_vector_reader(output="numpy", preprocessing={"auto": True, "exclude": ["id"]})
    names = reader.feature_names
    assert names[-5:] == ["emb[0]", "emb[1]", "emb[2]", "emb[3]", "emb__missing"]
    # id is excluded: kept as a number, first in the matrix.
    features = np.concatenate([b["features"] for b in reader.iter_epoch()])
    ids = features[:, 0]
    expected = np.nan_to_num(_expected_emb(ids))
    assert np.allclose(features[:, -5:-1], expected)
    assert np.array_equal(features[:, -1], (ids % 10 == 3).astype(np.float32))


def test_l2_scaling_makes_unit_vectors(make_vector_reader: MakeReader) -> None:
    reader = make_vector_reader(
        output="pandas", preprocessing={"columns": {"emb": {"scale": "l2"}}}
    )
    frame = next(reader.iter_epoch())["features"]
    emb = frame[["emb[0]", "emb[1]", "emb[2]", "emb[3]"]].to_numpy()
    lengths = np.linalg.norm(emb, axis=1)
    assert np.allclose(lengths[frame["emb__missing"] == 0], 1.0, atol=1e-6)
    assert np.allclose(lengths[frame["emb__missing"] == 1], 0.0)
    assert reader.preprocessor is not None
    again = type(reader.preprocessor).from_json(reader.preprocessor.to_json())
    assert again == reader.preprocessor


#: A query of table ``v``: ``small``, ``[0.03 k, 0.04 k]`` for ``k = id % 3`` (of length
#: ``0.05 k``), NULL where ``id % 10 = 3``.
SMALL_VECTORS = (
    "SELECT id, label, CASE WHEN id % 10 = 3 THEN NULL "
    "ELSE [0.03 * (id % 3), 0.04 * (id % 3)]::DOUBLE[2] END AS small FROM v"
)


def _small(make_vector_reader: MakeReader, **settings: object) -> tuple[list[str], np.ndarray]:
    reader = make_vector_reader(
        table_name=None, query=SMALL_VECTORS, columns=None, output="numpy",
        preprocessing={"columns": {"small": settings}, "exclude": ["id"]},
    )  # fmt: skip
    features = np.concatenate([b["features"] for b in reader.iter_epoch()])
    return reader.feature_names, features[np.argsort(features[:, 0])]


def test_l2_scaling_of_short_vectors_and_of_zero_ones(make_vector_reader: MakeReader) -> None:
    names, features = _small(make_vector_reader, scale="l2", impute="constant", fill_value=3)
    assert names == ["id", "small[0]", "small[1]", "small__missing"]
    ids = features[:, 0].astype(int)
    k = ids % 3
    expected = np.where((k > 0)[:, None], [[0.6, 0.8]], [[0.0, 0.0]])
    expected[ids % 10 == 3] = [2**-0.5, 2**-0.5]  # the fill [3, 3], made unit length
    assert np.allclose(features[:, 1:3], expected)


def test_vectors_filled_by_a_constant_and_clipped_without_an_indicator(
    make_vector_reader: MakeReader,
) -> None:
    names, features = _small(
        make_vector_reader, scale="none", impute="constant", fill_value=3, clip=[0.0, 0.07],
        indicator=False,
    )  # fmt: skip
    assert names == ["id", "small[0]", "small[1]"]
    ids = features[:, 0].astype(int)
    k = ids % 3
    expected = np.minimum(np.column_stack([0.03 * k, 0.04 * k]), 0.07)
    expected[ids % 10 == 3] = [0.07, 0.07]  # the fill, 3, clipped
    assert np.allclose(features[:, 1:], expected)


@pytest.mark.parametrize(
    ("columns", "setting"),
    [({"emb": {"impute": "median"}}, "emb.impute"),
     ({"emb": {"scale": "standard"}}, "emb.scale"), ({"x1": {"scale": "l2"}}, "x1.scale")],
)  # fmt: skip
def test_settings_vectors_do_not_take_are_refused_by_name(
    make_vector_reader: MakeReader, columns: dict[str, object], setting: str
) -> None:
    with pytest.raises(ConfigError, match=f"preprocessing.columns.{setting}"):
        make_vector_reader(preprocessing={"columns": columns})


def test_null_vectors_can_become_the_train_mean_vector(make_vector_reader: MakeReader) -> None:
    reader = make_vector_reader(
        output="numpy", preprocessing={"columns": {"emb": {"impute": "mean"}}}
    )
    known = np.array([i for i in range(600) if i % 10 != 3], np.float64)
    mean = _expected_emb(known).mean(axis=0)
    assert reader.preprocessor is not None
    (emb,) = [t for t in reader.preprocessor.features if t.name == "emb"]
    assert np.allclose(emb.fill_vector, mean)
    features = np.concatenate([b["features"] for b in reader.iter_epoch()])
    ids = features[:, 0]
    columns = [reader.feature_names.index(f"emb[{i}]") for i in range(4)]
    filled = features[ids % 10 == 3][:, columns]
    assert len(filled) == 60 and np.allclose(filled, mean)


def test_integer_vector_columns_are_scaled_as_floats(make_vector_reader: MakeReader) -> None:
    query = "SELECT id, label, [3 * (id % 3), 4 * (id % 3)]::INTEGER[2] AS ints FROM v"
    reader = make_vector_reader(
        table_name=None, query=query, columns=None, output="numpy",
        preprocessing={"columns": {"ints": {"scale": "l2"}}, "exclude": ["id"]},
    )  # fmt: skip
    assert reader.feature_names == ["id", "ints[0]", "ints[1]"]
    features = np.concatenate([b["features"] for b in reader.iter_epoch()])
    k = features[:, 0].astype(int) % 3
    assert np.allclose(features[:, 1:], np.where((k > 0)[:, None], [[0.6, 0.8]], 0.0))


def _vectors(rows: list[list[float | None] | None]) -> pa.Table:
    return pa.table({"emb": pa.array(rows, pa.list_(pa.float64(), 2))})


def test_vectors_filled_by_the_mean_keep_their_known_elements() -> None:
    emb = ColumnTransform("emb", "vector", indicator=True, size=2, fill_vector=(5.0, 6.0))
    features = Preprocessor((emb,)).transform(_vectors([[1.0, 2.0], None, [3.0, None]]))
    assert features.tolist() == [[1.0, 2.0, 0.0], [5.0, 6.0, 1.0], [3.0, 6.0, 0.0]]


def test_a_saved_vector_transform_without_a_fill_makes_nulls_zero() -> None:
    """A spec written without ``fill`` (its default) fills NULL vectors and elements with 0."""
    emb = {"name": "emb", "kind": "vector", "indicator": True, "size": 2}
    spec = {"format": SPEC_FORMAT, "features": [emb], "labels": []}
    preprocessor = Preprocessor.from_json(json.dumps(spec))
    features = preprocessor.transform(_vectors([[1.5, None], None, [-2.0, 4.0]]))
    assert features.tolist() == [[1.5, 0.0, 0.0], [0.0, 0.0, 1.0], [-2.0, 4.0, 0.0]]


def test_null_vectors_take_the_mean_vector_only_when_asked() -> None:
    """Statistics that hold a mean vector anyway (an earlier fit's, say) fill NULL vectors
    with it under ``impute: mean`` only; else with 0 or the constant asked for."""
    nulls = _vectors([None])
    stats = TrainStats(4, {"emb": ColumnStats(count=3, vector_mean=(5.0, 6.0))})
    for settings, filled in (
        (ColumnConfig(), [0.0, 0.0]),
        (ColumnConfig(impute="constant", fill_value=2), [2.0, 2.0]),
        (ColumnConfig(impute="mean"), [5.0, 6.0]),
    ):
        config = PreprocessingConfig(columns={"emb": settings})
        fitted = fit_preprocessor(config, nulls.schema, [], lambda request: stats)
        assert fitted.transform(nulls).tolist() == [[*filled, 1.0]], settings


def test_auto_fits_a_vector_column_unscaled_nulls_as_zero() -> None:
    table = _vectors([[3.0, 4.0], None])
    fitted = fit_preprocessor(
        PreprocessingConfig(auto=True), table.schema, [],
        lambda request: stats_from_tables([table], request),
    )  # fmt: skip
    assert fitted.features == (ColumnTransform("emb", "vector", fill=0.0, indicator=True, size=2),)
    assert fitted.transform(table).tolist() == [[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]]
    assert Preprocessor.from_json(fitted.to_json()) == fitted


def test_mean_vectors_from_the_train_chunks_leave_nulls_out() -> None:
    table = pa.table({"emb": pa.array([[1.0, None], None, [3.0, 4.0]], pa.list_(pa.float64(), 2))})
    request = StatsRequest(vector_means=("emb",))
    stats = stats_from_tables([table.slice(0, 2), table.slice(2)], request)
    assert stats.columns["emb"].count == 2
    assert stats.columns["emb"].vector_mean == (2.0, 4.0)
    assert TrainStats.from_dict(stats.as_dict()) == stats


def test_only_lists_of_one_size_that_is_not_zero_are_planned_as_vectors() -> None:
    lists = pa.list_(pa.float64())
    schema = pa.schema([("id", pa.int64()), ("emb", lists), ("empty", lists), ("ragged", lists)])
    planned = uniform_lists(schema, {"emb": (2, 2), "empty": (0, 0), "ragged": (1, 3)})
    assert planned.types == [pa.int64(), pa.list_(pa.float64(), 2), lists, lists]


def test_lists_planned_as_vectors_keep_the_schemas_metadata() -> None:
    """Only the types of the lists of one size change: the schema's metadata and the
    columns' own stay."""
    field = pa.field("emb", pa.list_(pa.float64()), metadata={"note": "mine"})
    schema = pa.schema([("id", pa.int64()), field], metadata={"source": "embeddings"})
    planned = uniform_lists(schema, {"emb": (3, 3)})
    assert planned.field("emb").type == pa.list_(pa.float64(), 3)
    assert planned.metadata == {b"source": b"embeddings"}
    assert planned.field("emb").metadata == {b"note": b"mine"}


def test_lists_the_plan_holds_as_vectors_are_read_as_vectors_the_others_as_they_are() -> None:
    """As a warehouse that gives lists (PostgreSQL arrays, BigQuery repeated fields) reads
    them, wherever they stand among the columns."""
    lists = pa.list_(pa.float64())
    table = pa.table({
        "id": [1, 2], "ragged": pa.array([[1.0], [2.0, 3.0]]),  # a list in the plan too
        "emb": pa.array([[1.0, 2.0], [3.0, 4.0]]),
        "tags": pa.array([[1.0], [2.0, 3.0]]),  # not in the plan's schema
    })  # fmt: skip
    plan_schema = pa.schema(
        [("id", pa.int64()), ("ragged", lists), ("emb", pa.list_(pa.float64(), 2))]
    )
    conformed = conform(table, plan_schema)
    assert conformed.schema.types == [pa.int64(), lists, pa.list_(pa.float64(), 2), lists]
    assert conformed.to_pydict() == table.to_pydict()


def test_columns_read_as_vectors_or_as_numbers_are_left_as_read() -> None:
    """Only lists whose size may vary are cast to the plan's vectors: a column the
    warehouse already reads as vectors, or as numbers, stays as it is."""
    table = pa.table({
        "id": pa.array([1, 2], pa.int32()),
        "emb": pa.array([[1.0, 2.0], [3.0, 4.0]], pa.list_(pa.float32(), 2)),
    })  # fmt: skip
    plan_schema = pa.schema([("id", pa.int64()), ("emb", pa.list_(pa.float64(), 2))])
    assert conform(table, plan_schema).equals(table, check_metadata=True)


def test_lists_of_one_size_everywhere_are_planned_as_vectors(
    make_vector_reader: MakeReader, tmp_path: Path
) -> None:
    database = duckdb_file(
        tmp_path / "lists.duckdb",
        "CREATE TABLE l AS SELECT i AS id, [i, i + 0.5, NULL]::DOUBLE[] AS emb, "
        "CASE WHEN i % 9 = 2 THEN NULL ELSE [i]::DOUBLE[] END AS one, (i % 2) AS label "
        "FROM range(300) r(i)",
    )
    reader = make_vector_reader(database=str(database), table_name="l", columns=None,
                                output="numpy")  # fmt: skip
    assert reader.plan.schema is not None
    assert reader.plan.schema.field("emb").type == pa.list_(pa.float64(), 3)
    assert reader.feature_names == ["id", "emb[0]", "emb[1]", "emb[2]", "one[0]"]
    features = np.concatenate([b["features"] for b in reader.iter_epoch()])
    ids = features[:, 0]
    assert sorted(ids.tolist()) == list(range(300))
    assert np.allclose(features[:, 1:3], np.column_stack([ids, ids + 0.5]))
    assert np.isnan(features[:, 3]).all()
    assert np.array_equal(np.isnan(features[:, 4]), ids % 9 == 2)
    mean = {"columns": {"emb": {"impute": "mean"}}}
    preprocessed = make_vector_reader(
        database=str(database), table_name="l", columns=None, preprocessing=mean
    )
    assert preprocessed.preprocessor is not None
    (emb,) = [t for t in preprocessed.preprocessor.features if t.name == "emb"]
    assert emb.kind == "vector" and emb.size == 3
    assert np.allclose(emb.fill_vector, [149.5, 150.0, 0.0])


def test_postgres_arrays_of_one_size_are_vectors(
    postgres_url: str, make_reader: MakeReader
) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS arrays AS SELECT i AS id, "
            "ARRAY[i, i * 2, 1]::float8[] AS emb, ARRAY_FILL(1.0, ARRAY[1 + i % 2]) AS ragged, "
            "(i % 2) AS label FROM generate_series(0, 199) AS s(i)"
        )
    reader = make_reader(datastore="postgres", dsn=postgres_url, database=None,
                         table_name="arrays", columns=["id", "emb", "label"], output="numpy",
                         test_split_percent=0)  # fmt: skip
    assert reader.feature_names == ["id", "emb[0]", "emb[1]", "emb[2]"]
    features = np.concatenate([b["features"] for b in reader.iter_epoch()])
    ids = features[:, 0]
    assert np.allclose(features[:, 1:], np.column_stack([ids, 2 * ids, np.ones_like(ids)]))
    ragged = make_reader(datastore="postgres", dsn=postgres_url, database=None,
                         table_name="arrays", columns=["id", "ragged", "label"], output="numpy",
                         test_split_percent=0)  # fmt: skip
    with pytest.raises(ConfigError, match="ragged"):
        next(ragged.iter_epoch())


def test_pgvector_vectors_are_float_blocks(pgvector_url: str, make_reader: MakeReader) -> None:
    with psycopg.connect(pgvector_url, autocommit=True) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS embedded AS SELECT i AS id, "
            "format('[%s,%s,1]', i, i * 2)::vector(3) AS emb, "
            "format('[%s,0.5]', -i)::vector AS loose, "
            "(i % 2) AS label FROM generate_series(0, 199) AS s(i)"
        )
    reader = make_reader(datastore="postgres", dsn=pgvector_url, database=None,
                         table_name="embedded", output="numpy", test_split_percent=0)  # fmt: skip
    assert reader.plan.schema is not None
    assert reader.plan.schema.field("emb").type == pa.list_(pa.float32(), 3)
    assert reader.plan.schema.field("loose").type == pa.list_(pa.float32(), 2)
    assert reader.feature_names == ["id", "emb[0]", "emb[1]", "emb[2]", "loose[0]", "loose[1]"]
    features = np.concatenate([b["features"] for b in reader.iter_epoch()])
    ids = features[:, 0]
    assert sorted(ids) == list(range(200))
    expected = np.column_stack([ids, 2 * ids, np.ones_like(ids), -ids, np.full_like(ids, 0.5)])
    assert np.allclose(features[:, 1:], expected)
    tensors = make_reader(datastore="postgres", dsn=pgvector_url, database=None,
                          table_name="embedded", test_split_percent=0, use_cache=False)  # fmt: skip
    rows = [(f, y) for f, y in FaucetIterableDataset(tensors)]
    assert sum(len(f) for f, _ in rows) == 200
    for f, _ in rows:
        assert torch.allclose(f[:, 2], 2 * f[:, 1]) and torch.allclose(f[:, 4], -f[:, 0])


def test_bigquery_arrays_of_one_size_are_vectors(
    bigquery_emulator: BigQueryEmulator, make_bq_reader: MakeReader
) -> None:
    client = bigquery_emulator.client()
    client.create_dataset("faucet_test", exists_ok=True)
    client.query(
        "CREATE OR REPLACE TABLE faucet_test.embedded AS SELECT i AS id, "
        "[CAST(i AS FLOAT64), 2.0 * i, 1.0] AS emb, MOD(i, 2) AS label "
        "FROM UNNEST(GENERATE_ARRAY(0, 199)) AS i"
    ).result()
    reader = make_bq_reader(table_name="faucet_test.embedded", output="numpy",
                            test_split_percent=0, ds=None)  # fmt: skip
    assert reader.feature_names == ["id", "emb[0]", "emb[1]", "emb[2]"]
    features = np.concatenate([b["features"] for b in reader.iter_epoch()])
    ids = features[:, 0]
    assert sorted(ids.tolist()) == list(range(200))
    assert np.allclose(features[:, 1:], np.column_stack([ids, 2 * ids, np.ones_like(ids)]))


def _tags(ids: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The vector table's ``tags`` (``[0, 1.5, 3][: 1 + id % 3]``) padded or cut to
    ``size``, and their kept lengths."""
    own = 1 + ids.astype(int) % 3
    kept = np.minimum(own, size)
    values = np.zeros((len(ids), size))
    for row, count in enumerate(kept):
        values[row, :count] = [0.0, 1.5, 3.0][:count]
    return values, kept


def test_padded_lists_are_vectors_with_their_lengths(make_vector_reader: MakeReader) -> None:
    reader = make_vector_reader(columns=["id", "tags", "label"], pad={"tags": 2}, output="numpy")
    assert reader.feature_names == ["id", "tags[0]", "tags[1]", "tags__length"]
    features = np.concatenate([b["features"] for b in reader.iter_epoch()])
    ids = features[:, 0]
    values, kept = _tags(ids, 2)
    assert sorted(ids.tolist()) == list(range(600))
    assert np.array_equal(features[:, 1:3], values) and np.array_equal(features[:, 3], kept)
    dataset = FaucetIterableDataset(make_vector_reader(columns=["id", "tags", "label"],
                                                       pad={"tags": 4}))  # fmt: skip
    rows = torch.cat([f for f, _ in dataset]).numpy()
    values, kept = _tags(rows[:, 0], 4)
    assert np.array_equal(rows[:, 1:5], values) and np.array_equal(rows[:, 5], kept)


def test_padded_lists_are_preprocessed_and_grouped(make_vector_reader: MakeReader) -> None:
    reader = make_vector_reader(
        columns=["id", "x1", "tags", "label"], pad={"tags": 2}, output="numpy",
        inputs={"a": ["x1"], "b": ["tags"]}, preprocessing={"auto": True},
    )  # fmt: skip
    assert reader.inputs == {"a": ["x1"], "b": ["tags[0]", "tags[1]", "tags__length"]}
    b = np.concatenate([batch["features"]["b"] for batch in reader.iter_epoch()])
    assert b.shape == (600, 3) and not np.isnan(b).any()
    # tags__length is standardized over the train rows' kept lengths (1, 2, 2, ...).
    assert abs(float(b[:, 2].mean())) < 1e-5 and abs(float(b[:, 2].std()) - 1) < 1e-5


def test_padding_is_checked(make_vector_reader: MakeReader) -> None:
    reader = make_vector_reader(columns=["id", "x1", "label"], pad={"x1": 2}, output="numpy")
    with pytest.raises(ConfigError, match=r"source\.pad\.x1: x1 \(double\) holds no lists"):
        next(reader.iter_epoch())
    with pytest.raises(ConfigError, match=r"source\.pad.*'nowhere'"):
        make_vector_reader(columns=None, pad={"nowhere": 2})
    with pytest.raises(ConfigError, match="pad: label is a label column"):
        make_vector_reader(pad={"label": 2})
    with pytest.raises(ConfigError, match=r"source\.pad\.tags: .*greater than or equal to 1"):
        make_vector_reader(columns=["id", "tags", "label"], pad={"tags": 0})


def test_a_preprocessor_fitted_for_one_padding_is_not_reused_for_another(
    make_vector_reader: MakeReader,
) -> None:
    for size in (2, 3):  # the same cache folder: a saved preprocessor would be found
        reader = make_vector_reader(columns=["id", "tags", "label"], pad={"tags": size},
                                    output="numpy", preprocessing={"auto": True})  # fmt: skip
        assert reader.feature_names[-1] == "tags__length"
        assert f"tags[{size - 1}]" in reader.feature_names
        assert next(reader.iter_epoch())["features"].shape[1] == size + 2
