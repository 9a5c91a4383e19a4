"""Readers in subprocesses, driven step by step through pipes.

A child (``python -m tests.reliability.procs JOB``) reads a job file (reader settings,
hooks), builds a reader, serves its epochs and writes the split key of every row it
served, per epoch, to its output folder. It reports progress on stdout, one line per
event (``ready``, ``batch <epoch> <n>``, ``blocked <what> <detail>``, ``done``), and
reads lines from stdin where a job asks it to wait (a barrier, a hook that holds it at a
known step). The parent side is :class:`Child`: start, wait for an event, release, kill.

Hooks (``job["hooks"]``) stop the child at a precise point, so a test kills or resumes it
there rather than after a guessed delay:

- ``stop_after``: block once this many batches of the run were served.
- ``block_in_write``: on this call of the cache's low-level write into the cache folder
  (counted from 1; not a scratch copy's), write half of the bytes, then block: an entry
  is half written.
- ``block_before_rename``: block before this commit into the cache folder (counted from
  1) renames a complete temporary file into place.
- ``enospc_after``: every write into the cache folder fails with ``ENOSPC`` once this
  many bytes were written there (0: from the first); the scratch folder is another disk.
- ``hold_read``: before this read of a cache entry (counted from 1), block until released;
  ``hold_after_read``: likewise once the entry is read (its table maps the file).
- ``hold_scratch_read``: before this chunk read from the DuckDB scratch copy, block until
  released.
- ``close_after_epoch``: after this epoch, wait to be released, then close the reader
  (releasing what it owns: the DuckDB scratch copy) and say ``closed``.
"""

from __future__ import annotations

import errno
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: The worktree root: the child's working folder, so it imports this code.
ROOT = Path(__file__).resolve().parents[2]
#: Seconds any one step of a child may take before the test fails.
STEP_TIMEOUT = 60.0


class ChildError(AssertionError):
    """A child did not do what the test expected (exited, timed out, said something else)."""


@dataclass
class EpochResult:
    """What one epoch of a child served."""

    keys: np.ndarray[Any, Any]
    wrong: int
    chunks_cached: int
    chunks_fetched: int


@dataclass
class Result:
    """What a child that ran to its end reported."""

    epochs: list[EpochResult]
    plan_json: str
    stats: dict[str, int] = field(default_factory=dict)


