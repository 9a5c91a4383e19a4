"""One epoch of 1024-row batches from a DuckDB table: Faucet against DuckDB's own stream.

Run from the repository root: ``python benchmarks/bench_duckdb.py [--rows 1000000]
[--output arrow|pandas|numpy]``. Side by side in one process, on one table sorted by label
(the worst storage order for mixing):

- DuckDB's Arrow record-batch stream of the table, unshuffled: the local limit;
- one ``LIMIT/OFFSET`` query per batch, over a sample of batches spread over the table;
- Faucet: the first epoch (planning, materializing, reading, caching) and cached epochs.

Each contender's batches are converted to the same ``--output`` format. Printed: rows/s
and the ratio to the raw stream, time to first batch, peak Arrow memory, and how mixed
the batches are (mean distance of a batch's label mean from the table's).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faucet_core import get_batch_reader
from faucet_core.output import format_batch
from faucet_duckdb.demo import make_table

FEATURES = ["id", "x1", "x2", "x3", "x4"]


class Run:
    """Figures of one contender's pass."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.rows = 0
        self.seconds = 0.0
        self.first = 0.0
        self.peak_bytes = 0
        self.spread: list[float] = []

    @property
    def rate(self) -> float:
        """Rows per second."""
        return self.rows / self.seconds if self.seconds else 0.0


def measure(name: str, batches: Callable[[], Iterator[pa.Table]], output: str) -> Run:
    """Drain ``batches``, converting each to ``output``, and record the figures."""
    run = Run(name)
    pool = pa.default_memory_pool()
    pool.release_unused()
    start_bytes = pool.bytes_allocated()
    peak = start_bytes
    started = time.perf_counter()
    for table in batches():
        batch = format_batch(table, FEATURES, ["label"], output)  # type: ignore[arg-type]
        run.first = run.first or time.perf_counter() - started
        run.rows += table.num_rows
        run.spread.append(float(np.mean(table.column("label").to_numpy())))
        peak = max(peak, pool.bytes_allocated())
        del batch
    run.seconds = time.perf_counter() - started
    run.peak_bytes = peak - start_bytes
    return run


def raw_stream(database: Path, batch_size: int) -> Callable[[], Iterator[pa.Table]]:
    """DuckDB's Arrow record batches of the whole table, in storage order."""

    def batches() -> Iterator[pa.Table]:
        with duckdb.connect(str(database), read_only=True) as db:
            for batch in db.sql("SELECT * FROM train").to_arrow_reader(batch_size):
                yield pa.Table.from_batches([batch])

    return batches


def query_per_batch(
    database: Path, batch_size: int, rows: int, sample: int
) -> Callable[[], Iterator[pa.Table]]:
    """One ``LIMIT/OFFSET`` query per batch, for ``sample`` batches spread over the table."""

    def batches() -> Iterator[pa.Table]:
        step = max(1, rows // batch_size // sample)
        with duckdb.connect(str(database), read_only=True) as db:
            for k in range(sample):
                offset = k * step * batch_size
                sql = f"SELECT * FROM train ORDER BY id LIMIT {batch_size} OFFSET {offset}"
                yield db.sql(sql).to_arrow_table()

    return batches


def faucet_epochs(
    database: Path, cache: Path, batch_size: int, epochs: int
) -> list[Callable[[], Iterator[pa.Table]]]:
    """One callable per epoch of one Faucet reader (planning counts in the first)."""
    state: dict[str, Any] = {}

    def epoch() -> Iterator[pa.Table]:
        if "reader" not in state:
            state["reader"] = get_batch_reader(
                datastore="duckdb", database=str(database), table_name="train", epochs=epochs,
                batch_size=batch_size, chunk_size=100_000, split_key="id", label_columns=["label"],
                seed=1, output="arrow", cache_dir=str(cache),
            )  # fmt: skip
        reader = state["reader"]
        for batch in reader.iter_epoch():
            yield _join(batch)
        if reader.epoch == epochs:
            state["metrics"] = [m.as_dict() for m in reader.metrics]
            reader.close()

    return [epoch] * epochs


def _join(batch: dict[str, Any]) -> pa.Table:
    features: pa.Table = batch["features"]
    return features.append_column("label", batch["labels"].column("label"))


def main() -> None:
    """Run the contenders and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--output", choices=["arrow", "pandas", "numpy"], default="arrow")
    parser.add_argument("--strawman-batches", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        database = Path(folder) / "warehouse.duckdb"
        make_table(database, args.rows, seed=1)
        raw = raw_stream(database, args.batch_size)
        measure("warm-up", raw, args.output)  # page cache and Arrow kernels, for every side
        runs = [measure("duckdb record batches", raw, args.output)]
        strawman = query_per_batch(database, args.batch_size, args.rows, args.strawman_batches)
        runs.append(
            measure(f"LIMIT/OFFSET per batch ({args.strawman_batches})", strawman, args.output)
        )
        epochs = faucet_epochs(database, Path(folder) / "cache", args.batch_size, args.epochs)
        for number, epoch in enumerate(epochs, start=1):
            label = "faucet epoch 1 (cold)" if number == 1 else f"faucet epoch {number} (cached)"
            runs.append(measure(label, epoch, args.output))
    base = runs[0].rate
    mean = float(np.mean(runs[0].spread))  # the table's share of label 1
    print(
        f"{args.rows:,} rows sorted by label, {args.batch_size}-row batches, output {args.output}"
    )
    header = ("contender", "rows/s", "ratio", "first batch", "peak arrow", "mix")
    print("{:34} {:>13} {:>6} {:>12} {:>11} {:>6}".format(*header))
    for run in runs:
        mix = float(np.mean([abs(m - mean) for m in run.spread])) if run.spread else 0.0
        print(f"{run.name:34} {run.rate:13,.0f} {run.rate / base:6.2f} {run.first:11.3f}s "
              f"{run.peak_bytes / 2**20:9.1f}MB {mix:6.3f}")  # fmt: skip
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"process peak RSS {rss:,.0f} MB; 'mix' is the mean distance of a batch's label mean "
          f"from the table's ({mean:.3f}): 0 is perfectly mixed")  # fmt: skip


if __name__ == "__main__":
    main()
