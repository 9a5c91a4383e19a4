"""Plans kept beside the cached chunks, so a source is planned once per version of its data.

A plan is stored under a key made of the warehouse, its connection settings, where the
source's data lives, the request (source, split, chunk size) and the source's data
version. A reader finds it there before asking the warehouse anything, so a rerun,
another process or another DDP rank on the same machine reuses it. Processes planning the
same key at once take turns (a lock file), so one of them plans and the others read its
plan.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from pathlib import Path

from faucet_core.files import file_lock, private_folder, write_private
from faucet_core.layout import stable_digest
from faucet_core.plan import Plan
from faucet_core.warehouse import PlanRequest

__all__ = ["PlanCache"]

log = logging.getLogger(__name__)

FOLDER = "plans"
#: How the file of a fitted preprocessor kept beside the plans ends.
PREPROCESSOR_SUFFIX = ".preprocessor.json"


class PlanCache:
    """A folder of plans (``<cache dir>/plans``), one JSON file per key.

    Args:
        directory: The chunk cache folder; plans go in its ``plans`` subfolder.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory) / FOLDER

    @staticmethod
    def key(
        datastore: str,
        connection: str,
        identity: str,
        request: PlanRequest,
        version: str | None,
    ) -> str:
        """The key of a plan: what was asked, of which warehouse, where its data lives
        (the source's identity), at which data version."""
        return stable_digest(datastore, connection, identity, dataclasses.asdict(request), version)

    def get(self, key: str, max_age: float | None = None) -> Plan | None:
        """The plan saved under ``key``, unless missing, unreadable or older than ``max_age``
        seconds."""
        path = self.directory / f"{key}.json"
        try:
            age = time.time() - path.stat().st_mtime
            if max_age is not None and age > max_age:
                return None
            return Plan.from_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring the unreadable saved plan %s: %s", path, exc)
            return None

    def put(self, key: str, plan: Plan) -> None:
        """Save ``plan`` under ``key`` (atomically: a reader never sees half a plan)."""
        path = self.directory / f"{key}.json"
        try:
            private_folder(self.directory)
            write_private(path, plan.to_json())
        except OSError as exc:
            log.warning("could not save the plan %s: %s", path, exc)

    def get_preprocessor(self, key: str) -> bytes | None:
        """The fitted preprocessor saved under ``key`` (as UTF-8 JSON), or ``None``."""
        try:
            return (self.directory / f"{key}{PREPROCESSOR_SUFFIX}").read_bytes()
        except OSError:
            return None

    def put_preprocessor(self, key: str, text: str) -> None:
        """Save a fitted preprocessor (as JSON) under ``key``, beside the plans (atomically)."""
        path = self.directory / f"{key}{PREPROCESSOR_SUFFIX}"
        try:
            private_folder(self.directory)
            write_private(path, text)
        except OSError as exc:
            log.warning("could not save %s: %s", path, exc)

    def lock(self, key: str) -> contextlib.AbstractContextManager[None]:
        """A lock on ``key`` across processes: planning or materializing it, one at a time."""
        return file_lock(self.directory / f"{key}.lock")

    def count(self) -> tuple[int, int]:
        """How many plans, and how many fitted preprocessors, are saved."""
        if not self.directory.is_dir():
            return 0, 0
        names = [path.name for path in self.directory.glob("*.json")]
        preprocessors = sum(name.endswith(PREPROCESSOR_SUFFIX) for name in names)
        return len(names) - preprocessors, preprocessors

    def clear(self) -> int:
        """Delete every saved plan and lock file; returns the bytes freed."""
        freed = 0
        if self.directory.is_dir():
            for path in self.directory.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    freed += path.stat().st_size
                    path.unlink()
        return freed
