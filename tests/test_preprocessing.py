"""Preprocessing: fitted on exactly the train rows, equal to scikit-learn's, saved for serving."""

from __future__ import annotations

import datetime as dt
import json
import math
import sqlite3
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler, normalize

from faucet_core import ConfigError, Reader
from faucet_core.preprocessing import PreprocessingConfig, Preprocessor
from faucet_core.preprocessing.fit import _scaling, fit_preprocessor, stats_request
from faucet_core.preprocessing.preprocessor import OOV, ColumnTransform
from faucet_core.preprocessing.stats import ColumnStats, StatsRequest, TrainStats, stats_from_tables
from tests.conftest import ascii_locale

MakeReader = Callable[..., Reader]
ROWS = 4_000
CITIES = ["paris", "oslo", "lima", "rome", "kyiv", "nice", "bonn", "riga"]


def _write(path: Path) -> Path:
    """NULLs, a skewed category, a sorted column, dates, and awkward columns."""
    with duckdb.connect(str(path)) as db:
        db.execute(
            f"""
            CREATE TABLE t AS SELECT
              i AS id,
              CASE WHEN i % 9 = 0 THEN NULL ELSE ((i * 7919) % 1000) / 37.0 END AS x,
              CASE WHEN i % 11 = 0 THEN NULL ELSE (i % 97)::DOUBLE END AS y,
              CASE WHEN i % 13 = 0 THEN NULL
                   ELSE {CITIES}[1 + (i * i) % 29 % 8] END AS city,
              i::DOUBLE AS sorted_x,
              DATE '2024-01-01' + (i % 60)::INT AS day,
              NULL::DOUBLE AS empty,
              5.0 AS constant,
              'only' AS single,
              (i % 3 = 0)::INT AS label
            FROM range({ROWS}) r(i) ORDER BY sorted_x
            """
        )
    return path


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("preprocessing") / "p.duckdb")


@pytest.fixture
def make(make_reader: MakeReader, database: Path) -> Callable[..., Reader]:
    def build(**settings: Any) -> Reader:
        return make_reader(
            **{"database": str(database), "test_split_percent": 25, "batch_size": 500,
               "chunk_size": 700, **settings}
        )  # fmt: skip

    return build


def _rows(reader: Reader, eval: bool = False) -> pa.Table:
    """Every row of a split, raw, in one table (from a reader without preprocessing)."""
    batches = reader.iter_eval() if eval else reader.iter_epoch()
    return pa.concat_tables(
        [b["features"].append_column("label", b["labels"].column("label")) for b in batches]
    )


def _column(table: pa.Table, name: str) -> np.ndarray[Any, Any]:
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=object)


def test_numbers_match_scikit_learn_fitted_on_the_train_rows(make: Callable[..., Reader]) -> None:
    train = _rows(make(output="arrow"))
    settings = {"columns": {"x": {"impute": "mean", "scale": "standard"},
                            "y": {"impute": "median", "scale": "minmax"},
                            "sorted_x": {"scale": "minmax"}}}  # fmt: skip
    reader = make(preprocessing=settings)
    transforms = {t.name: t for t in reader.preprocessor.features}  # type: ignore[union-attr]
    assert min(_column(train, "sorted_x")) > 0  # a minimum that is not 0 is fitted
    for name, pipeline in (
        ("x", make_pipeline(SimpleImputer(strategy="mean"), StandardScaler())),
        ("y", make_pipeline(SimpleImputer(strategy="median"), MinMaxScaler())),
        ("sorted_x", make_pipeline(SimpleImputer(strategy="mean"), MinMaxScaler())),
    ):
        values = train.column(name).to_numpy(zero_copy_only=False).astype(float).reshape(-1, 1)
        expected = pipeline.fit_transform(values)[:, 0]
        ours = transforms[name].apply(train.column(name))[0]
        np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)
        assert transforms[name].indicator == (name != "sorted_x")  # NULLs seen in train


def test_categories_match_scikit_learn(make: Callable[..., Reader]) -> None:
    train = _rows(make(output="arrow"))
    settings = {"columns": {"city": {"impute": "most_frequent", "encode": "onehot",
                                     "max_categories": 4, "indicator": False}}}  # fmt: skip
    reader = make(preprocessing=settings)
    (city,) = [t for t in reader.preprocessor.features if t.name == "city"]  # type: ignore[union-attr]
    values = _column(train, "city").reshape(-1, 1)
    imputed = SimpleImputer(strategy="most_frequent", missing_values=None).fit_transform(values)
    encoder = OneHotEncoder(max_categories=5, handle_unknown="infrequent_if_exist")
    expected = encoder.fit_transform(imputed).toarray()
    names = [n.removeprefix("x0_") for n in encoder.get_feature_names_out()]
    ours = np.column_stack(city.apply(train.column("city")))
    for index, name in enumerate(city.outputs()):
        category = name.removeprefix("city=")
        column = names.index("infrequent_sklearn" if category == OOV else category)
        np.testing.assert_array_equal(ours[:, index], expected[:, column])


def test_eval_batches_use_the_train_statistics(make: Callable[..., Reader]) -> None:
    reader = make(output="numpy", preprocessing={"auto": True, "exclude": ["id"]})
    x = reader.preprocessor.feature_names.index("x")  # type: ignore[union-attr]
    train = np.concatenate([b["features"][:, x] for b in reader.iter_epoch()])
    evaluation = np.concatenate([b["features"][:, x] for b in reader.iter_eval()])
    assert abs(train.mean()) < 1e-5 and abs(train.std() - 1) < 1e-5
    assert abs(evaluation.mean()) > 1e-3  # eval is not re-centered on itself


