"""The tables ``faucet preview`` and ``faucet fit`` print: what each cell says."""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable

import pandas as pd
import pytest
from rich.console import Console

from faucet_core import Reader
from faucet_core.preprocessing import ColumnTransform, Preprocessor
from faucet_core.report import (
    batch_table,
    costs_table,
    describe,
    facts_table,
    preprocessing_table,
    size,
    splits_table,
)
from faucet_core.warehouse import WarehouseCosts
from tests.conftest import cells

MakeReader = Callable[..., Reader]


@pytest.mark.parametrize(
    ("transform", "said"),
    [
        (
            ColumnTransform("x", "numeric", fill=0.5, scale="standard", center=1.25, width=2.0),
            "NULL -> 0.5; standard: (x - 1.25) / 2",
        ),
        (
            ColumnTransform("x", "numeric", fill=0.0, scale="minmax", center=-1, width=4),
            "NULL -> 0; minmax: (x - -1) / 4",
        ),
        (
            ColumnTransform("x", "numeric", fill=1.0, clip=(0.0, 9.0), scale="log1p"),
            "NULL -> 1; clip [0.0, 9.0]; log1p",
        ),
        (ColumnTransform("x", "numeric"), "-"),
        (
            ColumnTransform(
                "c", "categorical", fill="red", encode="onehot", categories=("red", "blue")
            ),
            "NULL -> 'red'; onehot of 2 categories + other",
        ),
        (
            ColumnTransform("c", "categorical", encode="index", categories=("a",), indicator=True),
            "index of 1 categories + other; missing indicator",
        ),
        (
            ColumnTransform("d", "date", fill=3.0, date_parts=("year", "month")),
            "year, month",  # a date's NULLs become 0: its fill is not said
        ),
        (ColumnTransform("p", "passthrough", fill=2.0), "as it is"),
        (ColumnTransform("k", "kept"), "as it is"),
        (ColumnTransform("z", "dropped", fill=1.0), "-"),
    ],
)
def test_a_transform_is_described_in_a_few_words(transform: ColumnTransform, said: str) -> None:
    assert describe(transform) == said


def test_the_preprocessing_table_has_a_row_per_column_labels_last() -> None:
    preprocessor = Preprocessor(
        features=(
            ColumnTransform("x", "numeric", fill=0.5, indicator=True, note="constant"),
            ColumnTransform("c", "categorical", encode="onehot", categories=("a", "b")),
        ),
        labels=(ColumnTransform("y", "numeric", scale="standard", center=0.0, width=1.0),),
    )
    assert cells(preprocessing_table(preprocessor)) == [
        ["column", "kind", "what", "features", "note"],
        ["x", "numeric", "NULL -> 0.5; missing indicator", "2", "constant"],
        ["c", "categorical", "onehot of 2 categories + other", "3", ""],
        ["y", "numeric", "standard: (x - 0) / 1", "y", ""],
    ]


@pytest.mark.parametrize(
    ("count", "said"),
    [
        (0, "0 bytes"),
        (1023, "1,023 bytes"),
        (1024, "1.0 KiB"),
        (3 * 2**20 + 2**19, "3.5 MiB"),
        (2**30, "1.0 GiB"),
        (5 * 2**50, "5,120.0 TiB"),
    ],
)
def test_sizes_are_said_in_the_largest_unit_below_1024(count: int, said: str) -> None:
    assert size(count) == said


def test_the_splits_table_gives_shares_chunks_and_batches(make_reader: MakeReader) -> None:
    reader = make_reader(test_split_percent=25, chunk_size=1_000, batch_size=1_000)
    train, eval_ = reader.rows("train"), reader.rows("eval")
    chunks = {split: [c.rows for c in reader.plan.chunks[split]] for split in ("train", "eval")}
    assert cells(splits_table(reader)) == [
        ["split", "rows", "share", "asked", "chunks", "rows per chunk", "batches"],
        [
            "train",
            f"{train:,}",
            f"{train / 5_000:.1%}",
            "75.0%",
            str(len(chunks["train"])),
            f"{min(chunks['train']):,} to {max(chunks['train']):,}",
            str(math.ceil(train / 1_000)),
        ],
        [
            "eval",
            f"{eval_:,}",
            f"{eval_ / 5_000:.1%}",
            "25.0%",
            str(len(chunks["eval"])),
            f"{min(chunks['eval']):,} to {max(chunks['eval']):,}",
            str(math.ceil(eval_ / 1_000)),
        ],
    ]
    assert len(chunks["train"]) > 1 and min(chunks["train"]) < max(chunks["train"])


