"""Faucet against the ways people read Snowflake for training, on the local stand-in, in one run.

Run from the repository root: ``python benchmarks/bench_snowflake.py [--rows 200000]``.
Starts fakesnow's server (the stand-in the tests use; the real connector talks to it over
HTTP), makes a table of ``--rows`` rows and 10 columns sorted by label, then compares, in
``--batch-size``-row pandas batches:

- ``fetch_pandas_all``: one query of the whole table into one DataFrame, unshuffled (the
  local limit, and what fits in memory only for small tables);
- ``faucet epoch 1`` (planning, the scratch copy, one streamed read into the cache) and
  ``faucet epoch 2`` (from the cache);
- ``query per batch``: one ``ORDER BY ID LIMIT/OFFSET`` query per batch, over
  ``--strawman-batches`` batches spread across the table.

The contenders take turns for ``--repeat`` rounds; the medians (of rates, and of ratios
within a round) are printed.

fakesnow runs DuckDB in one Python process and sends each result as one batch: the
figures say how Faucet's own work compares with the connector's, not how fast Snowflake is.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faucet_core import get_batch_reader
from tests.snowserver import SnowServer, running_snowflake

DATABASE, SCHEMA = "BENCH", "PUBLIC"


def make_table(server: SnowServer, rows: int) -> None:
    """Table ``TRAIN``: ``ID``, 8 float features, a 0/1 ``LABEL``, sorted by label."""
    features = ", ".join(f"uniform(0::float, 1::float, random()) AS X{i}" for i in range(1, 9))
    with server.connect() as db, db.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
        cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {DATABASE}.{SCHEMA}")
        cursor.execute(
            f"CREATE TABLE {DATABASE}.{SCHEMA}.TRAIN AS SELECT seq4() AS ID, {features}, "
            f"IFF(MOD(seq4(), 4) = 0, 1, 0) AS LABEL FROM TABLE(GENERATOR(ROWCOUNT => {rows})) "
            "ORDER BY LABEL, ID"
        )


def bench_fetch_pandas_all(server: SnowServer) -> dict[str, Any]:
    started = time.perf_counter()
    with server.connect(database=DATABASE, schema=SCHEMA) as db, db.cursor() as cursor:
        cursor.execute("SELECT * FROM TRAIN")
        rows = len(cursor.fetch_pandas_all())
    seconds = time.perf_counter() - started
    return {"name": "fetch_pandas_all", "rows": rows, "seconds": seconds, "first": seconds}


def bench_faucet(server: SnowServer, cache: Path, batch_size: int) -> list[dict[str, Any]]:
    started = time.perf_counter()
    reader = get_batch_reader(
        datastore="snowflake", **server.settings(database=DATABASE, schema=SCHEMA),
        table_name="TRAIN", epochs=2, batch_size=batch_size, split_key="ID",
        label_columns=["LABEL"], seed=1, cache_dir=str(cache),
    )  # fmt: skip
    results = []
    for epoch in (1, 2):
        rows, first = 0, 0.0
        for batch in reader.iter_epoch():
            rows += len(batch["features"])
            first = first or time.perf_counter() - started
        results.append({"name": f"faucet epoch {epoch}", "rows": rows,
                        "seconds": time.perf_counter() - started, "first": first,
                        "queries": reader.costs.query_jobs})  # fmt: skip
        started = time.perf_counter()
    reader.close()
    return results


def bench_query_per_batch(
    server: SnowServer, rows: int, batch_size: int, batches: int
) -> dict[str, Any]:
    step = max(1, rows // batch_size // batches)
    started, first, read = time.perf_counter(), 0.0, 0
    connection = server.connect(database=DATABASE, schema=SCHEMA, paramstyle="qmark")
    with connection as db, db.cursor() as cursor:
        for k in range(batches):
            cursor.execute(
                "SELECT * FROM TRAIN ORDER BY ID LIMIT ? OFFSET ?",
                (batch_size, k * step * batch_size),
            )
            read += len(cursor.fetch_pandas_all())
            first = first or time.perf_counter() - started
    return {"name": f"query per batch ({batches} batches)", "rows": read,
            "seconds": time.perf_counter() - started, "first": first}  # fmt: skip


def main() -> None:
    """Run every contender and print rows/s and ratios to ``fetch_pandas_all``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--strawman-batches", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians are printed")
    args = parser.parse_args()
    rounds = []
    with tempfile.TemporaryDirectory() as folder, running_snowflake(Path(folder)) as server:
        make_table(server, args.rows)
        for round_ in range(args.repeat):  # contenders take turns: noise hits each alike
            results = [bench_fetch_pandas_all(server)]
            results += bench_faucet(server, Path(folder) / f"cache-{round_}", args.batch_size)
            results.append(
                bench_query_per_batch(server, args.rows, args.batch_size, args.strawman_batches)
            )
            rounds.append(results)
    print(f"{args.rows:,} rows, 10 columns, {args.batch_size}-row batches, fakesnow server, "
          f"median of {args.repeat} rounds")  # fmt: skip
    print(f"{'contender':32} {'rows/s':>12} {'x fetch_pandas_all':>19} {'first batch':>12}")
    ratios = [[r["rows"] / r["seconds"] for r in results] for results in rounds]
    for i, r in enumerate(rounds[0]):
        rate = statistics.median(rates[i] for rates in ratios)
        ratio = statistics.median(rates[i] / rates[0] for rates in ratios)
        first = statistics.median(results[i]["first"] for results in rounds)
        print(f"{r['name']:32} {rate:12,.0f} {ratio:19.2f} {first:11.2f}s")
    print(f"faucet warehouse queries for both epochs: {rounds[0][2]['queries']}")


if __name__ == "__main__":
    main()
