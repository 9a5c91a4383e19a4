"""Ray Data over Faucet's chunks against Ray Data over Parquet, and Faucet's own reader.

Run from the repository root: ``python benchmarks/bench_ray.py [--rows 1000000]``. Makes
the 24-column table of ``bench_duckdb.py`` (sorted by label) in a DuckDB file, exports it
once to Parquet files (one per 100,000 rows, as many as Faucet has chunks), starts a
local Ray cluster of two CPUs and runs one warm-up dataset (so no contender pays for
starting Ray's workers), then reads two epochs of 1024-row Arrow batches with each
contender, each with an empty cache:

- ``ray.data.read_parquet``: Ray Data reading the Parquet files, unshuffled;
- ``read_faucet``: a dataset per epoch from ``faucet_core.ray.read_faucet`` (epoch 1
  includes planning, the one scan that fills the cache and the read tasks; epoch 2's
  tasks read the cache);
- ``faucet reader``: Faucet's single-process reader, no Ray.

Printed per contender and epoch: time to the first batch (from creating the dataset or
reader), rows/s, and the ratios of rows/s to ``read_parquet``'s and the reader's.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

# A cluster of this machine alone: loopback addresses, no usage report (before Ray loads).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import duckdb
import ray
import ray.data
from bench_duckdb import make_table

from faucet_core import Reader, load_config
from faucet_core.config import FaucetConfig
from faucet_core.ray import read_faucet

PARQUET_ROWS = 100_000  # rows per Parquet file: Faucet's default chunk size


def export_parquet(database: Path, folder: Path, rows: int) -> None:
    """Table ``train`` as Parquet files of ``PARQUET_ROWS`` rows each."""
    folder.mkdir()
    with duckdb.connect(str(database), read_only=True) as db:
        db.execute("SET enable_progress_bar = false")
        for index, offset in enumerate(range(0, rows, PARQUET_ROWS)):
            target = str(folder / f"part-{index:04d}.parquet").replace("'", "''")
            db.execute(
                f"COPY (SELECT * FROM train LIMIT {PARQUET_ROWS} OFFSET {offset}) "
                f"TO '{target}' (FORMAT parquet)"
            )


def timed(contender: str, epoch: int, batches: Callable[[], Iterable[Any]]) -> dict[str, Any]:
    """Rows, seconds and time to the first batch of one epoch, from calling ``batches``."""
    os.sync()  # the previous contender's writes are not flushed on this one's time
    started, first, rows = time.perf_counter(), 0.0, 0
    for batch in batches():
        rows += batch.num_rows
        first = first or time.perf_counter() - started
    seconds = time.perf_counter() - started
    return {"contender": contender, "epoch": epoch, "rows": rows, "seconds": seconds,
            "first": first}  # fmt: skip


def bench_parquet(folder: Path, batch_size: int) -> list[dict[str, Any]]:
    def epoch() -> Iterable[Any]:
        dataset = ray.data.read_parquet(str(folder))
        return dataset.iter_batches(batch_size=batch_size, batch_format="pyarrow")

    return [timed("ray.data.read_parquet", e, epoch) for e in (1, 2)]


def bench_read_faucet(config: FaucetConfig, batch_size: int) -> list[dict[str, Any]]:
    def epoch(number: int) -> Callable[[], Iterable[Any]]:
        def batches() -> Iterable[Any]:
            dataset = read_faucet(config, epoch=number)
            return dataset.iter_batches(batch_size=batch_size, batch_format="pyarrow")

        return batches

    return [timed("read_faucet", e, epoch(e)) for e in (1, 2)]


def bench_reader(config: FaucetConfig) -> list[dict[str, Any]]:
    reader: list[Reader] = []

    def epoch() -> Iterable[Any]:
        if not reader:
            reader.append(Reader(config))
        return (batch["features"] for batch in reader[0].iter_epoch())

    results = [timed("faucet reader", e, epoch) for e in (1, 2)]
    reader[0].close()
    return results


def main() -> None:
    """Run every contender and print rows/s, first batch and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--dir", type=Path, help="Where the table and caches go (default: temp).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as temp:
        folder = Path(temp)
        database = folder / "train.duckdb"
        make_table(database, args.rows, 24)
        export_parquet(database, folder / "parquet", args.rows)

        def config(cache: str) -> FaucetConfig:
            return load_config(
                datastore="duckdb", database=str(database), table_name="train", epochs=2,
                batch_size=args.batch_size, split_key="id", label_columns=["label"], seed=1,
                output="arrow", cache_dir=str(folder / cache),
            )  # fmt: skip

        ray.init(
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=2 * 2**30,
            logging_level="warning",
            _temp_dir=str(folder / "ray"),  # short, as Ray's socket paths must be
        )
        ray.data.DataContext.get_current().enable_progress_bars = False
        ray.data.range(100).materialize()  # start the workers before any contender
        results = bench_parquet(folder / "parquet", args.batch_size)
        results += bench_read_faucet(config("ray-cache"), args.batch_size)
        results += bench_reader(config("reader-cache"))
        ray.shutdown()

    rate = {(r["contender"], r["epoch"]): r["rows"] / r["seconds"] for r in results}
    print(f"{args.rows:,} rows, 24 columns, {args.batch_size}-row Arrow batches, "
          "a local Ray cluster of 2 CPUs")  # fmt: skip
    print(f"{'contender':24} {'epoch':>5} {'rows':>10} {'first batch':>12} {'rows/s':>12} "
          f"{'x parquet':>10} {'x reader':>9}")  # fmt: skip
    for r in results:
        own = rate[(r["contender"], r["epoch"])]
        parquet = own / rate[("ray.data.read_parquet", r["epoch"])]
        reader = own / rate[("faucet reader", r["epoch"])]
        print(f"{r['contender']:24} {r['epoch']:5} {r['rows']:10,} {r['first']:11.2f}s "
              f"{own:12,.0f} {parquet:10.2f} {reader:9.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
