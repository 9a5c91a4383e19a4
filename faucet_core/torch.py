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

import dataclasses
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import pyarrow as pa
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from faucet_core import vectors
from faucet_core.batches import Parts
from faucet_core.config import FaucetConfig
from faucet_core.dispatch import check_loader
from faucet_core.epochs import EpochCounter
from faucet_core.errors import ConfigError
from faucet_core.output import batch_parts
from faucet_core.plan import Plan
from faucet_core.position import Partition, Remainder, StreamPosition
from faucet_core.preprocessing import Preprocessor
from faucet_core.reader import Reader
from faucet_core.serving import Serving
from faucet_core.settings import load_config
from faucet_core.stream import Stream
from faucet_core.vectors import is_text
from faucet_core.warehouse import PermanentWarehouseError, SplitName

__all__ = ["FaucetDataLoader", "FaucetIterableDataset", "LoaderMetrics"]

#: A batch's features: one tensor, or one per input group (``source.inputs``); a group of
#: one text column is a list of its strings.
Features = torch.Tensor | dict[str, torch.Tensor | list[str | None]]
TensorBatch = tuple[Features, torch.Tensor | None]
#: What a dataset serves: a batch, or (``rows=True``) one row as ``{"features", "labels"}``
#: (with input groups, one entry per group instead of ``features``).
Item = TensorBatch | dict[str, Any]


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


def _tensor(table: pa.Table) -> torch.Tensor:
    """A 2-D tensor of a table of numeric or boolean columns (checked: :func:`_checked`),
    one column per feature, and per element of a vector column (a NULL vector is NaN)."""
    return torch.from_numpy(vectors.stacked(table))


def _checked(table: pa.Table) -> pa.Table:
    """``table``, whose columns can become tensors: checked once for a chunk's part, not
    for every batch of it.

    Raises:
        ConfigError: A column is not numeric or boolean, or is an integer or boolean one
            holding NULLs (naming it).
    """
    vectors.check_columns(table.schema, "a tensor")
    unfit = [
        f"{field.name} ({field.type})"
        for field in table.schema
        if not (pa.types.is_integer(field.type) or pa.types.is_floating(field.type)
                or pa.types.is_boolean(field.type) or vectors.is_vector(field.type))
    ]  # fmt: skip
    if unfit:
        raise ConfigError(
            [
                (
                    "source.columns",
                    f"{', '.join(unfit)} cannot become tensors; select numeric columns (a "
                    "text column in an input group of its own, source.inputs, is served as "
                    "a list of strings)",
                )
            ]
        )
    # NULL is NaN in a float column; an integer or boolean one would silently become
    # floats (or objects) in the batches that hold a NULL, and stay integers elsewhere.
    with_nulls = [
        f"{field.name} ({field.type})"
        for index, field in enumerate(table.schema)
        if table.column(index).null_count
        and not (pa.types.is_floating(field.type) or vectors.is_vector(field.type))
    ]
    if with_nulls:
        raise ConfigError(
            [
                (
                    "source.columns",
                    f"{', '.join(with_nulls)} hold NULLs, which an integer or boolean tensor "
                    "cannot; fill them (preprocessing `impute`), or cast the column to a float "
                    "in a query (NULL is then NaN)",
                )
            ]
        )
    return table


def _plan_on_rank_zero(config: FaucetConfig) -> Reader:
    """A reader on every rank of ``config``'s plan, made and prepared by rank 0 alone."""
    message: list[Any] = [None]
    reader: Reader | None = None
    if torch.distributed.get_rank() == 0:
        if config.seed is None:  # one seed for all ranks
            config = config.model_copy(update={"seed": secrets.randbits(32)})
        try:
            reader = Reader(config)
            reader.prepare()
            fitted = reader.preprocessor.to_json() if reader.preprocessor else None
            message = [{"plan": reader.plan.to_json(), "seed": reader.seed, "fitted": fitted}]
        except Exception as exc:
            message = [{"error": f"{type(exc).__name__}: {exc}"}]
            torch.distributed.broadcast_object_list(message)
            raise
    torch.distributed.broadcast_object_list(message)
    received = message[0]
    if "error" in received:
        raise PermanentWarehouseError(f"rank 0 could not plan the source: {received['error']}")
    if reader is None:
        shared = config.model_copy(update={"seed": received["seed"]})
        fitted = received["fitted"]
        reader = Reader(
            shared,
            plan=Plan.from_json(received["plan"]),
            preprocessor=Preprocessor.from_json(fitted) if fitted else None,
        )
    return reader


