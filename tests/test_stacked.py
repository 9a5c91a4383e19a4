"""A batch's columns stacked into one 2-D array (numpy batches and tensors)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from faucet_core.vectors import block, is_vector, stacked

#: Column types a numpy batch or a tensor holds.
TYPES = [
    pa.int8(), pa.int16(), pa.int32(), pa.int64(),
    pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64(),
    pa.float16(), pa.float32(), pa.float64(), pa.bool_(),
    pa.list_(pa.float32(), 2),
]  # fmt: skip


def _numpy_stack(table: pa.Table) -> np.ndarray[Any, Any]:
    """What numpy makes of the columns, one at a time: the array to match."""
    columns = [block(c) if is_vector(c.type) else c.to_numpy() for c in table.columns]
    return np.column_stack(columns) if columns else np.empty((table.num_rows, 0))


def _column(kind: pa.DataType, values: list[int], nulls: list[bool]) -> pa.Array:
    if pa.types.is_boolean(kind):
        items: list[Any] = [bool(v % 2) for v in values]
    elif is_vector(kind):
        items = [[v, -v] for v in values]
    else:
        items = list(values)
    return pa.array([None if n else v for v, n in zip(items, nulls, strict=True)], kind)


@st.composite
def _tables(draw: st.DrawFn) -> pa.Table:
    """A table of 0 to 5 columns of ``TYPES``, some with NULLs, in one to three chunks,
    sliced as a batch is."""
    kinds = draw(st.lists(st.sampled_from(TYPES), max_size=5))
    pieces = []
    for _ in range(draw(st.integers(1, 3))):
        rows = draw(st.integers(0, 6))
        columns = {}
        for index, kind in enumerate(kinds):
            values = draw(st.lists(st.integers(0, 100), min_size=rows, max_size=rows))
            nulls = draw(st.lists(st.booleans(), min_size=rows, max_size=rows))
            columns[f"c{index}"] = _column(kind, values, nulls)
        pieces.append(pa.table(columns) if kinds else pa.table({"n": [0] * rows}).select([]))
    table = pa.concat_tables(pieces) if kinds else pieces[0]
    offset = draw(st.integers(0, table.num_rows))
    return table.slice(offset, draw(st.integers(0, table.num_rows - offset)))


@given(table=_tables())
def test_a_batch_is_stacked_as_numpy_stacks_its_columns(table: pa.Table) -> None:
    wanted, got = _numpy_stack(table), stacked(table)
    assert (got.dtype, got.shape) == (wanted.dtype, wanted.shape)
    if wanted.dtype == object:  # a boolean or integer column with NULLs beside others
        assert _with_nan_named(got) == _with_nan_named(wanted)
    else:
        assert np.array_equal(got, wanted, equal_nan=wanted.dtype.kind == "f")


@pytest.mark.parametrize(
    "kinds",
    [
        [pa.uint64(), pa.int8()],  # numpy: float64; Arrow's rule: int64
        [pa.int16(), pa.uint16(), pa.float32()],  # numpy: float32; Arrow's: float64
        [pa.float16(), pa.int8()],  # Arrow does not stack half floats
    ],
)
def test_types_arrow_would_stack_otherwise_are_stacked_as_numpy_does(
    kinds: list[pa.DataType],
) -> None:
    table = pa.table({f"c{i}": pa.array([1, 2], kind) for i, kind in enumerate(kinds)})
    wanted, got = _numpy_stack(table), stacked(table)
    assert got.dtype == wanted.dtype and np.array_equal(got, wanted)


def _with_nan_named(array: np.ndarray[Any, Any]) -> list[list[Any]]:
    """An array of objects as lists, NaN as a name (NaN equals nothing, itself included)."""
    return [["NaN" if isinstance(v, float) and np.isnan(v) else v for v in r] for r in array]


@pytest.mark.parametrize("kind", [pa.float32(), pa.float64(), pa.int64()])
def test_numbers_of_one_type_keep_it_in_an_array_of_the_batchs_own(kind: pa.DataType) -> None:
    table = pa.table({name: pa.array(range(8), kind) for name in ("a", "b", "c")}).slice(2, 5)
    array = stacked(table)
    assert array.dtype == kind.to_pandas_dtype() and array.shape == (5, 3)
    assert array.flags.c_contiguous and array.flags.writeable
    assert not any(np.shares_memory(array, np.asarray(column.chunk(0))) for column in table.columns)
    array[0, 0] = 99  # the batch's own: the table is as it was
    assert table.column("a")[0].as_py() == 2


def test_float_nulls_are_nan_and_integer_nulls_make_the_array_floats() -> None:
    floats = pa.table({"a": pa.array([1.5, None], pa.float32()), "b": pa.array([2.0, 3.0])})
    assert stacked(floats).dtype == np.float64
    assert np.isnan(stacked(floats)[1, 0]) and stacked(floats)[1, 1] == 3.0
    integers = pa.table({"a": pa.array([1, None]), "b": pa.array([2, 3])})
    assert stacked(integers).dtype == np.float64 and np.isnan(stacked(integers)[1, 0])
    assert stacked(integers.slice(0, 1)).dtype == np.int64  # no NULL in the batch
