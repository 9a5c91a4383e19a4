"""The contract between the core and a warehouse plugin, and the values that cross it.

A warehouse does four things, each in its own SQL and I/O; the core decides everything
that exactly-once and a stable split depend on (see :mod:`faucet_core.layout`):

1. :meth:`Warehouse.data_version`: which version of a source it would read, from
   metadata alone (no scan), or ``None`` when it cannot tell cheaply; and
   :meth:`Warehouse.source_identity`: where its data lives (which database or server).
2. :meth:`Warehouse.count_buckets`: the source's columns, and its rows per (split,
   bucket), in one aggregate query.
3. :meth:`Warehouse.materialize` (optional): copy the split source once to scratch storage
   named after the plan, idempotently, where reading buckets from the source would cost a
   scan per chunk.
4. :meth:`Warehouse.read_buckets`: the rows of one chunk (a bucket range of a split), as
   Arrow, from any thread or process that holds the plan.
5. :meth:`Warehouse.scan` (optional): stream every row once, so that the core fills its
   cache from one pass over the source (:mod:`faucet_core.fill`) instead of reading
   chunk by chunk.

:class:`~faucet_core.sql.SqlWarehouse` implements 2, 4 and 5 for warehouses that speak
SQL, from a hash expression and a way to run a query (and to stream one).
"""

from __future__ import annotations

import operator
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import astuple, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import pyarrow as pa
from pydantic import BaseModel

from faucet_core import layout

if TYPE_CHECKING:
    from faucet_core.plan import ChunkSpec, Plan
    from faucet_core.preprocessing.stats import StatsRequest, TrainStats

__all__ = [
    "BucketCounts",
    "PermanentWarehouseError",
    "PlanRequest",
    "ScratchDataMissing",
    "SourceSpec",
    "SplitName",
    "SplitSpec",
    "TransientWarehouseError",
    "Warehouse",
    "WarehouseCosts",
    "WarehouseError",
]

SplitName = Literal["train", "eval"]


class WarehouseError(Exception):
    """Base class of errors raised by a warehouse."""


class TransientWarehouseError(WarehouseError):
    """A failure worth retrying (throttling, a dropped connection, a timeout)."""


class PermanentWarehouseError(WarehouseError):
    """A failure that retrying will not fix (missing table, bad SQL, no permission)."""


class ScratchDataMissing(TransientWarehouseError):
    """The scratch copy a chunk is read from is gone (expired, or dropped by its maker).

    The core then runs :meth:`Warehouse.materialize` again and retries the read.
    """


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

    def describe(self) -> str:
        """A short human label, used in errors: ``table t``, ``the source query``, ..."""
        if self.table:
            what = f"table {self.table}"
        elif self.query:
            what = "the source query"
        else:
            what = f"files {', '.join(self.files or ())}"
        return what if self.ds is None else f"{what} (ds={self.ds})"


@dataclass(frozen=True)
class SplitSpec:
    """How rows are assigned to the train and eval splits (see :mod:`faucet_core.layout`).

    Attributes:
        key: The columns whose hash decides the split; ``None`` hashes every selected column.
        test_split_percent: The share of rows (0-100) that goes to eval.
    """

    key: tuple[str, ...] | None
    test_split_percent: float

    @property
    def eval_buckets(self) -> int:
        """How many of the 10,000 split buckets are eval."""
        return layout.eval_buckets(self.test_split_percent)


@dataclass(frozen=True)
class PlanRequest:
    """What a plan is made for: the source, the split and the target chunk size."""

    source: SourceSpec
    split: SplitSpec
    chunk_size: int

    def key(self, columns: Sequence[str]) -> tuple[str, ...]:
        """The columns hashed for the split: the split key, else all of ``columns``."""
        return tuple(self.split.key) if self.split.key else tuple(columns)