def test_auto_decides_per_type_and_explains_awkward_columns(make: Callable[..., Reader]) -> None:
    reader = make(output="numpy", preprocessing={"auto": True, "exclude": ["id"]})
    preprocessor = reader.preprocessor
    assert preprocessor is not None
    kinds = {t.name: t for t in preprocessor.features}
    assert kinds["id"].kind == "passthrough"
    assert kinds["empty"].kind == "dropped" and "NULL on every train row" in kinds["empty"].note
    assert kinds["constant"].width == 1.0 and "constant" in kinds["constant"].note
    assert kinds["single"].categories == ("only",)
    assert kinds["day"].date_parts == ("epoch_days", "day_of_week", "month")
    assert "label" not in {t.name for t in preprocessor.features}  # labels untouched
    reader.prep_for_epoch()
    batch = reader.get_batch()
    assert batch is not None
    features = batch["features"]
    assert features.dtype == np.float32 and features.flags["C_CONTIGUOUS"]
    assert features.shape[1] == len(preprocessor.feature_names)
    assert np.isfinite(features).all()
    constant = preprocessor.feature_names.index("constant")
    assert (features[:, constant] == 0).all()
    assert set(np.unique(batch["labels"])) <= {0, 1}


def test_unseen_categories_and_nulls_share_the_other_slot(make: Callable[..., Reader]) -> None:
    preprocessor = make(preprocessing={"auto": True}).preprocessor
    assert preprocessor is not None
    city = next(t for t in preprocessor.features if t.name == "city")
    rows = city.apply(pa.chunked_array([["atlantis", None, city.categories[0]]]))
    onehot = np.column_stack(rows[: len(city.categories) + 1])
    other = len(city.categories)
    assert onehot[0, other] == 1 and onehot[1, other] == 1 and onehot[2, 0] == 1
    assert onehot.sum(axis=1).tolist() == [1, 1, 1]


def test_a_saved_preprocessor_serves_what_the_reader_trained_on(
    make: Callable[..., Reader], tmp_path: Path
) -> None:
    settings = {"auto": True, "exclude": ["id"], "columns": {"y": {"clip": [0, 50]}}}
    reader = make(output="numpy", seed=4, preprocessing=settings)
    raw = make(output="arrow", seed=4)
    assert reader.preprocessor is not None
    reader.preprocessor.save(tmp_path / "spec.json")
    served = Preprocessor.load(tmp_path / "spec.json")
    assert served == reader.preprocessor
    for batch, rows in zip(reader.iter_epoch(), raw.iter_epoch(), strict=True):
        for data in (rows["features"], rows["features"].to_pandas(), rows["features"].to_pydict()):
            assert np.array_equal(served.transform(data), batch["features"])
    again = make(output="numpy", preprocessing={"spec": str(tmp_path / "spec.json")})
    assert again.preprocessor == served


def test_the_cache_keeps_raw_chunks_and_the_fit_is_reused(
    make: Callable[..., Reader], read_counter: Any
) -> None:
    first = make(datastore="counting-duckdb", preprocessing={"auto": True})
    for _ in first.iter_epoch():
        pass
    reads = read_counter.reads
    other = make(datastore="counting-duckdb", preprocessing={"columns": {"x": {"scale": "none"}}})
    for _ in other.iter_epoch():
        pass
    assert read_counter.reads == reads  # other preprocessing, same cached chunks
    again = make(datastore="counting-duckdb", preprocessing={"auto": True})
    assert again.preprocessor == first.preprocessor


def test_pandas_polars_and_arrow_keep_named_columns(make: Callable[..., Reader]) -> None:
    settings = {"auto": True, "exclude": ["id", "city"]}
    reader = make(output="pandas", preprocessing=settings)
    batch = next(reader.iter_epoch())
    assert "x__missing" in batch["features"].columns
    assert reader.feature_names == reader.feature_columns == list(batch["features"].columns)
    assert set(batch["features"]["city"].dropna()) <= set(CITIES)  # excluded text, as it is
    arrow = next(make(output="arrow", preprocessing=settings).iter_epoch())
    assert arrow["features"].schema.field("x").type == pa.float32()
    polars = next(make(output="polars", preprocessing=settings).iter_epoch())["features"]
    assert polars.columns == arrow["features"].column_names  # the kept text columns too
    assert polars.to_dicts() == arrow["features"].to_pylist()
    numpy = make(output="numpy", preprocessing=settings)  # a matrix of numbers: not kept
    assert numpy.feature_columns == numpy.feature_names and "city" not in numpy.feature_names


def test_bad_settings_name_their_field(make: Callable[..., Reader], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"preprocessing.columns: \['nope'\] not among"):
        make(preprocessing={"columns": {"nope": {"scale": "standard"}}})
    with pytest.raises(ConfigError, match=r"preprocessing\.columns\.x\.scale"):
        make(preprocessing={"columns": {"x": {"scale": "cube"}}})
    with pytest.raises(ConfigError, match=r"preprocessing\.spec"):
        make(preprocessing={"spec": str(tmp_path / "missing.json")})


@pytest.fixture
def sqlite_plugin(register: Callable[[object], None], monkeypatch: pytest.MonkeyPatch) -> None:
    """The SQLite example plugin: it computes no statistics, and gives no column types."""
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "examples" / "faucet-sqlite"))
    import faucet_sqlite

    register(faucet_sqlite)


