"""Statistics of the train split that preprocessing is fitted on.

A warehouse computes them in one aggregate query over the whole train split (see
:class:`StatsSql`, used by :class:`~faucet_core.sql.SqlWarehouse`); where it cannot,
:func:`stats_from_tables` computes the same from one streaming pass over the train chunks.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from faucet_core import vectors

__all__ = ["ColumnStats", "StatsRequest", "StatsSql", "TrainStats", "stats_from_tables"]


@dataclass(frozen=True)
class StatsRequest:
    """Which statistics to compute, per column.

    Attributes:
        numeric: Columns needing count, mean, population standard deviation, min and max.
        medians: Those of them needing the median too.
        top: Columns needing their most frequent values (as text) with counts.
        top_k: How many of the most frequent values to keep per column.
        counted: Columns needing only their count of non-NULL values.
        vector_means: Vector columns needing the mean of each element (from the train
            chunks: no warehouse computes it).
    """

    numeric: tuple[str, ...] = ()
    medians: tuple[str, ...] = ()
    top: tuple[str, ...] = ()
    top_k: int = 21
    counted: tuple[str, ...] = ()
    vector_means: tuple[str, ...] = ()

    def restricted(self, keep: Callable[[str], bool]) -> StatsRequest:
        """This request for the columns ``keep`` accepts only."""

        def kept(columns: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(column for column in columns if keep(column))

        return StatsRequest(
            kept(self.numeric), kept(self.medians), kept(self.top), self.top_k,
            kept(self.counted), kept(self.vector_means),
        )  # fmt: skip

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column the request names, once each."""
        named = [*self.numeric, *self.top, *self.counted, *self.vector_means]
        return tuple(dict.fromkeys(named))


@dataclass(frozen=True)
class ColumnStats:
    """What is known of one column over the train split (``None`` where not asked)."""

    count: int
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    median: float | None = None
    top: tuple[tuple[str, int], ...] = ()
    vector_mean: tuple[float, ...] | None = None


@dataclass(frozen=True)
class TrainStats:
    """The train split's row count and per-column statistics."""

    rows: int
    columns: Mapping[str, ColumnStats] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain values, for JSON."""
        return {"rows": self.rows, "columns": {k: asdict(v) for k, v in self.columns.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainStats:
        """Read :meth:`as_dict`'s values back."""
        columns = {}
        for name, values in data["columns"].items():
            vector_mean = values.get("vector_mean")
            columns[name] = ColumnStats(**{
                **values, "top": tuple(tuple(t) for t in values["top"]),
                "vector_mean": tuple(vector_mean) if vector_mean is not None else None,
            })  # fmt: skip
        return cls(int(data["rows"]), columns)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


@dataclass(frozen=True)
class StatsSql:
    """How a SQL dialect spells the statistics; :meth:`query` writes the one query.

    Attributes:
        float: A value as a 64-bit float, NaN as NULL: missing, as the statistics of the
            train chunks (and the transforms) take it.
        std: The population standard deviation.
        median: The (exact or approximate) median.
        text: A value as text.
        top: One aggregate giving the ``{k}`` most frequent values and their counts, as a
            list of ``(value, count)`` structs (BigQuery: ``APPROX_TOP_COUNT``); ``None``
            counts them exactly in a subquery per column, listed by ``ranked``.
        ranked: An aggregate over that subquery's values ``v`` and counts ``n``: a list of
            ``{value, count}`` structs (or JSON objects), most frequent first.
        length: The number of values in a list (array) column's value; ``None``: the
            dialect cannot say, and lists whose size may vary stay lists (see
            :func:`faucet_core.vectors.uniform_lists`).
    """

    float: str = "NULLIF(CAST({c} AS DOUBLE), 'NaN')"
    std: str = "STDDEV_POP({c})"
    median: str = "MEDIAN({c})"
    text: str = "CAST({c} AS VARCHAR)"
    top: str | None = None
    ranked: str = "list(struct_pack(value := v, count := n) ORDER BY n DESC, v)"
    length: str | None = None

    def query(
        self, train_rows: str, request: StatsRequest, quote: Callable[[str], str]
    ) -> tuple[str, Callable[[Mapping[str, Any]], TrainStats]]:
        """One query over ``train_rows`` (a query of the train split's rows), and the reader
        of its one-row result."""
        items = ["COUNT(*) AS rows"]
        names: dict[str, str] = {}

        def item(expression: str, column: str, what: str) -> None:
            alias = f"s{len(items)}"
            names[f"{column}\x1f{what}"] = alias
            items.append(f"{expression} AS {alias}")

        for column in request.columns:
            item(f"COUNT({quote(column)})", column, "count")
        for column in request.numeric:
            value = self.float.format(c=quote(column))
            item(f"AVG({value})", column, "mean")
            item(self.std.format(c=value), column, "std")
            item(f"MIN({value})", column, "min")
            item(f"MAX({value})", column, "max")
        for column in request.medians:
            item(self.median.format(c=self.float.format(c=quote(column))), column, "median")
        for column in request.top:
            text = self.text.format(c=quote(column))
            if self.top is not None:
                item(self.top.format(c=text, k=request.top_k), column, "top")
            else:
                item(
                    f"(SELECT {self.ranked} FROM "
                    f"(SELECT {text} AS v, COUNT(*) AS n FROM faucet_train WHERE {quote(column)} "
                    f"IS NOT NULL GROUP BY 1 ORDER BY n DESC, v LIMIT {int(request.top_k)}))",
                    column,
                    "top",
                )
        sql = f"WITH faucet_train AS ({train_rows}) SELECT {', '.join(items)} FROM faucet_train"

        def read(row: Mapping[str, Any]) -> TrainStats:
            def get(column: str, what: str) -> Any:
                alias = names.get(f"{column}\x1f{what}")
                return row[alias] if alias is not None else None

            columns = {}
            for column in request.columns:
                pairs = _top_pairs(get(column, "top") or [])
                columns[column] = ColumnStats(
                    count=int(get(column, "count") or 0),
                    mean=_number(get(column, "mean")),
                    std=_number(get(column, "std")),
                    min=_number(get(column, "min")),
                    max=_number(get(column, "max")),
                    median=_number(get(column, "median")),
                    top=tuple(pairs[: request.top_k]),
                )
            return TrainStats(int(row["rows"]), columns)

        return sql, read


