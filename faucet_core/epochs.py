"""Which epoch each iteration of a dataset serves, the same in DataLoader worker processes.

Training frameworks iterate a dataset once per epoch and do not all call ``set_epoch``.
So a new iteration serves the epoch after the previous iteration's, unless an epoch was
selected since: the selected one is served, resumed after its skipped batches. A
DataLoader's workers iterate copies of the dataset, made anew each epoch (or kept, with
persistent workers); the selection and each worker's count of iterations live in memory
shared with them, so every worker of an epoch serves that same epoch.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.context import get_spawning_popen
from typing import Any

__all__ = ["EpochCounter"]

#: DataLoader workers a dataset can count for (slot 0 is the process's own iterations).
MAX_WORKERS = 256
_EPOCH, _SKIP, _SELECTIONS, _FIRST_SLOT = 0, 1, 2, 3


class EpochCounter:
    """The selected epoch (1-based), its skipped batches, and iterations started since,
    per process slot: this process (slot 0) and each DataLoader worker."""

    def __init__(self) -> None:
        self._values: Any = multiprocessing.Array("q", _FIRST_SLOT + 1 + MAX_WORKERS, lock=False)
        self._values[_EPOCH] = 1

    @property
    def epoch(self) -> int:
        """The epoch selected last (the first iteration after the selection serves it)."""
        return int(self._values[_EPOCH])

    @property
    def skip_batches(self) -> int:
        """Batches of :attr:`epoch` its first iteration leaves out."""
        return int(self._values[_SKIP])

    @property
    def selections(self) -> int:
        """How many times an epoch was selected: tells a selection from the last one seen."""
        return int(self._values[_SELECTIONS])

    def select(self, epoch: int, skip_batches: int = 0) -> None:
        """Make the next iteration of every slot serve ``epoch``, after ``skip_batches``."""
        values = self._values
        for slot in range(_FIRST_SLOT, len(values)):
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
        slot = _FIRST_SLOT + (0 if worker is None else 1 + worker)
        started = int(self._values[slot])
        self._values[slot] = started + 1
        epoch, skip = self.epoch, self.skip_batches
        return (epoch, skip) if started == 0 else (epoch + started, 0)

    def __getstate__(self) -> dict[str, Any]:
        if get_spawning_popen() is not None:  # a worker process being started: shared
            return {"values": self._values}
        return {"values": list(self._values)}  # any other copy counts on its own

    def __setstate__(self, state: dict[str, Any]) -> None:
        values = state["values"]
        if isinstance(values, list):
            self._values = multiprocessing.Array("q", values, lock=False)
        else:
            self._values = values
