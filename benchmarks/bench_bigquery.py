"""Faucet against the ways people read BigQuery for training, on bqemulator, in one run.

Run from the repository root: ``python benchmarks/bench_bigquery.py [--rows 200000]``.
Compares one epoch of 1024-row batches from Faucet (planning: the scratch copy and the
count of its rows, both timed; then one Storage Read API session filling the cache; then
the cache), with read sessions of one stream and of several, against the raw Storage Read
API stream of the table with as many streams (unshuffled: the local limit),
one query per batch (``LIMIT/OFFSET``, the strawman) and ``query(...).to_dataframe()`` of
the whole split, and counts the query jobs each issues. Before any contender runs, the
client libraries are imported and the emulator's Storage Read API serves a small table
once, so none pays for the first import or the emulator's first read. Last, the floor of
Faucet's streaming on this machine: one read of the scratch copy, then a cached epoch.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa

from faucet_core import get_batch_reader
from tests.bqemulator import BigQueryEmulator, running_emulator

TABLE = "bench.events"


def make_table(emulator: BigQueryEmulator, rows: int) -> None:
    """A table of ``rows`` rows (id, four features, label), sorted by label."""
    client = emulator.client()
    client.create_dataset("bench", exists_ok=True)
    client.query(f"DROP TABLE IF EXISTS {TABLE}").result()
    client.query(
        f"""
        CREATE TABLE {TABLE} AS
        SELECT i AS id, RAND() AS x1, RAND() AS x2, RAND() AS x3, RAND() AS x4,
               CAST(MOD(i, 2) = 0 AS INT64) AS label
        FROM UNNEST(GENERATE_ARRAY(0, {rows - 1})) AS i
        ORDER BY label
        """
    ).result()


def jobs(emulator: BigQueryEmulator) -> int:
    """Query jobs the emulator has run so far."""
    return sum(1 for _ in emulator.client().list_jobs(all_users=True))


def bench_faucet(
    emulator: BigQueryEmulator, cache: Path, batch_size: int, streams: int
) -> list[dict[str, Any]]:
    """Two epochs from Faucet, its read sessions asking for ``streams`` streams: the first
    reads BigQuery, the second the local cache."""
    before = jobs(emulator)
    started = time.perf_counter()
    reader = get_batch_reader(
        datastore="bigquery", table_name=TABLE, epochs=2, batch_size=batch_size,
        chunk_size=50_000, label_columns=["label"], seed=1, output="arrow",
        cache_dir=str(cache), read_streams=streams, **emulator.settings(),
        # A split key of each run's own: each plans and copies (the same rows), rather than
        # finding the copy of the run before.
        split_key=["id"] if streams == 1 else ["id", "label"],
    )  # fmt: skip
    # Planning: the scratch copy, then counting it; what follows is streaming.
    plan_seconds = time.perf_counter() - started
    results = []
    for epoch in (1, 2):
        reader.prep_for_epoch()
        started = time.perf_counter()
        first, rows = 0.0, 0
        while (batch := reader.get_batch()) is not None:
            first = first or time.perf_counter() - started
            rows += batch["features"].num_rows
        seconds = time.perf_counter() - started + (plan_seconds if epoch == 1 else 0)
        results.append({"name": f"faucet epoch {epoch} ({streams} st.)", "rows": rows,
                        "seconds": seconds,
                        "first": first + (plan_seconds if epoch == 1 else 0)})  # fmt: skip
    scan_started = time.perf_counter()
    for _ in reader.stream.warehouse().scan(reader.plan) or ():
        pass  # one read of the scratch copy, as the cache fill reads it
    results[0]["scan"] = time.perf_counter() - scan_started
    reader.close()
    results[0]["jobs"] = jobs(emulator) - before
    results[1]["jobs"] = 0
    streamed = results[0]["seconds"] - plan_seconds
    results.insert(1, {"name": "  of which streaming", "rows": results[0]["rows"],
                       "seconds": streamed, "first": results[0]["first"] - plan_seconds,
                       "jobs": 0})  # fmt: skip
    return results


def bench_raw_stream(
    emulator: BigQueryEmulator, batch_size: int, streams: int = 1, name: str = TABLE
) -> dict[str, Any]:
    """The table's rows through one Storage Read API session of up to ``streams`` streams,
    read at once (a thread each), cut into batches."""
    from google.cloud.bigquery_storage_v1 import types

    from faucet_bigquery.connection import BigQueryConnection

    connection = BigQueryConnection(**emulator.settings())
    client = connection.read_client(connection.credentials())
    project, dataset, table = emulator.project, *name.split(".")
    started = time.perf_counter()
    session = client.create_read_session(
        parent=f"projects/{project}",
        read_session=types.ReadSession(
            table=f"projects/{project}/datasets/{dataset}/tables/{table}",
            data_format=types.DataFormat.ARROW,
        ),
        max_stream_count=streams,
    )
    schema = pa.ipc.read_schema(pa.py_buffer(session.arrow_schema.serialized_schema))
    firsts: list[float] = []

    def read(stream: Any) -> int:
        rows = 0
        for response in client.read_rows(stream.name):
            data = response.arrow_record_batch.serialized_record_batch
            batch = pa.ipc.read_record_batch(pa.py_buffer(data), schema)
            for offset in range(0, batch.num_rows, batch_size):
                rows += batch.slice(offset, batch_size).num_rows
                if not firsts:
                    firsts.append(time.perf_counter() - started)
        return rows

    with ThreadPoolExecutor(max(1, len(session.streams))) as pool:
        rows = sum(pool.map(read, session.streams))
    return {"name": f"raw Storage Read ({len(session.streams)} st.)", "rows": rows,
            "seconds": time.perf_counter() - started, "first": firsts[0], "jobs": 0}  # fmt: skip


def bench_query_per_batch(
    emulator: BigQueryEmulator, rows: int, batch_size: int, batches: int
) -> dict[str, Any]:
    """One ``LIMIT/OFFSET`` query per batch, over ``batches`` batches spread across the table."""
    client = emulator.client()
    before = jobs(emulator)
    step = max(1, rows // batch_size // batches)
    started, first, read = time.perf_counter(), 0.0, 0
    for k in range(batches):
        offset = k * step * batch_size
        result = client.query(
            f"SELECT * FROM {TABLE} ORDER BY id LIMIT {batch_size} OFFSET {offset}"
        ).to_arrow(create_bqstorage_client=False)
        first = first or time.perf_counter() - started
        read += result.num_rows
    seconds = time.perf_counter() - started
    return {"name": f"query per batch ({batches} batches)", "rows": read, "seconds": seconds,
            "first": first, "jobs": jobs(emulator) - before}  # fmt: skip


def bench_whole_split(emulator: BigQueryEmulator, batch_size: int) -> dict[str, Any]:
    """``query(...).to_dataframe()`` of the whole table, then batches sliced from it."""
    client = emulator.client()
    before = jobs(emulator)
    started = time.perf_counter()
    frame = (
        client.query(f"SELECT * FROM {TABLE}").to_arrow(create_bqstorage_client=False).to_pandas()
    )
    first = time.perf_counter() - started
    rows = sum(len(frame.iloc[i : i + batch_size]) for i in range(0, len(frame), batch_size))
    seconds = time.perf_counter() - started
    return {"name": "query().to_dataframe()", "rows": rows, "seconds": seconds,
            "first": first, "jobs": jobs(emulator) - before}  # fmt: skip


def _import_clients() -> None:
    """Import the BigQuery client libraries (the first import of the Storage Read API's
    takes a few tenths of a second, which would count against whichever contender ran
    first)."""
    import google.cloud.bigquery
    import google.cloud.bigquery_storage_v1  # noqa: F401


def _warm_up(emulator: BigQueryEmulator) -> None:
    """The emulator's first Storage Read API session, on a table of its own."""
    emulator.client().query(
        "CREATE OR REPLACE TABLE bench.warm_up AS SELECT 1 AS id, 0.5 AS x"
    ).result()
    bench_raw_stream(emulator, 1024, name="bench.warm_up")