def test_without_a_statistics_query_the_train_chunks_are_read(
    make_reader: MakeReader, sqlite_plugin: None, tmp_path: Path
) -> None:
    path = tmp_path / "p.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (id INTEGER, x REAL, label INTEGER)")
        db.executemany(
            "INSERT INTO t VALUES (?, ?, ?)",
            [(i, None if i % 7 == 0 else i % 50 / 3, i % 2) for i in range(2_000)],
        )
    settings = {"datastore": "sqlite", "database": str(path), "test_split_percent": 25}
    reader = make_reader(**settings, preprocessing={"auto": True, "exclude": ["id"]})
    train = _rows(make_reader(**settings, output="arrow"))
    x = next(t for t in reader.preprocessor.features if t.name == "x")  # type: ignore[union-attr]
    values = train.column("x").to_numpy(zero_copy_only=False).astype(float).reshape(-1, 1)
    expected = make_pipeline(SimpleImputer(), StandardScaler()).fit_transform(values)[:, 0]
    np.testing.assert_allclose(x.apply(train.column("x"))[0], expected, rtol=0, atol=1e-6)
    # Minimum, maximum and median come from the chunks too.
    choices = {"columns": {"x": {"impute": "median", "scale": "minmax"}}, "exclude": ["id"]}
    fitted = make_reader(**settings, preprocessing=choices).preprocessor
    x = next(t for t in fitted.features if t.name == "x")  # type: ignore[union-attr]
    expected = make_pipeline(SimpleImputer(strategy="median"), MinMaxScaler()).fit_transform(
        values
    )[:, 0]
    np.testing.assert_allclose(x.apply(train.column("x"))[0], expected, rtol=0, atol=1e-6)


def _applied(transform: ColumnTransform, values: pa.Array) -> list[list[float]]:
    return [list(feature) for feature in transform.apply(pa.chunked_array([values]))]


def test_date_parts_of_dates_and_timestamps_nulls_as_zero() -> None:
    parts = ("year", "month", "day", "day_of_week", "hour", "epoch_days", "epoch_seconds")
    transform = ColumnTransform("d", "date", date_parts=parts, indicator=True)
    dates = pa.array([dt.date(2024, 2, 29), None, dt.date(1970, 1, 3)], pa.date32())
    assert _applied(transform, dates) == [
        [2024.0, 0.0, 1970.0],
        [2.0, 0.0, 1.0],
        [29.0, 0.0, 3.0],
        [3.0, 0.0, 5.0],  # Thursday, Saturday (Monday is 0)
        [0.0, 0.0, 0.0],
        [19782.0, 0.0, 2.0],
        [19782.0 * 86400, 0.0, 2.0 * 86400],
        [0.0, 1.0, 0.0],  # the indicator
    ]
    # Sub-second timestamps keep their fractions, in any unit and time zone.
    moments = [dt.datetime(1970, 1, 2, 12, 0, 0, 500_000, tzinfo=dt.timezone.utc), None]
    for unit in ("ms", "us", "ns"):
        stamps = pa.array(moments, pa.timestamp(unit, tz="UTC"))
        assert _applied(transform, stamps) == [
            [1970.0, 0.0],
            [1.0, 0.0],
            [2.0, 0.0],
            [4.0, 0.0],
            [12.0, 0.0],
            [1.5 + 0.5 / 86400, 0.0],
            [129600.5, 0.0],
            [0.0, 1.0],
        ]
    assert _applied(ColumnTransform("d", "date", date_parts=("year",)), dates) == [
        [2024.0, 0.0, 1970.0]
    ]


@pytest.mark.parametrize(
    ("transform", "expected"),
    [
        # NULL becomes 0 when no fill was fitted; then clipped to [0, 10], then log(1 + x).
        (
            ColumnTransform("x", "numeric", clip=(0.0, 10.0), scale="log1p", indicator=True),
            [[0.0, 0.0, math.log(11.0), math.log(4.0)], [0.0, 1.0, 0.0, 0.0]],
        ),
        # NULL becomes the fill; clipped to [1, 5], then centered and scaled.
        (
            ColumnTransform(
                "x", "numeric", fill=2.0, clip=(1.0, 5.0), scale="standard", center=1, width=2
            ),
            [[0.0, 0.5, 2.0, 1.0]],
        ),
        (ColumnTransform("x", "passthrough"), [[-5.0, math.nan, 20.0, 3.0]]),
    ],
)
def test_numbers_are_imputed_clipped_then_scaled(
    transform: ColumnTransform, expected: list[list[float]]
) -> None:
    values = pa.array([-5.0, None, 20.0, 3.0])
    got = _applied(transform, values)
    assert np.allclose(got, expected, equal_nan=True), got


def test_categories_by_index_with_an_indicator_and_a_fitted_fill() -> None:
    transform = ColumnTransform(
        "c", "categorical", fill="b", indicator=True, encode="index", categories=("a", "b")
    )
    values = pa.array(["b", None, "zzz", "a"])
    assert _applied(transform, values) == [[1.0, 1.0, 2.0, 0.0], [0.0, 1.0, 0.0, 0.0]]


def test_timestamps_with_fractions_of_a_second_are_preprocessed(
    make_reader: MakeReader, tmp_path: Path
) -> None:
    path = tmp_path / "moments.duckdb"
    with duckdb.connect(str(path)) as db:
        db.execute(
            "CREATE TABLE t AS SELECT i AS id, (i % 2)::INT AS label, TIMESTAMP '1970-01-01' "
            "+ INTERVAL (i * 1500) MILLISECOND AS moment FROM range(400) r(i)"
        )
    reader = make_reader(
        database=str(path), output="numpy", test_split_percent=0,
        preprocessing={"auto": True, "exclude": ["id"]},
    )  # fmt: skip
    preprocessor = reader.preprocessor
    assert preprocessor is not None
    (moment,) = [t for t in preprocessor.features if t.name == "moment"]
    assert moment.date_parts[0] == "epoch_days"
    column = preprocessor.feature_names.index("moment:epoch_days")
    ids = preprocessor.feature_names.index("id")
    for batch in reader.iter_epoch():
        days = batch["features"][:, ids].astype(np.float64) * 1.5 / 86400
        scaled = (days - moment.center) / moment.width
        assert np.allclose(batch["features"][:, column], scaled, atol=1e-5)


