"""Permanent faults: a chunk that never reads reaches the training loop as an error naming
it, within the retry budget; nothing hangs, no thread is left running, the process ends.

Beyond ``tests/test_failures.py`` (one flaky DuckDB plugin, in process): every built-in
warehouse, every read path (the one-scan cache fill as well as chunk reads), the number of
tries made, eval chunks, reads that never return, whole processes and DataLoader workers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from faucet_core import ChunkReadError, PermanentWarehouseError, Reader
from tests.reliability.faults import FAULTY, FaultPlugin, Faults, case, faucet_threads
from tests.reliability.figures import record

MakeReader = Callable[..., Reader]
ROOT = Path(__file__).parents[2]
FAST_RETRIES: dict[str, Any] = {"initial_backoff": 0.01, "max_backoff": 0.02}


@pytest.fixture(autouse=True)
def faulty_warehouses(register: Callable[[object], None]) -> Iterator[None]:
    register(FaultPlugin(*FAULTY.values()))
    yield
    for warehouse in FAULTY.values():
        warehouse.faults.release.set()  # a stuck read left behind ends with the test


def drain(reader: Reader, eval: bool = False) -> int:
    """Serve a pass to its end (or its error); rows served."""
    rows = 0
    while (batch := reader.get_batch(eval=eval)) is not None:
        rows += len(batch["labels"])
    return rows


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", list(FAULTY))
def test_a_chunk_that_never_reads_fails_the_loop_after_the_configured_tries(
    name: str, request: pytest.FixtureRequest, make_reader: MakeReader
) -> None:
    before = faucet_threads()
    warehouse = FAULTY[name]
    warehouse.faults = Faults(broken=frozenset({("train", 1)}))
    reader = make_reader(**case(name, request).settings, chunk_size=1_000, retry_attempts=3,
                         **FAST_RETRIES)  # fmt: skip
    reader.prep_for_epoch()
    started = time.monotonic()
    with pytest.raises(ChunkReadError) as raised:
        drain(reader)
    seconds = time.monotonic() - started
    message = str(raised.value)
    assert f"train chunk 1 ({reader.plan.chunks['train'][1].rows} rows)" in message
    assert f"from {warehouse.name} after 3 tries" in message
    assert "injected fault: train chunk 1 is unreadable" in message
    assert warehouse.faults.attempts("train", 1) == 3  # the retry budget, no more, no less
    reader.close()
    assert faucet_threads() - before == set()
    record(
        f"permanent: train chunk 1 never reads, {name}",
        faults=sum(warehouse.faults.injected.values()),
        chunk_reads=warehouse.faults.attempts("train", 1),
        attempts_configured=3,
        seconds_to_error=round(seconds, 2),
        threads_left=0,
    )


def test_a_permanent_error_on_an_eval_chunk_is_not_retried_and_names_it(
    make_reader: MakeReader, request: pytest.FixtureRequest
) -> None:
    warehouse = FAULTY["duckdb"]
    warehouse.faults = Faults(broken=frozenset({("eval", 0)}), broken_error=PermanentWarehouseError)
    reader = make_reader(**case("duckdb", request).settings, test_split_percent=20,
                         chunk_size=400, retry_attempts=4, **FAST_RETRIES)  # fmt: skip
    reader.prep_for_epoch()
    train_rows = drain(reader)
    reader.prep_for_eval()
    with pytest.raises(ChunkReadError, match=r"could not read eval chunk 0 \(\d+ rows\)") as raised:
        drain(reader, eval=True)
    assert isinstance(raised.value.__cause__, PermanentWarehouseError)
    assert warehouse.faults.attempts("eval", 0) == 1  # retrying cannot help: not retried
    assert train_rows == reader.rows("train")
    record("permanent: eval chunk 0 denied, duckdb", chunk_reads=1, train_rows=train_rows)


@pytest.mark.timeout(60)
def test_a_read_that_never_returns_fails_by_the_chunk_timeout_and_close_leaves_it(
    make_reader: MakeReader, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    before = faucet_threads()
    warehouse = FAULTY["duckdb"]
    warehouse.faults = Faults(stuck=frozenset({("train", 1)}))
    # The cache is filled from one scan: that scan is what blocks, every chunk waits for it.
    reader = make_reader(**case("duckdb", request).settings, chunk_timeout=1, **FAST_RETRIES)
    reader.prep_for_epoch()
    with pytest.raises(ChunkReadError, match=r"train chunk \d+ .* not ready after 1s"):
        drain(reader)
    assert warehouse.faults.entered.is_set()
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="faucet"):
        reader.close()
    closing = time.monotonic() - started
    # close() waited retry.chunk_timeout (1s) for the read, not a minute, then left it.
    assert "chunk reads still running 1s after close()" in caplog.text
    left = faucet_threads() - before
    # Only the read inside the warehouse is left, in a daemon thread (the process can exit).
    assert {t.name for t in left} <= {"faucet-fill"}
    assert all(t.daemon for t in left)
    warehouse.faults.release.set()
    for thread in left:
        thread.join(timeout=30)
    assert faucet_threads() - before == set()
    record("permanent: a read that never returns, duckdb", close_seconds=round(closing, 2),
           threads_left_behind=len(left), all_daemon=True)  # fmt: skip


def run_loops(kinds: str, table: Path, cache: Path, *extra: str) -> tuple[list[Any], float]:
    """Run the loops of :func:`tests.reliability.faults.main` in a process of their own;
    their outcomes, and the process's wall time (it must end by itself: a process kept
    alive by a stuck read fails the test at the timeout)."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "tests.reliability.faults", kinds, str(table), str(cache), *extra],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=90,
    )  # fmt: skip
    seconds = time.monotonic() - started
    outcomes = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [o["kind"] for o in outcomes] == kinds.split(","), done.stderr[-3000:]
    failed = any(o["error"] for o in outcomes)
    assert done.returncode == (1 if failed else 0), done.stderr[-3000:]
    return outcomes, seconds


