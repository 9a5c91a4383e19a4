"""Applying, saving, loading preprocessing (faucet_core.preprocessing.preprocessor); stats SQL."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from faucet_core.preprocessing import Preprocessor
from faucet_core.preprocessing.preprocessor import OOV, ColumnTransform
from faucet_core.preprocessing.stats import StatsRequest, StatsSql, TrainStats
from faucet_core.sql import quote_identifier


def _matrix(*features: ColumnTransform, **columns: list[Any]) -> np.ndarray[Any, Any]:
    return Preprocessor(features).transform(pa.table(columns))  # type: ignore[no-any-return]


def test_numeric_nulls_become_zero_without_a_fill_and_the_fill_with_one() -> None:
    matrix = _matrix(
        ColumnTransform("x", "numeric"),
        ColumnTransform("y", "numeric", fill=2.5),
        x=[1.0, None, 3.0],
        y=[None, 4.0, 5.0],
    )
    np.testing.assert_array_equal(matrix, [[1.0, 2.5], [0.0, 4.0], [3.0, 5.0]])


def test_unscaled_numeric_columns_keep_their_values() -> None:
    # center and width apply to standard and minmax scaling only, as in apply().
    unscaled = ColumnTransform("y", "numeric", scale="none", center=5.0, width=2.0)
    matrix = _matrix(ColumnTransform("x", "numeric"), unscaled, x=[1.0, -2.0], y=[7.0, 8.0])
    np.testing.assert_array_equal(matrix, [[1.0, 7.0], [-2.0, 8.0]])
    np.testing.assert_array_equal(unscaled.apply(pa.array([7.0, 8.0]))[0], [7.0, 8.0])


@pytest.mark.parametrize("scale", ["standard", "minmax"])
@pytest.mark.parametrize("center, width", [(1.0, 4.0), (0.0, 2.0), (1.0, 1.0)])
def test_scaled_numeric_columns_are_centered_and_divided(
    scale: str, center: float, width: float
) -> None:
    """Whatever the center and width, one of them as an unscaled column's; in a matrix
    (numeric columns together) and alone."""
    scaled = ColumnTransform("x", "numeric", scale=scale, center=center, width=width)
    values = [center, center + width / 2, center + width]
    np.testing.assert_array_equal(_matrix(scaled, x=values)[:, 0], [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(scaled.apply(pa.array(values))[0], [0.0, 0.5, 1.0])


def test_a_categorical_column_without_categories_puts_every_value_in_the_other_slot() -> None:
    onehot = ColumnTransform("c", "categorical", encode="onehot")
    index = ColumnTransform("i", "categorical", encode="index")
    preprocessor = Preprocessor((onehot, index))
    assert preprocessor.feature_names == [f"c={OOV}", "i"]
    table = pa.table({"c": ["a", None, "b"], "i": ["a", "b", None]})
    np.testing.assert_array_equal(preprocessor.transform(table), [[1.0, 0.0]] * 3)


def test_features_of_a_table_with_no_feature_keep_its_row_count() -> None:
    preprocessor = Preprocessor((ColumnTransform("x", "dropped"),))
    features = preprocessor.transform(pa.table({"x": [1, 2, 3]}), output="arrow")
    assert features.num_columns == 0
    assert features.num_rows == 3


def test_label_names_name_the_transformed_label_columns() -> None:
    label = ColumnTransform("y", "categorical", encode="onehot", categories=("a",))
    preprocessor = Preprocessor((), labels=(label,))
    assert preprocessor.label_names(["y", "w"]) == ["y=a", f"y={OOV}", "w"]


def test_transformed_labels_are_float32_and_others_keep_their_type() -> None:
    label = ColumnTransform("y", "numeric", scale="standard", center=1.0, width=2.0)
    table = pa.table({"y": [1, 5], "w": pa.array([7, 8], pa.int64())})
    labels = Preprocessor((), labels=(label,)).label_table(table, ["y", "w"])
    assert labels.schema == pa.schema([("y", pa.float32()), ("w", pa.int64())])
    assert labels.column("y").to_pylist() == [0.0, 2.0]


def test_a_vector_label_of_another_size_than_fitted_is_refused() -> None:
    """Not cut short to the fitted size: a label losing elements would go unnoticed."""
    label = ColumnTransform("v", "vector", size=2)
    vectors = pa.array([[1.0, 2.0, 3.0]], pa.list_(pa.float64(), 3))
    with pytest.raises(ValueError, match=r"v: vectors of 3 values, .* fitted on vectors of 2"):
        Preprocessor((), labels=(label,)).label_table(pa.table({"v": vectors}), ["v"])
    with pytest.raises(ValueError, match="v: vectors of 3 values"):
        Preprocessor((label,)).transform(pa.table({"v": vectors}))


def _fitted() -> Preprocessor:
    return Preprocessor(
        features=(
            ColumnTransform("x", "numeric", fill=1.5, indicator=True, clip=(0.0, 9.0)),
            ColumnTransform("c", "categorical", encode="onehot", categories=("a", "b")),
            ColumnTransform("d", "date", date_parts=("year", "epoch_days")),
            ColumnTransform("v", "vector", size=2, fill_vector=(0.5, 1.5), scale="l2"),
        ),
        labels=(ColumnTransform("y", "numeric", scale="minmax", center=1.0, width=3.0),),
        fitted_on={"rows": 10},
    )


def test_saved_json_is_indented_and_names_the_features(tmp_path: Path) -> None:
    preprocessor = _fitted()
    text = preprocessor.to_json()
    assert text.splitlines()[:2] == ["{", '  "format": 1,']
    assert json.loads(text)["feature_names"] == [
        "x", "x__missing", "c=a", "c=b", f"c={OOV}", "d:year", "d:epoch_days", "v[0]", "v[1]",
    ]  # fmt: skip
    preprocessor.save(tmp_path / "p.json")
    assert (tmp_path / "p.json").read_text(encoding="utf-8") == text + "\n"


def test_saved_json_leaves_out_fields_at_their_defaults() -> None:
    saved = json.loads(_fitted().to_json())
    assert saved["features"][1] == {
        "name": "c", "kind": "categorical", "encode": "onehot", "categories": ["a", "b"],
    }  # fmt: skip
    assert saved["labels"] == [
        {"name": "y", "kind": "numeric", "scale": "minmax", "center": 1.0, "width": 3.0}
    ]


def test_a_saved_preprocessor_loads_back_the_same(tmp_path: Path) -> None:
    preprocessor = _fitted()
    assert Preprocessor.from_json(preprocessor.to_json()) == preprocessor
    preprocessor.save(tmp_path / "p.json")
    assert Preprocessor.load(tmp_path / "p.json") == preprocessor


# The statistics query.


def _stats(sql: StatsSql, request: StatsRequest, rows: str) -> TrainStats:
    with duckdb.connect() as db:
        db.execute(f"CREATE TABLE t AS {rows}")
        query, read = sql.query("SELECT * FROM t", request, quote_identifier)
        cursor = db.execute(query)
        names = [column[0] for column in cursor.description]
        return read(dict(zip(names, cursor.fetchone(), strict=True)))


def test_a_restricted_request_keeps_the_accepted_vector_columns() -> None:
    request = StatsRequest(numeric=("x", "y"), vector_means=("v", "w"))
    restricted = request.restricted(lambda column: column in ("x", "v"))
    assert restricted == StatsRequest(numeric=("x",), vector_means=("v",))


def test_no_statistic_the_warehouse_gives_as_nan_is_kept_as_nan() -> None:
    rows = "SELECT * FROM (VALUES (1.0::DOUBLE), ('nan'::DOUBLE), (3.0)) v(x)"
    keeps_nan = StatsSql(float="CAST({c} AS DOUBLE)")  # a dialect that averages NaN in
    stats = _stats(keeps_nan, StatsRequest(numeric=("x",)), rows).columns["x"]
    found = (stats.mean, stats.std, stats.min, stats.max)
    assert not any(value is not None and math.isnan(value) for value in found), found
    assert _stats(StatsSql(), StatsRequest(numeric=("x",)), rows).columns["x"].mean == 2.0


def test_vectors_are_clipped_at_both_ends() -> None:
    transform = ColumnTransform("v", "vector", size=2, clip=(0.0, 1.0))
    vectors = pa.array([[-1.0, 0.5], [2.0, -3.0]], pa.list_(pa.float64(), 2))
    assert [list(column) for column in transform.apply(vectors)] == [[0.0, 1.0], [0.5, 0.0]]


def test_top_values_tied_in_count_are_ranked_by_value() -> None:
    # A dialect whose ranked list breaks ties the other way, as an approximate one may.
    sql = StatsSql(ranked="list(struct_pack(value := v, count := n) ORDER BY n DESC, v DESC)")
    rows = "SELECT * FROM (VALUES ('b'), ('c'), ('a'), ('c')) v(c)"
    stats = _stats(sql, StatsRequest(top=("c",)), rows).columns["c"]
    assert stats.top == (("c", 2), ("a", 1), ("b", 1))
