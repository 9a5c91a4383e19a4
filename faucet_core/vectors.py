"""Vector columns (embeddings): fixed-size lists of numbers, as blocks of float columns;
and which columns hold lists, or text.

A column of fixed-size lists of numbers (DuckDB's ``FLOAT[n]``, in Arrow a
``fixed_size_list``) is a vector column. In a numpy feature matrix or a features tensor
it becomes ``n`` columns, named ``name[0]`` ... ``name[n-1]``, read from Arrow's values
without a copy where the layout allows (one chunk, no NULLs). A NULL vector is a row of
NaN, as a NULL number is NaN. A column of lists whose size varies from row to row has no
such block: it is refused by name, with the cast that makes it a vector column.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from faucet_core.errors import ConfigError

__all__ = [
    "block",
    "check_columns",
    "conform",
    "element_names",
    "expanded_names",
    "is_list",
    "is_text",
    "is_vector",
    "length_column",
    "list_problem",
    "needs_serving",
    "pad",
    "padded_schema",
    "serve",
    "stacked",
    "uniform_lists",
    "varying_lists",
]


def _is_number(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
    )


def is_vector(kind: pa.DataType) -> bool:
    """Whether a column of ``kind`` is a vector: a fixed-size list of numbers or booleans."""
    return pa.types.is_fixed_size_list(kind) and _is_number(kind.value_type)


def is_text(kind: pa.DataType) -> bool:
    """Whether a column of ``kind`` holds text."""
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def is_list(kind: pa.DataType) -> bool:
    """Whether a column of ``kind`` holds lists (of any size and element type)."""
    return bool(
        pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
    )


def element_names(name: str, size: int) -> list[str]:
    """The names of a vector column's ``size`` feature columns."""
    return [f"{name}[{index}]" for index in range(size)]


def expanded_names(schema: pa.Schema, columns: Iterable[str]) -> list[str]:
    """``columns`` of ``schema`` as the columns of a feature matrix: a vector column as its
    elements, any other as itself."""
    names: list[str] = []
    for name in columns:
        kind = schema.field(name).type
        names += element_names(name, kind.list_size) if is_vector(kind) else [name]
    return names


def list_problem(field: pa.Field) -> str | None:
    """Why a column of lists cannot be a block of feature columns, or ``None`` if it can
    (or holds no lists)."""
    kind = field.type
    if not is_list(kind) or is_vector(kind):
        return None
    if not _is_number(kind.value_type):
        return f"{field.name} ({kind}) holds lists of {kind.value_type}, not of numbers"
    return (
        f"{field.name} ({kind}) holds lists whose size varies from row to row; pad them "
        f"(source.pad: {{{field.name}: n}}), or cast the column to a fixed-size array in a "
        f"query (DuckDB: {field.name}::FLOAT[n]), to read it as n feature columns"
    )


def varying_lists(schema: pa.Schema) -> list[str]:
    """The columns of ``schema`` holding lists of numbers whose size may vary."""
    return [
        field.name
        for field in schema
        if is_list(field.type) and not is_vector(field.type) and _is_number(field.type.value_type)
    ]


