"""The reliability suite: every test in it carries the ``reliability`` marker, and the
figures its tests recorded are printed at the end of the run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.figures import RECORDS

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests of this folder, so ``-m reliability`` (or ``-m "not reliability"``)
    selects them."""
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.reliability)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print one line per recorded check: what was injected, run and checked."""
    if not RECORDS:
        return
    terminalreporter.section("reliability figures")
    for entry in RECORDS:
        figures = ", ".join(f"{key}={value}" for key, value in entry.items() if key != "check")
        terminalreporter.write_line(f"{entry['check']}: {figures}")