def test_category_choices_are_fitted_as_asked(make: Callable[..., Reader]) -> None:
    settings = {
        "columns": {
            "city": {"impute": "constant", "fill_value": "atlantis", "indicator": True,
                     "encode": "index", "max_categories": 3},
            "single": {"impute": "constant", "max_categories": 1},
        }
    }  # fmt: skip
    transforms = {t.name: t for t in make(preprocessing=settings).preprocessor.features}  # type: ignore[union-attr]
    city, single = transforms["city"], transforms["single"]
    assert (city.fill, city.indicator, city.encode) == ("atlantis", True, "index")
    assert len(city.categories) == 3 and city.note == f"rarer values share the {OOV} slot"
    # One category kept of one seen: nothing rarer; the constant fill defaults to "missing".
    assert (single.fill, single.categories, single.note) == ("missing", ("only",), "")
    assert (single.encode, single.indicator) == ("onehot", False)  # no NULLs in train
    # NULL becomes "atlantis", which is no kept category: the OOV slot, and the indicator.
    applied = [list(feature) for feature in city.apply(pa.array([None, city.categories[1]]))]
    assert applied == [[3.0, 1.0], [1.0, 0.0]]


@pytest.mark.parametrize(
    ("scale", "stats", "rows", "fill", "fitted"),
    [
        ("none", ColumnStats(4, mean=2.0, std=1.0), 4, 0.0, (0.0, 1.0, "")),
        ("standard", ColumnStats(0), 4, 0.0, (0.0, 1.0, "")),  # all NULL: nothing to fit
        # min..max of the values; with NULLs, of the fill too.
        ("minmax", ColumnStats(4, min=2.0, max=6.0), 4, 9.0, (2.0, 4.0, "")),
        ("minmax", ColumnStats(3, min=2.0, max=6.0), 4, 10.0, (2.0, 8.0, "")),
        ("minmax", ColumnStats(3, min=2.0, max=6.0), 4, 0.0, (0.0, 6.0, "")),
        ("minmax", ColumnStats(4, min=0.0, max=4.0), 4, 0.0, (0.0, 4.0, "")),
        ("minmax", ColumnStats(4, min=-4.0, max=0.0), 4, 0.0, (-4.0, 4.0, "")),
        ("minmax", ColumnStats(1, min=3.0, max=3.0), 1, 0.0, (3.0, 1.0, "constant in train")),
        # mean and standard deviation of the values; with NULLs, of the imputed column.
        ("standard", ColumnStats(4, mean=0.0, std=2.0), 4, 5.0, (0.0, 2.0, "")),
        ("standard", ColumnStats(3, mean=2.0, std=1.0), 4, 6.0, (3.0, math.sqrt(3.75), "")),
        (
            "standard", ColumnStats(1, mean=7.0, std=0.0), 1, 0.0,
            (7.0, 1.0, "constant in train: centered only"),
        ),
        # Spread below a millionth of a millionth of the values' size is rounding: constant.
        (
            "standard", ColumnStats(5, mean=1e6, std=1e-7), 5, 0.0,
            (1e6, 1.0, "constant in train: centered only"),
        ),
        ("standard", ColumnStats(5, mean=0.0, std=1.5e-12), 5, 0.0, (0.0, 1.5e-12, "")),
        # A constant column of large values, with or without NULLs filled by the same value.
        (
            "standard", ColumnStats(3, mean=9678.03, std=0.0), 3, 0.0,
            (9678.03, 1.0, "constant in train: centered only"),
        ),
        (
            "standard", ColumnStats(2, mean=1234567.891, std=0.0), 3, 1234567.891,
            (1234567.891, 1.0, "constant in train: centered only"),
        ),
    ],
)  # fmt: skip
def test_centers_and_widths_of_numbers(
    scale: str, stats: ColumnStats, rows: int, fill: float, fitted: tuple[float, float, str]
) -> None:
    center, width, note = _scaling(scale, stats, rows, fill)
    assert (center, note) == (pytest.approx(fitted[0]), fitted[2])
    assert width == pytest.approx(fitted[1], rel=1e-9)


def _small_preprocessor() -> Preprocessor:
    return Preprocessor(
        features=(
            ColumnTransform("x", "numeric", scale="standard", center=1.0, width=2.0),
            ColumnTransform("c", "categorical", encode="index", categories=("a", "b")),
        ),
        labels=(ColumnTransform("y", "numeric", scale="minmax", center=10.0, width=5.0),),
    )


def test_transform_takes_tables_frames_and_dicts() -> None:
    import pandas as pd

    preprocessor = _small_preprocessor()
    expected = np.array([[0.0, 1.0], [1.0, 2.0]], np.float32)
    frame = pd.DataFrame({"x": [1.0, 3.0], "c": ["b", "z"]}, index=[7, 9])
    arrow = pa.table({"x": [1.0, 3.0], "c": ["b", "z"]})
    for data in (frame, {"x": [1.0, 3.0], "c": ["b", "z"]}, arrow, arrow.to_batches()[0]):
        np.testing.assert_array_equal(preprocessor.transform(data), expected)  # numpy: default
        assert list(preprocessor.transform(data, output="pandas").columns) == ["x", "c"]
        assert preprocessor.transform(data, output="arrow").column_names == ["x", "c"]
        polars = preprocessor.transform(data, output="polars")
        assert polars.columns == ["x", "c"] and polars.to_numpy().tolist() == expected.tolist()
    with pytest.raises(TypeError, match="not <class 'list'>"):
        preprocessor.transform([1, 2])


def test_transform_gives_a_float32_matrix_by_default() -> None:
    preprocessor = _small_preprocessor()
    table = pa.table({"x": [1.0, 3.0], "c": ["b", "z"]})
    for matrix in (preprocessor.transform(table), preprocessor.transform(table, output="numpy")):
        assert isinstance(matrix, np.ndarray)
        assert matrix.dtype == np.float32 and matrix.flags["C_CONTIGUOUS"]
        assert matrix.tolist() == [[0.0, 1.0], [1.0, 2.0]]


