"""PyTorch integration: a dataset for DataLoader workers and DDP ranks, with exact resume.

Install with ``pip install 'faucetml[torch]'``. An epoch's rows are the reader's plan laid
out in that epoch's shuffled order. Each DDP rank takes an equal, contiguous range of
them (the remainder of the division is dropped or padded, as chosen); each DataLoader
worker of a rank takes a contiguous run of that rank's batches. So every row is served
exactly once per epoch across workers and ranks, every rank serves the same number of
batches, and batch boundaries are those of the single-process stream.

:class:`FaucetDataLoader` counts the batches the training loop consumed, which is what
its :meth:`~FaucetDataLoader.state_dict` saves and a restored loader skips.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from faucet_core.batches import batch_count
from faucet_core.config import build_config
from faucet_core.errors import ConfigError
from faucet_core.reader import Reader
from faucet_core.resume import STATE_FORMAT, check_state
from faucet_core.warehouse import SplitName

__all__ = [
    "FaucetDataLoader",
    "FaucetIterableDataset",
    "LoaderMetrics",
    "rank_rows",
    "resume_point",
    "worker_batches",
]

Remainder = Literal["drop", "pad"]
TensorBatch = tuple[torch.Tensor, torch.Tensor | None]


def _distributed(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Rank and world size: given, else from torch.distributed, else RANK/WORLD_SIZE, else 0/1."""
    if rank is None and world_size is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
        elif "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        else:
            rank, world_size = 0, 1
    if rank is None or world_size is None:
        raise ValueError("give both rank and world_size, or neither")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    return rank, world_size


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

    The DataLoader takes one batch from each worker in turn, skipping exhausted ones.
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


def _tensor(table: pa.Table) -> torch.Tensor:
    """A 2-D tensor of a table of numeric or boolean columns (one column per feature)."""
    unfit = [
        f"{field.name} ({field.type})"
        for field in table.schema
        if not (pa.types.is_integer(field.type) or pa.types.is_floating(field.type)
                or pa.types.is_boolean(field.type))
    ]  # fmt: skip
    if unfit:
        raise ConfigError(
            [
                (
                    "source.columns",
                    f"{', '.join(unfit)} cannot become tensors; select numeric columns",
                )
            ]
        )
    columns = [column.to_numpy() for column in table.columns]
    return torch.from_numpy(np.column_stack(columns) if columns else np.empty((table.num_rows, 0)))