def uniform_lists(schema: pa.Schema, sizes: Mapping[str, tuple[int, int]]) -> pa.Schema:
    """``schema`` with each list column whose lists all hold the same number of values
    (``sizes``: the least and the most, over the rows) as a vector column of that size."""
    one_size = {name: least for name, (least, most) in sizes.items() if least == most > 0}
    fields = [
        field.with_type(pa.list_(field.type.value_type, one_size[field.name]))
        if field.name in one_size
        else field
        for field in schema
    ]
    return pa.schema(fields, metadata=schema.metadata)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table``'s list columns that ``schema`` (a plan's) holds as vectors, as vectors.

    Raises:
        ConfigError: A row's list has another size than the plan found (naming the column).
    """
    for index, field in enumerate(table.schema):
        if not is_list(field.type) or is_vector(field.type) or field.name not in schema.names:
            continue
        planned = schema.field(field.name).type
        if not is_vector(planned):
            continue
        try:
            column = pc.cast(table.column(index), planned)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ConfigError(
                [("source.columns", f"{field.name}: a row's list does not hold the "
                  f"{planned.list_size} values every row held when the source was planned "
                  f"({exc}); the source changed since: plan again (faucet cache clear)")]
            ) from None  # fmt: skip
        table = table.set_column(index, field.with_type(planned), column)
    return table


def needs_serving(schema: pa.Schema | None, lengths: Mapping[str, int]) -> bool:
    """Whether chunks of a plan of ``schema`` need :func:`serve` (lists it found of one
    size, or lists to pad)."""
    return bool(lengths) or (schema is not None and any(is_vector(k) for k in schema.types))


def serve(table: pa.Table, schema: pa.Schema | None, lengths: Mapping[str, int]) -> pa.Table:
    """A chunk's rows as a plan of ``schema`` serves them: lists it found of one size as
    vectors (:func:`conform`), then the lists of ``lengths`` padded (:func:`pad`)."""
    if schema is not None:
        table = conform(table, schema)
    return pad(table, lengths)


def length_column(name: str) -> str:
    """The column of how many of a padded column's values are the row's own."""
    return f"{name}__length"


def padded_schema(schema: pa.Schema, lengths: Mapping[str, int]) -> pa.Schema:
    """``schema`` as :func:`pad` serves it: each padded column a vector of float64 of its
    length, followed by its :func:`length_column` (int32)."""
    fields: list[pa.Field] = []
    for field in schema:
        if field.name not in lengths:
            fields.append(field)
            continue
        size = lengths[field.name]
        fields += [pa.field(field.name, pa.list_(pa.float64(), size)),
                   pa.field(length_column(field.name), pa.int32())]  # fmt: skip
    return pa.schema(fields)


def pad(table: pa.Table, lengths: Mapping[str, int]) -> pa.Table:
    """``table`` with each list column of ``lengths`` padded with zeros (or cut) to its
    length, as a vector column, followed by its :func:`length_column`: how many of the
    values are the row's own (0 for a NULL list).

    Raises:
        ConfigError: A column to pad holds no lists of numbers (naming it).
    """
    for name, size in lengths.items():
        index = table.schema.get_field_index(name)
        if index < 0:
            continue
        kind = table.schema.field(index).type
        if not is_list(kind) or not _is_number(kind.value_type):
            message = f"{name} ({kind}) holds no lists of numbers"
            raise ConfigError([(f"source.pad.{name}", message)])
        values, kept = _padded(table.column(index).combine_chunks(), size)
        table = table.set_column(index, pa.field(name, values.type), values)
        table = table.add_column(index + 1, pa.field(length_column(name), pa.int32()), [kept])
    return table


def _padded(array: pa.Array, size: int) -> tuple[pa.FixedSizeListArray, pa.Array]:
    """``array``'s lists padded with zeros (or cut) to ``size``, and each one's kept size."""
    own = np.asarray(pc.fill_null(pc.list_value_length(array), 0))
    kept = np.minimum(own, size)
    # flatten() leaves out NULL lists, whose size counts as 0 above.
    flat = np.asarray(pc.cast(array.flatten(), pa.float64()))
    out = np.zeros((len(array), size))
    rows = np.repeat(np.arange(len(array)), kept)
    columns = np.arange(int(kept.sum())) - np.repeat(np.cumsum(kept) - kept, kept)
    out[rows, columns] = flat[np.repeat(np.cumsum(own) - own, kept) + columns]
    values = pa.FixedSizeListArray.from_arrays(pa.array(out.ravel()), size)
    return values, pa.array(kept.astype(np.int32))


def stacked(table: pa.Table) -> np.ndarray[Any, Any]:
    """``table``'s columns side by side (``np.column_stack``): one column per value, and
    per element of a vector column.

    Raises:
        TypeError: numpy has no one type for the columns (dates beside numbers).
    """
    floats = _arrow_stacks(table.schema)
    if floats is not None:
        # Arrow stacks the columns in one call, where numpy converts and copies them one by
        # one: about half the time for 20 columns. Integers' NULLs it refuses (numpy makes
        # their column floats), floats' it makes NaN, as numpy does.
        with contextlib.suppress(pa.ArrowException):
            return np.asarray(table.to_tensor(row_major=True, null_to_nan=floats))
    columns = [block(c) if is_vector(c.type) else c.to_numpy() for c in table.columns]
    return np.column_stack(columns) if columns else np.empty((table.num_rows, 0))


#: Schemas stacked lately, each with :func:`_arrow_stacks_anew`'s answer (hashing a schema
#: costs more than stacking a narrow batch; comparing one with the same columns, nothing).
_RECENT_SCHEMAS: list[tuple[pa.Schema, bool | None]] = []


def _arrow_stacks(schema: pa.Schema) -> bool | None:
    global _RECENT_SCHEMAS
    for known, answer in _RECENT_SCHEMAS:
        if schema.equals(known):
            return answer
    answer = _arrow_stacks_anew(schema)
    _RECENT_SCHEMAS = [(schema, answer), *_RECENT_SCHEMAS[:7]]
    return answer


def _arrow_stacks_anew(schema: pa.Schema) -> bool | None:
    """Whether Arrow's ``to_tensor`` stacks columns of ``schema`` into the array numpy
    makes of them, and how: ``True`` with their NULLs as NaN (floats only), ``False`` if
    there is no NULL (integers as well); ``None`` where it does not (types it does not take,
    or whose common type it finds otherwise than numpy)."""
    kinds = schema.types
    floats = [pa.types.is_float32(kind) or pa.types.is_float64(kind) for kind in kinds]
    integers = [pa.types.is_integer(kind) for kind in kinds]
    if not kinds or not all(map(operator.or_, floats, integers)):
        return None
    wanted = np.result_type(*(np.dtype(kind.to_pandas_dtype()) for kind in kinds))
    try:
        tensor = schema.empty_table().to_tensor(row_major=True, null_to_nan=False)
    except (pa.ArrowException, AttributeError):  # a mix it refuses; an older pyarrow's Table
        return None
    given = np.asarray(tensor).dtype
    return all(floats) if given == wanted else None


def block(column: pa.ChunkedArray | pa.Array) -> np.ndarray[Any, Any]:
    """A vector column as an ``(N, size)`` array: of its element type, a view of Arrow's
    values where there is one chunk and no NULL; else float64 with NaN for NULLs."""
    size = column.type.list_size
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    parts = [_chunk_block(chunk, size) for chunk in chunks]
    if not parts:
        return np.empty((0, size))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)  # promotes mixed dtypes


def _chunk_block(array: pa.FixedSizeListArray, size: int) -> np.ndarray[Any, Any]:
    # `values` is the whole child array: the slice this chunk holds starts at its offset.
    values = array.values.slice(array.offset * size, len(array) * size)
    if array.null_count == 0 and values.null_count == 0 and not pa.types.is_boolean(values.type):
        view: np.ndarray[Any, Any] = np.asarray(values)
        return view.reshape(len(array), size)
    out = np.array(pc.cast(values, pa.float64())).reshape(len(array), size)  # ours to write
    if array.null_count:
        out[np.asarray(array.is_null())] = np.nan
    return out


def check_columns(schema: pa.Schema, into: str) -> None:
    """Refuse, by name, the list columns of ``schema`` that cannot be feature columns.

    Raises:
        ConfigError: A list column whose size varies, or of other than numbers.
    """
    problems = [p for p in (list_problem(field) for field in schema) if p is not None]
    if problems:
        raise ConfigError(
            [("source.columns", f"{problem}; {into} needs numbers") for problem in problems]
        )
