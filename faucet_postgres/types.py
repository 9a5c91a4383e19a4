"""How PostgreSQL's column types arrive in Arrow through the ADBC PostgreSQL driver.

The driver reads every type: those it knows as Arrow types (integers, floats, text,
``bytea``, dates and times, arrays), the rest as opaque bytes in the server's binary
format. Faucet reads each column as a type a model or a DataFrame can use:

- ``numeric(p, s)`` becomes ``decimal(p, s)``, exactly (the driver gives its text);
  ``numeric`` without a precision becomes ``float64``;
- ``money`` is read as ``numeric`` (the driver gives its cents as a bare integer);
- pgvector's ``vector`` and ``halfvec`` are read as ``real[]`` (lists of ``float32``:
  vectors once planning finds every row of one size);
- ``json``, ``jsonb`` and ``uuid``, and every type the driver has no Arrow type for
  (``inet``, geometric types, ranges, ``bit``, ``sparsevec``, types of extensions), are
  read as their text;
- arrays are lists of their elements read as above (``numeric[]`` and ``money[]`` as
  ``float8[]``, arrays of the other types as ``text[]``); a multidimensional array
  arrives flattened, its elements in row-major order.

A column read through an expression says so in its field's metadata
(:data:`~faucet_core.sql.READ_AS`, from :func:`read_as`); :func:`decoded` turns the
driver's batches into those types.
"""

from __future__ import annotations

from typing import TypeVar

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["decoded", "decoded_schema", "read_as"]

_TYPE = b"POSTGRESQL:type"
_TYPMOD = b"POSTGRESQL:typmod"
#: Types read through a cast, by the driver's name for them.
_CASTS = {
    "money": "{c}::numeric",
    "vector": "{c}::real[]",
    "halfvec": "{c}::real[]",
    "_numeric": "{c}::float8[]",
    "_money": "{c}::numeric[]::float8[]",
}
#: Types the driver knows as Arrow extension types, read as text.
_AS_TEXT = {"json", "jsonb", "uuid"}

Data = TypeVar("Data", pa.Table, pa.RecordBatch)


def _type_name(field: pa.Field) -> str:
    name: bytes = (field.metadata or {}).get(_TYPE, b"")
    return name.decode()


def _is_numeric(field: pa.Field) -> bool:
    return _type_name(field) == "numeric" and isinstance(field.type, pa.BaseExtensionType)


def _numeric_type(field: pa.Field) -> pa.DataType:
    """``decimal(p, s)`` for ``numeric(p, s)`` (from the type modifier), else ``float64``."""
    typmod = int((field.metadata or {}).get(_TYPMOD, b"-1"))
    if typmod < 4:  # no precision given
        return pa.float64()
    precision, scale = (typmod - 4) >> 16, (typmod - 4) & 0xFFFF
    return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)


def read_as(field: pa.Field) -> str | None:
    """The SQL expression (``{c}``: the quoted column) to read a column the driver
    describes as ``field`` (from a ``LIMIT 0`` query of the source), or ``None``: as is."""
    name = _type_name(field)
    if name in _CASTS:
        cast: str = _CASTS[name]
        return cast
    if name in _AS_TEXT or (isinstance(field.type, pa.BaseExtensionType) and name != "numeric"):
        return "{c}::text"
    if pa.types.is_list(field.type) and isinstance(
        field.type.value_type, pa.BaseExtensionType
    ):  # arrays of the types above
        return "{c}::text[]"
    return None


def decoded(data: Data) -> Data:
    """``data`` as the driver returned it, with ``numeric`` as decimals (or floats) and
    no extension type or driver metadata left."""
    columns = []
    schema = decoded_schema(data.schema)
    for index, field in enumerate(data.schema):
        column = data.column(index)
        if _is_numeric(field):
            column = pc.cast(_storage(column), schema.field(index).type)
        elif isinstance(field.type, pa.BaseExtensionType):
            column = _storage(column)
        columns.append(column)
    if isinstance(data, pa.RecordBatch):
        return pa.RecordBatch.from_arrays(columns, schema=schema)
    return pa.Table.from_arrays(columns, schema=schema)


def decoded_schema(schema: pa.Schema) -> pa.Schema:
    """The schema of :func:`decoded` data whose driver's schema is ``schema``."""
    fields = []
    for field in schema:
        kind = field.type
        if _is_numeric(field):
            kind = _numeric_type(field)
        elif isinstance(kind, pa.BaseExtensionType):
            kind = kind.storage_type
        fields.append(pa.field(field.name, kind, field.nullable))
    return pa.schema(fields)


def _storage(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    if isinstance(column, pa.ChunkedArray):
        return pa.chunked_array(
            [chunk.storage for chunk in column.chunks], column.type.storage_type
        )
    return column.storage
