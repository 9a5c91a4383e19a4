"""Cached epochs of a table with a 128-wide embedding column against the same values
stored as 128 float columns.

Run from the repository root: ``python benchmarks/bench_embeddings.py [--rows 200000]
[--width 128] [--scalars 20] [--batch-size 1024]``. One DuckDB file holds two tables of
the same rows: ``wide`` (``id``, the scalars, ``e0`` ... ``e127``, ``label``) and
``embedded`` (``id``, the scalars, ``emb FLOAT[128]``, ``label``). For each output (numpy
batches, PyTorch tensors of a ``FaucetIterableDataset``) and each table, a reader fills
its cache in epoch 1; epochs 2 and 3 are served from the cache and timed, twice per table
in turns (wide, embedded, wide, embedded), keeping each table's best. Printed: rows/s of
each, and embedded / wide.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faucet_core import get_batch_reader


def make_tables(path: Path, rows: int, width: int, scalars: int) -> None:
    """Tables ``wide`` and ``embedded`` of the same ``rows`` rows."""
    scalar = ", ".join(f"random() AS s{i}" for i in range(scalars))
    elements = ", ".join(f"random()::FLOAT AS e{i}" for i in range(width))
    packed = "[" + ", ".join(f"e{i}" for i in range(width)) + f"]::FLOAT[{width}]"
    kept = ", ".join(f"s{i}" for i in range(scalars))
    with duckdb.connect(str(path)) as db:
        db.execute("SET enable_progress_bar = false")
        db.execute("SELECT setseed(0.25)")
        db.execute(
            f"CREATE TABLE wide AS SELECT i AS id, {scalar}, {elements}, "
            f"(hash(i) % 4 = 0)::INT AS label FROM range({rows}) r(i)"
        )
        db.execute(f"CREATE TABLE embedded AS SELECT id, {kept}, {packed} AS emb, label FROM wide")


def _batches(reader: Any, output: str) -> Callable[[], Iterator[Any]]:
    """One epoch of the reader's batches, as numpy batches or tensors."""
    if output == "numpy":
        return reader.iter_epoch
    import torch

    from faucet_core.torch import FaucetIterableDataset

    dataset = FaucetIterableDataset(reader, features_dtype=torch.float32)
    return lambda: iter(dataset)


def cached_rows_per_second(
    database: Path, table: str, cache: Path, output: str, args: argparse.Namespace
) -> float:
    """Rows/s of two epochs served from the cache (the first epoch fills it)."""
    with get_batch_reader(
        datastore="duckdb", database=str(database), table_name=table, split_key="id",
        label_columns=["label"], batch_size=args.batch_size, test_split_percent=0,
        output="numpy", seed=1, cache_dir=str(cache), epochs=100,
    ) as reader:  # fmt: skip
        epoch = _batches(reader, output)
        width = 0
        for batch in epoch():  # fills the cache
            width = batch["features"].shape[1] if output == "numpy" else batch[0].shape[1]
        started, rows = time.perf_counter(), 0
        for _ in range(2):
            for batch in epoch():
                rows += len(batch["features"] if output == "numpy" else batch[0])
        seconds = time.perf_counter() - started
    print(f"  {output:6} {table:9} {width} features: {rows / seconds:12,.0f} rows/s")
    return rows / seconds


def main() -> None:
    """Make the tables, time each output on both, print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--scalars", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        database = Path(folder) / "tables.duckdb"
        make_tables(database, args.rows, args.width, args.scalars)
        print(f"{args.rows:,} rows: {args.scalars} scalars and {args.width} floats, "
              f"as columns (wide) or one FLOAT[{args.width}] column (embedded)")  # fmt: skip
        for output in ("numpy", "torch"):
            best = {"wide": 0.0, "embedded": 0.0}
            for turn in range(2):
                for table in best:
                    cache = Path(folder) / f"cache-{output}-{table}-{turn}"
                    speed = cached_rows_per_second(database, table, cache, output, args)
                    best[table] = max(best[table], speed)
            print(f"{output}: embedded / wide = {best['embedded'] / best['wide']:.2f}x")


if __name__ == "__main__":
    main()