class FaucetIterableDataset(IterableDataset[TensorBatch]):
    """An ``IterableDataset`` of ``(features, labels)`` tensor batches of a reader's split.

    Use it with ``DataLoader(dataset, batch_size=None, ...)`` (or :meth:`loader`), so that
    Faucet's batches pass through. Call :meth:`set_epoch` before each epoch, as with a
    ``DistributedSampler``.

    Args:
        reader: A reader; its plan, seed and settings are used, it serves no batches itself.
            Its warehouse is prepared here so workers in other processes can read chunks.
        split: ``"train"`` (shuffled every epoch) or ``"eval"``.
        rank: This process's DDP rank (default: from ``torch.distributed`` or ``RANK``).
        world_size: The number of ranks (default: as ``rank``).
        remainder: What to do with rows that do not divide evenly among ranks: ``"drop"``
            them (other rows each epoch) or ``"pad"`` ranks with repeated rows.
        features_dtype: Convert features to this dtype (default: as the columns give).
    """

    def __init__(
        self,
        reader: Reader,
        split: SplitName = "train",
        rank: int | None = None,
        world_size: int | None = None,
        remainder: Remainder = "drop",
        features_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        reader.prepare()
        self.config = reader.config.model_copy(update={"output": "arrow", "seed": reader.seed})
        self.plan = reader.plan
        self.split: SplitName = split
        self.rank, self.world_size = _distributed(rank, world_size)
        self.remainder: Remainder = remainder
        self.features_dtype = features_dtype
        self.epoch = 0
        self._skip = 0  # batches of this epoch already consumed (resume)
        self._seed_given = reader.config.seed is not None

    def __getstate__(self) -> dict[str, Any]:
        # The config's class is made at run time (it embeds the warehouse's connection
        # model), so it travels to spawned workers as plain data and is validated again.
        state = dict(self.__dict__)
        state["config"] = self.config.model_dump(mode="json")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state["config"] = build_config(state["config"], "a DataLoader worker")
        self.__dict__.update(state)

    @property
    def rows_per_rank(self) -> int:
        """Rows each rank serves per epoch."""
        start, stop = rank_rows(self.plan.rows(self.split), 0, self.world_size, self.remainder)
        return stop - start

    def __len__(self) -> int:
        """Batches this rank serves per epoch (the same on every rank)."""
        return batch_count(self.rows_per_rank, self.config.batch_size, self.config.drop_last)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (0-based) whose order the next iteration serves."""
        if epoch != self.epoch:
            self._skip = 0
        self.epoch = epoch

    def worker_sizes(self, workers: int) -> list[int]:
        """Batches each of ``workers`` DataLoader workers serves per epoch."""
        spans = [worker_batches(len(self), w, max(workers, 1)) for w in range(max(workers, 1))]
        return [hi - lo for lo, hi in spans]

    def __iter__(self) -> Iterator[TensorBatch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        batch_size = self.config.batch_size
        rank_start, rank_stop = rank_rows(
            self.plan.rows(self.split), self.rank, self.world_size, self.remainder
        )
        # A resumed loader starts its turns at worker 0 again, where the interrupted one
        # would have gone on with worker `turn`: worker j takes over the run of `turn + j`.
        taken, turn = resume_point(self.worker_sizes(workers), self._skip)
        run = (worker + turn) % workers
        first, last = worker_batches(len(self), run, workers)
        start = rank_start + (first + taken[run]) * batch_size
        stop = min(rank_start + last * batch_size, rank_stop)
        if start >= stop:
            return
        with Reader(self.config, plan=self.plan) as reader:
            for batch in reader.iter_range(self.split, self.epoch + 1, start, stop):
                yield self._tensors(batch)

    def _tensors(self, batch: dict[str, Any]) -> TensorBatch:
        features = _tensor(batch["features"])
        if self.features_dtype is not None:
            features = features.to(self.features_dtype)
        if batch["labels"] is None:
            return features, None
        labels = _tensor(batch["labels"])
        return features, labels[:, 0] if labels.shape[1] == 1 else labels

    def loader(self, **kwargs: Any) -> FaucetDataLoader:
        """A :class:`FaucetDataLoader` over this dataset (keywords go to ``DataLoader``)."""
        return FaucetDataLoader(self, **kwargs)


@dataclass
class LoaderMetrics:
    """How long the training loop waited for data, against the time of the whole epoch."""

    batches: int = 0
    wait_seconds: float = 0.0
    elapsed_seconds: float = 0.0

    @property
    def wait_fraction(self) -> float:
        """Share of the epoch's time spent waiting for batches."""
        return self.wait_seconds / self.elapsed_seconds if self.elapsed_seconds else 0.0


class FaucetDataLoader(DataLoader[TensorBatch]):
    """A ``DataLoader`` over a :class:`FaucetIterableDataset` that can save its position.

    It passes Faucet's batches through (``batch_size=None``), counts the batches the loop
    consumed for :meth:`state_dict`, and measures the time the loop waited for data.
    ``persistent_workers`` is refused: workers would keep a stale epoch.
    """

    dataset: FaucetIterableDataset

    def __init__(self, dataset: FaucetIterableDataset, **kwargs: Any) -> None:
        if kwargs.pop("batch_size", None) is not None:
            raise ValueError("FaucetDataLoader passes Faucet's batches through: no batch_size")
        if kwargs.get("persistent_workers"):
            raise ValueError("persistent_workers would keep a stale epoch in the workers")
        super().__init__(dataset, batch_size=None, **kwargs)
        self.metrics = LoaderMetrics()

    def __iter__(self) -> Iterator[TensorBatch]:  # type: ignore[override]
        dataset = self.dataset
        consumed = dataset._skip
        self.metrics = LoaderMetrics()
        started = time.perf_counter()
        iterator = super().__iter__()
        while True:
            waited = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                break
            finally:
                self.metrics.wait_seconds += time.perf_counter() - waited
            consumed += 1
            dataset._skip = consumed
            self.metrics.batches += 1
            self.metrics.elapsed_seconds = time.perf_counter() - started
            yield batch
        self.metrics.elapsed_seconds = time.perf_counter() - started
        dataset._skip = 0
        dataset.epoch += 1

    def _resume_settings(self) -> dict[str, Any]:
        """Settings a saved state must share with this loader (a random seed adopts it)."""
        dataset = self.dataset
        settings: dict[str, Any] = {
            "split": dataset.split,
            "batch_size": dataset.config.batch_size,
            "drop_last": dataset.config.drop_last,
            "rank": dataset.rank,
            "world_size": dataset.world_size,
            "remainder": dataset.remainder,
            "num_workers": self.num_workers,
        }
        if dataset._seed_given:
            settings["seed"] = dataset.config.seed
        return settings

    def state_dict(self) -> dict[str, Any]:
        """The position in the stream: plan, seed, epoch and batches consumed, as plain values."""
        dataset = self.dataset
        return {
            "format": STATE_FORMAT,
            "plan": dataset.plan.fingerprint,
            **self._resume_settings(),
            "seed": dataset.config.seed,
            "epoch": dataset.epoch,
            "batches": dataset._skip,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next iteration serve exactly the rest of the saved epoch.

        Raises:
            ResumeError: The state is from another plan, seed or settings.
        """
        dataset = self.dataset
        check_state(state, dataset.plan.fingerprint, self._resume_settings())
        dataset.config = dataset.config.model_copy(update={"seed": state["seed"]})
        dataset.epoch = state["epoch"]
        dataset._skip = state["batches"]