def test_transform_reads_a_dataframes_columns_never_its_index() -> None:
    import pandas as pd

    preprocessor = _small_preprocessor()
    indexed = pd.DataFrame({"c": ["b", "z"]}, index=pd.Index([1.0, 3.0], name="x"))
    with pytest.raises(KeyError, match="x"):
        preprocessor.transform(indexed)
    assert preprocessor.transform(indexed.reset_index()).tolist() == [[0.0, 1.0], [1.0, 2.0]]


def test_transform_refuses_a_pandas_series_naming_its_type() -> None:
    import pandas as pd

    with pytest.raises(TypeError, match=r"a DataFrame or a dict, not <class 'pandas\..*Series'>"):
        _small_preprocessor().transform(pd.Series([1.0, 3.0], name="x"))


def test_labels_are_transformed_where_configured_and_kept_elsewhere() -> None:
    table = pa.table({"x": [1.0], "c": ["a"], "w": [3], "y": [12.5]})
    labels = _small_preprocessor().label_table(table, ["w", "y"])
    assert labels.to_pydict() == {"w": [3], "y": [0.5]}


def test_a_saved_preprocessor_reads_back_the_same() -> None:
    preprocessor = _small_preprocessor()
    again = Preprocessor.from_json(preprocessor.to_json())
    assert again == preprocessor and again.labels == preprocessor.labels
    data = json.loads(preprocessor.to_json())
    del data["fitted_on"]  # written by an earlier version
    assert Preprocessor.from_json(json.dumps(data)).fitted_on == {}
    for text in ("[1]", json.dumps({**data, "format": 0})):
        with pytest.raises(ValueError, match="not a Faucet preprocessor of format"):
            Preprocessor.from_json(text)


def test_statistics_from_the_train_chunks_read_back_the_same() -> None:
    from faucet_core.preprocessing.stats import StatsRequest, TrainStats, stats_from_tables

    table = pa.table({"x": [4.0, None, -2.0, 10.0], "c": ["a", "b", "a", None]})
    request = StatsRequest(numeric=("x",), medians=("x",), top=("c",), top_k=2)
    stats = stats_from_tables([table.slice(0, 3), table.slice(3)], request)
    x, c = stats.columns["x"], stats.columns["c"]
    assert (stats.rows, x.count, x.min, x.max, x.median) == (4, 3, -2.0, 10.0, 4.0)
    assert math.isclose(x.mean, 4.0) and math.isclose(x.std, math.sqrt(24.0))
    assert c.top == (("a", 2), ("b", 1))
    assert TrainStats.from_dict(json.loads(json.dumps(stats.as_dict()))) == stats


def test_statistics_of_a_column_null_on_every_row_have_no_median() -> None:
    """No value, so no median (nor a warning of numpy's on an empty mean)."""
    table = pa.table({"x": pa.array([None, None, None], pa.float64())})
    request = StatsRequest(numeric=("x",), medians=("x",))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats = stats_from_tables([table.slice(0, 1), table.slice(1)], request)
    assert stats.columns["x"] == ColumnStats(0)


def test_top_values_of_the_train_chunks_tied_in_count_are_ranked_by_value() -> None:
    table = pa.table({"c": ["b", "c", "a", "c"]})
    stats = stats_from_tables([table], StatsRequest(top=("c",), top_k=3))
    assert stats.columns["c"].top == (("c", 2), ("a", 1), ("b", 1))


def test_statistics_of_tiny_numbers_keep_their_mean_and_spread() -> None:
    from faucet_core.preprocessing.stats import StatsRequest, stats_from_tables

    table = pa.table({"x": [1e-12, 2e-12, None, 4e-12, 8e-12]})
    stats = stats_from_tables([table.slice(0, 2), table.slice(2)], StatsRequest(numeric=("x",)))
    known = np.array([1e-12, 2e-12, 4e-12, 8e-12])
    assert math.isclose(stats.columns["x"].mean, known.mean(), rel_tol=1e-9)
    assert math.isclose(stats.columns["x"].std, known.std(), rel_tol=1e-9)


def test_l2_scaling_matches_scikit_learn_zero_and_tiny_vectors_included() -> None:
    """Vectors whose length is 0 (to float precision) are left as they are."""
    rows = [[3.0, 4.0], [0.0, 0.0], [1e-200, -1e-200], [-2.0, 0.0], [1.0, 1.0]]
    transform = ColumnTransform("v", "vector", scale="l2", size=2)
    scaled = np.column_stack(_applied(transform, pa.array(rows, pa.list_(pa.float64(), 2))))
    np.testing.assert_allclose(scaled, normalize(np.array(rows)), rtol=1e-12, atol=0)


def test_a_utf8_spec_with_non_ascii_categories_loads_whatever_the_locale(tmp_path: Path) -> None:
    """A spec as a JSON editor writes it (UTF-8, letters unescaped), loaded where the locale's
    encoding is ASCII (a bare C locale); saved there too."""
    preprocessor = Preprocessor(
        (ColumnTransform("ville", "categorical", encode="onehot", categories=("café", "zürich")),)
    )
    edited = json.dumps(json.loads(preprocessor.to_json()), ensure_ascii=False, indent=2)
    (tmp_path / "edited.json").write_bytes(edited.encode("utf-8"))
    with ascii_locale():
        loaded = Preprocessor.load(tmp_path / "edited.json")
        loaded.save(tmp_path / "saved.json")
        again = Preprocessor.load(tmp_path / "saved.json")
    assert loaded == preprocessor and again == preprocessor
    assert loaded.transform({"ville": ["zürich", "café"]}).tolist() == [[0, 1, 0], [1, 0, 0]]


def _fit(table: pa.Table, labels: tuple[str, ...] = (), **settings: Any) -> Preprocessor:
    """The preprocessor of ``settings`` fitted on ``table`` as the whole train split, from
    the statistics of one pass over it (as when the warehouse computes none)."""
    return fit_preprocessor(
        PreprocessingConfig(**settings), table.schema, list(labels),
        lambda request: stats_from_tables([table], request),
    )  # fmt: skip