@dataclass(frozen=True)
class BucketCounts:
    """What :meth:`Warehouse.count_buckets` found.

    Attributes:
        columns: The columns every chunk will have, in order (the selected ones, or all).
        counts: Rows and checksum of every non-empty (split, bucket): a table with the
            columns :data:`~faucet_core.layout.COUNT_COLUMNS`, as
            :meth:`~faucet_core.layout.Dialect.count_query` returns it (or
            :func:`~faucet_core.layout.count_hashes` makes it).
        stats: Facts about the counting worth showing (bytes processed, jobs run); for
            display only.
        schema: The Arrow types of ``columns``, where the warehouse knows them before
            reading (preprocessing decides per type).
        state: What this warehouse needs, in any process, to read the plan's chunks (where
            it put the rows, which warehouse it delegated to), as JSON values: the plan
            keeps it (:attr:`Plan.state <faucet_core.plan.Plan.state>`), and it is part of
            the plan's fingerprint.
        pinned: What keeps the rows counted readable for a while, for every process that
            reads the plan meanwhile (a snapshot of the warehouse's), as JSON values: the
            plan carries it (:attr:`Plan.pinned <faucet_core.plan.Plan.pinned>`), outside
            its fingerprint, as it differs each time the same rows are counted.
    """

    columns: tuple[str, ...]
    counts: pa.Table
    stats: Mapping[str, Any] = field(default_factory=dict)
    schema: pa.Schema | None = None
    state: Mapping[str, Any] = field(default_factory=dict)
    pinned: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class WarehouseCosts:
    """What a warehouse instance spent, where the warehouse says it (BigQuery does).

    Attributes:
        query_jobs: Query jobs run (dry runs excluded).
        bytes_processed: Bytes those jobs processed.
        bytes_billed: Bytes those jobs billed.
        bytes_read: Bytes read by other means (BigQuery's Storage Read API).
    """

    query_jobs: int = 0
    bytes_processed: int = 0
    bytes_billed: int = 0
    bytes_read: int = 0

    def __add__(self, other: WarehouseCosts) -> WarehouseCosts:
        return WarehouseCosts(*map(operator.add, astuple(self), astuple(other)))

    def __sub__(self, other: WarehouseCosts) -> WarehouseCosts:
        return WarehouseCosts(*map(operator.sub, astuple(self), astuple(other)))


