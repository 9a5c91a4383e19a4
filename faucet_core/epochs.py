"""Which epoch each iteration of a dataset serves, the same in DataLoader worker processes.

Training frameworks iterate a dataset once per epoch and do not all call ``set_epoch``.
So a new iteration serves the epoch after the previous iteration's, unless an epoch was
selected since: the selected one is served, resumed after its skipped batches.

A DataLoader's workers iterate copies of the dataset, made anew each epoch (or kept, with
persistent workers). So the selection and the iterations started since live in memory
shared with the workers: each process that holds a dataset has its own counts, which
the DataLoader workers it starts (forked or spawned) share, one slot each. A copy of the
dataset in another process that is no worker of its maker (a DDP rank given it by
``spawn``) counts its own epochs, from the state it was copied in; a process forked from
the maker, not as its worker, from its first use of the dataset.
"""

from __future__ import annotations

import multiprocessing
import os
from multiprocessing.context import get_spawning_popen
from typing import Any

__all__ = ["MAX_WORKERS", "EpochCounter"]

#: DataLoader workers a dataset can count for (slot 0 is its own process's iterations).
MAX_WORKERS = 256
_EPOCH, _SKIP, _SELECTIONS, _FIRST_SLOT = 0, 1, 2, 3
_SIZE = _FIRST_SLOT + 1 + MAX_WORKERS


def _shared(values: list[int] | None = None) -> Any:
    """Counts in memory that processes started from this one (forked or spawned) share."""
    array = multiprocessing.Array("q", _SIZE, lock=False)
    if values is not None:
        array[:] = values
    return array


class EpochCounter:
    """The selected epoch (1-based), its skipped batches, and the iterations started
    since, per slot: the process's own (slot 0) and each DataLoader worker's."""

    def __init__(self) -> None:
        counts = _shared()
        counts[_EPOCH] = 1
        # The counts of each process that held this counter, by process id.
        self._counts: dict[int, Any] = {os.getpid(): counts}

    def _values(self, worker: int | None = None) -> Any:
        """This process's counts, or (in a DataLoader worker) its parent's."""
        if worker is not None:
            parent = self._counts.get(os.getppid())
            if parent is not None:
                return parent
        mine = self._counts.get(os.getpid())
        if mine is None:  # forked from the maker, but not as its worker: counts of its own
            made = self._counts.get(os.getppid()) or next(iter(self._counts.values()))
            mine = self._counts[os.getpid()] = _shared(list(made))
        return mine

    @property
    def epoch(self) -> int:
        """The epoch selected last (the first iteration after the selection serves it)."""
        return int(self._values()[_EPOCH])

    @property
    def skip_batches(self) -> int:
        """Batches of :attr:`epoch` its first iteration leaves out."""
        return int(self._values()[_SKIP])

    @property
    def selections(self) -> int:
        """How many times an epoch was selected: tells a selection from the last one seen."""
        return int(self._values()[_SELECTIONS])

    def select(self, epoch: int, skip_batches: int = 0) -> None:
        """Make the next iteration of every slot serve ``epoch``, after ``skip_batches``."""
        values = self._values()
        for slot in range(_FIRST_SLOT, _SIZE):
            values[slot] = 0
        values[_EPOCH], values[_SKIP] = epoch, skip_batches
        values[_SELECTIONS] += 1

    def start(self, worker: int | None) -> tuple[int, int]:
        """Count an iteration of this process (``worker`` None) or of DataLoader worker
        ``worker``; returns the epoch it serves and the batches it skips.

        Raises:
            ValueError: More DataLoader workers than :data:`MAX_WORKERS`.
        """
        if worker is not None and worker >= MAX_WORKERS:
            raise ValueError(f"at most {MAX_WORKERS} DataLoader workers (num_workers)")
        values = self._values(worker)
        slot = _FIRST_SLOT + (0 if worker is None else 1 + worker)
        started = int(values[slot])
        values[slot] = started + 1
        epoch, skip = int(values[_EPOCH]), int(values[_SKIP])
        return (epoch, skip) if started == 0 else (epoch + started, 0)

    def __getstate__(self) -> dict[str, Any]:
        maker = os.getpid()
        if get_spawning_popen() is not None:  # a process being started: share the counts
            return {"counts": self._counts, "maker": maker}
        return {"counts": {maker: list(self._values())}, "maker": maker}

    def __setstate__(self, state: dict[str, Any]) -> None:
        counts = dict(state["counts"])
        made = counts[state["maker"]]
        if isinstance(made, list):  # a copy that is not shared: counts of its own
            counts = {}
        # Made here before any worker starts, so that forked workers share it too.
        counts[os.getpid()] = _shared(list(made))
        self._counts = counts
