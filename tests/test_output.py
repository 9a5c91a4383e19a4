"""Batches as the training loop asked for them: numpy matrices of the feature columns, and
columns numpy cannot hold refused by name."""

from __future__ import annotations

import datetime as dt
import sys
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from faucet_core import ConfigError
from faucet_core.batches import Parts
from faucet_core.output import BatchFormatter, OutputFormat, format_batch


def test_numpy_output_refuses_lists_whose_size_varies_by_name() -> None:
    table = pa.table({"tags": pa.array([[1.0], [2.0, 3.0]]), "y": [0, 1]})
    with pytest.raises(ConfigError) as raised:
        format_batch(table, ["tags"], ["y"], "numpy")
    ((field, message),) = raised.value.problems
    assert field == "source.columns"
    assert message.startswith("tags (list<item: double>) holds lists whose size varies")
    assert message.endswith("; output numpy needs numbers")


def test_numpy_output_names_the_columns_it_has_no_one_array_type_for() -> None:
    table = pa.table({"day": [dt.date(2024, 1, 1)], "x": [1.5], "y": [0]})
    with pytest.raises(ConfigError) as raised:
        format_batch(table, ["day", "x"], ["y"], "numpy")
    ((field, message),) = raised.value.problems
    assert field == "output"
    assert message.startswith(
        "numpy has no one array type for the columns day (date32[day]), x (double); "
    )


def test_numpy_features_of_no_columns_are_an_empty_matrix_of_the_batchs_rows() -> None:
    batch = format_batch(pa.table({"y": [0, 1, 1]}), [], ["y"], "numpy")
    assert batch["features"].shape == (3, 0)
    assert batch["labels"].tolist() == [0, 1, 1]


@pytest.mark.parametrize("output", ["pandas", "polars"])
def test_frames_hold_numeric_columns_on_the_tables_buffers(output: OutputFormat) -> None:
    """Not copied: a frame's float column is the Arrow table's buffer."""
    table = pa.table({"x": np.arange(10, dtype=np.float64), "y": np.arange(10)})
    features = format_batch(table, ["x"], ["y"], output)["features"]
    values = features["x"].to_numpy()
    assert values.__array_interface__["data"][0] == table.column("x").chunks[0].buffers()[1].address


def test_polars_output_without_polars_names_the_extra_that_installs_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "polars", None)  # as if it were not installed
    table = pa.table({"x": [1.5], "y": [0]})
    with pytest.raises(ConfigError) as raised:
        format_batch(table, ["x"], ["y"], "polars")
    assert raised.value.problems == [
        ("output", "polars needs the polars package: pip install 'faucetml[polars]'")
    ]


def test_a_formatter_finds_the_columns_again_when_the_schema_changes() -> None:
    """Columns are found by name once per schema: a batch whose columns come in another
    order is served by name, not by the positions found before."""
    formatter = BatchFormatter(["x", "z"], ["y"], "numpy")
    first = formatter(pa.table({"x": [1.0], "y": [0], "z": [2.0]}))
    again = formatter(pa.table({"x": [3.0], "y": [1], "z": [4.0]}))
    moved = formatter(pa.table({"y": [1], "z": [6.0], "x": [5.0]}))
    assert [b["features"].tolist() for b in (first, again, moved)] == [
        [[1.0, 2.0]],
        [[3.0, 4.0]],
        [[5.0, 6.0]],
    ]
    assert [b["labels"].tolist() for b in (first, again, moved)] == [[0], [1], [1]]


@pytest.mark.parametrize(("features", "labels"), [(["x", "w"], ["y"]), (["x"], ["w"])])
def test_a_formatter_names_a_column_the_table_lacks(features: list[str], labels: list[str]) -> None:
    formatter = BatchFormatter(features, labels, "numpy")
    with pytest.raises(KeyError, match='Field "w" does not exist'):
        formatter(pa.table({"x": [1.0], "y": [0]}))