@pytest.mark.timeout(240)
def test_a_process_whose_loop_fails_or_is_stuck_exits_promptly(
    table_path: Path, tmp_path: Path
) -> None:
    [normal], normal_seconds = run_loops("none", table_path, tmp_path)
    assert normal["error"] is None and normal["rows"] == 5_000
    [broken], broken_seconds = run_loops("broken", table_path, tmp_path)
    assert "train chunk 1 (1000 rows)" in broken["error"] and "after 3 tries" in broken["error"]
    assert broken["attempts"] == 3
    # A read that never returns: the loop fails after chunk_timeout (2s), close() waits no
    # longer than that for it, and the process exits with the read still blocked.
    [stuck], stuck_seconds = run_loops("stuck", table_path, tmp_path)
    assert "train chunk 1 (1000 rows) was not ready after 2s" in stuck["error"]
    record(
        "permanent: a process with a broken or stuck chunk",
        normal_seconds=round(normal_seconds, 2),
        broken_seconds=round(broken_seconds, 2),
        broken_ratio=round(broken_seconds / normal_seconds, 2),
        stuck_seconds=round(stuck_seconds, 2),
        stuck_ratio=round(stuck_seconds / normal_seconds, 2),
        broken_attempts=broken["attempts"],
    )


@pytest.mark.timeout(240)
def test_a_dataloader_with_two_workers_raises_the_chunk_error_in_the_main_process(
    table_path: Path, tmp_path: Path
) -> None:
    # One process (torch takes seconds to import): a broken chunk, then a stuck one.
    (broken, stuck), seconds = run_loops("broken,stuck", table_path, tmp_path, "torch")
    assert "Caught ChunkReadError in DataLoader worker process" in broken["error"]
    assert "could not read train chunk 1 (1000 rows)" in broken["error"]
    assert "after 3 tries" in broken["error"]
    assert "train chunk 1 (1000 rows) was not ready after 2s" in stuck["error"]
    record("permanent: DataLoader, 2 workers, a broken then a stuck chunk",
           process_seconds=round(seconds, 2), broken_seconds=round(broken["seconds"], 2),
           stuck_seconds=round(stuck["seconds"], 2), error_in_main_process=True,
           rows_before_error=broken["rows"])  # fmt: skip
