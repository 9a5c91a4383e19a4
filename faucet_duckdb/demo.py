"""The embedded demo: generate a DuckDB training table and stream it through Faucet.

Run with ``python -m faucet_duckdb.demo [--rows N] [--epochs E]``. It needs no account and
no network: it writes a seeded table to a temporary DuckDB file, then serves train and
eval epochs from it and prints what happened in each pass.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from faucet_core import get_batch_reader


def make_table(path: Path, rows: int, seed: int) -> None:
    """Write a table ``train`` of ``rows`` rows, sorted by label, to the DuckDB file ``path``."""
    import duckdb

    with duckdb.connect(str(path)) as db:
        db.execute(f"SELECT setseed({(seed % 1000) / 1000})")
        db.execute(
            f"""
            CREATE TABLE train AS
            SELECT i AS id, x1, x2, x3, (x1 + 2 * x2 - x3 + 0.1 * random() > 1.0)::INT AS label
            FROM (SELECT i, random() AS x1, random() AS x2, random() AS x3 FROM range({rows}) r(i))
            ORDER BY label
            """
        )


def main(argv: list[str] | None = None) -> None:
    """Generate the table and run the classic train/eval loop over it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to generate")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--chunk-size", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    with tempfile.TemporaryDirectory(prefix="faucet-demo-") as folder:
        database = Path(folder) / "warehouse.duckdb"
        started = time.perf_counter()
        make_table(database, args.rows, args.seed)
        print(
            f"generated {args.rows:,} rows (sorted by label) in {database} "
            f"in {time.perf_counter() - started:.1f}s"
        )
        reader = get_batch_reader(
            datastore="duckdb",
            database=str(database),
            table_name="train",
            epochs=args.epochs,
            batch_size=args.batch_size,
            chunk_size=args.chunk_size,
            test_split_percent=20,
            split_key="id",
            label_columns=["label"],
            seed=args.seed,
            cache_dir=str(Path(folder) / "cache"),
        )
        with reader:
            batches = reader.batches_per_epoch("train")
            print(
                f"planned: train {reader.rows('train'):,} rows, eval {reader.rows('eval'):,} "
                f"rows, {batches:,} train batches per epoch"
            )
            for _ in range(args.epochs):
                reader.prep_for_epoch()
                spread = []
                batch = reader.get_batch()
                while batch is not None:
                    spread.append(float(batch["labels"]["label"].mean()))
                    batch = reader.get_batch()
                reader.prep_for_eval()
                eval_rows = 0
                batch = reader.get_batch(eval=True)
                while batch is not None:
                    eval_rows += len(batch["labels"])
                    batch = reader.get_batch(eval=True)
                train = reader.metrics[-2]
                print(
                    f"epoch {reader.epoch}: train {train.rows:,} rows in {train.batches} batches "
                    f"at {train.rows_per_second:,.0f} rows/s (waited {train.wait_seconds:.2f}s; "
                    f"chunks fetched {train.chunks_fetched}, from cache {train.chunks_cached}); "
                    f"label mean per batch {min(spread):.2f}..{max(spread):.2f}; "
                    f"eval {eval_rows:,} rows"
                )
            if reader.cache is not None:
                stats = reader.cache.stats
                print(
                    f"cache: {stats.hits} hits, {stats.misses} misses, {stats.writes} writes, "
                    f"{reader.cache.total_bytes / 2**20:.1f} MiB on disk"
                )


if __name__ == "__main__":
    main()
