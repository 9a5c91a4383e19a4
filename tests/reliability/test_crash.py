"""Crash consistency: a reader killed with SIGKILL at seeded points of its first epoch, then
run again with the same cache folder, serves every epoch exactly once, and no partially
written cache entry is ever served.

Each child stops itself at a known step (after N batches, half way through a cache write,
before the rename that stores a complete entry) and waits there; the test then kills it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tests.conftest import ROWS
from tests.reliability.figures import record
from tests.reliability.procs import (
    BATCH_ROWS,
    TABLE_ROWS,
    Child,
    cached_whole,
    check_cache,
    reader_settings,
    served_exactly_once,
)

BATCHES = TABLE_ROWS // BATCH_ROWS
IDS = np.arange(TABLE_ROWS)
SEEDS = [1, 2, 3, 4]


@dataclass
class Case:
    """One reader to kill at a hook, then run again on the same cache folder."""

    name: str
    settings: dict[str, Any]
    hooks: dict[str, int]
    expected: np.ndarray[Any, Any]


@dataclass
class Outcome:
    """What the killed reader left and what its rerun did."""

    blocked: str
    entries_left: int
    temp_files_left: int
    refetched: int
    rows_checked: int


def _crash_and_rerun(cases: list[Case], out: Path, children: list[Child]) -> list[Outcome]:
    """Kill each case's reader (all at once) at its hook, check what it left in its cache
    folder, then rerun each for two epochs on the same folder (all at once): every epoch
    exactly once with the right values, and every chunk cached and verified after it."""
    victims = [Child({"settings": c.settings, "hooks": c.hooks}, out / c.name) for c in cases]
    children.extend(victims)
    lines = [victim.wait_for("blocked") for victim in victims]
    left = []
    for case, victim in zip(cases, victims, strict=True):
        victim.kill()
        assert victim.process.returncode == -9
        folder = Path(case.settings["cache_dir"])
        check = check_cache(folder, _plan_of(folder))
        assert check.bad == [], case.name  # whatever was stored when it died is whole
        left.append(check)
    reruns = [
        Child({"settings": {**c.settings, "epochs": 2}}, out / f"{c.name}-rerun") for c in cases
    ]
    children.extend(reruns)
    outcomes = []
    for case, rerun, line, check in zip(cases, reruns, lines, left, strict=True):
        result = rerun.finish()
        rows = served_exactly_once(result, case.expected)
        cached_whole(result, Path(case.settings["cache_dir"]))
        outcomes.append(
            Outcome(line, check.entries, check.temp_files, result.epochs[0].chunks_fetched, rows)
        )
    return outcomes


def _record(name: str, outcome: Outcome, left_as: str = "temp_files_left") -> None:
    """Record the figures of one kill and its rerun (the files it left, named ``left_as``)."""
    record(
        name,
        kills=1,
        entries_left=outcome.entries_left,
        **{left_as: outcome.temp_files_left},
        rerun_epochs=2,
        refetched_chunks=outcome.refetched,
        rows_checked=outcome.rows_checked,
        lost=0,
        duplicated=0,
        wrong=0,
    )


def test_readers_killed_after_n_batches_leave_caches_a_rerun_serves_exactly_once(
    duckdb_table: Path, tmp_path: Path, children: list[Child]
) -> None:
    cases = []
    for seed in SEEDS:
        stop_after = random.Random(seed).randrange(1, BATCHES)
        # Odd seeds fill the cache from one scan; even ones read and cache chunk by chunk.
        datastore = "duckdb" if seed % 2 else "chunk-by-chunk-duckdb"
        settings = reader_settings(duckdb_table, tmp_path / f"cache-{seed}", datastore=datastore)
        cases.append(
            Case(f"seed-{seed}", {**settings, "seed": seed}, {"stop_after": stop_after}, IDS)
        )
    for case, outcome in zip(cases, _crash_and_rerun(cases, tmp_path, children), strict=True):
        _record(
            f"kill -9 after {case.hooks['stop_after']} batches "
            f"({case.settings['datastore']}, {case.name})",
            outcome,
        )


def test_readers_killed_while_writing_an_entry_never_serve_it(
    duckdb_table: Path, tmp_path: Path, children: list[Child]
) -> None:
    cases = []
    for seed, datastore in [(11, "duckdb"), (12, "chunk-by-chunk-duckdb"), (13, "duckdb")]:
        # A small fill buffer writes each entry in several appends, so the write cut in
        # half may be any part of an entry, not only its first.
        write = random.Random(seed).randrange(1, 30)
        settings = reader_settings(
            duckdb_table, tmp_path / f"cache-{seed}", datastore=datastore, cache_fill_buffer=2**16
        )
        cases.append(Case(f"write-{seed}", settings, {"block_in_write": write}, IDS))
    # And a complete entry whose writer dies just before renaming it into place.
    settings = reader_settings(
        duckdb_table, tmp_path / "cache-21", datastore="chunk-by-chunk-duckdb"
    )
    commit = random.Random(21).randrange(1, 8)
    cases.append(Case("rename-21", settings, {"block_before_rename": commit}, IDS))
    outcomes = _crash_and_rerun(cases, tmp_path, children)
    for case, outcome in zip(cases, outcomes, strict=True):
        # The file being written when the writer died outlives it, under a temporary
        # name, and its chunk was read again rather than taken from it.
        left = Path(outcome.blocked.split(" ", 2)[2])
        assert left.parent == Path(case.settings["cache_dir"]) and left.name.startswith(".")
        assert left.exists() and outcome.temp_files_left >= 1
        assert outcome.refetched >= 1
        ((hook, point),) = case.hooks.items()
        _record(
            f"kill -9 at {hook}={point} ({case.settings['datastore']}, {case.name})",
            outcome,
            left_as="partial_files",
        )


def test_postgres_readers_killed_mid_epoch_then_rerun_exactly_once(
    postgres_url: str, tmp_path: Path, children: list[Child]
) -> None:
    cases = []
    for seed, hook in [(31, "stop_after"), (32, "block_in_write")]:
        point = random.Random(seed).randrange(1, ROWS // BATCH_ROWS)
        settings = reader_settings(
            None,
            tmp_path / f"cache-{seed}",
            datastore="postgres",
            dsn=postgres_url,
            chunk_size=1_000,
            cache_fill_buffer=2**14,
        )
        cases.append(Case(f"pg-{seed}", settings, {hook: point}, np.arange(ROWS)))
    for case, outcome in zip(cases, _crash_and_rerun(cases, tmp_path, children), strict=True):
        ((hook, point),) = case.hooks.items()
        _record(f"kill -9 postgres reader at {hook}={point}", outcome)


def _plan_of(cache: Path) -> str:
    """The plan the killed reader saved beside its chunks (it plans before serving)."""
    (saved,) = (cache / "plans").glob("*.json")
    return saved.read_text(encoding="utf-8")
