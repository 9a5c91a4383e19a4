"""Where a stream is, and which rows of an epoch each DDP rank and DataLoader worker serves.

An epoch's rows are its chunks, in that epoch's order, each permuted, laid end to end.
Each DDP rank takes an equal, contiguous range of them; each DataLoader worker of a rank
takes a contiguous run of that rank's batches. For a loader that reads on one process and
dispatches slices of its batches to the others, that process serves the rows all ranks
would, end to end. A :class:`StreamPosition` says how many
batches of an epoch the training loop consumed; :func:`worker_rows` turns it into the
rows each worker still has to serve. A :class:`~faucet_core.reader.Reader` is a single
worker of a single rank, so readers and data loaders share one resume rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from faucet_core.batches import batch_count
from faucet_core.errors import ResumeError

__all__ = [
    "STATE_FORMAT",
    "Remainder",
    "StreamPosition",
    "rank_rows",
    "resume_point",
    "worker_batches",
    "worker_rows",
]

#: The version of the saved-state layout, and of the stream it resumes (3: rows of a chunk
#: shuffled by a keyed mix of their hashes).
STATE_FORMAT = 3

Remainder = Literal["drop", "pad"]


def rank_rows(total: int, rank: int, world_size: int, remainder: Remainder) -> tuple[int, int]:
    """Rows ``start:stop`` of an epoch served by ``rank``; equal in length for every rank.

    ``drop`` leaves out the last ``total % world_size`` rows of the epoch's order (other
    rows each epoch); ``pad`` extends the last ranks with the epoch's first rows again.
    """
    per_rank = total // world_size if remainder == "drop" else math.ceil(total / world_size)
    return rank * per_rank, (rank + 1) * per_rank


def worker_batches(batches: int, worker: int, workers: int) -> tuple[int, int]:
    """The contiguous run of a rank's batches that one DataLoader worker serves."""
    return worker * batches // workers, (worker + 1) * batches // workers


def resume_point(sizes: list[int], consumed: int) -> tuple[list[int], int]:
    """Where ``consumed`` batches of workers with ``sizes`` batches each leave off.

    A DataLoader takes one batch from each worker in turn, skipping exhausted ones.
    Returns the batches each worker had delivered and the worker whose turn was next.
    """
    taken = [0] * len(sizes)
    turn = 0
    left = min(consumed, sum(sizes))
    while left:
        if taken[turn] < sizes[turn]:
            taken[turn] += 1
            left -= 1
        turn = (turn + 1) % len(sizes)
    return taken, turn


@dataclass(frozen=True)
class Partition:
    """How an epoch is divided: among ranks, then among one rank's workers, in batches."""

    rank: int = 0
    world_size: int = 1
    remainder: Remainder = "drop"
    workers: int = 1
    #: One process serves every rank's rows, for a loader that dispatches them.
    dispatch: bool = False

    def rank_range(self, total: int, batch_size: int, drop_last: bool) -> tuple[int, int]:
        """Rows ``start:stop`` of an epoch of ``total`` rows this rank serves.

        Dispatching, the rows of all ranks: as many as each rank would serve (its whole
        batches only, with ``drop_last``) times the ranks, so that slicing each batch (or
        each group of one batch per rank) evenly among the ranks loses and repeats none.
        """
        if not self.dispatch:
            return rank_rows(total, self.rank, self.world_size, self.remainder)
        _, per_rank = rank_rows(total, 0, self.world_size, self.remainder)  # rank 0 starts at 0
        if drop_last:
            per_rank -= per_rank % batch_size
        return 0, self.world_size * per_rank

    def rank_batches(self, total: int, batch_size: int, drop_last: bool) -> int:
        """Batches each rank serves per epoch of ``total`` rows (the same on every rank)."""
        start, stop = self.rank_range(total, batch_size, drop_last)
        return batch_count(stop - start, batch_size, drop_last)

    def worker_run(
        self, total: int, batch_size: int, drop_last: bool, worker: int
    ) -> tuple[int, int]:
        """The contiguous run of this rank's batches (per epoch of ``total`` rows) that
        ``worker`` serves.

        Dispatching, a short last batch goes to the last worker, beyond an even split of
        the whole ones: a DataLoader takes one batch from each worker in turn, so it is
        then the epoch's last batch (and so are the short batches a loader that batches
        rows itself makes of it), and every group of batches before it slices evenly.
        """
        batches = self.rank_batches(total, batch_size, drop_last)
        if self.dispatch:
            _, rows = self.rank_range(total, batch_size, drop_last)  # dispatching: from row 0
            if rows % batch_size:
                first, last = worker_batches(batches - 1, worker, self.workers)
                return first, last + (worker == self.workers - 1)
        return worker_batches(batches, worker, self.workers)

    def worker_sizes(self, total: int, batch_size: int, drop_last: bool) -> list[int]:
        """Batches each worker of a rank serves per epoch."""
        spans = [self.worker_run(total, batch_size, drop_last, w) for w in range(self.workers)]
        return [hi - lo for lo, hi in spans]


