"""The reliability suite: every test in it carries the ``reliability`` marker, and the
figures its tests recorded are printed at the end of the run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import write_table
from tests.reliability.figures import RECORDS
from tests.reliability.procs import TABLE_ROWS, Child

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests of this folder, so ``-m reliability`` (or ``-m "not reliability"``)
    selects them."""
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.reliability)


@pytest.fixture(scope="session")
def duckdb_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DuckDB file of ``TABLE_ROWS`` rows (x2 = id % 13), read-only for every test."""
    return write_table(tmp_path_factory.mktemp("reliability") / "w.duckdb", TABLE_ROWS)


@pytest.fixture
def children() -> Iterator[list[Child]]:
    """Reader subprocesses started by a test; any left running are killed at teardown."""
    started: list[Child] = []
    yield started
    for child in started:
        child.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print one line per recorded check: what was injected, run and checked."""
    if not RECORDS:
        return
    terminalreporter.section("reliability figures")
    for entry in RECORDS:
        figures = ", ".join(f"{key}={value}" for key, value in entry.items() if key != "check")
        terminalreporter.write_line(f"{entry['check']}: {figures}")