def main() -> None:
    """Run every contender and print rows/s, ratios to Faucet's first epoch, and jobs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--streams", type=int, default=4, help="streams per read session")
    parser.add_argument("--strawman-batches", type=int, default=40)
    args = parser.parse_args()
    _import_clients()
    runs = {}
    with tempfile.TemporaryDirectory() as folder, running_emulator(Path(folder)) as emulator:
        make_table(emulator, args.rows)
        _warm_up(emulator)
        for streams in (1, args.streams):
            faucet = bench_faucet(emulator, Path(folder) / f"cache{streams}", args.batch_size,
                                  streams)  # fmt: skip
            runs[streams] = (faucet, bench_raw_stream(emulator, args.batch_size, streams))
        strawman = bench_query_per_batch(
            emulator, args.rows, args.batch_size, args.strawman_batches
        )
        whole = bench_whole_split(emulator, args.batch_size)
    faucet, raw = runs[args.streams]
    results = [*runs[1][0], runs[1][1], *faucet, raw, strawman, whole]
    baseline = faucet[0]["rows"] / faucet[0]["seconds"]
    print(f"{args.rows:,} rows, {args.batch_size}-row batches, bqemulator on this machine")
    print(f"{'contender':36} {'rows/s':>12} {'x faucet e1':>12} {'first batch':>12} {'jobs':>6}")
    for r in results:
        rate = r["rows"] / r["seconds"]
        print(f"{r['name']:36} {rate:12,.0f} {rate / baseline:12.2f} {r['first']:11.2f}s "
              f"{r['jobs']:6}")  # fmt: skip
    for streams, (run, raw) in runs.items():
        streamed = run[1]["rows"] / run[1]["seconds"]
        raw_rate = raw["rows"] / raw["seconds"]
        # Every chunk holds rows from all over the table: nothing but a first chunk can be
        # served before the one read of the scratch copy ends.
        scan, cached = run[0]["scan"], run[2]["seconds"]
        floor = run[1]["rows"] / (scan + cached)
        print(
            f"{streams} stream(s) asked: streaming after planning {streamed / raw_rate:.2f}x "
            f"the raw Storage Read stream of as many streams; floor (one read of the scratch "
            f"copy {scan:.3f} s, then a cached epoch {cached:.3f} s): {floor / raw_rate:.2f}x"
        )
    full_jobs = args.rows // args.batch_size
    print(f"one query per batch would issue {full_jobs:,} jobs for one epoch; Faucet issued "
          f"{faucet[0]['jobs']} for all its epochs ({strawman['jobs']} for "
          f"{args.strawman_batches} strawman batches)")  # fmt: skip


if __name__ == "__main__":
    main()