def _transforms(preprocessor: Preprocessor) -> dict[str, ColumnTransform]:
    return {t.name: t for t in preprocessor.features}


def test_an_excluded_column_and_a_date_part_may_be_named_alone() -> None:
    table = pa.table({"id": [1, 2], "day": pa.array([dt.date(2024, 5, 1), None])})
    fitted = _transforms(
        _fit(table, auto=True, exclude="id", columns={"day": {"date_parts": "year"}})
    )
    assert fitted["id"].kind == "passthrough"
    assert fitted["day"].date_parts == ("year",)
    assert _applied(fitted["day"], table.column("day").chunk(0)) == [[2024.0, 0.0], [0.0, 1.0]]


def test_dictionary_encoded_text_is_one_hot_encoded() -> None:
    cities = pa.array(["oslo", "lima", "oslo", None]).dictionary_encode()
    (city,) = _fit(pa.table({"city": cities}), auto=True).features
    assert (city.kind, city.encode, city.categories) == ("categorical", "onehot", ("oslo", "lima"))
    assert _applied(city, cities) == [[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 1]]


def test_numbers_and_booleans_given_an_encoding_are_treated_as_categories() -> None:
    table = pa.table({"code": [7, 3, 7, None], "flag": [True, False, True, True]})
    settings = {"code": {"encode": "index"}, "flag": {"encode": "onehot"}}
    preprocessor = _fit(table, columns=settings)
    fitted = _transforms(preprocessor)
    code, flag = fitted["code"], fitted["flag"]
    assert (code.kind, code.encode, code.categories) == ("categorical", "index", ("7", "3"))
    assert (flag.kind, flag.encode, flag.categories) == ("categorical", "onehot", ("true", "false"))
    assert preprocessor.transform(table).tolist() == [
        [0, 0, 1, 0, 0], [1, 0, 0, 1, 0], [0, 0, 1, 0, 0], [2, 1, 1, 0, 0],
    ]  # fmt: skip


def test_text_left_unencoded_is_kept_as_it_is() -> None:
    table = pa.table({"x": [1.0, 3.0], "city": ["oslo", "lima"]})
    preprocessor = _fit(table, auto=True, columns={"city": {"encode": "none"}})
    assert _transforms(preprocessor)["city"].kind == "kept"
    assert preprocessor.feature_names == ["x"]


def test_labels_ask_for_statistics_only_where_configured() -> None:
    schema = pa.schema({"x": pa.float64(), "label": pa.int64(), "score": pa.float64()})
    auto = stats_request(PreprocessingConfig(auto=True), schema, ["label", "score"])
    assert auto.columns == ("x",)
    configured = PreprocessingConfig(auto=True, columns={"score": {"scale": "standard"}})
    assert stats_request(configured, schema, ["label", "score"]).columns == ("x", "score")


def test_a_number_imputed_by_its_most_frequent_value() -> None:
    table = pa.table({"x": [1.0, 2.0, None, 2.0, 9.0]})  # mean 3.5, most frequent 2
    settings = {"columns": {"x": {"impute": "most_frequent", "scale": "none"}}}
    (x,) = _fit(table, **settings).features
    assert x.fill == 2.0
    assert _applied(x, table.column("x").chunk(0))[0] == [1.0, 2.0, 2.0, 2.0, 9.0]


def test_booleans_fill_nulls_with_their_most_frequent_value() -> None:
    table = pa.table({"flag": [True, None, False, True], "off": [False, None, False, True]})
    fitted = _transforms(_fit(table, auto=True))
    assert _applied(fitted["flag"], table.column("flag").chunk(0)) == [
        [1.0, 1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0],
    ]  # fmt: skip
    assert _applied(fitted["off"], table.column("off").chunk(0))[0] == [0.0, 0.0, 0.0, 1.0]


def test_only_vector_columns_ask_for_a_mean_to_impute() -> None:
    table = pa.table({
        "day": pa.array([dt.date(2024, 5, 1), None]),
        "v": pa.array([[1.0, 2.0], None], pa.list_(pa.float64(), 2)),
    })  # fmt: skip
    settings = {"columns": {"day": {"impute": "mean"}, "v": {"impute": "mean"}}}
    assert stats_request(PreprocessingConfig(**settings), table.schema, []).vector_means == ("v",)
    day, v = _fit(table, **settings).features
    assert (day.kind, v.kind, v.fill_vector) == ("date", "vector", (1.0, 2.0))


def test_the_most_frequent_values_asked_for_are_one_more_than_the_categories_kept() -> None:
    """One more tells whether rarer values exist; each more costs the warehouse."""
    schema = pa.schema({"city": pa.string(), "town": pa.string()})
    kept = PreprocessingConfig(auto=True, max_categories=3)
    assert stats_request(kept, schema, []).top_k == 4
    more = PreprocessingConfig(auto=True, max_categories=3, columns={"town": {"max_categories": 5}})
    assert stats_request(more, schema, []).top_k == 6


def test_a_preprocessor_needing_no_statistics_asks_for_none() -> None:
    def no_statistics(request: StatsRequest) -> TrainStats:
        raise AssertionError(f"asked for {request}")

    schema = pa.schema({"id": pa.int64(), "city": pa.string(), "tags": pa.list_(pa.string())})
    config = PreprocessingConfig(auto=True, exclude=["id"], columns={"city": {"encode": "none"}})
    preprocessor = fit_preprocessor(config, schema, [], no_statistics)
    assert [t.kind for t in preprocessor.features] == ["passthrough", "kept", "kept"]
    assert preprocessor.fitted_on == {"rows": 0}


def test_an_excluded_boolean_passes_through_as_a_number() -> None:
    table = pa.table({"flag": [True, None, False], "x": [1.0, 2.0, 3.0]})
    preprocessor = _fit(table, auto=True, exclude=["flag"])
    assert _transforms(preprocessor)["flag"].kind == "passthrough"
    assert preprocessor.feature_names == ["flag", "x"]
    assert np.array_equal(preprocessor.transform(table)[:, 0], [1.0, np.nan, 0.0], equal_nan=True)


