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

from collections.abc import Sequence
from typing import TypeVar

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["builtin_schema", "decoded", "decoded_schema", "read_as"]

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

#: The built-in types the driver reads as they are, by OID, and the Arrow type of each
#: (``numeric``'s comes from its type modifier).
_BUILTIN: dict[int, pa.DataType] = {
    16: pa.bool_(),  # bool
    17: pa.binary(),  # bytea
    18: pa.string(),  # "char"
    19: pa.string(),  # name
    20: pa.int64(),  # int8
    21: pa.int16(),  # int2
    23: pa.int32(),  # int4
    25: pa.string(),  # text
    700: pa.float32(),  # float4
    701: pa.float64(),  # float8
    1042: pa.string(),  # bpchar
    1043: pa.string(),  # varchar
    1082: pa.date32(),  # date
    1083: pa.time64("us"),  # time
    1114: pa.timestamp("us"),  # timestamp
    1184: pa.timestamp("us", "UTC"),  # timestamptz
    1186: pa.month_day_nano_interval(),  # interval
}
_NUMERIC = 1700

Data = TypeVar("Data", pa.Table, pa.RecordBatch)


def _type_name(field: pa.Field) -> str:
    name: bytes = (field.metadata or {}).get(_TYPE, b"")
    return name.decode()


def _is_numeric(field: pa.Field) -> bool:
    return _type_name(field) == "numeric" and isinstance(field.type, pa.BaseExtensionType)


def _numeric_type(field: pa.Field) -> pa.DataType:
    """``decimal(p, s)`` for ``numeric(p, s)`` (from the type modifier), else ``float64``."""
    return _numeric_of(int((field.metadata or {}).get(_TYPMOD, b"-1")))


def _numeric_of(typmod: int) -> pa.DataType:
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


def builtin_schema(columns: Sequence[tuple[str, int, int]]) -> pa.Schema | None:
    """The schema :func:`decoded` gives the driver's reads of ``columns`` (each a name,
    type OID and type modifier, as the server describes a result), where every one is of
    a built-in type read without a cast (:func:`read_as`); else ``None``: the driver must
    describe them (it knows the server's other types by name, once it has read them)."""
    fields = []
    for name, oid, typmod in columns:
        kind = _numeric_of(typmod) if oid == _NUMERIC else _BUILTIN.get(oid)
        if kind is None:
            return None
        fields.append(pa.field(name, kind))
    return pa.schema(fields)


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
