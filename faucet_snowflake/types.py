"""The Arrow type of each Snowflake column type, and results conformed to them.

The connector picks the Arrow type of a column per result batch, from the values in it
(a NUMBER column of small values comes as a narrow integer or a decimal, a timestamp's
unit follows its range), so two chunks of one column could differ. Each column is given
one type here, from the result's metadata, and every result is cast to it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from faucet_core.warehouse import PermanentWarehouseError

__all__ = [
    "ARRAY",
    "UNSUPPORTED",
    "WIDE",
    "arrow_type",
    "conform",
    "number_arrays",
    "schema_of",
    "widened",
]

#: Field metadata of an integer column that may hold values beyond 64 bits (a NUMBER of
#: more than 18 digits, as Snowflake's INTEGER is): read as ``int64`` unless its values
#: say otherwise (:func:`widened`).
WIDE = b"faucet.snowflake.wide"
#: Field metadata of an ARRAY column (semi-structured: JSON text), read as a list of
#: numbers if its arrays hold numbers (:func:`number_arrays`).
ARRAY = b"faucet.snowflake.array"
#: The Arrow type of the integers beyond 64 bits.
_BIG_INTEGERS = pa.decimal128(38, 0)
_INT64 = (-(2**63), 2**63 - 1)

#: Snowflake types Faucet does not read; a ``source.query`` can cast them.
UNSUPPORTED = ("MAP", "FILE", "INTERVAL_YEAR_MONTH", "INTERVAL_DAY_TIME")
#: The Arrow type of a VECTOR's elements, by the element type's name: Snowflake's VECTOR
#: holds 32-bit floats or 32-bit integers.
_VECTOR_ELEMENTS = {"REAL": pa.float32(), "FIXED": pa.int32()}

_SIMPLE: dict[str, pa.DataType] = {
    "REAL": pa.float64(),
    "TEXT": pa.string(),
    "DATE": pa.date32(),
    "TIMESTAMP_NTZ": pa.timestamp("us"),
    "TIMESTAMP": pa.timestamp("us"),
    "TIMESTAMP_LTZ": pa.timestamp("us", tz="UTC"),
    "TIMESTAMP_TZ": pa.timestamp("us", tz="UTC"),
    "VARIANT": pa.string(),
    "OBJECT": pa.string(),
    "ARRAY": pa.string(),
    "BINARY": pa.binary(),
    "TIME": pa.time64("us"),
    "BOOLEAN": pa.bool_(),
    "GEOGRAPHY": pa.string(),
    "GEOMETRY": pa.string(),
}


def arrow_type(type_name: str, precision: int | None, scale: int | None) -> pa.DataType | None:
    """The Arrow type of a Snowflake column (``type_name`` as the connector names it:
    ``FIXED``, ``REAL``, ``TEXT``, ...), or ``None`` for a type Faucet does not read."""
    if type_name == "FIXED":
        if not scale:
            return pa.int64()
        return pa.decimal128(precision or 38, scale)
    return _SIMPLE.get(type_name)


def _vector_type(column: Any, type_names: Any) -> pa.DataType | None:
    """A VECTOR column's Arrow type, a fixed-size list of its dimension, from the
    connector's full column metadata; ``None`` if it does not say."""
    dimension = getattr(column, "vector_dimension", None)
    elements = getattr(column, "fields", None) or []
    element = _VECTOR_ELEMENTS.get(type_names.get(elements[0].type_code)) if elements else None
    return pa.list_(element, dimension) if element is not None and dimension else None


def schema_of(description: Sequence[Any], type_names: Any, what: str) -> pa.Schema:
    """The Arrow schema of a result, from the connector's column metadata (its full
    form, which gives a VECTOR's dimension and element type).

    Raises:
        PermanentWarehouseError: A column has a type Faucet does not read.
    """
    fields = []
    for column in description:
        # A type newer than the connector (DECFLOAT, say) has no name there.
        name = type_names.get(column.type_code) or f"type of code {column.type_code}"
        kind = arrow_type(name, column.precision, column.scale)
        if name == "VECTOR":
            kind = _vector_type(column, type_names)
        if kind is None:
            raise PermanentWarehouseError(
                f"{what}: column {column.name!r} is a {name}, which Faucet does not read; "
                "cast it in a source.query"
            )
        wide = name == "FIXED" and not column.scale and (column.precision or 38) > 18
        marker = WIDE if wide else ARRAY if name == "ARRAY" else None
        fields.append(pa.field(column.name, kind, metadata={marker: b"1"} if marker else None))
    return pa.schema(fields)


def widened(schema: pa.Schema, ranges: dict[str, tuple[Any, Any]]) -> pa.Schema:
    """``schema`` with each :data:`WIDE` integer column whose values (``ranges``: the least
    and the most) do not fit 64 bits as ``decimal128(38, 0)``."""
    fields = []
    for field in schema:
        low, high = ranges.get(field.name, (None, None))
        beyond = (low is not None and low < _INT64[0]) or (high is not None and high > _INT64[1])
        fields.append(field.with_type(_BIG_INTEGERS) if beyond else field)
    return pa.schema(fields)


def _is_list(kind: pa.DataType) -> bool:
    return bool(pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind))


def number_arrays(schema: pa.Schema, measured: dict[str, tuple[Any, Any, Any]]) -> pa.Schema:
    """``schema`` with each :data:`ARRAY` column whose largest array (``measured``: the
    least and most sizes, and the largest array's JSON text) holds numbers alone as
    ``list<double>``, or, where every array has one size, a vector of that size; others
    stay JSON text."""
    fields = []
    for field in schema:
        least, most, largest = measured.get(field.name, (None, None, None))
        values = json.loads(largest) if isinstance(largest, str) else None
        numbers = (
            isinstance(values, list)
            and values
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        )
        if numbers:
            size = least if least == most else None
            field = field.with_type(
                pa.list_(pa.float64(), size) if size else pa.list_(pa.float64())
            )
        fields.append(field)
    return pa.schema(fields)


def _parsed_arrays(column: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
    """ARRAY values (JSON text) as lists of ``float64``, then of ``target``.

    Raises:
        pa.ArrowInvalid: A value is not an array of numbers.
    """
    if not len(column):
        return pa.chunked_array([], target)
    lines = "\n".join(f'{{"v":{text}}}' if text is not None else '{"v":null}'
                      for text in column.to_pylist())  # fmt: skip
    options = pajson.ParseOptions(explicit_schema=pa.schema([("v", pa.list_(pa.float64()))]))
    parsed = pajson.read_json(io.BytesIO(lines.encode()), parse_options=options).column("v")
    return pc.cast(parsed, target)


def conform(table: pa.Table, schema: pa.Schema, what: str) -> pa.Table:
    """``table`` with the types of ``schema`` (same columns, in order).

    Raises:
        PermanentWarehouseError: A column's values do not fit its type (an integer beyond
            64 bits), naming the column.
    """
    if table.schema.equals(schema):
        return table
    if table.column_names != schema.names:
        raise PermanentWarehouseError(
            f"{what}: expected the columns {schema.names}, got {table.column_names}"
        )
    columns = []
    for column, field in zip(table.columns, schema, strict=True):
        if column.type == field.type:
            columns.append(column)
            continue
        try:
            if pa.types.is_string(column.type) and _is_list(field.type):
                columns.append(_parsed_arrays(column, field.type))  # an ARRAY of numbers
            else:
                columns.append(pc.cast(column, field.type, safe=True))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise PermanentWarehouseError(
                f"{what}: column {field.name!r} does not fit {field.type}: {exc}"
            ) from None
    return pa.Table.from_arrays(columns, schema=schema)
