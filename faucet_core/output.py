"""Turning an Arrow batch into what the training loop asked for: pandas, numpy or Arrow."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pyarrow as pa

__all__ = ["Batch", "OutputFormat", "format_batch"]

OutputFormat = Literal["pandas", "numpy", "arrow"]

#: A batch: ``{"features": ..., "labels": ...}``; ``labels`` is ``None`` without label columns.
Batch = dict[str, Any]


def _to_numpy(table: pa.Table) -> np.ndarray[Any, Any]:
    columns = [column.to_numpy() for column in table.columns]
    return np.column_stack(columns) if columns else np.empty((table.num_rows, 0))


def _convert(table: pa.Table, output: OutputFormat) -> Any:
    if output == "arrow":
        return table
    if output == "pandas":  # one block per column: no consolidation copy, twice as fast
        return table.to_pandas(split_blocks=True)
    return _to_numpy(table)


def format_batch(
    table: pa.Table,
    feature_columns: Sequence[str],
    label_columns: Sequence[str],
    output: OutputFormat,
) -> Batch:
    """Split ``table`` into features and labels, in the ``output`` format.

    ``pandas`` gives DataFrames; ``numpy`` gives a 2-D array of features (one column per
    feature; float32 and C-contiguous when the features are float32, as preprocessed ones
    are) and a 1-D label array for one label column, 2-D for several; ``arrow`` gives
    ``pyarrow.Table`` objects without copying.
    """
    features = _convert(table.select(list(feature_columns)), output)
    labels = None
    if label_columns:
        labels = _convert(table.select(list(label_columns)), output)
        if output == "numpy" and labels.shape[1] == 1:
            labels = labels[:, 0]
    return {"features": features, "labels": labels}