def test_a_column_the_statistics_leave_out_is_fitted_as_never_seen() -> None:
    """A warehouse may give statistics of some columns only: the others are fitted as if
    NULL on every train row."""
    schema = pa.schema({"x": pa.float64(), "y": pa.float64()})
    config = PreprocessingConfig(auto=True, columns={"y": {"impute": "constant", "fill_value": 3}})
    fitted = fit_preprocessor(config, schema, [], lambda request: TrainStats(10))
    x, y = fitted.features
    assert (x.kind, x.note) == ("dropped", "NULL on every train row")
    assert (y.kind, y.fill, y.indicator) == ("numeric", 3.0, True)


def test_numbers_imputed_by_a_constant_take_the_fill_value() -> None:
    table = pa.table({"x": [1.0, None, 3.0]})
    settings = {"columns": {"x": {"impute": "constant", "fill_value": -1, "scale": "none"}}}
    (x,) = _fit(table, **settings).features
    assert _applied(x, table.column("x").chunk(0)) == [[1.0, -1.0, 3.0], [0.0, 1.0, 0.0]]


def test_the_imputation_asked_for_chooses_the_fill_whatever_else_the_statistics_hold() -> None:
    """A warehouse may compute more than asked: the median and the most frequent values
    of every column, say."""
    every = ColumnStats(4, mean=2.0, std=1.0, min=0.0, max=9.0, median=5.0, top=(("7", 2),))
    schema = pa.schema(
        {name: pa.float64() for name in ("auto", "mean", "median", "frequent", "zero")}
    )
    config = PreprocessingConfig(
        auto=True,
        columns={"mean": {"impute": "mean"}, "median": {"impute": "median"},
                 "frequent": {"impute": "most_frequent"}, "zero": {"impute": "constant"}},
    )  # fmt: skip
    fitted = fit_preprocessor(
        config, schema, [], lambda r: TrainStats(5, dict.fromkeys(r.columns, every))
    )
    assert [t.fill for t in fitted.features] == [2.0, 2.0, 5.0, 7.0, 0.0]


def test_a_number_column_of_nan_alone_fills_with_zero() -> None:
    """NaN, like NULL, is missing; with no number in the train split to average, it is 0."""
    table = pa.table({"x": [math.nan, None, math.nan]})
    (x,) = _fit(table, auto=True).features
    assert x.fill == 0.0
    assert _applied(x, table.column("x").chunk(0)) == [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]


def test_minmax_scales_the_train_values_onto_0_to_1_whatever_their_range() -> None:
    table = pa.table({"narrow": [0.1, 0.3, 0.5, 0.2], "negative": [-4.0, -2.0, 0.0, None]})
    settings = {"columns": {name: {"scale": "minmax"} for name in table.column_names}}
    preprocessor = _fit(table, **settings)
    expected = make_pipeline(SimpleImputer(), MinMaxScaler()).fit_transform(
        table.to_pandas().to_numpy()
    )
    np.testing.assert_allclose(preprocessor.transform(table)[:, [0, 1]], expected, atol=1e-6)
    assert [t.note for t in preprocessor.features] == ["", ""]


def test_a_spread_of_a_millionth_of_a_millionth_is_rounding() -> None:
    table = pa.table({"x": [-1e-12, 1e-12]})
    (x,) = _fit(table, auto=True).features
    assert (x.center, x.width, x.note) == (0.0, 1.0, "constant in train: centered only")


def test_nulls_share_the_other_slot_even_when_the_empty_text_is_a_category() -> None:
    table = pa.table({"c": ["", "a", "", None]})
    (c,) = _fit(table, auto=True).features
    assert c.categories == ("", "a")
    assert _applied(c, pa.array([None, ""])) == [[0.0, 1.0], [0.0, 0.0], [1.0, 0.0], [1.0, 0.0]]


def test_an_empty_table_whose_columns_have_no_types_keeps_them_as_they_are(
    make_reader: MakeReader, sqlite_plugin: None, tmp_path: Path
) -> None:
    # SQLite gives no column types: with no train chunk to read them from, none is known.
    path = tmp_path / "empty.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (id INTEGER, x REAL, label INTEGER)")
    reader = make_reader(datastore="sqlite", database=str(path), preprocessing={"auto": True})
    assert reader.preprocessor is not None
    assert [(t.name, t.kind) for t in reader.preprocessor.features] == [
        ("id", "kept"),
        ("x", "kept"),
    ]
    assert list(reader.iter_epoch()) == []


def test_booleans_are_fitted_as_0_and_1_left_unscaled() -> None:
    table = pa.table({"flag": [True, None, False, True]})
    (flag,) = _fit(table, auto=True).features
    assert flag == ColumnTransform("flag", "numeric", fill=1.0, indicator=True, scale="none")
    assert _applied(flag, table.column("flag").chunk(0)) == [
        [1.0, 1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0],
    ]  # fmt: skip


def test_numbers_are_clipped_to_the_bounds_asked_for() -> None:
    table = pa.table({"x": [-5.0, 3.0, 20.0, None]})  # mean 6
    settings = {"columns": {"x": {"clip": [0, 10], "scale": "none"}}}
    preprocessor = _fit(table, **settings)
    (x,) = preprocessor.features
    assert (x.kind, x.fill, x.clip) == ("numeric", 6.0, (0.0, 10.0))
    assert preprocessor.transform(table).tolist() == [
        [0.0, 0.0], [3.0, 0.0], [10.0, 0.0], [6.0, 1.0],
    ]  # fmt: skip


