"""Choosing and fitting each column's transform from its type and the train split's stats.

What ``auto`` decides, per feature column (a column's own settings override any of it):

- numbers: NULLs become the train mean, with a ``__missing`` indicator when the train
  split has NULLs; standardized (mean 0, population stddev 1; a constant column is only
  centered). A column that is NULL on every train row is dropped.
- booleans: 0/1; NULLs become the most frequent value, with an indicator when seen.
- text (and other categories): one-hot over the ``max_categories`` most frequent train
  values, plus one slot shared by rarer ones, values never seen in train, and NULLs.
- dates and timestamps: days since 1970, day of the week, and the month (dates) or the
  hour (timestamps); NULLs become 0, with an indicator when seen.
- vectors (fixed-size lists of numbers: embeddings): one feature per element,
  ``name[0]`` ... ``name[n-1]``, as they are; NULL vectors (and elements) become 0 (or
  ``fill_value``, with ``impute: constant``; the train mean vector, with ``mean``), with
  an indicator when seen; ``scale: l2`` divides each vector by its length.
- anything else (lists of varying size, structs, binary): kept as it is, outside the
  feature matrix.

Scaling statistics are those of the imputed column, as a scikit-learn pipeline of an
imputer and a scaler computes them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa

from faucet_core import vectors
from faucet_core.errors import ConfigError
from faucet_core.preprocessing.config import ColumnConfig, PreprocessingConfig
from faucet_core.preprocessing.preprocessor import OOV, ColumnTransform, Preprocessor
from faucet_core.preprocessing.stats import ColumnStats, StatsRequest, TrainStats

__all__ = ["column_kind", "fit_preprocessor", "stats_request"]

StatsProvider = Callable[[StatsRequest], TrainStats]


def column_kind(kind: pa.DataType) -> str:
    """``numeric``, ``boolean``, ``categorical``, ``date``, ``vector`` or ``other``."""
    if vectors.is_vector(kind):
        return "vector"
    if pa.types.is_boolean(kind):
        return "boolean"
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return "numeric"
    if pa.types.is_date(kind) or pa.types.is_timestamp(kind):
        return "date"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_dictionary(kind):
        return "categorical"
    return "other"


def _choices(
    config: PreprocessingConfig, name: str, kind: str, is_label: bool
) -> tuple[str, ColumnConfig] | None:
    """The kind a column is treated as and its settings, or ``None`` when it is untouched."""
    own = config.columns.get(name)
    if name in config.exclude or (own is None and (is_label or not config.auto)):
        return None
    settings = own or ColumnConfig()
    if kind in ("numeric", "boolean") and settings.encode in ("index", "onehot"):
        kind = "categorical"  # codes stored as numbers
    if kind == "other" or (kind == "categorical" and settings.encode == "none"):
        return None
    return kind, settings


def stats_request(
    config: PreprocessingConfig, schema: pa.Schema, labels: Sequence[str]
) -> StatsRequest:
    """The statistics the columns of ``schema`` need."""
    numeric, medians, top, counted, means = [], [], [], [], []
    for field in schema:
        chosen = _choices(config, field.name, column_kind(field.type), field.name in labels)
        if chosen is None:
            continue
        kind, settings = chosen
        if kind == "numeric":
            numeric.append(field.name)
            if settings.impute == "median":
                medians.append(field.name)
            if settings.impute == "most_frequent":
                top.append(field.name)
        elif kind in ("boolean", "categorical"):
            top.append(field.name)
        else:
            counted.append(field.name)
            if kind == "vector" and settings.impute == "mean":
                means.append(field.name)
    asked = (c.max_categories for c in config.columns.values() if c.max_categories)
    top_k = max([config.max_categories, *asked])
    return StatsRequest(
        tuple(numeric), tuple(medians), tuple(top), top_k + 1, tuple(counted), tuple(means)
    )


def fit_preprocessor(
    config: PreprocessingConfig,
    schema: pa.Schema,
    labels: Sequence[str],
    stats: StatsProvider,
    fitted_on: dict[str, Any] | None = None,
) -> Preprocessor:
    """Fit a transform for every column of ``schema`` (the plan's columns) from the train
    statistics ``stats`` gives (asked once, for every column at once)."""
    request = stats_request(config, schema, labels)
    found = stats(request) if request.columns else TrainStats(0)
    features: list[ColumnTransform] = []
    fitted_labels: list[ColumnTransform] = []
    for field in schema:
        is_label = field.name in labels
        chosen = _choices(config, field.name, column_kind(field.type), is_label)
        if chosen is None:
            if is_label:
                continue
            kept = column_kind(field.type) in ("numeric", "boolean")
            transform = ColumnTransform(field.name, "passthrough" if kept else "kept")
        else:
            kind, settings = chosen
            column = found.columns.get(field.name, ColumnStats(count=0))
            transform = _fit(field, kind, settings, column, found.rows, config)
        (fitted_labels if is_label else features).append(transform)
    return Preprocessor(tuple(features), tuple(fitted_labels), {"rows": found.rows,
                                                               **(fitted_on or {})})  # fmt: skip


def _fit(
    field: pa.Field,
    kind: str,
    settings: ColumnConfig,
    stats: ColumnStats,
    rows: int,
    config: PreprocessingConfig,
) -> ColumnTransform:
    nulls = rows - stats.count
    indicator = settings.indicator if settings.indicator is not None else nulls > 0
    if kind == "vector":
        return _fit_vector(field, settings, indicator, stats)
    if settings.scale == "l2":
        raise ConfigError(
            [(f"preprocessing.columns.{field.name}.scale",
              f"l2 scales a vector column; {field.name} is {field.type}")]
        )  # fmt: skip
    if kind == "categorical":
        return _fit_categorical(field.name, settings, stats, indicator, config)
    if kind == "date":
        default_parts = ["epoch_days", "day_of_week"]
        default_parts.append("hour" if pa.types.is_timestamp(field.type) else "month")
        parts = tuple(settings.date_parts or default_parts)
        return ColumnTransform(field.name, "date", indicator=indicator, date_parts=parts)
    auto = settings == ColumnConfig()
    if kind == "boolean":
        stats = _as_zeros_and_ones(stats)
        if settings.impute is None:
            settings = settings.model_copy(update={"impute": "most_frequent"})
    if stats.count == 0 and settings.impute in (None, "mean", "median", "most_frequent"):
        if auto:  # nothing to learn from
            return ColumnTransform(field.name, "dropped", note="NULL on every train row")
        return ColumnTransform(
            field.name, "numeric", fill=float(settings.fill_value or 0), indicator=indicator,
            clip=settings.clip, note="NULL on every train row: filled with the fill value",
        )  # fmt: skip
    fill = _numeric_fill(settings, stats)
    scale = settings.scale or ("none" if kind == "boolean" else "standard")
    center, width, note = _scaling(scale, stats, rows, fill)
    return ColumnTransform(
        field.name, "numeric", fill=fill, indicator=indicator, clip=settings.clip,
        scale=scale, center=center, width=width, note=note,
    )  # fmt: skip


def _fit_vector(
    field: pa.Field, settings: ColumnConfig, indicator: bool, stats: ColumnStats
) -> ColumnTransform:
    """A vector column's transform: its settings, and the train mean vector to impute."""
    setting = f"preprocessing.columns.{field.name}"
    if settings.impute not in (None, "constant", "mean"):
        raise ConfigError(
            [(f"{setting}.impute",
              f"{field.name} is a vector column: its NULL vectors become the train mean "
              f"vector (mean) or a constant (constant, fill_value; 0 by default), not the "
              f"train {settings.impute}")]
        )  # fmt: skip
    if settings.scale not in (None, "none", "l2"):
        raise ConfigError(
            [(f"{setting}.scale",
              f"{field.name} is a vector column: scale it by l2, or none, not {settings.scale}")]
        )  # fmt: skip
    mean = stats.vector_mean if settings.impute == "mean" else None
    return ColumnTransform(
        field.name, "vector", fill=float(settings.fill_value or 0), indicator=indicator,
        clip=settings.clip, scale=settings.scale or "none", size=field.type.list_size,
        fill_vector=mean or (),
    )  # fmt: skip


def _number(value: str) -> float:
    """A counted value (text) as the number it is, booleans as 1 and 0."""
    booleans = {"true": 1.0, "false": 0.0}
    return booleans[value.lower()] if value.lower() in booleans else float(value)


def _as_zeros_and_ones(stats: ColumnStats) -> ColumnStats:
    """A boolean's statistics as those of its values as 1 and 0, from its counted values
    (the two of them: a boolean's values are counted, not averaged)."""
    if stats.count == 0 or stats.mean is not None:
        return stats
    ones = sum(count for value, count in stats.top if _number(value) == 1.0)
    share = ones / stats.count
    return dataclasses.replace(
        stats, mean=share, std=math.sqrt(share * (1.0 - share)),
        min=0.0 if ones < stats.count else 1.0, max=1.0 if ones else 0.0,
        median=0.5 if share == 0.5 else float(share > 0.5),
    )  # fmt: skip


def _numeric_fill(settings: ColumnConfig, stats: ColumnStats) -> float:
    if settings.impute == "constant":
        return float(settings.fill_value or 0)
    if settings.impute == "median" and stats.median is not None:
        return stats.median
    if settings.impute == "most_frequent" and stats.top:
        return _number(stats.top[0][0])
    return stats.mean if stats.mean is not None else 0.0


def _scaling(scale: str, stats: ColumnStats, rows: int, fill: float) -> tuple[float, float, str]:
    """Center and width of the imputed column (NULLs replaced by ``fill``)."""
    if scale not in ("standard", "minmax") or stats.count == 0:
        return 0.0, 1.0, ""
    nulls = rows - stats.count
    if scale == "minmax":
        low = min(stats.min or 0.0, fill) if nulls else stats.min or 0.0
        high = max(stats.max or 0.0, fill) if nulls else stats.max or 0.0
        width = high - low
        return low, width if width > 0 else 1.0, "" if width > 0 else "constant in train"
    mean, variance = stats.mean or 0.0, (stats.std or 0.0) ** 2
    total = stats.count + nulls
    imputed_mean = (stats.count * mean + nulls * fill) / total
    # The values' and the fills' variances pooled: not E[x²] - E[x]², whose rounding leaves a
    # constant column of large values a width of ~1e-8 of its mean, so not seen as constant.
    shift = (mean - fill) ** 2 * stats.count * nulls / total
    width = math.sqrt((stats.count * variance + shift) / total)
    if width <= 1e-12 * max(1.0, abs(imputed_mean)):
        return imputed_mean, 1.0, "constant in train: centered only"
    return imputed_mean, width, ""


def _fit_categorical(
    name: str,
    settings: ColumnConfig,
    stats: ColumnStats,
    indicator: bool,
    config: PreprocessingConfig,
) -> ColumnTransform:
    keep = settings.max_categories or config.max_categories
    categories = tuple(value for value, _ in stats.top[:keep])
    fill: str | None = None
    if settings.impute == "most_frequent" and categories:
        fill = categories[0]
    elif settings.impute == "constant":
        fill = str(settings.fill_value if settings.fill_value is not None else "missing")
    note = f"rarer values share the {OOV} slot" if len(stats.top) > keep else ""
    return ColumnTransform(
        name, "categorical", fill=fill, indicator=indicator,
        encode="index" if settings.encode == "index" else "onehot",
        categories=categories, note=note,
    )  # fmt: skip
