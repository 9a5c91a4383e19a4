"""Snapshots that keep the rows a plan counted readable without copying them.

PostgreSQL exports a transaction's snapshot (``pg_export_snapshot``): a transaction of any
session of the same server that imports it (``SET TRANSACTION SNAPSHOT``) while the
exporting one is open sees the rows it saw. Where planning does not copy the source, it
counts the rows in such a transaction and keeps it open; the plan carries the snapshot's
name (:attr:`~faucet_core.plan.Plan.pinned`), and every read of the plan's rows, in any
process, imports it. The warehouse instance that planned releases it once the rows are
kept elsewhere (its cache fill has read them all, or a copy was made under it) or when it
closes. A read that finds it gone (released, or ended by the server, for instance by
``idle_in_transaction_session_timeout``) reads the rows as they are, and the core checks
them against the plan.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from typing import Any

from faucet_core.plan import Plan

__all__ = ["SnapshotPins", "importing", "is_gone"]

log = logging.getLogger(__name__)

#: The key of a plan's ``pinned`` that holds the snapshot's name.
_KEY = "snapshot"
#: A snapshot's name as ``pg_export_snapshot`` gives it, numbers joined by hyphens
#: (``00000003-0000001B-1``): nothing else is put in SQL.
_NAME = re.compile(r"[0-9A-F]+(-[0-9A-F]+)+")
#: The server's refusal of a snapshot no longer exported.
_GONE = re.compile(r'snapshot "[^"]*" does not exist')


def is_gone(message: str) -> bool:
    """Whether ``message``, of an error importing a snapshot, says the server no longer
    exports it."""
    return _GONE.search(message) is not None


def importing(name: str) -> list[str]:
    """The statements that make the transaction just begun see the snapshot ``name``: the
    first ones it runs."""
    return ["SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", f"SET TRANSACTION SNAPSHOT '{name}'"]


class SnapshotPins:
    """The snapshots a warehouse instance holds open for its plans, and those its reads
    found gone."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, Any] = {}  # name -> the connection whose transaction exports it
        self._gone: set[str] = set()

    @staticmethod
    def export(connection: Any) -> str:
        """Begin a read-only transaction on ``connection`` (a psycopg connection in
        autocommit mode) and export its snapshot; its name."""
        cursor = connection.execute(  # in one round trip: psycopg sends it as it is
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT pg_export_snapshot()"
        )
        cursor.nextset()
        return str(cursor.fetchone()[0])

    def hold(self, name: str, connection: Any) -> dict[str, str]:
        """Keep ``connection``'s transaction open, exporting ``name``, until
        :meth:`release`; the plan's ``pinned`` that names it."""
        with self._lock:
            self._held[name] = connection
        return {_KEY: name}

    def of(self, plan: Plan) -> str | None:
        """The snapshot ``plan``'s reads import: ``None`` where it has none, one found gone,
        or a value that is not a snapshot's name."""
        name = plan.pinned.get(_KEY)
        if name is None:
            return None
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            log.warning("the plan's snapshot %r is not a snapshot's name: ignored", name)
            return None
        with self._lock:
            return None if name in self._gone else name

    def gone(self, name: str) -> None:
        """Note that the server no longer knows ``name``: the plan's reads from now on read
        the rows as they are."""
        with self._lock:
            if name in self._gone:
                return
            self._gone.add(name)
        log.warning(
            "the snapshot %s that planning took is gone (the reader that planned closed, or "
            "the server ended its transaction): reading the rows as they are, checked "
            "against the plan", name,
        )  # fmt: skip

    def release(self, name: str) -> None:
        """End the transaction exporting ``name``, if this instance holds it."""
        with self._lock:
            connection = self._held.pop(name, None)
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()
            log.info("released the snapshot %s", name)

    def close(self) -> None:
        """Release every snapshot held."""
        with self._lock:
            names = list(self._held)
        for name in names:
            self.release(name)
