"""The contract between the core and a warehouse plugin, and its value types.

A warehouse answers three questions: how to hold its connection settings (a Pydantic
model), how to split and cut a source into chunks once (:meth:`Warehouse.plan`), and how
to read one chunk (:meth:`Warehouse.read_chunk`). Threads, retries, the cache, shuffling
and batching belong to the core.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import BaseModel

__all__ = [
    "AggregateNotSupported",
    "ChunkSpec",
    "PermanentWarehouseError",
    "Plan",
    "PlanRequest",
    "SourceSpec",
    "SplitName",
    "SplitSpec",
    "TransientWarehouseError",
    "Warehouse",
    "WarehouseError",
    "stable_digest",
]

SplitName = Literal["train", "eval"]


class WarehouseError(Exception):
    """Base class of errors raised by a warehouse."""


class TransientWarehouseError(WarehouseError):
    """A failure worth retrying (throttling, a dropped connection, a timeout)."""


class PermanentWarehouseError(WarehouseError):
    """A failure that retrying will not fix (missing table, bad SQL, no permission)."""


class AggregateNotSupported(WarehouseError):
    """The warehouse cannot push down the requested aggregate."""


def stable_digest(*parts: Any) -> str:
    """Return a short hex digest of JSON-serialisable ``parts``, stable across runs."""
    payload = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class SourceSpec:
    """What to read: exactly one of a table, a query or a list of files.

    Attributes:
        table: A table name as the warehouse spells it (``dataset.table``).
        query: A SQL query whose result is the source.
        files: Data files (Parquet or CSV) for warehouses that read files.
        ds: A partition value; only rows whose ``partition_column`` equals it are read.
        partition_column: The column ``ds`` filters; ``None`` lets the warehouse choose.
        columns: The columns to read, or ``None`` for all of them.
    """

    table: str | None = None
    query: str | None = None
    files: tuple[str, ...] | None = None
    ds: str | None = None
    partition_column: str | None = None
    columns: tuple[str, ...] | None = None


@dataclass(frozen=True)
class SplitSpec:
    """How rows are assigned to the train and eval splits.

    A row is in eval when ``hash(split_key) mod 10000 < test_split_percent * 100``; the hash
    is computed by the warehouse in its own SQL, so the split is a pure function of the
    key and identical across runs, epochs and chunk sizes.

    Attributes:
        key: The columns whose hash decides the split; ``None`` hashes every selected column.
        test_split_percent: The share of rows (0-100) that goes to eval.
    """

    key: tuple[str, ...] | None
    test_split_percent: float

    @property
    def eval_buckets(self) -> int:
        """How many of 10,000 hash buckets belong to eval."""
        return round(self.test_split_percent * 100)


@dataclass(frozen=True)
class PlanRequest:
    """Everything :meth:`Warehouse.plan` needs: source, split and target chunk size."""

    source: SourceSpec
    split: SplitSpec
    chunk_size: int


@dataclass(frozen=True)
class ChunkSpec:
    """One chunk of one split, as planned by a warehouse.

    Attributes:
        split: ``"train"`` or ``"eval"``.
        index: Position of the chunk in its split's chunk list.
        rows: Exact number of rows :meth:`Warehouse.read_chunk` returns for it.
        token: Warehouse-private data telling it how to read the chunk (JSON-serialisable).
    """

    split: SplitName
    index: int
    rows: int
    token: Any = None

    def describe(self) -> str:
        """A short human label, used in errors and logs."""
        return f"{self.split} chunk {self.index} ({self.rows} rows)"


@dataclass(frozen=True)
class Plan:
    """The outcome of planning: chunks per split and what identifies their data.

    Attributes:
        fingerprint: Identifies the exact chunk contents (data version, source, split,
            columns, chunking). Two plans with the same fingerprint have identical chunks,
            which is what lets the chunk cache serve them across runs.
        columns: The column names every chunk has, in order.
        chunks: The chunk list of each split.
        stats: Facts the warehouse reports about planning (bytes scanned, timings).
    """

    fingerprint: str
    columns: tuple[str, ...]
    chunks: Mapping[SplitName, Sequence[ChunkSpec]]
    stats: Mapping[str, Any] = field(default_factory=dict)

    def rows(self, split: SplitName) -> int:
        """Total rows of ``split``."""
        return sum(c.rows for c in self.chunks.get(split, ()))


class Warehouse(ABC):
    """Base class of warehouse plugins.

    Subclasses set :attr:`name` (the ``datastore`` value users write) and
    :attr:`connection_model` (the Pydantic model of the ``connection:`` config section), and
    are registered through the ``register_warehouses`` hook. They are constructed with a
    validated ``connection_model`` instance.
    """

    name: ClassVar[str]
    connection_model: ClassVar[type[BaseModel]]

    def __init__(self, connection: BaseModel) -> None:
        self.connection = connection

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """Identifies the data this warehouse serves (and its version), for cache staleness."""

    @abstractmethod
    def plan(self, request: PlanRequest) -> Plan:
        """Split the source and cut it into chunks. Called once per reader.

        Raises:
            PermanentWarehouseError: The source does not exist or cannot be read.
        """

    def prepare(self, plan: Plan) -> None:  # noqa: B027 - optional hook with a no-op default
        """Do the one-time work chunks need before they can be read (materialize the split).

        Called by the core, in the process that made ``plan``, before the first chunk the
        cache cannot serve, so a fully cached run skips it. Must be idempotent.
        """

    @abstractmethod
    def read_chunk(self, chunk: ChunkSpec) -> pa.Table:
        """Read one planned chunk. Must be thread-safe and safe to retry.

        Once :meth:`prepare` has run, chunks may be read by another instance built from the
        same connection, in another process (a DataLoader worker): the chunk's ``token``
        must hold what reading it takes. Rows must come back in the same order on every
        read, since the shuffle permutes positions.

        Raises:
            TransientWarehouseError: A failure that a retry may fix.
            PermanentWarehouseError: A failure that it will not.
        """

    def aggregate(
        self, request: PlanRequest, split: SplitName, column: str, stats: Sequence[str]
    ) -> dict[str, Any]:
        """Compute aggregates (``count``, ``mean``, ``stddev``, ``min``, ``max``, ``distinct``,
        ``quantiles``) of ``column`` over one split, in the warehouse.

        Raises:
            AggregateNotSupported: The warehouse cannot push these down.
        """
        raise AggregateNotSupported(f"warehouse {self.name!r} does not push down aggregates")

    def close(self) -> None:  # noqa: B027 - optional hook with a no-op default
        """Release connections, and the scratch data of plans made by this instance."""
