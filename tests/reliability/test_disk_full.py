"""A full disk while cache entries are written: the read still succeeds, every epoch
exactly once from the warehouse, and the cache stays consistent (no partial entry left
or served); a later reader with room caches everything.

Two ways to fill the disk: a real 1 MiB tmpfs (when this machine lets the tests mount
one), and always a write wrapper that fails the cache's writes with ``ENOSPC`` past a
seeded number of bytes.
"""

from __future__ import annotations

import json
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from faucet_core.plan import Plan
from tests.conftest import write_table
from tests.reliability.figures import record
from tests.reliability.procs import (
    TABLE_ROWS,
    Child,
    Result,
    check_cache,
    exactly_once,
    reader_settings,
)

IDS = np.arange(TABLE_ROWS)
DATASTORES = ["duckdb", "chunk-by-chunk-duckdb"]  # filled from one scan / chunk by chunk


@pytest.fixture(scope="module")
def disk_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20,000 rows (about 1.1 MB of cache entries) in ten chunks."""
    return write_table(tmp_path_factory.mktemp("disk-full") / "w.duckdb", TABLE_ROWS)


@pytest.fixture
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:
        child.close()


@pytest.fixture
def tiny_disks(tmp_path: Path) -> Iterator[list[Path]]:
    """Two 1 MiB tmpfs folders, unmounted after the test; skipped where mounting is not
    allowed (the ``ENOSPC`` wrapper test below runs everywhere)."""
    mounted: list[Path] = []
    try:
        for name in DATASTORES:
            folder = tmp_path / f"tiny-{name}"
            folder.mkdir()
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(folder)],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
            mounted.append(folder)
        yield mounted
    finally:
        for folder in mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def _exactly_once(result: Result) -> int:
    """Assert every epoch of ``result`` served each row once, with its values; rows checked."""
    for epoch in result.epochs:
        assert exactly_once(epoch.keys, IDS) == (0, 0)
        assert epoch.wrong == 0
    return sum(e.keys.size for e in result.epochs)


def _later_reader(settings: dict[str, Any], out: Path, children: list[Child]) -> Child:
    """A reader with room, on the same folder, for two epochs."""
    child = Child({"settings": {**settings, "epochs": 2}}, out)
    children.append(child)
    return child


def _caches_everything(child: Child) -> int:
    """Assert ``child`` served exactly once and left every chunk cached whole; rows checked."""
    result = child.finish()
    settings = json.loads((child.out / "job.json").read_text(encoding="utf-8"))["settings"]
    rows = _exactly_once(result)
    chunks = len(Plan.from_json(result.plan_json).chunks["train"])
    assert (result.epochs[1].chunks_cached, result.epochs[1].chunks_fetched) == (chunks, 0)
    after = check_cache(Path(settings["cache_dir"]), result.plan_json)
    assert after.bad == [] and after.temp_files == 0 and after.entries == chunks
    return rows


def test_a_full_tmpfs_leaves_the_read_whole_and_the_cache_consistent(
    disk_table: Path, tiny_disks: list[Path], tmp_path: Path, children: list[Child]
) -> None:
    settings = [
        reader_settings(disk_table, disk, datastore=name, epochs=2, cache_fill_buffer=2**16)
        for name, disk in zip(DATASTORES, tiny_disks, strict=True)
    ]
    readers = [Child({"settings": s}, tmp_path / f"full-{i}") for i, s in enumerate(settings)]
    children.extend(readers)
    for name, disk, setting, reader in zip(DATASTORES, tiny_disks, settings, readers, strict=True):
        result = reader.finish()
        rows = _exactly_once(result)
        check = check_cache(disk, result.plan_json)
        assert check.bad == [] and check.temp_files == 0
        chunks = len(Plan.from_json(result.plan_json).chunks["train"])
        assert check.entries < chunks  # the disk was too small for all of them
        assert "No space left on device" in reader.stderr()
        # Room again: the same folder, grown, is filled by a later reader.
        subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
        later = _caches_everything(_later_reader(setting, tmp_path / f"later-{name}", children))
        record(
            f"disk full: 1 MiB tmpfs ({name})",
            disk_bytes=2**20,
            entries_stored=check.entries,
            entries_refused=chunks - check.entries,
            partial_left=0,
            epochs=4,
            rows_checked=rows + later,
            lost=0,
            duplicated=0,
            wrong=0,
        )


def test_enospc_from_the_cache_writes_leaves_the_read_whole_and_the_cache_consistent(
    disk_table: Path, tmp_path: Path, children: list[Child]
) -> None:
    cases = []
    for seed in (1, 2, 3, 4):
        name = DATASTORES[seed % 2]
        # No room at all, or room for part of the entries: one is cut off mid-write.
        room = 0 if seed == 1 else random.Random(seed).randrange(1_000, 900_000)
        settings = reader_settings(
            disk_table,
            tmp_path / f"cache-{seed}",
            datastore=name,
            epochs=2,
            cache_fill_buffer=2**16,
        )
        cases.append((seed, name, room, settings))
    readers = [
        Child({"settings": s, "hooks": {"enospc_after": room}}, tmp_path / f"full-{seed}")
        for seed, _, room, s in cases
    ]
    children.extend(readers)
    stored = []
    for (_, _, room, settings), reader in zip(cases, readers, strict=True):
        result = reader.finish()
        rows = _exactly_once(result)
        check = check_cache(Path(settings["cache_dir"]), result.plan_json)
        assert check.bad == [] and check.temp_files == 0
        chunks = len(Plan.from_json(result.plan_json).chunks["train"])
        assert check.entries < chunks and check.bytes <= room
        stored.append((check.entries, chunks, rows))
    later = [
        _later_reader(settings, tmp_path / f"later-{seed}", children)
        for seed, _, _, settings in cases
    ]
    for (seed, name, room, _), (entries, chunks, rows), child in zip(
        cases, stored, later, strict=True
    ):
        later_rows = _caches_everything(child)
        record(
            f"disk full: ENOSPC past {room} bytes ({name}, seed {seed})",
            entries_stored=entries,
            entries_refused=chunks - entries,
            partial_left=0,
            epochs=4,
            rows_checked=rows + later_rows,
            lost=0,
            duplicated=0,
            wrong=0,
        )
