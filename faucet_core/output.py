"""Turning an Arrow batch into what the training loop asked for: pandas, polars, numpy or
Arrow."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa

from faucet_core import vectors
from faucet_core.batches import Parts
from faucet_core.errors import ConfigError

if TYPE_CHECKING:
    from faucet_core.batches import Part

__all__ = ["Batch", "BatchFormatter", "OutputFormat", "batch_parts", "format_batch"]

OutputFormat = Literal["pandas", "polars", "numpy", "arrow"]

#: A batch: ``{"features": ..., "labels": ...}``; ``labels`` is ``None`` without label columns.
Batch = dict[str, Any]


def _to_numpy(table: pa.Table) -> np.ndarray[Any, Any]:
    """``table`` (its columns checked: :func:`_checked`) as a 2-D array."""
    try:
        return vectors.stacked(table)
    except TypeError:  # numpy's DTypePromotionError: e.g. dates beside numbers
        kinds = ", ".join(f"{field.name} ({field.type})" for field in table.schema)
        raise ConfigError(
            [
                (
                    "output",
                    f"numpy has no one array type for the columns {kinds}; select columns "
                    "of one kind (source.columns), or use output pandas or arrow",
                )
            ]
        ) from None


def _checked(parts: Parts, output: OutputFormat) -> Parts:
    """``parts``, whose columns batches in ``output`` can hold (checked once for a chunk, not
    for every batch of it).

    Raises:
        ConfigError: A list column cannot be a numpy batch's (naming it).
    """
    if output == "numpy":
        for table in parts:
            vectors.check_columns(table.schema, "output numpy")
    return parts


def _as_frames(parts: Parts, output: Literal["pandas", "polars"]) -> Parts:
    """``parts`` as DataFrames of ``output``, made once for a chunk: its batches' are
    slices of them. Parts stay Arrow's, made into frames batch by batch, where a column is
    dictionary-encoded (the frames of two chunks would not join their categories as one),
    and for polars where a part has no column (older polars gives such a frame no rows,
    and newer calls frames of no column unstable)."""
    tables: list[pa.Table] = list(parts)  # cut from a chunk: Arrow's
    if any(pa.types.is_dictionary(kind) for table in tables for kind in table.schema.types):
        return parts
    if output == "pandas":
        return Parts(table.to_pandas(split_blocks=True) for table in tables)
    if not all(table.num_columns for table in tables):
        return parts
    polars = polars_module()
    return Parts(polars.from_arrow(table, rechunk=False) for table in tables)


def polars_module() -> Any:
    """The ``polars`` package, which ``output: polars`` needs.

    Raises:
        ConfigError: It is not installed (naming the extra that installs it).
    """
    try:
        import polars
    except ModuleNotFoundError:
        message = "polars needs the polars package: pip install 'faucetml[polars]'"
        raise ConfigError([("output", message)]) from None
    return polars


def _convert(table: Part, output: OutputFormat) -> Any:
    if output == "arrow" or not isinstance(table, pa.Table):  # or a DataFrame already
        return table
    if output == "pandas":  # one block per column: no consolidation copy, twice as fast
        return table.to_pandas(split_blocks=True)
    if output == "polars":  # numbers stay on Arrow's buffers: not copied
        return polars_module().from_arrow(table, rechunk=False)
    return _to_numpy(table)


def format_batch(
    table: pa.Table,
    feature_columns: Sequence[str | int],
    label_columns: Sequence[str | int],
    output: OutputFormat,
    groups: Mapping[str, Sequence[str | int]] | None = None,
) -> Batch:
    """Split ``table`` into features and labels, in the ``output`` format; with ``groups``
    (input groups: their columns), the features are a dict of each group's, in it.

    Columns are named, or given by position (faster, for a stream of tables of one
    schema: see :class:`BatchFormatter`). ``pandas`` and ``polars`` give DataFrames of their
    library (numeric columns without NULLs on Arrow's buffers, not copied); ``numpy`` gives a 2-D
    array of features (one column per feature, and per element of a vector column; float32
    and C-contiguous when the features are float32, as preprocessed ones are) and a 1-D
    label array for one label column, 2-D for several; ``arrow`` gives ``pyarrow.Table``
    objects without copying.
    """
    parts = _checked(batch_parts(table, feature_columns, label_columns, groups), output)
    return _assemble(parts, output, None if groups is None else list(groups), bool(label_columns))


def batch_parts(
    table: pa.Table,
    feature_columns: Sequence[str | int],
    label_columns: Sequence[str | int],
    groups: Mapping[str, Sequence[str | int]] | None = None,
) -> Parts:
    """``table``'s columns (named, or by position) as the tables a batch hands over: the
    features (or each group's), then the labels, if any."""
    if groups is not None:
        tables = [table.select(list(columns)) for columns in groups.values()]
    else:
        tables = [table.select(list(feature_columns))]
    if label_columns:
        tables.append(table.select(list(label_columns)))
    return Parts(tables)


def _assemble(
    parts: Parts, output: OutputFormat, group_names: list[str] | None, labelled: bool
) -> Batch:
    """A batch of ``parts`` (see :func:`batch_parts`) in the ``output`` format."""
    converted = [_convert(table, output) for table in parts]
    labels = converted.pop() if labelled else None
    if labels is not None and output == "numpy" and labels.shape[1] == 1:
        labels = labels[:, 0]
    if group_names is None:
        return {"features": converted[0], "labels": labels}
    return {"features": dict(zip(group_names, converted, strict=True)), "labels": labels}


class BatchFormatter:
    """:func:`format_batch` for a stream of tables of one schema: columns found by name
    once per schema. A stream may also cut each of its chunks into the batch's parts once
    (:meth:`parts`) and hand over slices of them (:meth:`from_parts`), which costs less
    than cutting every batch."""

    def __init__(
        self,
        feature_columns: Sequence[str],
        label_columns: Sequence[str],
        output: OutputFormat,
        groups: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.feature_columns = list(feature_columns)
        self.label_columns = list(label_columns)
        self.output = output
        self.groups = {name: list(columns) for name, columns in (groups or {}).items()} or None
        self._group_names = None if self.groups is None else list(self.groups)
        if output == "polars":
            polars_module()  # missing: said before the first batch
        self._schema: pa.Schema | None = None
        self._positions: tuple[list[int], list[int]] = ([], [])
        self._group_positions: dict[str, list[int]] | None = None

    def __call__(self, table: pa.Table) -> Batch:
        """``table`` as a batch."""
        return self.from_parts(self.parts(table))

    def parts(self, table: pa.Table) -> Parts:
        """``table``'s columns as the tables a batch is made of (features, or each input
        group's, then labels): for pandas and polars batches, the DataFrames made of them.

        Raises:
            KeyError: A feature or label column is not in ``table``.
            ConfigError: A column cannot be in a batch of the output format (naming it).
        """
        schema = table.schema
        if self._schema is None or not schema.equals(self._schema):
            self._positions = (
                [schema.get_field_index(name) for name in self.feature_columns],
                [schema.get_field_index(name) for name in self.label_columns],
            )
            if -1 in self._positions[0] + self._positions[1]:
                table.select(self.feature_columns + self.label_columns)  # names the column
            if self.groups is not None:
                self._group_positions = {
                    name: [schema.get_field_index(c) for c in columns]
                    for name, columns in self.groups.items()
                }
            self._schema = schema
        features, labels = self._positions
        output = self.output
        parts = _checked(batch_parts(table, features, labels, self._group_positions), output)
        return _as_frames(parts, output) if output in ("pandas", "polars") else parts

    def from_parts(self, parts: Parts) -> Batch:
        """The batch of ``parts`` (from :meth:`parts`, or slices of them), in the output
        format."""
        return _assemble(parts, self.output, self._group_names, bool(self.label_columns))