class FaucetIterableDataset(IterableDataset[Item]):
    """An ``IterableDataset`` of ``(features, labels)`` tensor batches of a reader's split.

    Use it with :class:`FaucetDataLoader` (or ``DataLoader(dataset, batch_size=None)``), so
    that Faucet's batches pass through. Each new iteration serves the next epoch, in its
    own order, so a loop or framework that never calls :meth:`set_epoch` still reshuffles
    every epoch; :meth:`set_epoch` (as with a ``DistributedSampler``) or
    :meth:`select_epoch` chooses the epoch the next iteration serves instead. There is no
    last epoch: iterations go on past the config's ``epochs``, each a new order. Without
    DataLoader workers it serves batches from the reader's own stream; each worker process
    opens the same stream from the reader's plan, and serves the same epoch as the others.

    Hugging Face Accelerate (and so the transformers ``Trainer``) iterates an iterable
    dataset on the main process only, and dispatches slices of its batches to the others:
    build the dataset with ``dispatch=True`` there (see :mod:`faucet_core.dispatch`), and
    with ``rows=True`` for a loader that makes its own batches of rows (the ``Trainer``'s).

    Args:
        reader: A reader; its plan, seed and settings are used, it serves no batches itself.
            Its warehouse is prepared here so workers in other processes can read chunks.
        split: ``"train"`` (shuffled every epoch) or ``"eval"``.
        rank: This process's DDP rank (default: from ``torch.distributed`` or ``RANK``).
        world_size: The number of ranks (default: as ``rank``).
        remainder: What to do with rows that do not divide evenly among ranks: ``"drop"``
            them (other rows each epoch) or ``"pad"`` ranks with repeated rows.
        features_dtype: Convert features to this dtype (default: as the columns give).
        dispatch: Serve the rows of every rank from rank 0, for a loader that reads on
            the main process only and gives each process an even slice of each batch (or
            of each group of one batch per process): each process then trains on as many
            rows as a rank would, each row of the epoch once. Other ranks serve nothing.
        rows: Serve one row at a time, as ``{"features": ..., "labels": ...}`` (no
            ``labels`` without label columns), for a loader that batches rows itself.

    Attributes:
        reader: The reader (``None`` in DataLoader workers, which open its stream anew).
        serving: The reader's stream, seed and preprocessing.
        epoch: The epoch (1-based, as a reader counts them) selected last: the first
            iteration after the selection serves it, the next ones the epochs after it.
        skip_batches: Batches of :attr:`epoch` its first iteration leaves out (consumed
            before a resume).
    """

    def __init__(
        self,
        reader: Reader,
        split: SplitName = "train",
        rank: int | None = None,
        world_size: int | None = None,
        remainder: Remainder = "drop",
        features_dtype: torch.dtype | None = None,
        *,
        dispatch: bool = False,
        rows: bool = False,
    ) -> None:
        super().__init__()
        self.rank, self.world_size = _distributed(rank, world_size)
        if self.world_size > 1 and reader.config.seed is None:
            raise ValueError(
                "with several ranks, set `seed` (or build the dataset with "
                "FaucetIterableDataset.from_config, which shares rank 0's): ranks drawing "
                "seeds of their own would serve some rows twice and others never"
            )
        reader.prepare()
        self.serving: Serving = reader.serving
        self.split: SplitName = split
        self.remainder: Remainder = remainder
        self.features_dtype = features_dtype
        self.feature_columns = self.serving.feature_columns("torch")
        self.feature_names = self.serving.feature_names("torch")
        self.input_columns = self.serving.input_columns("torch")
        self.inputs = self.serving.input_names("torch")
        self.label_columns = self.serving.label_columns
        self.dispatch, self.rows = dispatch, rows
        if dispatch and not rows and not self.label_columns:
            raise ValueError(
                "a dispatching loader cannot slice the batches (features, None) of a source "
                "without label columns: build the dataset with rows=True"
            )
        self._epochs = EpochCounter()
        self.reader: Reader | None = reader  # this process's; workers open their own stream
        self._owns_reader = False  # made by from_config(), closed by close()

    @classmethod
    def from_config(
        cls,
        config: FaucetConfig | str | os.PathLike[str],
        split: SplitName = "train",
        rank: int | None = None,
        world_size: int | None = None,
        remainder: Remainder = "drop",
        features_dtype: torch.dtype | None = None,
        *,
        dispatch: bool = False,
        rows: bool = False,
        **overrides: Any,
    ) -> FaucetIterableDataset:
        """A dataset over a new reader of ``config`` (a config, or a config file with
        keyword overrides), planned once for all DDP ranks.

        With ``torch.distributed`` initialized and several ranks, rank 0 plans the source,
        fits the preprocessing and makes the warehouse's scratch copy, then broadcasts the
        plan, the seed and the fitted preprocessor (as JSON); the other ranks use them and
        ask the warehouse nothing to plan or fit. Every rank must call this, as with any
        collective. Close the dataset (or use it as a context manager) to release its
        reader.

        Raises:
            ConfigError, WarehouseError: On every rank, when rank 0 could not plan.
        """
        if not isinstance(config, FaucetConfig):
            config = load_config(config, **overrides)
        collective = (
            rank is None
            and world_size is None
            and torch.distributed.is_available()
            and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1
        )
        reader = _plan_on_rank_zero(config) if collective else Reader(config)
        try:
            dataset = cls(
                reader, split, rank, world_size, remainder, features_dtype,
                dispatch=dispatch, rows=rows,
            )  # fmt: skip
        except BaseException:
            reader.close()
            raise
        dataset._owns_reader = True
        # A resumed job adopts the seed rank 0 drew.
        configured = config.seed is not None
        dataset.serving = dataclasses.replace(dataset.serving, seed_configured=configured)
        return dataset

    def close(self) -> None:
        """Release the reader made by :meth:`from_config` (nothing for a reader given)."""
        if self._owns_reader and self.reader is not None:
            self.reader.close()

    def __enter__(self) -> FaucetIterableDataset:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["reader"] = None  # a worker opens the same stream from the spec
        return state

    @property
    def config(self) -> FaucetConfig:
        """The reader's configuration."""
        return self.serving.config

    @property
    def plan(self) -> Plan:
        """The reader's plan."""
        return self.serving.plan

    @property
    def seed(self) -> int:
        """The shuffle seed."""
        return self.serving.seed

    def partition(self, num_workers: int) -> Partition:
        """How an epoch is divided among ranks and ``num_workers`` DataLoader workers."""
        workers = max(num_workers, 1)
        return Partition(self.rank, self.world_size, self.remainder, workers, self.dispatch)

    def __len__(self) -> int:
        """Batches (rows, with ``rows=True``) this rank serves per epoch (the same on every
        rank; dispatching, those of all ranks)."""
        config, partition = self.config, self.partition(1)
        total = self.plan.rows(self.split)
        batches = partition.rank_batches(total, config.batch_size, config.drop_last)
        if self.rows:  # those of the batches served: with drop_last, whole ones only
            start, stop = partition.rank_range(total, config.batch_size, config.drop_last)
            return min(stop - start, batches * config.batch_size)
        return batches

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Select the epoch the next iteration serves by PyTorch's 0-based epoch index (as
        ``DistributedSampler.set_epoch``, which training loops call with the loop's epoch
        counter): Faucet's epoch ``epoch + 1``; and the batches of it already consumed.

        Raises:
            ValueError: A Hugging Face Accelerate loader starting to iterate this dataset
                would lose or repeat rows (see :func:`faucet_core.dispatch.check_loader`);
                or ``skip_batches`` below 0.
        """
        check_loader(self)
        self.select_epoch(epoch + 1, skip_batches)

    def select_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Select the epoch (1-based) the next iteration serves, and the batches of it
        already consumed.

        Raises:
            ValueError: ``epoch`` below 1, or ``skip_batches`` below 0.
        """
        if epoch < 1:
            raise ValueError(f"epochs are 1-based: {epoch} < 1")
        if skip_batches < 0:
            raise ValueError(f"skip_batches counts batches consumed: {skip_batches} < 0")
        self._epochs.select(epoch, skip_batches)

    @property
    def epoch(self) -> int:
        """The epoch selected last (see the class's attributes)."""
        return self._epochs.epoch

    @property
    def skip_batches(self) -> int:
        """Batches of :attr:`epoch` its first iteration leaves out."""
        return self._epochs.skip_batches

    @property
    def selections(self) -> int:
        """How many times an epoch was selected (tells a loader that one was since)."""
        return self._epochs.selections

    def __iter__(self) -> Iterator[Item]:
        # Not a generator: the epoch is counted when a worker starts, as DataLoader calls
        # iter() on each worker's copy then, whether or not the worker gets a batch.
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch, skip = self._epochs.start(None if info is None else worker)
        if self.dispatch and self.rank != 0:
            # A dispatching loader makes an iterator on every process, and reads rank 0's.
            return _not_dispatched(self.rank)
        partition = self.partition(workers)
        start, stop = self.serving.rows(self.split, partition, worker, skip)
        if start >= stop:
            return iter(())
        own = self.reader.stream if info is None and self.reader is not None else None
        return self._batches(own, epoch, start, stop)

    def _batches(self, own: Stream | None, epoch: int, start: int, stop: int) -> Iterator[Item]:
        stream = own if own is not None and not own.closed else Stream(self.serving.spec)
        current = self.serving.open_pass(stream, self.split, epoch, start, stop, parts=self._parts)
        try:
            while (parts := current.next_parts()) is not None:
                batch = self._tensors(parts)
                if self.rows:
                    yield from _rows(*batch)
                else:
                    yield batch
        finally:
            current.close()
            if stream is not own:
                stream.close()

    def _parts(self, table: pa.Table) -> Parts:
        """A chunk's columns as the tables of its batches (cut and checked once per chunk,
        each batch a slice).

        Raises:
            ConfigError: A part's columns cannot become tensors (naming them).
        """
        parts = batch_parts(table, self.feature_columns, self.label_columns, self.input_columns)
        groups = 0 if self.input_columns is None else len(self.input_columns)  # the first parts
        return Parts(
            part if index < groups and _is_text_group(part) else _checked(part)
            for index, part in enumerate(parts)
        )

    def _tensors(self, parts: Parts) -> TensorBatch:
        features: Features
        if self.input_columns is not None:  # a dict of tensors, and lists of strings
            features = {  # (the labels' part, if any, comes after the groups')
                group: self._group(table)
                for group, table in zip(self.input_columns, parts, strict=False)
            }
        else:
            features = self._features(parts[0])
        if not self.label_columns:
            return features, None
        labels = _tensor(parts[-1])
        return features, labels[:, 0] if labels.shape[1] == 1 else labels

    def _group(self, table: pa.Table) -> torch.Tensor | list[str | None]:
        if _is_text_group(table):  # for a tokenizer
            strings: list[str | None] = table.column(0).to_pylist()
            return strings
        return self._features(table)

    def _features(self, table: pa.Table) -> torch.Tensor:
        features = _tensor(table)
        return features.to(self.features_dtype)  # to(None) returns the tensor itself

    def loader(self, **kwargs: Any) -> FaucetDataLoader:
        """A :class:`FaucetDataLoader` over this dataset (keywords go to ``DataLoader``)."""
        return FaucetDataLoader(self, **kwargs)