def test_dates_default_to_the_month_and_timestamps_to_the_hour() -> None:
    table = pa.table({
        "day": pa.array([dt.date(2024, 2, 29), None], pa.date32()),
        "moment": pa.array([dt.datetime(1970, 1, 2, 12), dt.datetime(1970, 1, 5, 18)],
                           pa.timestamp("s")),
    })  # fmt: skip
    fitted = _transforms(_fit(table, auto=True))
    assert fitted["day"] == ColumnTransform(
        "day", "date", indicator=True, date_parts=("epoch_days", "day_of_week", "month")
    )
    assert fitted["moment"] == ColumnTransform(
        "moment", "date", date_parts=("epoch_days", "day_of_week", "hour")
    )
    assert _applied(fitted["day"], table.column("day").chunk(0)) == [
        [19782.0, 0.0], [3.0, 0.0], [2.0, 0.0], [0.0, 1.0],
    ]  # fmt: skip
    assert _applied(fitted["moment"], table.column("moment").chunk(0)) == [
        [1.5, 4.75], [4.0, 0.0], [12.0, 18.0],  # Friday, Monday
    ]  # fmt: skip


def test_a_number_null_on_every_train_row_is_dropped_and_says_so() -> None:
    table = pa.table({"x": pa.array([None, None], pa.float64()), "y": [1.0, 3.0]})
    preprocessor = _fit(table, auto=True)
    assert _transforms(preprocessor)["x"] == ColumnTransform(
        "x", "dropped", note="NULL on every train row"
    )
    assert preprocessor.feature_names == ["y"]
    assert preprocessor.fitted_on == {"rows": 2}


MIXED = [True, True, False, None, True, False, True]


@pytest.mark.parametrize(
    ("values", "impute", "scaler"),
    [
        (MIXED, "mean", StandardScaler()), (MIXED, "median", StandardScaler()),
        (MIXED, "mean", MinMaxScaler()), (MIXED, "most_frequent", StandardScaler()),
        ([True, None, False, True, False], "median", StandardScaler()),  # median 0.5
        ([True, None, True], "mean", MinMaxScaler()), ([False, None], "mean", MinMaxScaler()),
    ],
)  # fmt: skip
def test_booleans_impute_and_scale_as_their_values_as_1_and_0(
    values: list[bool | None], impute: str, scaler: StandardScaler | MinMaxScaler
) -> None:
    """A boolean imputed or scaled by its train values is so as the numbers 1 and 0 (its
    mean is the share of true values), as scikit-learn does it."""
    table = pa.table({"flag": pa.array(values, pa.bool_())})
    scale = "standard" if isinstance(scaler, StandardScaler) else "minmax"
    settings = {"impute": impute, "scale": scale, "indicator": False}
    preprocessor = _fit(table, columns={"flag": settings})
    numbers = table.to_pandas().astype(float).to_numpy()
    expected = make_pipeline(SimpleImputer(strategy=impute), scaler).fit_transform(numbers)
    np.testing.assert_allclose(preprocessor.transform(table), expected, atol=1e-12)


@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_of_one_value_scaled_by_minmax_is_constant(value: bool) -> None:
    table = pa.table({"flag": [value, value]})
    (flag,) = _fit(table, columns={"flag": {"scale": "minmax"}}).features
    assert (flag.center, flag.width, flag.note) == (float(value), 1.0, "constant in train")


def test_a_boolean_null_on_every_train_row_is_dropped_as_a_number_is() -> None:
    """``auto`` has nothing to learn from a boolean NULL on every train row: dropped, as a
    number column in that case, not kept as a constant 0 beside an indicator always 1."""
    table = pa.table({"flag": pa.array([None, None], pa.bool_()), "y": [1.0, 3.0]})
    preprocessor = _fit(table, auto=True)
    assert _transforms(preprocessor)["flag"] == ColumnTransform(
        "flag", "dropped", note="NULL on every train row"
    )
    assert preprocessor.feature_names == ["y"]


def test_numbers_to_impute_from_train_values_none_of_which_exist_take_the_fill_value() -> None:
    """With no train value to take a mean, median or most frequent value of, NULLs become
    the fill value (0 by default), unscaled."""
    never = pa.array([None, None, None], pa.float64())
    imputations = ("mean", "median", "most_frequent")
    table = pa.table(dict.fromkeys(imputations, never))
    config = PreprocessingConfig(columns={name: {"impute": name} for name in imputations})
    preprocessor = fit_preprocessor(
        config, table.schema, [], lambda r: TrainStats(3, dict.fromkeys(r.columns, ColumnStats(0)))
    )  # as a warehouse counts a column of NULLs: no value, so no mean, median or top value
    note = "NULL on every train row: filled with the fill value"
    assert list(preprocessor.features) == [
        ColumnTransform(name, "numeric", fill=0.0, indicator=True, note=note)
        for name in imputations
    ]
    assert preprocessor.transform(table).tolist() == [[0.0, 1.0] * 3] * 3
    clipped = PreprocessingConfig(columns={"x": {"impute": "mean", "clip": (1.0, 2.0)}})
    (x,) = fit_preprocessor(
        clipped, pa.schema({"x": pa.float64()}), [], lambda r: TrainStats(3, {"x": ColumnStats(0)})
    ).features
    assert (x.fill, x.clip) == (0.0, (1.0, 2.0))


def test_a_label_given_settings_is_fitted_as_a_label_not_a_feature() -> None:
    table = pa.table({"x": [1.0, 3.0], "y": [10.0, 30.0]})
    preprocessor = _fit(table, labels=("y",), auto=True, columns={"y": {"scale": "minmax"}})
    assert [t.name for t in preprocessor.features] == ["x"]
    assert preprocessor.labels == (
        ColumnTransform("y", "numeric", fill=20.0, scale="minmax", center=10.0, width=20.0),
    )
    assert preprocessor.feature_names == ["x"]
    assert preprocessor.transform(table).tolist() == [[-1.0], [1.0]]
    assert preprocessor.label_table(table, ["y"]).to_pydict() == {"y": [0.0, 1.0]}
