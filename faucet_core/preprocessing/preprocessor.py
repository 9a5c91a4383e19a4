"""A fitted preprocessor: per-column transforms, applied to Arrow batches, saved as JSON.

The reader applies it to every batch after the cache (the cache keeps raw chunks), and
serving code loads the same JSON and calls :meth:`Preprocessor.transform`: one code path,
so serving reproduces training exactly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from faucet_core import vectors
from faucet_core.output import polars_module

__all__ = ["OOV", "SPEC_FORMAT", "ColumnTransform", "Preprocessor"]

#: The version of the saved JSON layout.
SPEC_FORMAT = 1
#: The name of the slot shared by rare, unseen and (unless imputed) NULL categories.
OOV = "__other__"

Kind = Literal["numeric", "categorical", "date", "vector", "passthrough", "kept", "dropped"]


@dataclass(frozen=True)
class ColumnTransform:
    """What happens to one column, with every fitted value.

    Attributes:
        name: The column.
        kind: ``numeric`` (numbers and booleans), ``categorical``, ``date`` (dates and
            timestamps), ``vector`` (a fixed-size list of numbers), ``passthrough`` (a
            number left as it is), ``kept`` (another type left as it is: beside the
            features in pandas, polars and Arrow output, not in the matrix) or ``dropped``
            (no feature).
        fill: The value NULLs become (numeric: a number; categorical: a category), or
            ``None``: numeric 0 for dates, the OOV slot for categories.
        indicator: Whether a ``<name>__missing`` feature says where the value was NULL.
        clip: Bounds applied after imputation, before scaling.
        scale: ``standard``, ``minmax``, ``log1p``, ``l2`` (vectors) or ``none``.
        center: Subtracted before dividing by ``width`` (``standard`` and ``minmax``).
        width: The divisor (1 where the train values do not vary).
        encode: ``onehot`` or ``index``, for categories.
        categories: The categories kept, most frequent first; others share the OOV slot.
        date_parts: The parts of a date or timestamp.
        size: The elements of a vector.
        fill_vector: What a vector's NULL elements become, each its own (the train mean
            vector), instead of ``fill``.
        note: Why, where a choice needs explaining (an all-NULL column, a constant one).
    """

    name: str
    kind: Kind
    fill: float | str | None = None
    indicator: bool = False
    clip: tuple[float, float] | None = None
    scale: str = "none"
    center: float = 0.0
    width: float = 1.0
    encode: str = "none"
    categories: tuple[str, ...] = ()
    date_parts: tuple[str, ...] = ()
    size: int = 0
    fill_vector: tuple[float, ...] = ()
    note: str = ""

    @property
    def is_plain_numeric(self) -> bool:
        """Numbers imputed, centered and scaled, nothing else: computed in bulk."""
        return self.kind == "numeric" and self.clip is None and self.scale != "log1p"

    @property
    def scaling(self) -> tuple[float, float]:
        """The center subtracted and the width divided by: (0, 1) unless scaled by
        ``standard`` or ``minmax``."""
        return (self.center, self.width) if self.scale in ("standard", "minmax") else (0.0, 1.0)

    def outputs(self) -> list[str]:
        """The feature names this column gives, in order."""
        missing = [f"{self.name}__missing"] if self.indicator else []
        if self.kind == "numeric":
            return [self.name, *missing]
        if self.kind == "categorical":
            if self.encode == "index":
                return [self.name, *missing]
            return [*(f"{self.name}={c}" for c in (*self.categories, OOV)), *missing]
        if self.kind == "date":
            return [*(f"{self.name}:{part}" for part in self.date_parts), *missing]
        if self.kind == "vector":
            return [*vectors.element_names(self.name, self.size), *missing]
        if self.kind == "passthrough":
            return [self.name]
        return []

    def apply(self, column: pa.ChunkedArray | pa.Array) -> list[np.ndarray[Any, Any]]:
        """The feature columns of ``column``'s values, as float64 arrays."""
        if self.kind == "numeric":
            return self._numeric(column)
        if self.kind == "categorical":
            return self._categorical(column)
        if self.kind == "date":
            return self._date(column)
        if self.kind == "vector":
            return self._vector(column)
        if self.kind == "passthrough":
            return [_floats(column)]
        return []

    def _numeric(self, column: pa.ChunkedArray | pa.Array) -> list[np.ndarray[Any, Any]]:
        values = _floats(column)
        missing = np.isnan(values)
        fill = 0.0 if self.fill is None else float(self.fill)
        values = np.where(missing, fill, values)
        if self.clip is not None:
            values = np.clip(values, self.clip[0], self.clip[1])
        if self.scale == "log1p":
            values = np.log1p(np.maximum(values, 0.0))
        center, width = self.scaling
        if (center, width) != (0.0, 1.0):
            values = (values - center) / width
        return [values, *([np.where(missing, 1.0, 0.0)] if self.indicator else [])]

    def _categorical(self, column: pa.ChunkedArray | pa.Array) -> list[np.ndarray[Any, Any]]:
        text = pc.cast(column, pa.string())
        missing = np.asarray(pc.is_null(text))
        if self.fill is not None:
            text = pc.fill_null(text, str(self.fill))
        found = pc.index_in(text, value_set=pa.array(self.categories, pa.string()))
        index = pc.fill_null(found, len(self.categories))  # unseen values after the known
        indicator = [np.where(missing, 1.0, 0.0)] if self.indicator else []
        if self.encode == "index":
            return [_floats(index), *indicator]
        onehot = np.zeros((len(index), len(self.categories) + 1))
        onehot[np.arange(len(index)), np.asarray(index)] = 1.0
        return [*onehot.T, *indicator]

    def _vector(self, column: pa.ChunkedArray | pa.Array) -> list[np.ndarray[Any, Any]]:
        values = np.array(vectors.block(column), np.float64)  # a copy to fill and scale
        if values.shape[1] != self.size:
            raise ValueError(
                f"{self.name}: vectors of {values.shape[1]} values, where the preprocessor "
                f"was fitted on vectors of {self.size}"
            )
        missing = np.asarray(pc.is_null(column))
        holes = np.isnan(values)
        if self.fill_vector:
            values = np.where(holes, np.asarray(self.fill_vector)[None, :], values)
        else:
            values[holes] = 0.0 if self.fill is None else float(self.fill)
        if self.clip is not None:
            values = np.clip(values, self.clip[0], self.clip[1])
        if self.scale == "l2":
            lengths = np.linalg.norm(values, axis=1, keepdims=True)
            values /= np.where(lengths > 0, lengths, 1.0)
        return [*values.T, *([np.where(missing, 1.0, 0.0)] if self.indicator else [])]

    def _date(self, column: pa.ChunkedArray | pa.Array) -> list[np.ndarray[Any, Any]]:
        missing = np.asarray(pc.is_null(column))
        # Dates as timestamps (whole days: exact), so every part has a kernel.
        moments = pc.cast(column, pa.timestamp("s")) if pa.types.is_date(column.type) else column
        parts = []
        for part in self.date_parts:
            if part in ("epoch_seconds", "epoch_days"):
                value = _epoch_seconds(moments) / (86400.0 if part == "epoch_days" else 1.0)
            else:
                value = _floats(getattr(pc, part)(moments))
            parts.append(np.where(missing, 0.0, value))
        return [*parts, *([np.where(missing, 1.0, 0.0)] if self.indicator else [])]


