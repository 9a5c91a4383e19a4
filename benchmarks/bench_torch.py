"""A PyTorch DataLoader over Faucet against one over DuckDB's own record-batch stream.

Run from the repository root: ``python benchmarks/bench_torch.py [--rows 1000000]``.
Both sides use the same DataLoader workers and yield ``(features, labels)`` tensors of
1024 rows; the plain dataset streams a disjoint slice of the table per worker, unshuffled
(the local limit), while Faucet serves shuffled, split, cached batches.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faucet_core import get_batch_reader
from faucet_core.torch import FaucetDataLoader, FaucetIterableDataset
from faucet_duckdb.demo import make_table

FEATURES = ["x1", "x2", "x3", "x4"]
#: Epochs timed of each contender that can run several (the medians are printed).
EPOCHS = 3


class DuckDBStream(IterableDataset[tuple[torch.Tensor, torch.Tensor]]):
    """Tensor batches from DuckDB's record-batch reader; worker ``w`` reads ``id % W == w``."""

    def __init__(self, database: str, batch_size: int) -> None:
        self.database = database
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        import duckdb

        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        with duckdb.connect(self.database, read_only=True) as db:
            query = (
                f"SELECT {', '.join(FEATURES)}, label FROM train WHERE id % {workers} = {worker}"
            )
            for batch in db.sql(query).to_arrow_reader(self.batch_size):
                # zero_copy_only=False: a NULL is NaN, as in Faucet's float tensors
                columns = [batch.column(name).to_numpy(zero_copy_only=False) for name in FEATURES]
                yield (
                    torch.from_numpy(np.column_stack(columns)),
                    torch.from_numpy(batch.column("label").to_numpy()),
                )


def drain(loader: DataLoader[tuple[torch.Tensor, torch.Tensor]]) -> tuple[int, float, float]:
    """Rows, seconds and time to first batch of one pass over ``loader``."""
    started = time.perf_counter()
    rows, first = 0, 0.0
    for features, _ in loader:
        first = first or time.perf_counter() - started
        rows += len(features)
    return rows, time.perf_counter() - started, first


def median_pass(passes: list[tuple[int, float, float]]) -> tuple[float, float]:
    """The median rows/s and time to first batch of ``passes`` (from :func:`drain`)."""
    rates = [rows / seconds for rows, seconds, _ in passes]
    return statistics.median(rates), statistics.median(first for _, _, first in passes)


def main() -> None:
    """Time one epoch each way, per worker count, and print rows/s and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        database = Path(folder) / "warehouse.duckdb"
        make_table(database, args.rows, seed=1)
        reader = get_batch_reader(
            datastore="duckdb", database=str(database), table_name="train",
            columns=[*FEATURES, "label"], split_key="id", label_columns=["label"],
            batch_size=args.batch_size, chunk_size=100_000, seed=1,
            cache_dir=str(Path(folder) / "cache"),
        )  # fmt: skip
        print(
            f"{args.rows:,} rows, {args.batch_size}-row batches, tensors (features, labels); "
            f"medians of {EPOCHS} epochs, but the cold cache's one"
        )
        print(f"{'workers':>7} {'contender':24} {'rows/s':>12} {'ratio':>7} {'first batch':>12}")
        with reader:
            dataset = FaucetIterableDataset(reader)
            for workers in args.workers:
                plain = DataLoader(DuckDBStream(str(database), args.batch_size),
                                   batch_size=None, num_workers=workers)  # fmt: skip
                drain(plain)  # warm the OS page cache for both sides
                base, base_first = median_pass([drain(plain) for _ in range(EPOCHS)])
                print(f"{workers:7} {'duckdb record batches':24} {base:12,.0f} {1:7.2f} "
                      f"{base_first:11.3f}s")  # fmt: skip
                for label, epochs in (("faucet (cold cache)", 1), ("faucet (cached)", EPOCHS)):
                    if label.endswith("(cold cache)") and reader.cache is not None:
                        reader.cache.clear()
                    passes, waited = [], []
                    for _ in range(epochs):
                        loader = FaucetDataLoader(dataset, num_workers=workers)
                        passes.append(drain(loader))
                        waited.append(loader.metrics.wait_fraction)
                    rate, first = median_pass(passes)
                    print(f"{workers:7} {label:24} {rate:12,.0f} {rate / base:7.2f} "
                          f"{first:11.3f}s  (loop waited {statistics.median(waited):.0%} "
                          "of the epoch)")  # fmt: skip


if __name__ == "__main__":
    main()
