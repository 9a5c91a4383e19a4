"""Transient faults: chunk reads failing 10% and 30% of the time, on every built-in
warehouse, and (BigQuery) connections dropped, reset and delayed by a proxy; every pass
still serves each row of its split exactly once, and the retries show in the metrics.

Faults are injected at the plugin boundary (:mod:`tests.reliability.faults`): the n-th
read of a chunk fails by a seeded draw, whatever the thread timing. The core reads a
chunk through ``read_buckets`` (retried, counted in ``PassMetrics.retries``) or fills the
cache from one ``scan`` of the source (not retried: a failed scan leaves the chunks to be
read one by one). Each warehouse is read twice per rate: without a cache, so every pass
reads the warehouse under faults; and with one, whose one-scan fill fails mid-stream, so
the first passes read chunk by chunk under faults and the next are served from the cache
(which must hold nothing the failed scan half wrote).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from faucet_core import ChunkReadError, Reader
from tests.bqemulator import BigQueryEmulator
from tests.proxies import ConnectionFaults, TcpProxy
from tests.reliability.faults import FAULTY, Case, Check, FaultPlugin, Faults, case, exactly_once
from tests.reliability.figures import record

MakeReader = Callable[..., Reader]
SEED = 16
#: Enough tries that a chunk failing on every one (0.3**8, by the seeded draws) never happens.
ATTEMPTS = 8
FAST_RETRIES: dict[str, Any] = {
    "retry_attempts": ATTEMPTS, "initial_backoff": 0.001, "max_backoff": 0.005,
}  # fmt: skip
#: Rows per chunk: about 18 train chunks and 2 eval ones per table (fewer, slower stand-ins).
CHUNK_SIZE = {"duckdb": 250, "postgres": 250, "redshift": 250, "snowflake": 500, "bigquery": 500}


@pytest.fixture(autouse=True)
def faulty_warehouses(register: Callable[[object], None]) -> None:
    register(FaultPlugin(*FAULTY.values()))


def pass_keys(reader: Reader, key: str, eval: bool = False) -> list[Any]:
    """The split key of every row one pass serves (a training epoch, or an eval pass)."""
    if eval:
        reader.prep_for_eval()
    else:
        reader.prep_for_epoch()
    keys: list[Any] = []
    while (batch := reader.get_batch(eval=eval)) is not None:
        keys.extend(batch["features"].column(key).to_pylist())
    return keys


def check_passes(reader: Reader, tested: Case) -> list[Check]:
    """Two epochs and an eval pass: each exactly once against the table's keys.

    Epoch 1 and the eval pass together are every key of the table, each once (so each is
    its split, each row once); epoch 2 is epoch 1's keys, each once.
    """
    first = pass_keys(reader, tested.key)
    evaluation = pass_keys(reader, tested.key, eval=True)
    second = pass_keys(reader, tested.key)
    assert first and evaluation
    checks = [exactly_once(first + evaluation, tested.keys), exactly_once(second, set(first))]
    assert set(first).isdisjoint(evaluation)
    for check in checks:
        assert (check.lost, check.duplicated) == (0, 0)
    return checks


@pytest.mark.timeout(180)
@pytest.mark.parametrize("rate", [0.1, 0.3])
@pytest.mark.parametrize("name", list(FAULTY))
def test_every_pass_is_exactly_once_under_transient_read_faults(
    name: str, rate: float, request: pytest.FixtureRequest, make_reader: MakeReader
) -> None:
    tested = case(name, request)
    warehouse = tested.warehouse
    labels = tested.settings.get("label_columns", ["label"])
    settings = {
        **tested.settings, **FAST_RETRIES, "chunk_size": CHUNK_SIZE[name],
        "test_split_percent": 10, "epochs": 2, "output": "arrow",
        "columns": [tested.key, *labels],
    }  # fmt: skip
    figures: dict[str, int] = {"rows_checked": 0, "lost": 0, "duplicated": 0}
    for cached in (False, True):
        # With the cache, the one-scan fill always fails mid-stream: chunks are read by one.
        faults = Faults(rate=rate, seed=SEED, scan_rate=1.0 if cached else None)
        warehouse.faults = faults
        reader = make_reader(**settings, use_cache=cached)
        checks = check_passes(reader, tested)
        retries = sum(m.retries for m in reader.metrics)
        # Every failed chunk read was retried, and counted once: nothing else failed.
        assert retries == faults.injected["read"]
        if cached:
            assert faults.injected["scan"] >= 1
            assert reader.metrics[-1].chunks_cached == len(reader.plan.chunks["train"])
        else:
            assert all(m.chunks_cached == 0 for m in reader.metrics)
        mode = "cached" if cached else "uncached"
        figures[f"read_faults_{mode}"] = faults.injected["read"]
        figures[f"retries_{mode}"] = retries
        figures[f"chunk_reads_{mode}"] = sum(
            n for (path, _, _), n in faults.reads.items() if path == "read"
        )
        if cached:
            figures["scan_faults_cached"] = faults.injected["scan"]
        figures["rows_checked"] += sum(check.rows for check in checks)
        figures["lost"] += sum(check.lost for check in checks)
        figures["duplicated"] += sum(check.duplicated for check in checks)
        reader.close()
    assert figures["read_faults_uncached"] + figures["read_faults_cached"] > 0
    record(f"transient {rate:.0%} {name}", epochs=2, eval_passes=1, readers=2, **figures)


# --- BigQuery at the network: a proxy in front of the emulator's REST and gRPC ports.


@pytest.fixture
def faulty_network(bigquery_emulator: BigQueryEmulator) -> Iterator[tuple[TcpProxy, TcpProxy]]:
    """Proxies of the emulator's REST and Storage Read (gRPC) ports that reset, drop, cut
    short or delay a seeded share of the connections they accept (30%)."""
    # The REST client keeps its connection alive, and opens another only when it breaks:
    # each also lives for 50-500 kB of responses only (planning one day reads about 0.2 MB,
    # the bucket counts). By this seed, the first connections are delayed and cut after
    # 83 kB, reset, cut short, delayed: every kind of fault, in order.
    rest_faults = ConnectionFaults(rate=0.3, seed=22, lifetime=(50_000, 500_000))
    rest = TcpProxy(bigquery_emulator.rest.removeprefix("http://"), faults=rest_faults)
    # gRPC too; by this seed its first connections are reset, delayed, left alone.
    grpc_faults = ConnectionFaults(rate=0.3, seed=19, kinds=("reset", "drop", "delay"))
    grpc = TcpProxy(bigquery_emulator.grpc, faults=grpc_faults)
    yield rest, grpc
    rest.close()
    grpc.close()


@pytest.mark.timeout(180)
def test_bigquery_reads_are_exactly_once_through_a_faulty_network(
    request: pytest.FixtureRequest,
    make_reader: MakeReader,
    faulty_network: tuple[TcpProxy, TcpProxy],
) -> None:
    rest, grpc = faulty_network
    every_day = case("bigquery", request)
    # One day of the three (ids 0, 3, 6, ...): less to plan, so fewer REST round trips.
    tested = dataclasses.replace(every_day, keys=frozenset(i for i in every_day.keys if i % 3 == 0))
    settings = {
        **tested.settings, "api_endpoint": f"http://{rest.address}", "ds": "2024-01-01",
        "read_api_endpoint": grpc.address, "datastore": "bigquery", "chunk_size": 500,
        "test_split_percent": 10, "epochs": 2, "output": "arrow", "columns": ["id", "label"],
        "use_cache": False, "retry_attempts": ATTEMPTS, "initial_backoff": 0.25,
        "max_backoff": 2, "chunk_timeout": 60,
    }  # fmt: skip
    # After a failed connection attempt, gRPC waits about a second (more each time) before
    # it tries again, failing every call meanwhile: the retries must outlast that wait.
    reader = make_reader(**settings)
    checks = check_passes(reader, tested)
    reader.close()
    for proxy in (rest, grpc):
        assert sum(proxy.faults.injected.values()) > 0, proxy.faults.injected  # type: ignore[union-attr]
    record(
        "transient network faults, bigquery (REST + Storage Read gRPC)",
        rest_connections=rest.connections,
        rest_response_bytes=rest.response_bytes,
        rest_faults=dict(rest.faults.injected),  # type: ignore[union-attr]
        grpc_connections=grpc.connections,
        grpc_response_bytes=grpc.response_bytes,
        grpc_faults=dict(grpc.faults.injected),  # type: ignore[union-attr]
        retries=sum(m.retries for m in reader.metrics),
        epochs=2,
        eval_passes=1,
        rows_checked=sum(check.rows for check in checks),
        lost=0,
        duplicated=0,
    )


@pytest.mark.timeout(180)
def test_bigquery_read_streams_cut_mid_way_never_serve_a_row_twice(
    request: pytest.FixtureRequest, make_reader: MakeReader, bigquery_emulator: BigQueryEmulator
) -> None:
    """Every Storage Read connection is reset after 30-150 kB. The client library resumes a
    cut stream at the rows it has; the emulator ignores that offset and sends the stream
    again from its start, so a chunk cut after its rows arrived comes back twice. Faucet
    must refuse such a chunk (its row count is not the plan's), never serve it."""
    grpc = TcpProxy(
        bigquery_emulator.grpc,
        faults=ConnectionFaults(rate=0.0, seed=SEED, lifetime=(30_000, 150_000)),
    )
    tested = case("bigquery", request)
    reader = make_reader(
        **{**tested.settings, "datastore": "bigquery", "read_api_endpoint": grpc.address},
        chunk_size=1_500, test_split_percent=10, epochs=3, output="arrow",
        columns=["id", "label"], use_cache=False, **FAST_RETRIES,
    )  # fmt: skip
    served = refused = rows = 0
    for _ in range(3):
        try:
            keys = pass_keys(reader, "id")
        except ChunkReadError as exc:
            got = re.search(r"([\d,]+) rows where the plan counted ([\d,]+)", str(exc))
            assert got is not None, exc  # refused for its row count, nothing else
            refused += 1
            continue
        check = exactly_once(keys, tested.keys)
        assert check.duplicated == 0 and check.rows == reader.rows("train")
        served += 1
        rows += check.rows
    grpc.close()
    assert grpc.faults is not None and grpc.faults.injected["lifetime"] > 0
    record(
        "Storage Read streams cut mid-way, bigquery",
        cuts=grpc.faults.injected["lifetime"],
        epochs_served=served,
        epochs_refused_for_replayed_rows=refused,
        rows_checked=rows,
        duplicated=0,
    )