def _plain_numeric(
    table: pa.Table, plain: list[tuple[ColumnTransform, int]], out: np.ndarray[Any, Any]
) -> None:
    """Write the plain numeric features of ``table`` into their rows of ``out``."""
    values = np.vstack([_floats(table.column(t.name)) for t, _ in plain])
    missing = np.isnan(values)
    if missing.any():
        fills = np.array([0.0 if t.fill is None else float(t.fill) for t, _ in plain])
        values = np.where(missing, fills[:, None], values)
    scaling = np.array([t.scaling for t, _ in plain])
    values -= scaling[:, :1]
    values /= scaling[:, 1:]
    out[[position for _, position in plain]] = values
    for index, (transform, position) in enumerate(plain):
        if transform.indicator:
            out[position + 1] = missing[index]


_UNITS_PER_SECOND = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}


def _epoch_seconds(moments: pa.ChunkedArray | pa.Array) -> np.ndarray[Any, Any]:
    """Seconds since 1970-01-01 of timestamps, sub-second parts kept."""
    return _floats(pc.cast(moments, pa.int64())) / _UNITS_PER_SECOND[moments.type.unit]


def _floats(column: pa.ChunkedArray | pa.Array) -> np.ndarray[Any, Any]:
    """Numbers (or booleans) as float64, NULL as NaN."""
    return np.asarray(pc.cast(column, pa.float64()))


def _as_table(data: Any) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, Mapping):
        return pa.table({name: pa.array(values) for name, values in data.items()})
    if hasattr(data, "columns") and hasattr(data, "iloc"):  # a pandas DataFrame
        return pa.Table.from_pandas(data, preserve_index=False)
    raise TypeError(f"transform takes an Arrow table, a DataFrame or a dict, not {type(data)}")