def test_an_empty_split_has_no_share_and_no_chunk_sizes(make_reader: MakeReader) -> None:
    reader = make_reader(test_split_percent=0)
    rows = cells(splits_table(reader))
    assert rows[1][2:4] == ["100.0%", "100.0%"]
    assert rows[2] == ["eval", "0", "0.0%", "0.0%", "0", "-", "0"]


def test_costs_and_facts_are_said_plainly() -> None:
    spent = WarehouseCosts(query_jobs=2, bytes_processed=2048, bytes_billed=10 * 2**20)
    assert cells(costs_table(spent, saved_plan=False)) == [
        ["planning", "query jobs", "bytes processed", "bytes billed"],
        ["counted now", "2", "2.0 KiB", "10.0 MiB"],
    ]
    assert cells(costs_table(WarehouseCosts(), saved_plan=True))[1][0] == "a saved plan"
    facts = {"bytes_processed": 123456, "tables": {"a": 1, "b": "x"}, "exact": True}
    assert cells(facts_table(facts)) == [
        ["plan", "value"],
        ["bytes processed", "123,456"],
        ["tables", "a: 1, b: x"],
        ["exact", "True"],
    ]


def test_a_batch_table_fits_its_width_and_says_nulls() -> None:
    frame = pd.DataFrame(
        {
            "label": [1, 0],
            "x": [0.123456789, float("nan")],
            "name": ["a", None],
            "wide_column_name": [1.0, 2.0],
        }
    )
    table, hidden = batch_table(frame, width=200)
    assert hidden == 0
    assert cells(table) == [
        ["label", "x", "name", "wide_column_name"],
        ["1", "0.1235", "a", "1"],
        ["0", "NULL", "NULL", "2"],
    ]
    assert [column.justify for column in table.columns] == ["right", "right", "left", "right"]
    # label (5) + x (6) + name (4), each with 3 for padding and a border, and 1 more: 25.
    table, hidden = batch_table(frame, width=25)
    assert (cells(table)[0], hidden) == (["label", "x", "name"], 1)
    console = Console(width=25, record=True)
    console.print(table)
    assert max(len(line) for line in console.export_text().splitlines()) <= 25
    table, hidden = batch_table(frame, width=24)
    assert (cells(table)[0], hidden) == (["label", "x"], 2)
    table, hidden = batch_table(frame, width=1)  # the first column, whatever the width
    assert (cells(table)[0], hidden) == (["label"], 3)


def test_a_batch_table_says_null_for_a_missing_date() -> None:
    """Dates come in batches as Python dates, a missing one as None."""
    frame = pd.DataFrame({"ds": [datetime.date(2024, 1, 31), None]})
    table, _ = batch_table(frame, width=80)
    assert cells(table) == [["ds"], ["2024-01-31"], ["NULL"]]


def test_a_batch_row_stays_on_one_line_when_wider_than_the_terminal() -> None:
    frame = pd.DataFrame({"city": ["New York City", "Rio de Janeiro"], "x": [1.0, 2.0]})
    table, hidden = batch_table(frame, width=12)
    assert hidden == 1
    console = Console(width=12, record=True)
    console.print(table)
    lines = console.export_text().splitlines()
    assert len(lines) == 6  # the top border, the header, a rule, two rows, the bottom border
    rows = [line.strip("│ ") for line in lines[3:5]]
    assert rows[0].startswith("New Yor") and rows[1].startswith("Rio de")


def test_the_splits_table_of_a_source_without_rows_has_no_shares(make_reader: MakeReader) -> None:
    reader = make_reader(table_name=None, query="SELECT * FROM t WHERE id < 0")
    assert cells(splits_table(reader))[1:] == [
        ["train", "0", "-", "100.0%", "0", "-", "0"],
        ["eval", "0", "-", "0.0%", "0", "-", "0"],
    ]