def _is_text_group(part: pa.Table) -> bool:
    """Whether ``part`` is one text column, served as a list of its strings (an input
    group's, for a tokenizer)."""
    return part.num_columns == 1 and is_text(part.schema.types[0])


def _rows(features: Features, labels: torch.Tensor | None) -> Iterator[Item]:
    """A batch's rows, one at a time: ``features`` (or each input group) and ``labels``."""
    parts = features if isinstance(features, dict) else {"features": features}
    if labels is not None:
        parts = {**parts, "labels": labels}
    for index in range(len(next(iter(parts.values())))):
        yield {name: values[index] for name, values in parts.items()}


def _not_dispatched(rank: int) -> Iterator[Item]:
    """What a rank other than 0 serves with ``dispatch=True``: an error, when read."""
    raise RuntimeError(
        f"rank {rank} of a dataset built with dispatch=True serves nothing: rank 0 serves "
        "every rank's rows to a loader that dispatches them (Hugging Face Accelerate's)"
    )
    yield  # a generator: the error comes at the first batch, not at iter()


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
    consumed for :meth:`state_dict`, and measures the time the loop waited for data. Each
    new iteration serves the next epoch, whether the last one ran to its end or was
    stopped (frameworks stop after ``len(loader)`` batches); an epoch selected on the
    dataset since (``set_epoch``), or a state loaded, is served instead, from where it
    stood. Persistent workers (``persistent_workers=True``) follow it too: they read the
    epoch from memory shared with the loader.
    """

    dataset: FaucetIterableDataset  # type: ignore[assignment]

    def __init__(self, dataset: FaucetIterableDataset, **kwargs: Any) -> None:
        if kwargs.pop("batch_size", None) is not None:
            raise ValueError("FaucetDataLoader passes Faucet's batches through: no batch_size")
        if dataset.rows:
            raise ValueError(
                "FaucetDataLoader passes Faucet's batches through: a dataset of rows "
                "(rows=True) goes to a loader that batches them (DataLoader with a batch_size)"
            )
        # Not rows: the dataset serves the batches this loader passes through.
        super().__init__(cast(Dataset[TensorBatch], dataset), batch_size=None, **kwargs)
        self.metrics = LoaderMetrics()
        self._epoch = dataset.epoch
        self._consumed = dataset.skip_batches
        self._seen = dataset.selections  # selections made by others than this loader
        self._open = False  # an iteration began and did not run to its end

    def __iter__(self) -> Iterator[TensorBatch]:  # type: ignore[override]
        dataset = self.dataset
        if dataset.selections != self._seen:  # set_epoch() was called: that epoch
            self._epoch, self._consumed = dataset.epoch, dataset.skip_batches
        elif self._open:  # the last iteration was stopped: the next epoch
            self._epoch, self._consumed = self._epoch + 1, 0
        if self._consumed and self._consumed >= len(dataset):  # saved as an epoch ended
            self._epoch, self._consumed = self._epoch + 1, 0
        self._select(self._epoch, self._consumed)
        self._open = True
        return self._batches()

    def _select(self, epoch: int, consumed: int) -> None:
        self.dataset.select_epoch(epoch, consumed)
        self._seen = self.dataset.selections

    def _batches(self) -> Iterator[TensorBatch]:
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
            self._consumed += 1
            self.metrics.batches += 1
            self.metrics.elapsed_seconds = time.perf_counter() - started
            yield batch
        self.metrics.elapsed_seconds = time.perf_counter() - started
        self._open = False
        self._epoch, self._consumed = self._epoch + 1, 0
        self._select(self._epoch, 0)

    def position(self) -> StreamPosition:
        """Where the stream is: the epoch under way (1-based) and its batches consumed."""
        dataset = self.dataset
        partition = dataset.partition(self.num_workers)
        return dataset.serving.position(dataset.split, partition, self._epoch, self._consumed)

    def state_dict(self) -> dict[str, Any]:
        """The position in the stream as a few plain values, for checkpoints."""
        return self.position().as_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next iteration serve exactly the rest of the saved epoch.

        Raises:
            ResumeError: The state is from another plan, seed or settings.
        """
        dataset = self.dataset
        partition = dataset.partition(self.num_workers)
        dataset.serving, position = dataset.serving.resume(state, dataset.split, partition)
        self._epoch, self._consumed = position.epoch, position.batches
        self._open = False
        self._select(self._epoch, self._consumed)
