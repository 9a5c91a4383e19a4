"""DuckDB: Parquet files as the source, and a `ds` partition filter."""

import os
import tempfile
from pathlib import Path

import duckdb

from faucet_core import get_batch_reader

# Two daily partitions of the example table, written as Parquet files with a `ds` column.
folder = Path(tempfile.mkdtemp())
with duckdb.connect(os.environ["FAUCET_EXAMPLE_DATABASE"], read_only=True) as db:
    for parity, day in enumerate(["2024-06-29", "2024-06-30"]):
        db.execute(
            f"COPY (SELECT *, DATE '{day}' AS ds FROM train WHERE id % 2 = {parity}) "
            f"TO '{folder / day}.parquet' (FORMAT parquet)"
        )

with get_batch_reader(
    datastore="duckdb",  # no database: the files are the source
    files=[str(folder / "*.parquet")],
    ds="2024-06-30",  # only rows whose `ds` column equals this date
    columns=["x1", "x2", "x3", "x4", "label"],  # neither `id` nor `ds` becomes a feature
    split_key="id",
    label_columns=["label"],
    test_split_percent=20,
    batch_size=1024,
    seed=7,
    output="numpy",
) as reader:
    print(f"train {reader.rows('train')} rows, eval {reader.rows('eval')} rows")

    rows = sum(len(batch["labels"]) for batch in reader.iter_epoch())
    assert rows == reader.rows("train")  # every row of the day's train split, once
    print(f"one epoch: {rows} rows of {reader.batches_per_epoch()} batches")