def worker_rows(
    total: int,
    batch_size: int,
    drop_last: bool,
    partition: Partition,
    worker: int,
    consumed: int,
) -> tuple[int, int]:
    """Rows ``start:stop`` of an epoch that ``worker`` serves, ``consumed`` batches in.

    A resumed DataLoader starts its turns at worker 0 again, where the interrupted one
    would have gone on with worker ``turn``: worker ``j`` takes over the run of ``turn + j``.
    A ``stop`` past ``total`` wraps around (ranks padded with the epoch's first rows).

    Raises:
        ValueError: ``worker`` is not one of the partition's workers (numbered from 0).
    """
    if not 0 <= worker < partition.workers:
        raise ValueError(f"worker {worker} is not one of {partition.workers} (numbered from 0)")
    rank_start, rank_stop = partition.rank_range(total, batch_size, drop_last)
    taken, turn = resume_point(partition.worker_sizes(total, batch_size, drop_last), consumed)
    run = (worker + turn) % partition.workers
    first, last = partition.worker_run(total, batch_size, drop_last, run)
    start = rank_start + (first + taken[run]) * batch_size
    stop = min(rank_start + last * batch_size, rank_stop)
    return start, max(start, stop)


@dataclass(frozen=True)
class StreamPosition:
    """A position in a training stream: the epoch under way and the batches consumed.

    Attributes:
        plan: The fingerprint of the plan the stream reads.
        seed: The shuffle seed.
        epoch: The epoch under way (1-based): the next one once an epoch is finished.
        batches: Batches of ``epoch`` the training loop consumed.
        settings: What a stream resuming here must share: batch size, shuffling,
            partition, and the seed when one was configured.
    """

    plan: str
    seed: int
    epoch: int
    batches: int
    settings: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The position as a few plain values, to store with a checkpoint."""
        return {
            "format": STATE_FORMAT,
            **self.settings,
            "plan": self.plan,
            "seed": self.seed,
            "epoch": self.epoch,
            "batches": self.batches,
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> StreamPosition:
        """Read a position written by :meth:`as_dict`.

        Raises:
            ResumeError: ``state`` is not a Faucet stream state.
        """
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
            raise ResumeError(f"not a Faucet stream state (format {STATE_FORMAT}): {state!r:.200}")
        own = {"format", "plan", "seed", "epoch", "batches"}
        try:
            return cls(
                plan=str(state["plan"]),
                seed=int(state["seed"]),
                epoch=int(state["epoch"]),
                batches=int(state["batches"]),
                settings={k: v for k, v in state.items() if k not in own},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ResumeError(f"a Faucet stream state lacks or garbles {exc}") from exc

    def check(self, plan: str, settings: Mapping[str, Any]) -> None:
        """Refuse to resume from another plan or with other ``settings``.

        Mixing streams would repeat or skip rows, so any difference is an error naming it.

        Raises:
            ResumeError: Naming what differs.
        """
        if self.plan != plan:
            raise ResumeError(
                "the saved state is from another plan: the data, source, split or chunk_size "
                "changed since it was saved"
            )
        for name, value in settings.items():
            saved = self.seed if name == "seed" else self.settings.get(name)
            if saved != value:
                raise ResumeError(f"{name} was {saved!r} when the state was saved, now {value!r}")
