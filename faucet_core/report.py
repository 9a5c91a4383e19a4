"""Tables that describe a reader for people: its splits, what planning cost, the plan's
facts, the preprocessing and a sample batch (``faucet preview`` and ``faucet fit``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rich.table import Table

from faucet_core import layout
from faucet_core.plan import SPLITS
from faucet_core.preprocessing import ColumnTransform, Preprocessor
from faucet_core.reader import Reader
from faucet_core.warehouse import WarehouseCosts

if TYPE_CHECKING:  # pandas is imported by the batches shown, not by this module
    import pandas as pd

__all__ = [
    "batch_table",
    "costs_table",
    "describe",
    "facts_table",
    "preprocessing_table",
    "size",
    "splits_table",
]


def size(count: int) -> str:
    """``count`` bytes, for people: ``1.2 TiB``."""
    value = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{count:,} bytes" if unit == "bytes" else f"{value:,.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def splits_table(reader: Reader) -> Table:
    """Per split: rows, their share against the one asked, chunks and batches per pass."""
    plan = reader.plan
    total = sum(reader.rows(split) for split in SPLITS)
    asked_eval = plan.eval_buckets / layout.SPLIT_BUCKETS
    table = Table("split", "rows", "share", "asked", "chunks", "rows per chunk", "batches")
    for split in SPLITS:
        rows = reader.rows(split)
        chunks = [chunk.rows for chunk in plan.chunks[split]]
        asked = asked_eval if split == "eval" else 1 - asked_eval
        table.add_row(
            split,
            f"{rows:,}",
            f"{rows / total:.1%}" if total else "-",
            f"{asked:.1%}",
            str(len(chunks)),
            f"{min(chunks):,} to {max(chunks):,}" if chunks else "-",
            f"{reader.batches_per_epoch(split):,}",
        )
    return table


def costs_table(spent: WarehouseCosts, saved_plan: bool) -> Table:
    """What planning asked of the warehouse (zero for a saved plan)."""
    table = Table("planning", "query jobs", "bytes processed", "bytes billed")
    table.add_row(
        "a saved plan" if saved_plan else "counted now",
        str(spent.query_jobs),
        size(spent.bytes_processed),
        size(spent.bytes_billed),
    )
    return table


def _text(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_text(v)}" for k, v in value.items())
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def facts_table(facts: Mapping[str, Any]) -> Table:
    """One row per fact: the plan's statistics and the state its warehouse keeps."""
    table = Table("plan", "value")
    for name, value in facts.items():
        table.add_row(name.replace("_", " "), _text(value))
    return table


def describe(transform: ColumnTransform) -> str:
    """What a fitted transform does, in a few words."""
    parts = []
    if transform.kind in ("numeric", "categorical") and transform.fill is not None:
        fill = transform.fill
        parts.append(f"NULL -> {fill:.4g}" if isinstance(fill, float) else f"NULL -> {fill!r}")
    if transform.clip is not None:
        parts.append(f"clip {list(transform.clip)}")
    if transform.scale in ("standard", "minmax"):
        parts.append(f"{transform.scale}: (x - {transform.center:.4g}) / {transform.width:.4g}")
    elif transform.scale == "log1p":
        parts.append("log1p")
    if transform.kind == "categorical":
        kept = len(transform.categories)
        parts.append(f"{transform.encode} of {kept} categories + other")
    if transform.kind == "date":
        parts.append(", ".join(transform.date_parts))
    if transform.kind in ("passthrough", "kept"):
        parts.append("as it is")
    if transform.indicator:
        parts.append("missing indicator")
    return "; ".join(parts) or "-"


def preprocessing_table(preprocessor: Preprocessor) -> Table:
    """One row per column: its kind, what the fitted transform does, the features made."""
    table = Table("column", "kind", "what", "features", "note")
    for transform in (*preprocessor.features, *preprocessor.labels):
        outputs = transform.outputs()
        table.add_row(
            transform.name,
            transform.kind,
            describe(transform),
            str(len(outputs)) if len(outputs) != 1 else outputs[0],
            transform.note,
        )
    return table


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "NULL" if math.isnan(value) else f"{value:.4g}"
    return "NULL" if value is None else str(value)


def batch_table(frame: pd.DataFrame, width: int) -> tuple[Table, int]:
    """The rows of ``frame`` as a table at most about ``width`` characters wide.

    Returns the table and how many columns did not fit (left out, from the right).
    """
    cells = {name: [_cell(v) for v in frame[name].tolist()] for name in frame.columns}
    shown: list[str] = []
    used = 1  # the left border
    for name, values in cells.items():
        needed = max([len(str(name)), *map(len, values)]) + 3  # padding and a border
        if shown and used + needed > width:
            break
        shown.append(name)
        used += needed
    table = Table()
    for name in shown:
        numeric = frame[name].dtype.kind in "biuf"
        table.add_column(str(name), justify="right" if numeric else "left", no_wrap=True)
    for row in range(len(frame)):
        table.add_row(*[cells[name][row] for name in shown])
    return table, len(cells) - len(shown)