class Child:
    """A reader subprocess running ``job`` (see the module docstring), its output in
    ``out``."""

    def __init__(self, job: dict[str, Any], out: Path) -> None:
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        job_file = out / "job.json"
        job_file.write_text(json.dumps({**job, "out": str(out)}), encoding="utf-8")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.procs", str(job_file)],
            cwd=ROOT,
            env={**os.environ, "FAUCET_DISABLE_PLUGIN_AUTOLOAD": "1"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(out / "stderr.txt", "wb"),  # noqa: SIM115 - the child owns it
            text=True,
            bufsize=1,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def wait_for(self, prefix: str, timeout: float = STEP_TIMEOUT) -> str:
        """The first line of the child's progress starting with ``prefix`` (earlier lines
        are skipped).

        Raises:
            ChildError: The child ended, or ``timeout`` seconds passed, first.
        """
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise ChildError(f"no {prefix!r} from the child in {timeout}s") from None
            if line is None:
                self.process.wait(timeout)
                raise ChildError(
                    f"the child exited ({self.process.returncode}) before {prefix!r}:\n"
                    + self.stderr()
                )
            if line.startswith(prefix):
                return line

    def release(self) -> None:
        """Let a child waiting at a barrier or hook go on."""
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def kill(self) -> None:
        """``kill -9`` the child, and reap it."""
        self.process.kill()
        self.process.wait(STEP_TIMEOUT)

    def finish(self, timeout: float = STEP_TIMEOUT) -> Result:
        """Wait for the child to end well; what it served.

        Raises:
            ChildError: It failed or did not end in time.
        """
        self.wait_for("done", timeout)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ChildError("the child did not exit after it was done") from None
        if code != 0:
            raise ChildError(f"the child exited with {code}:\n{self.stderr()}")
        report = json.loads((self.out / "result.json").read_text(encoding="utf-8"))
        epochs = [
            EpochResult(
                np.load(self.out / f"epoch-{e['epoch']}.npy"),
                e["wrong"],
                e["chunks_cached"],
                e["chunks_fetched"],
            )
            for e in report["epochs"]
        ]
        return Result(epochs, report["plan"], report["stats"])

    def stderr(self) -> str:
        """What the child wrote to stderr so far."""
        return (self.out / "stderr.txt").read_text(encoding="utf-8", errors="replace")

    def close(self) -> None:
        """Kill the child if it still runs (test teardown)."""
        if self.process.poll() is None:
            self.kill()
        if self.process.stdin is not None:
            self.process.stdin.close()


#: The tables of these tests: ``write_table``'s, with 20,000 rows in ten chunks.
TABLE_ROWS = 20_000
CHUNK_ROWS = 2_000
BATCH_ROWS = 250


def reader_settings(database: Path | None, cache: Path, **overrides: Any) -> dict[str, Any]:
    """Keyword settings of a child's reader of table ``t`` in the DuckDB file ``database``
    (with ``database=None`` and a ``dsn``: table ``t`` on PostgreSQL)."""
    settings = {
        "datastore": "duckdb",
        "database": None if database is None else str(database),
        "table_name": "t",
        "batch_size": BATCH_ROWS,
        "chunk_size": CHUNK_ROWS,
        "split_key": "id",
        "label_columns": ["label"],
        "seed": 7,
        "cache_dir": str(cache),
        "initial_backoff": 0,
        **overrides,
    }
    return {key: value for key, value in settings.items() if value is not None}


def start_together(jobs: list[tuple[dict[str, Any], Path]]) -> list[Child]:
    """Children started at once: each waits at a barrier until all are ready."""
    children = [Child({**job, "barrier": True}, out) for job, out in jobs]
    for child in children:
        child.wait_for("ready")
    for child in children:
        child.release()
    return children


def exactly_once(keys: np.ndarray[Any, Any], expected: np.ndarray[Any, Any]) -> tuple[int, int]:
    """``(lost, duplicated)``: keys of ``expected`` never served, and rows served more than
    once (or not in ``expected`` at all)."""
    unique = np.unique(keys)
    lost = int(np.setdiff1d(expected, unique).size)
    duplicated = int(keys.size - unique.size) + int(np.setdiff1d(unique, expected).size)
    return lost, duplicated


def served_exactly_once(result: Result, expected: np.ndarray[Any, Any] | None = None) -> int:
    """Assert every epoch of ``result`` served each key of ``expected`` (default: the
    table's ids) once, with its values; returns the rows checked."""
    keys = np.arange(TABLE_ROWS) if expected is None else expected
    for epoch in result.epochs:
        assert exactly_once(epoch.keys, keys) == (0, 0)
        assert epoch.wrong == 0
    return sum(epoch.keys.size for epoch in result.epochs)


@dataclass
class CacheCheck:
    """What a cache folder holds, each entry read back with the cache's own read and
    checked against the plan."""

    entries: int
    bytes: int
    temp_files: int
    bad: list[str]
    counted: int


def check_cache(folder: Path, plan_json: str) -> CacheCheck:
    """Every entry of ``folder`` read by a fresh :class:`~faucet_core.cache.ChunkCache`
    (checksum verified) and checked against the chunk it claims to be; temporary files
    are counted apart, and anything else is reported as bad, as is a cache that counts
    other files than the entries as entries."""
    from faucet_core.cache import ChunkCache, _parse_name
    from faucet_core.checks import PlanBreach, check_chunk
    from faucet_core.plan import Plan

    plan = Plan.from_json(plan_json)
    chunks = {plan.chunk_key(c): c for split in plan.chunks.values() for c in split}
    cache = ChunkCache(folder)
    counted = len(cache)  # what the cache itself takes for entries when it opens the folder
    entries, size, temps, bad = 0, 0, 0, []
    for path in sorted(folder.iterdir()):
        parsed = _parse_name(path)
        if path.is_dir() or path.name.endswith(".lock"):
            continue
        if parsed is None:
            if path.name.startswith(".") and path.name.endswith(".tmp"):
                temps += 1
            else:
                bad.append(f"{path.name}: not an entry")
            continue
        entries += 1
        size += path.stat().st_size
        chunk = chunks.get(parsed[0])
        if chunk is None:
            continue  # another plan's entry: its checksum is still verified below
        table = cache.get(parsed[0])
        if table is None:
            bad.append(f"{path.name}: unreadable or checksum mismatch")
            continue
        try:
            check_chunk(plan, chunk, table, ordered=True)
        except PlanBreach as exc:
            bad.append(f"{path.name}: {exc.rule}")
    if counted != entries:
        bad.append(f"the cache counted {counted} entries in a folder of {entries}")
    if cache.stats.corrupt_discarded:
        bad.append(f"{cache.stats.corrupt_discarded} entries failed their checksum")
    return CacheCheck(entries, size, temps, bad, counted)


def cached_whole(result: Result, folder: Path) -> CacheCheck:
    """Assert ``result``'s second epoch was served from the cache alone, and ``folder``
    holds every chunk of its plan, whole; returns the folder's check."""
    from faucet_core.plan import Plan

    chunks = len(Plan.from_json(result.plan_json).chunks["train"])
    assert (result.epochs[1].chunks_cached, result.epochs[1].chunks_fetched) == (chunks, 0)
    after = check_cache(folder, result.plan_json)
    assert after.bad == [] and after.entries == chunks
    return after


# --- The child side.


def _emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _wait_for_parent() -> None:
    """Block until the parent writes a line (or closes the pipe, or kills us)."""
    sys.stdin.readline()


class _Counter:
    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self.count += 1
            return self.count


def _install_hooks(hooks: dict[str, Any], cache_dir: str | None) -> None:
    from faucet_core import cache

    write_all: Callable[[int, Any], None] = cache._write_all
    cache_folder = str(Path(cache_dir or ".").resolve()) + os.sep

    def in_cache(path: str) -> bool:
        """Whether ``path`` is in the cache folder (not in a scratch copy's)."""
        return path.startswith(cache_folder)

    def file_of(descriptor: int) -> str:
        """The file ``descriptor`` writes to."""
        return os.readlink(f"/proc/self/fd/{descriptor}")

    if "block_in_write" in hooks:
        target, calls = int(hooks["block_in_write"]), _Counter()

        def half_then_block(descriptor: int, data: Any) -> None:
            if not in_cache(file_of(descriptor)) or calls.next() != target:
                write_all(descriptor, data)
                return
            view = memoryview(data).cast("B")
            write_all(descriptor, view[: len(view) // 2])
            _emit(f"blocked write {file_of(descriptor)}")
            threading.Event().wait()

        cache._write_all = half_then_block

    if "enospc_after" in hooks:
        room, written, lock = int(hooks["enospc_after"]), [0], threading.Lock()

        def full_disk(descriptor: int, data: Any) -> None:
            if not in_cache(file_of(descriptor)):
                return write_all(descriptor, data)
            size = len(memoryview(data).cast("B"))
            with lock:
                fits = written[0] + size <= room
                if fits:
                    written[0] += size
            if not fits:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            write_all(descriptor, data)

        cache._write_all = full_disk

    if "block_before_rename" in hooks:
        target, commits = int(hooks["block_before_rename"]), _Counter()
        commit = cache.ChunkCache._commit

        def commit_later(self: Any, key: str, temp: Path, *args: Any) -> bool:
            if in_cache(str(temp.resolve())) and commits.next() == target:
                _emit(f"blocked rename {temp}")
                threading.Event().wait()
            return commit(self, key, temp, *args)

        cache.ChunkCache._commit = commit_later  # type: ignore[method-assign]

    if "hold_read" in hooks or "hold_after_read" in hooks:
        before = "hold_read" in hooks
        target, reads = int(hooks.get("hold_read", hooks.get("hold_after_read"))), _Counter()
        read = cache.ChunkCache._read

        def read_later(self: Any, entry: Any) -> Any:
            held = reads.next() == target
            if held and before:
                _emit(f"blocked read {entry.path}")
                _wait_for_parent()
            table = read(self, entry)
            if held and not before:
                _emit(f"blocked read {entry.path}")
                _wait_for_parent()
            return table

        cache.ChunkCache._read = read_later  # type: ignore[method-assign]

    if "hold_scratch_read" in hooks:
        from faucet_duckdb import warehouse as duckdb_warehouse

        target, scratch_reads = int(hooks["hold_scratch_read"]), _Counter()
        read_entry = duckdb_warehouse.read_entry

        def read_later(directory: Path, key: str) -> Any:
            if scratch_reads.next() == target:
                _emit(f"blocked scratch {key}")
                _wait_for_parent()
            return read_entry(directory, key)

        duckdb_warehouse.read_entry = read_later  # type: ignore[assignment]


def _register_plugins() -> None:
    import faucet_duckdb.plugin
    import faucet_postgres.plugin
    from faucet_core import hookimpl
    from faucet_core.plugins import pm
    from faucet_duckdb import DuckDBWarehouse

    class ChunkByChunk(DuckDBWarehouse):
        """DuckDB without a scan: chunks are read (and cached) one at a time."""

        name = "chunk-by-chunk-duckdb"

        def scan(self, plan: Any, chunks: Any = None) -> None:
            return None

    class Plugin:
        @hookimpl
        def register_warehouses(self, register: Callable[[type], None]) -> None:
            register(ChunkByChunk)

    pm.register(faucet_duckdb.plugin, name="duckdb")
    pm.register(faucet_postgres.plugin, name="postgres")
    pm.register(Plugin(), name="reliability-procs")


def run_job(job: dict[str, Any]) -> None:
    """Serve the job's epochs, reporting each as the module docstring says."""
    _register_plugins()
    hooks = job.get("hooks", {})
    _install_hooks(hooks, job["settings"].get("cache_dir"))
    from faucet_core import get_batch_reader

    _emit("ready")
    if job.get("barrier"):
        _wait_for_parent()
    out = Path(job["out"])
    key, check = job.get("key", "id"), job.get("check", "x2")
    stop_after = hooks.get("stop_after")
    served = 0
    epochs = []
    reader = get_batch_reader(**{"output": "arrow", **job["settings"]})
    for epoch in range(1, reader.config.epochs + 1):
        reader.prep_for_epoch()
        parts, wrong, batches = [], 0, 0
        while (batch := reader.get_batch()) is not None:
            keys = batch["features"][key].to_numpy()
            parts.append(keys)
            # The table's rows carry x2 = id % 13: a row with other values is wrong data.
            values = batch["features"][check].to_numpy()
            wrong += int(np.count_nonzero(values != keys % 13))
            batches += 1
            served += 1
            _emit(f"batch {epoch} {batches}")
            if served == stop_after:
                _emit("blocked stop")
                threading.Event().wait()
        keys = np.concatenate(parts) if parts else np.array([], np.int64)
        np.save(out / f"epoch-{epoch}.npy", keys)
        metrics = reader.metrics[-1]
        epochs.append(
            {
                "epoch": epoch,
                "wrong": wrong,
                "chunks_cached": metrics.chunks_cached,
                "chunks_fetched": metrics.chunks_fetched,
            }
        )
        _emit(f"epoch {epoch}")
        if hooks.get("close_after_epoch") == epoch:
            break
    stats = vars(reader.cache.stats) if reader.cache is not None else {}
    report = {"epochs": epochs, "plan": reader.plan.to_json(), "stats": dict(stats)}
    if "close_after_epoch" in hooks:
        _emit("blocked close")
        _wait_for_parent()
    reader.close()
    _emit("closed")
    temp = out / "result.json.tmp"
    temp.write_text(json.dumps(report), encoding="utf-8")
    os.replace(temp, out / "result.json")
    _emit("done")


if __name__ == "__main__":
    run_job(json.loads(Path(sys.argv[1]).read_text(encoding="utf-8")))