@pytest.mark.parametrize("output", ["numpy", "pandas", "polars", "arrow"])
@pytest.mark.parametrize("groups", [None, {"a": ["x"], "b": ["z", "x"]}])
@pytest.mark.parametrize("labels", [["y"], []])
def test_a_batch_from_slices_of_a_chunks_parts_is_the_batch_of_the_chunks_slice(
    output: OutputFormat, groups: dict[str, list[str]] | None, labels: list[str]
) -> None:
    """A stream cuts each chunk into parts once and hands over slices of them: the batch
    is the same as formatting the slice of the whole chunk."""
    chunk = pa.table({"x": [1.0, 2.0, 3.0, 4.0], "y": [0, 1, 1, 0], "z": [5.0, 6.0, 7.0, 8.0]})
    formatter = BatchFormatter(["x", "z"], labels, output, groups)
    parts = formatter.parts(chunk)
    assert len(parts) == (2 if groups is None else 3) - (not labels)
    for offset, length in ((0, 2), (1, 3), (3, 1)):
        apart = formatter.from_parts(parts.slice(offset, length))
        whole = formatter(chunk.slice(offset, length))
        assert _plain(apart) == _plain(whole)


@pytest.mark.parametrize("dictionary", [False, True])
@pytest.mark.parametrize("output", ["pandas", "polars"])
def test_frame_batches_across_chunks_are_the_frames_of_their_rows(
    output: OutputFormat, dictionary: bool
) -> None:
    """pandas and polars batches are slices of each chunk's DataFrames, made once, joined
    where a batch spans two chunks: the frames of the batch's rows (pandas': numbered from
    0). A part with a dictionary column is made into frames batch by batch: two chunks'
    categories stay one."""

    def chunk(start: int, words: list[str]) -> pa.Table:
        names = pa.array(words)
        return pa.table({
            "x": pa.array([start + 0.5, None, start + 2.5]),
            "n": pa.array(range(start, start + 3)),
            "name": names.dictionary_encode() if dictionary else names,
            "y": [0, 1, 0],
        })  # fmt: skip

    first, second = chunk(0, ["a", "b", "a"]), chunk(3, ["c", "c", "d"])
    formatter = BatchFormatter(["x", "n", "name"], ["y"], output)
    across = Parts.concat([formatter.parts(first).slice(1), formatter.parts(second).slice(0, 2)])
    batch = formatter.from_parts(across)
    rows = pa.concat_tables([first.slice(1), second.slice(0, 2)])
    wanted = format_batch(rows, ["x", "n", "name"], ["y"], output)
    if output == "polars":
        assert batch["features"].equals(wanted["features"])
        assert batch["labels"].equals(wanted["labels"])
        return
    pd.testing.assert_frame_equal(batch["features"], wanted["features"])
    pd.testing.assert_frame_equal(batch["labels"], wanted["labels"])
    assert batch["features"].index.equals(pd.RangeIndex(4))
    if dictionary:
        assert list(batch["features"]["name"].cat.categories) == ["a", "b", "c", "d"]


def test_polars_batches_of_features_of_no_columns_keep_their_labels_rows() -> None:
    chunk = pa.table({"y": [0, 1, 1]})
    formatter = BatchFormatter([], ["y"], "polars")
    batch = formatter.from_parts(formatter.parts(chunk).slice(1, 2))
    assert batch["labels"]["y"].to_list() == [1, 1]
    wanted = format_batch(chunk.slice(1, 2), [], ["y"], "polars")
    assert batch["features"].equals(wanted["features"])


def _plain(value: Any) -> Any:
    """A batch's values as Python lists, to compare across output formats."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if value is None or isinstance(value, np.ndarray):
        return None if value is None else value.tolist()
    if isinstance(value, pa.Table):
        return value.to_pydict()
    if isinstance(value, pd.DataFrame):
        return value.to_dict("list")
    return value.to_dict(as_series=False)  # polars
