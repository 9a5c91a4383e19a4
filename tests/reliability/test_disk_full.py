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

import pytest

from faucet_core.plan import Plan
from tests.reliability.figures import record
from tests.reliability.procs import (
    Child,
    cached_whole,
    check_cache,
    reader_settings,
    served_exactly_once,
)

DATASTORES = ["duckdb", "chunk-by-chunk-duckdb"]  # filled from one scan / chunk by chunk


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


def _later_reader(settings: dict[str, Any], out: Path, children: list[Child]) -> Child:
    """A reader with room, on the same folder, for two epochs."""
    child = Child({"settings": {**settings, "epochs": 2}}, out)
    children.append(child)
    return child


def _caches_everything(child: Child) -> int:
    """Assert ``child`` served exactly once and left every chunk cached whole; rows checked."""
    result = child.finish()
    settings = json.loads((child.out / "job.json").read_text(encoding="utf-8"))["settings"]
    rows = served_exactly_once(result)
    assert cached_whole(result, Path(settings["cache_dir"])).temp_files == 0
    return rows


def test_a_full_tmpfs_leaves_the_read_whole_and_the_cache_consistent(
    duckdb_table: Path, tiny_disks: list[Path], tmp_path: Path, children: list[Child]
) -> None:
    settings = [
        reader_settings(duckdb_table, disk, datastore=name, epochs=2, cache_fill_buffer=2**16)
        for name, disk in zip(DATASTORES, tiny_disks, strict=True)
    ]
    readers = [Child({"settings": s}, tmp_path / f"full-{i}") for i, s in enumerate(settings)]
    children.extend(readers)
    for name, disk, setting, reader in zip(DATASTORES, tiny_disks, settings, readers, strict=True):
        result = reader.finish()
        rows = served_exactly_once(result)
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
    duckdb_table: Path, tmp_path: Path, children: list[Child]
) -> None:
    cases = []
    for seed in (1, 2, 3, 4):
        name = DATASTORES[seed % 2]
        # No room at all, or room for part of the entries: one is cut off mid-write.
        room = 0 if seed == 1 else random.Random(seed).randrange(1_000, 900_000)
        settings = reader_settings(
            duckdb_table,
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
        rows = served_exactly_once(result)
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
