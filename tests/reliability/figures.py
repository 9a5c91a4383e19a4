"""Figures the reliability tests measure (faults injected, runs, rows checked), for the report.

Each test calls :func:`record`; the suite prints every record at the end of the run, and
appends it as a JSON line to the file named by ``FAUCET_RELIABILITY_FIGURES`` when set.
"""

from __future__ import annotations

import json
import os
from typing import Any

RECORDS: list[dict[str, Any]] = []


def record(name: str, **figures: Any) -> None:
    """Keep the figures of the check ``name`` (e.g. ``rows_checked=...``, ``lost=0``)."""
    entry = {"check": name, **figures}
    RECORDS.append(entry)
    path = os.environ.get("FAUCET_RELIABILITY_FIGURES")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(entry, default=str) + "\n")
