"""Fault injection at the plugin boundary: warehouses whose chunk reads fail on purpose.

:func:`faulty` makes a subclass of a warehouse class, registered under a name of its own,
whose read paths ask a :class:`Faults` whether to fail: a chunk read
(:meth:`~faucet_core.warehouse.Warehouse.read_buckets`) before it reads, a
:meth:`~faucet_core.warehouse.Warehouse.scan` (which the core fills its cache from) after
its first batch, as a connection dropped mid-stream would. The decision for the n-th read
of a chunk is a pure function of a seed, the path, the chunk and n, so a test injects the
same faults whatever the thread timing, and counts what it injected.

Run as a module, it is a small training loop over a DuckDB table with one broken or stuck
chunk, for the tests that measure how a process ends (see :func:`main`).
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import pyarrow as pa
import pytest

from faucet_bigquery import BigQueryWarehouse
from faucet_core import (
    ChunkSpec,
    Plan,
    TransientWarehouseError,
    Warehouse,
    hookimpl,
)
from faucet_duckdb import DuckDBWarehouse
from faucet_postgres import PostgresWarehouse, RedshiftWarehouse
from faucet_snowflake import SnowflakeWarehouse
from tests.conftest import BQ_ROWS_PER_DAY, ROWS, SF_DATABASE, SF_SCHEMA

__all__ = [
    "FAULTY",
    "Case",
    "FaultPlugin",
    "Faults",
    "FaultyWarehouse",
    "broken_chunk",
    "case",
    "draw",
    "exactly_once",
    "faucet_threads",
    "faulty",
]

ReadPath = Literal["read", "scan"]


def draw(seed: int, *key: object) -> float:
    """A number in [0, 1) that depends on ``seed`` and ``key`` alone (not on timing)."""
    digest = hashlib.sha256(repr((seed, *key)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass
class Faults:
    """Which reads fail, and a count of every read tried and every fault injected.

    Args:
        rate: The share of reads that fail transiently (drawn per read).
        seed: The seed of the draws.
        scan_rate: The share of scans that fail transiently, mid-stream (default: ``rate``).
        broken: ``(split, index)`` of chunks whose every read fails.
        broken_error: The error those reads raise.
        stuck: ``(split, index)`` of chunks whose reads block until :attr:`release` is set.

    Attributes:
        reads: Reads tried, per ``(path, split, index)``; a scan of several chunks counts
            under index ``-1``.
        injected: Faults injected, per path.
        entered: Set when a read of a stuck chunk began.
    """

    rate: float = 0.0
    seed: int = 0
    scan_rate: float | None = None
    broken: frozenset[tuple[str, int]] = frozenset()
    broken_error: type[Exception] = TransientWarehouseError
    stuck: frozenset[tuple[str, int]] = frozenset()
    reads: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    injected: Counter[str] = field(default_factory=Counter)
    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def attempts(self, split: str, index: int) -> int:
        """Chunk reads (``read_buckets`` calls) tried for one chunk."""
        return self.reads["read", split, index]

    def check(self, path: ReadPath, chunks: Sequence[ChunkSpec]) -> None:
        """Count a read of ``chunks`` by ``path``; raise if it is to fail.

        Raises:
            TransientWarehouseError: The seeded draw says this read fails.
            Exception: ``broken_error``, when a chunk read is of a broken chunk.
        """
        keys = {(c.split, c.index) for c in chunks}
        index = chunks[0].index if len(chunks) == 1 else -1
        split = chunks[0].split if len(chunks) == 1 else "*"
        with self._lock:
            self.reads[path, split, index] += 1
            n = self.reads[path, split, index]
        if keys & self.stuck:
            self.entered.set()
            self.release.wait()
        if keys & self.broken:
            with self._lock:
                self.injected[path] += 1
            raise self.broken_error(f"injected fault: {split} chunk {index} is unreadable")
        rate = self.rate if path == "read" or self.scan_rate is None else self.scan_rate
        if rate and draw(self.seed, path, split, index, n) < rate:
            with self._lock:
                self.injected[path] += 1
            raise TransientWarehouseError(f"injected fault: {path} {n} of {split} chunk {index}")


class FaultyWarehouse(Warehouse):
    """The read hooks of a warehouse class, asking :attr:`faults` first (a mixin)."""

    faults: ClassVar[Faults] = Faults()

    def read_buckets(self, plan: Plan, chunk: ChunkSpec) -> pa.Table:
        type(self).faults.check("read", [chunk])
        return super().read_buckets(plan, chunk)  # type: ignore[safe-super]

    def scan(
        self, plan: Plan, chunks: Sequence[ChunkSpec] | None = None
    ) -> Iterable[pa.RecordBatch] | None:
        # Some test warehouses' scan() takes the plan alone (they have no scan).
        scanned = super().scan(plan) if chunks is None else super().scan(plan, chunks)
        if scanned is None:
            return None
        every = [c for split in plan.chunks.values() for c in split]
        return _faulty_scan(type(self).faults, list(chunks) if chunks else every, scanned)


def _faulty_scan(
    faults: Faults, chunks: list[ChunkSpec], scanned: Iterable[pa.RecordBatch]
) -> Iterator[pa.RecordBatch]:
    """``scanned``, failing (when the draw says so) after its first batch, mid-stream, as a
    connection dropped during a scan would."""
    iterator = iter(scanned)
    first = next(iterator, None)
    if first is not None:
        yield first
    faults.check("scan", chunks)
    yield from iterator


def faulty(base: type[Warehouse], name: str) -> type[FaultyWarehouse]:
    """A subclass of ``base`` named ``name`` whose reads go through its own :class:`Faults`
    (set the class's ``faults`` before a test)."""
    return type(
        base.__name__ + "WithFaults",
        (FaultyWarehouse, base),
        {"name": name, "faults": Faults(), "__module__": __name__},
    )


class FaultPlugin:
    """Registers the given warehouse classes (with ``pm.register``)."""

    def __init__(self, *warehouses: type[Warehouse]) -> None:
        self.warehouses = warehouses

    @hookimpl
    def register_warehouses(self, register: Callable[[type[Warehouse]], None]) -> None:
        for warehouse in self.warehouses:
            register(warehouse)


@dataclass(frozen=True)
class Check:
    """How one pass's keys compare with the keys the split should have."""

    rows: int
    lost: int
    duplicated: int


def exactly_once(served: Sequence[Any], expected: Iterable[Any]) -> Check:
    """Compare the keys ``served`` in a pass with the split's keys ``expected``."""
    counts = Counter(served)
    wanted = set(expected)
    lost = len(wanted - set(counts))
    duplicated = sum(n - 1 for n in counts.values() if n > 1) + sum(
        n for key, n in counts.items() if key not in wanted
    )
    return Check(len(served), lost, duplicated)


@dataclass(frozen=True)
class Case:
    """A built-in warehouse under test: its class with faults, reader settings for its
    stand-in's table, and the table's split key column and keys (known without Faucet)."""

    warehouse: type[FaultyWarehouse]
    settings: dict[str, Any]
    key: str
    keys: frozenset[int]


#: The built-in warehouses, each with faults, under the name ``faulty-<name>``.
FAULTY: dict[str, type[FaultyWarehouse]] = {
    "duckdb": faulty(DuckDBWarehouse, "faulty-duckdb"),
    "postgres": faulty(PostgresWarehouse, "faulty-postgres"),
    "redshift": faulty(RedshiftWarehouse, "faulty-redshift"),
    "snowflake": faulty(SnowflakeWarehouse, "faulty-snowflake"),
    "bigquery": faulty(BigQueryWarehouse, "faulty-bigquery"),
}


def case(name: str, request: pytest.FixtureRequest) -> Case:
    """The :class:`Case` of warehouse ``name``, starting its stand-in if need be (through
    the session fixtures of ``tests/conftest.py``)."""
    warehouse = FAULTY[name]
    settings: dict[str, Any] = {"datastore": warehouse.name}
    key, rows = "id", ROWS
    if name == "postgres":
        settings.update(dsn=request.getfixturevalue("postgres_url"), database=None)
    elif name == "redshift":
        dsn = request.getfixturevalue("redshift_url")
        settings.update(dsn=dsn, database=None, scratch_attributes="")
    elif name == "snowflake":
        server = request.getfixturevalue("snowflake_server")
        settings.update(server.settings(database=SF_DATABASE, schema=SF_SCHEMA))
        settings.update(table_name="T", split_key="ID", label_columns=["LABEL"])
        key = "ID"
    elif name == "bigquery":
        emulator = request.getfixturevalue("bigquery_emulator")
        table = request.getfixturevalue("bq_events")
        settings.update(emulator.settings(), database=None, table_name=table)
        rows = 3 * BQ_ROWS_PER_DAY
    return Case(warehouse, settings, key, frozenset(range(rows)))


def faucet_threads() -> set[threading.Thread]:
    """Faucet's background threads alive now (fetch, fill, fill-write)."""
    return {t for t in threading.enumerate() if t.name.startswith("faucet") and t.is_alive()}


def broken_chunk(kind: str) -> Faults:
    """The faults of the subprocess loop: chunk 1 of train always fails (``broken``), blocks
    forever (``stuck``), or nothing fails (``none``)."""
    if kind == "broken":
        return Faults(broken=frozenset({("train", 1)}))
    if kind == "stuck":
        return Faults(stuck=frozenset({("train", 1)}))
    return Faults()


def main(argv: Sequence[str]) -> int:
    """``python -m tests.reliability.faults KINDS DATABASE CACHE [torch]``: for each of the
    comma-separated ``KINDS``, read a DuckDB table ``t`` chunk by chunk with chunk 1 of
    train broken, stuck or fine (see :func:`broken_chunk`) in a training loop (``torch``: a
    DataLoader with two workers), and print one JSON line with the outcome; exit 1 if a
    loop failed."""
    from faucet_core import get_batch_reader
    from faucet_core.plugins import pm
    from tests.conftest import ChunkByChunkDuckDB

    kinds, database, cache = argv[:3]
    use_torch = len(argv) > 3 and argv[3] == "torch"
    warehouse = faulty(ChunkByChunkDuckDB, "faulty-subprocess")
    pm.register(FaultPlugin(warehouse), name="faults")
    failed = False
    for kind in kinds.split(","):
        warehouse.faults = broken_chunk(kind)
        started = time.monotonic()
        outcome: dict[str, Any] = {"kind": kind, "error": None}
        reader = get_batch_reader(
            "faulty-subprocess", database=database, table_name="t", split_key="id",
            label_columns=["label"], columns=["id", "x1", "label"], batch_size=100,
            chunk_size=1_000, seed=3, shuffle=False, cache_dir=f"{cache}/{kind}",
            retry_attempts=3, initial_backoff=0.01, max_backoff=0.02, chunk_timeout=2,
            output="numpy",
        )  # fmt: skip
        rows = 0
        try:
            if use_torch:
                from faucet_core.torch import FaucetDataLoader, FaucetIterableDataset

                dataset = FaucetIterableDataset(reader)
                for features, _ in FaucetDataLoader(dataset, num_workers=2):
                    rows += int(features.shape[0])
            else:
                reader.prep_for_epoch()
                while (batch := reader.get_batch()) is not None:
                    rows += len(batch["labels"])
        except Exception as exc:
            outcome["error"] = f"{type(exc).__name__}: {exc}"
            failed = True
        finally:
            reader.close()
        outcome.update(rows=rows, seconds=time.monotonic() - started)
        outcome["attempts"] = warehouse.faults.attempts("train", 1)
        print(json.dumps(outcome), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