def _top_pairs(top: Sequence[Any]) -> list[tuple[str, int]]:
    """``(value, count)`` pairs, most frequent first (ties by value), from a list of
    ``{value, count}`` structs, or from a plain list of values already ranked (counts 0)."""
    if all(isinstance(item, Mapping) for item in top):
        pairs = [(str(item["value"]), int(item["count"])) for item in top]
        return sorted(pairs, key=lambda pair: (-pair[1], pair[0]))
    return [(str(item), 0) for item in top]


class _Moments:
    """Count, mean and sum of squared deviations, merged chunk by chunk (Chan et al.)."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0
        self.min, self.max = math.inf, -math.inf

    def add(self, values: np.ndarray[Any, Any]) -> None:
        if not len(values):
            return
        count, mean = len(values), float(values.mean())
        m2 = float(((values - mean) ** 2).sum())
        delta = mean - self.mean
        total = self.count + count
        self.m2 += m2 + delta * delta * self.count * count / total
        self.mean += delta * count / total
        self.count = total
        self.min, self.max = min(self.min, float(values.min())), max(self.max, float(values.max()))


def _floats(column: pa.ChunkedArray) -> np.ndarray[Any, Any]:
    values = np.asarray(pc.cast(column, pa.float64()))
    known: np.ndarray[Any, Any] = values[~np.isnan(values)]
    return known


def stats_from_tables(tables: Iterable[pa.Table], request: StatsRequest) -> TrainStats:
    """The statistics of ``request`` over ``tables`` (the train chunks), in one pass.

    Medians are exact: they keep the column's values (8 bytes a row per median column).
    """
    rows = 0
    counts: Counter[str] = Counter()
    moments = {column: _Moments() for column in request.numeric}
    median_values: dict[str, list[np.ndarray[Any, Any]]] = {c: [] for c in request.medians}
    tops: dict[str, Counter[str]] = {column: Counter() for column in request.top}
    sums: dict[str, Any] = {column: 0.0 for column in request.vector_means}
    seen: dict[str, Any] = {column: 0 for column in request.vector_means}
    for table in tables:
        rows += table.num_rows
        for column in request.columns:
            counts[column] += table.num_rows - table.column(column).null_count
        for column, moment in moments.items():
            values = _floats(table.column(column))
            moment.add(values)
            if column in median_values:
                median_values[column].append(values)
        for column in request.vector_means:  # per element, NULL vectors and elements left out
            values = vectors.block(table.column(column))
            known = ~np.isnan(values)
            sums[column] = sums[column] + np.where(known, values, 0.0).sum(axis=0)
            seen[column] = seen[column] + known.sum(axis=0)
        for column, counter in tops.items():
            text = pc.cast(table.column(column), pa.string())
            counted = pc.value_counts(text.drop_null())
            counter.update({row["values"]: row["counts"] for row in counted.to_pylist()})
    columns = {}
    for column in request.columns:
        found = moments.get(column)
        stats: dict[str, Any] = {"count": counts[column]}
        if found is not None and found.count:
            stats.update(
                mean=found.mean, std=math.sqrt(found.m2 / found.count), min=found.min,
                max=found.max,
            )  # fmt: skip
        if column in median_values and found is not None and found.count:
            stats["median"] = float(np.median(np.concatenate(median_values[column])))
        if column in tops:
            ranked = sorted(tops[column].items(), key=lambda pair: (-pair[1], pair[0]))
            stats["top"] = tuple(ranked[: request.top_k])
        if column in sums and np.ndim(sums[column]):  # no train row: no mean
            means = sums[column] / np.maximum(seen[column], 1)  # an element never seen: 0
            stats["vector_mean"] = tuple(float(m) for m in means)
        columns[column] = ColumnStats(**stats)
    return TrainStats(rows, columns)
