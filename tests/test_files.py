"""Folders held by their process while it lives: what a killed process leaves is deleted
by the next one, what a live one holds is not."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from faucet_core.files import hold_folder, private_folder, remove_abandoned

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="no file locks to hold by")

#: Holds each folder named on its command line, says so, then waits to be killed.
_HOLDER = """
import sys
from pathlib import Path
from faucet_core.files import hold_folder, private_folder
holds = []
for name in sys.argv[1:]:
    private_folder(Path(name))
    holds.append(hold_folder(Path(name)))
print("held", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def holder() -> Iterator[list[subprocess.Popen[str]]]:
    """Started holders, killed at the end of the test if still alive."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        process.kill()
        process.wait()


def _hold_in_child(started: list[subprocess.Popen[str]], *folders: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, *map(str, folders)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    started.append(process)
    assert process.stdout is not None
    assert process.stdout.readline() == "held\n"  # or "" had it failed
    return process


def _killed(process: subprocess.Popen[str]) -> None:
    process.kill()  # SIGKILL: nothing of its own runs
    process.wait()


def test_folders_of_a_killed_process_are_deleted_those_of_a_live_one_kept(
    tmp_path: Path, holder: list[subprocess.Popen[str]]
) -> None:
    dead, alive = tmp_path / "spill-a", tmp_path / "spill-b"
    victim = _hold_in_child(holder, dead, dead / "inner")
    _hold_in_child(holder, alive)
    (dead / "inner" / "rows.arrow").write_bytes(b"x" * 100)
    assert remove_abandoned(tmp_path, "spill-*") == []  # both holders live
    _killed(victim)
    assert remove_abandoned(tmp_path, "spill-*") == [dead]
    assert not dead.exists()
    assert alive.is_dir()


def test_folders_never_held_of_other_hosts_or_other_names_are_left_alone(
    tmp_path: Path, holder: list[subprocess.Popen[str]]
) -> None:
    never = tmp_path / "spill-never"
    never.mkdir()
    other_name = tmp_path / "other"
    _killed(_hold_in_child(holder, other_name))
    # Held on another host (on shared storage): only that host's processes judge.
    other_host = tmp_path / "spill-elsewhere"
    _killed(_hold_in_child(holder, other_host))
    (hold_file,) = other_host.glob(".holder.*.lock")
    hold_file.rename(other_host / ".holder.another-host.lock")
    (tmp_path / "spill-file").write_text("not a folder")
    assert remove_abandoned(tmp_path, "spill-*") == []
    assert never.is_dir() and other_name.is_dir() and other_host.is_dir()


def test_a_folder_this_process_holds_is_kept_until_it_lets_go(tmp_path: Path) -> None:
    folder = tmp_path / "spill-own"
    private_folder(folder)
    hold = hold_folder(folder)
    assert hold is not None
    assert remove_abandoned(tmp_path, "spill-*") == []
    renamed = folder.rename(tmp_path / "spill-renamed")  # the hold goes with it
    assert remove_abandoned(tmp_path, "spill-*") == []
    hold.release()
    assert remove_abandoned(tmp_path, "spill-*") == [renamed]
    assert list(tmp_path.iterdir()) == []