class Warehouse(ABC):
    """Base class of warehouse plugins.

    Subclasses set :attr:`name` (the ``datastore`` value users write) and
    :attr:`connection_model` (the Pydantic model of the ``connection:`` config section), and
    are registered through the ``register_warehouses`` hook. They are constructed with a
    validated ``connection_model`` instance, once per process that plans or reads.
    """

    name: ClassVar[str]
    connection_model: ClassVar[type[BaseModel]]

    def __init__(self, connection: BaseModel) -> None:
        self.connection = connection
        #: What this instance spent so far (left at zero by warehouses that do not say).
        self.costs = WarehouseCosts()

    @classmethod
    def column_name(cls, written: str) -> str:
        """The name a column written as ``written`` in a config is stored under, as the
        warehouse's SQL resolves an identifier. The config is read with these names
        (:class:`~faucet_core.config.FaucetConfig`), so batches carry them.

        Default: ``written`` itself. Snowflake upper-cases a name without double quotes.
        """
        return written

    def source_identity(self, source: SourceSpec) -> str:
        """Where ``source``'s data lives, as far as its spelling does not say it: the
        database file, server, project or account. Part of a plan's ``rows_id``, so that
        sources spelled alike in two places (a query on two servers) never share cached
        chunks or scratch copies.

        Default: a digest of the connection settings (secrets masked). Override it to
        leave out settings that do not change the data (threads, timeouts) and to keep in
        those a secret holds (the server in a ``dsn``).
        """
        return layout.stable_digest(self.connection.model_dump(mode="json"))

    def data_version(self, source: SourceSpec) -> str | None:
        """The version of the data ``source`` reads, from metadata alone, or ``None``.

        Must not scan the data. Plans (and cached chunks) are reused only while it stays
        the same; ``None`` means the warehouse cannot tell cheaply (a query).
        """
        return None

    @abstractmethod
    def count_buckets(self, request: PlanRequest) -> BucketCounts:
        """The source's columns, and its rows and checksum per (split, bucket).

        One aggregate query: split and bucket come from the layout's arithmetic on the
        64-bit hash of :meth:`PlanRequest.key`.

        Raises:
            PermanentWarehouseError: The source, a column or the key does not exist.
        """

    def planned(self, plan: Plan) -> None:  # noqa: B027 - optional hook with a no-op default
        """Called with the plan just made from :meth:`count_buckets`' counts, in the
        process that counted: for a warehouse that made something while counting (a copy
        of the rows counted) to name it after the plan. Optional."""

    def materialize(self, plan: Plan) -> None:  # noqa: B027 - optional hook with a no-op default
        """Make :meth:`read_buckets` cheap for ``plan``'s chunks: optional, idempotent.

        Called by the core before the first chunk the cache cannot serve, in every process
        that reads from the warehouse; it must notice that the work is already done (a
        scratch copy named after ``plan.rows_id`` or ``plan.fingerprint`` exists).
        """

    @abstractmethod
    def read_buckets(self, plan: Plan, chunk: ChunkSpec) -> pa.Table:
        """The rows of ``chunk``: its split's rows whose bucket is in ``chunk.lo .. hi - 1``.

        Columns: ``plan.columns``, then :data:`~faucet_core.layout.HASH_COLUMN` (the key
        hash). Row order does not matter: the core orders and checks the rows. Must be
        thread-safe and safe to retry.

        Raises:
            TransientWarehouseError: A failure that a retry may fix.
            ScratchDataMissing: The scratch copy is gone; the core materializes again.
            PermanentWarehouseError: A failure that a retry will not fix.
        """

    def scan(
        self, plan: Plan, chunks: Sequence[ChunkSpec] | None = None
    ) -> Iterable[pa.RecordBatch] | None:
        """Every row of ``plan``'s source, both splits, or only the rows of ``chunks``,
        streamed as Arrow batches in any order: ``plan.columns``, then
        :data:`~faucet_core.layout.HASH_COLUMN`. Optional.

        Given a scan, the core fills its cache from one pass over the source (cutting the
        rows by chunk itself) instead of reading chunk by chunk, when the cache can hold
        the plan; while that pass runs, it reads the first chunk a reader waits for with a
        scan of that chunk alone. ``None`` (the default) suits a warehouse whose chunks are
        cheap to read one by one (from a scratch copy clustered by bucket), or that cannot
        stream.
        """
        return None

    def reads_chunks_alone(self, plan: Plan) -> bool:
        """Whether a scan of a few chunks of ``plan`` costs far less than the cache fill's
        scan of all of them: it reads about their rows alone (from a copy clustered by
        bucket), or the warehouse sends their rows alone where the fill's time goes into
        sending every row. A pass's first chunk missing from the cache is then read by
        itself before the cache fill's scan is sent: its first batch waits neither for
        that scan nor behind it, where the warehouse runs one query at a time or queues
        them. Default: no (the chunk waits for a fill about to end)."""
        return False

    def column_stats(self, plan: Plan, request: StatsRequest) -> TrainStats | None:
        """Statistics of ``plan``'s train split for preprocessing, in one aggregate query over
        the whole split; ``None`` (the default) when the warehouse cannot, and the core
        computes them from one pass over the train chunks instead. Optional."""
        return None

    def estimate(self, request: PlanRequest) -> dict[str, int]:
        """Bytes that planning and materializing ``request`` would process, as far as the
        warehouse can tell without running them (BigQuery: dry runs). Optional."""
        return {}

    def reading_with(self, threads: int) -> None:  # noqa: B027 - optional hook
        """How many threads this process reads chunks with (the reader's
        ``fetch_threads``), said before the first read, for a warehouse that sizes its own
        parallel reads to it (BigQuery's Storage Read streams). Optional."""

    def access_problems(self, request: PlanRequest) -> list[str] | None:
        """What reading ``request`` needs that the account may not do, one line each (a
        missing permission, a scratch place in another location), found by ``faucet
        validate`` before the first run, without reading data or billing; ``None`` when
        the warehouse does not check. Optional."""
        return None

    def cost_notes(self, request: PlanRequest, plan: Plan | None) -> list[str]:
        """Lines ``faucet validate`` shows, beyond :meth:`estimate`, on what reading
        ``request`` costs here: what runs the queries, the scratch copy's name and how
        long it is kept. ``plan``: the saved plan a reader would reuse, if any. Must not
        scan the data. Optional."""
        return []

    def scratch_location(self, plan: Plan) -> str | None:
        """Where :meth:`materialize` puts ``plan``'s scratch copy (a table, a folder).
        Optional, for display."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook with a no-op default
        """Release connections, and scratch data this instance made and no one else needs."""