@dataclass(frozen=True)
class Preprocessor:
    """Fitted transforms of the feature (and chosen label) columns.

    Attributes:
        features: One transform per feature column, in the source's column order.
        labels: Transforms of the label columns a config asked to transform.
        fitted_on: Where the statistics came from (plan fingerprint, rows, query cost).
    """

    features: tuple[ColumnTransform, ...]
    labels: tuple[ColumnTransform, ...] = ()
    fitted_on: Mapping[str, Any] = field(default_factory=dict)

    @property
    def feature_names(self) -> list[str]:
        """The columns of the feature matrix, in order."""
        return [name for t in self.features for name in t.outputs()]

    def transform(
        self, data: Any, output: Literal["numpy", "pandas", "polars", "arrow"] = "numpy"
    ) -> Any:
        """The features of ``data`` (an Arrow table, a pandas DataFrame or a dict of columns):
        a C-contiguous float32 matrix in :attr:`feature_names` order (``numpy``), or named
        float32 columns (``pandas``, ``polars``, ``arrow``)."""
        table = _as_table(data)
        if output == "numpy":
            return self.matrix(table)
        features = self.feature_table(table)
        if output == "polars":
            return polars_module().from_arrow(features)
        return features.to_pandas() if output == "pandas" else features

    def matrix(self, table: pa.Table) -> np.ndarray[Any, Any]:
        """The feature matrix of ``table``: float32, C-contiguous, :attr:`feature_names` order."""
        return np.ascontiguousarray(self._feature_rows(table).T)

    def _feature_rows(self, table: pa.Table) -> np.ndarray[Any, Any]:
        """The features of ``table``, one row per feature (float32, each row contiguous).

        Plain numeric columns (impute, indicator, center and scale) are computed together,
        a few array operations for all of them; the others one by one.
        """
        out = np.empty((len(self.feature_names), table.num_rows), np.float32)
        plain: list[tuple[ColumnTransform, int]] = []
        position = 0
        for transform in self.features:
            width = len(transform.outputs())
            if transform.is_plain_numeric:
                plain.append((transform, position))
            else:
                for offset, values in enumerate(transform.apply(table.column(transform.name))):
                    out[position + offset] = values
            position += width
        if plain:
            _plain_numeric(table, plain, out)
        return out

    @property
    def kept(self) -> list[str]:
        """Columns kept as they are, beside the features in pandas and Arrow output."""
        return [t.name for t in self.features if t.kind == "kept"]

    def feature_table(self, table: pa.Table) -> pa.Table:
        """The features of ``table`` as named float32 columns (:attr:`feature_names`), then
        the :attr:`kept` columns as they are."""
        rows = self._feature_rows(table)
        arrays: dict[str, Any] = {
            name: pa.array(rows[index]) for index, name in enumerate(self.feature_names)
        }
        arrays.update((name, table.column(name)) for name in self.kept)
        return pa.table(arrays) if arrays else table.select([])

    def label_names(self, label_columns: Sequence[str]) -> list[str]:
        """The names of the label columns after :meth:`label_table`."""
        transforms = {t.name: t for t in self.labels}
        return [
            name
            for column in label_columns
            for name in (transforms[column].outputs() if column in transforms else [column])
        ]

    def transform_table(self, table: pa.Table, label_columns: Sequence[str]) -> pa.Table:
        """:meth:`feature_table` and :meth:`label_table` side by side: what a reader makes of
        each chunk it serves."""
        features = self.feature_table(table)
        labels = self.label_table(table, label_columns)
        for name in labels.column_names:
            features = features.append_column(name, labels.column(name))
        return features

    def label_table(self, table: pa.Table, label_columns: Sequence[str]) -> pa.Table:
        """The label columns of ``table``: transformed where configured, else as they are."""
        transforms = {t.name: t for t in self.labels}
        arrays: dict[str, Any] = {}
        for name in label_columns:
            transform = transforms.get(name)
            if transform is None:
                arrays[name] = table.column(name)
                continue
            outputs = transform.outputs()
            for index, values in enumerate(transform.apply(table.column(name))):
                arrays[outputs[index]] = pa.array(values, pa.float32())
        return pa.table(arrays)

    # Saving and loading.

    def to_json(self) -> str:
        """The preprocessor as versioned, human-readable JSON."""
        return json.dumps(
            {
                "format": SPEC_FORMAT,
                "feature_names": self.feature_names,
                "features": [_plain(t) for t in self.features],
                "labels": [_plain(t) for t in self.labels],
                "fitted_on": dict(self.fitted_on),
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Preprocessor:
        """Read :meth:`to_json`'s text (or its UTF-8 bytes).

        Raises:
            ValueError: Not a preprocessor of this format.
        """
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("format") != SPEC_FORMAT:
                raise ValueError(f"not a Faucet preprocessor of format {SPEC_FORMAT}")
            return cls(
                features=tuple(_transform(t) for t in data["features"]),
                labels=tuple(_transform(t) for t in data["labels"]),
                fitted_on=data.get("fitted_on", {}),
            )
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a Faucet preprocessor: {exc}") from exc

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_json` to ``path``."""
        Path(path).write_bytes(f"{self.to_json()}\n".encode())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Preprocessor:
        """Read a preprocessor saved with :meth:`save`.

        Raises:
            ValueError: The file holds no preprocessor of this format (named in the message).
            OSError: The file cannot be read.
        """
        try:
            return cls.from_json(Path(path).read_bytes())
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc


def _plain(transform: ColumnTransform) -> dict[str, Any]:
    """The transform's fields that differ from their defaults (name and kind, which have
    none, always)."""
    defaults = {f.name: f.default for f in fields(ColumnTransform)}
    return {key: value for key, value in asdict(transform).items() if value != defaults[key]}


def _transform(data: Mapping[str, Any]) -> ColumnTransform:
    values = dict(data)
    for key in ("categories", "date_parts", "fill_vector"):
        if key in values:
            values[key] = tuple(values[key])
    if values.get("clip") is not None:
        values["clip"] = tuple(values["clip"])
    return ColumnTransform(**values)
