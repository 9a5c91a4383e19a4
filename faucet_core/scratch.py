"""Scratch copies: a split source copied once per plan into a table chunks are read from.

A warehouse whose chunks would each cost a scan of the source (BigQuery, Snowflake,
PostgreSQL and Redshift) copies the source once, with every row's split flag and bucket
as columns (:data:`~faucet_core.layout.EVAL_COLUMN`, :data:`~faucet_core.layout.BUCKET_COLUMN`),
into a scratch table named after the plan's rows, and reads each chunk from it by a
bucket range. :class:`ScratchWarehouse` holds the protocol, once; a plugin gives its
statements (look up, create, rename, drop) through a few hooks.

The protocol:

1. A scratch table is named after what decides its rows (:meth:`ScratchWarehouse.copy_id`):
   where it is made while planning a source with a data version, the version, the source,
   the columns, the key and the split, all known before its rows are counted (the plan
   keeps the id in its ``state``); else the plan's ``rows_id``. So every process, rank and
   task of a plan, every chunk size and every host that plans the same data finds the
   same one.
2. When it is made: where the warehouse :meth:`~ScratchWarehouse.copies_when_planning`,
   while planning, and the plan counts the copy's rows, so every chunk reads the rows
   planned whatever the source does after; else at the first read that needs it. Before
   making it, look it up: a process that finds it uses it as it is (and counts it).
3. Make it complete or not at all: under a temporary name, renamed when complete (or in
   one statement where the warehouse's ``CREATE TABLE IF NOT EXISTS ... AS`` is atomic).
   When two processes make it at once, the one whose rename fails drops its copy and
   uses the other's.
4. Its lifetime, the one rule: where copies expire
   (:attr:`ScratchWarehouse.scratch_expires`), a copy is kept, for every process and
   rerun of its plan, until its expiry: set when it is made
   (:meth:`~ScratchWarehouse.set_expiry`), and enforced by the warehouse itself
   (BigQuery) or by the next process that makes a copy
   (:meth:`~ScratchWarehouse.drop_expired`, Snowflake). Elsewhere the instance that
   made it drops it on :meth:`~ScratchWarehouse.close`. A copy made in one statement
   (``scratch_created_atomically``) must expire: no process can tell it made the copy.
5. A read that finds it gone raises :class:`~faucet_core.warehouse.ScratchDataMissing`
   (:meth:`ScratchWarehouse.scratch_gone`): the core materializes again and retries.
6. A user who may not make it (:meth:`~ScratchWarehouse.cannot_copy`: no right to create
   tables there, a read-only server) reads from the source instead
   (:meth:`~ScratchWarehouse.rows_query`): each chunk read scans it, and a change of its
   rows after planning fails the read. Where planning could not copy, the plan says so
   (in its ``state``), and no process tries the copy again for it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import uuid
from abc import abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa
from pydantic import BaseModel

from faucet_core import layout
from faucet_core.sql import SqlWarehouse, quote_identifier
from faucet_core.warehouse import (
    BucketCounts,
    PermanentWarehouseError,
    PlanRequest,
    ScratchDataMissing,
    SourceSpec,
    WarehouseError,
)

if TYPE_CHECKING:
    from faucet_core.plan import ChunkSpec, Plan

__all__ = ["ScratchWarehouse"]

log = logging.getLogger(__name__)

#: The key of a plan's ``state`` that holds the id of the copy made while planning.
_COPY_ID = "copy_id"
#: The key of a plan's ``state`` that says planning could not copy: reads scan the source.
_READS_SOURCE = "reads_source"


class ScratchWarehouse(SqlWarehouse):
    """A SQL warehouse that reads chunks from a scratch copy of the split source.

    Implement :meth:`scratch_reference`, :meth:`scratch_exists`, :meth:`create_scratch`,
    :meth:`drop_scratch` and :meth:`rename_scratch` (unless
    :attr:`scratch_created_atomically`); :meth:`materialize`, :meth:`scratch_gone` and
    :meth:`close` follow the protocol of this module.
    """

    #: The warehouse's ``CREATE TABLE IF NOT EXISTS ... AS`` is atomic and idempotent:
    #: the copy is made under its own name, in one statement.
    scratch_created_atomically: ClassVar[bool] = False
    #: Copies expire (:meth:`set_expiry`, :meth:`drop_expired`): none is dropped on close.
    scratch_expires: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.scratch_created_atomically and not cls.scratch_expires:
            raise TypeError(
                f"{cls.__name__}: scratch copies made in one statement "
                "(scratch_created_atomically) must expire (scratch_expires): no process can "
                "tell it made the copy, so none may drop it"
            )

    def __init__(self, connection: BaseModel) -> None:
        super().__init__(connection)
        self._scratch_lock = threading.Lock()  # threads of this instance copy one at a time
        self._scratch_ready: set[str] = set()  # made or found here, until a read finds it gone
        self._scratch_owned: list[str] = []  # made here, to drop on close
        self._planned_copy: str | None = None  # made while planning, not yet named
        self._uncopied: set[str] = set()  # copies this user may not make: read the source

    # The hooks a plugin implements

    def copy_name(self, copy_id: str) -> str:
        """The table name of the copy :meth:`copy_id` names, as the warehouse stores it."""
        return f"faucet_{copy_id}"

    def temporary_scratch_name(self) -> str:
        """A fresh name to make a copy under before it is renamed."""
        return f"faucet_tmp_{uuid.uuid4().hex}"

    @abstractmethod
    def scratch_reference(self, name: str) -> str:
        """The scratch table ``name`` as SQL refers to it (qualified, quoted)."""

    @abstractmethod
    def scratch_exists(self, name: str) -> bool:
        """Whether the scratch table ``name`` exists (metadata only)."""

    @abstractmethod
    def create_scratch(
        self, source: SourceSpec, name: str, rows: str, params: Sequence[Any]
    ) -> None:
        """Make the table ``name`` hold the result of ``rows`` (the rows of ``source``, with
        their key hash, split flag and bucket columns), with ``params``, ready for
        bucket-range reads (sorted, clustered or indexed by split and bucket)."""

    def rename_scratch(self, temporary: str, name: str) -> None:
        """Rename the complete copy ``temporary`` to ``name``; fail if ``name`` exists.
        Needed unless :attr:`scratch_created_atomically`."""
        raise PermanentWarehouseError(f"{self.name} cannot rename scratch tables")

    @abstractmethod
    def drop_scratch(self, name: str) -> None:
        """Drop the scratch table ``name`` if it exists."""

    def prepare_scratch_place(self, source: SourceSpec) -> None:
        """Make sure the place the copy of ``source`` goes (a dataset) exists, fit for it
        (in its location). Optional."""

    def set_expiry(self, name: str) -> None:
        """Give the new copy ``name`` its expiry, where :attr:`scratch_expires` and the
        table was not made with it. Optional."""

    def drop_expired(self) -> None:
        """Drop the copies whose expiry has passed, where the warehouse does not. Runs
        before a copy is made. Optional."""

    # The protocol

    def copy_id(
        self,
        source: SourceSpec,
        version: str | None,
        columns: Sequence[str],
        key: Sequence[str],
        eval_buckets: int,
    ) -> str | None:
        """What names the copy of ``source``'s rows at ``version``, known before they are
        counted: a digest of what decides them (as a plan's ``rows_id``, without the
        counts); ``None`` without a version."""
        if version is None:
            return None
        return layout.stable_digest(
            layout.LAYOUT_VERSION, self.name, self.source_identity(source), version,
            dataclasses.asdict(source), list(key), eval_buckets, list(columns),
        )  # fmt: skip

    def scratch_name(self, plan: Plan) -> str:
        """The name of ``plan``'s scratch table (rule 1 of the protocol)."""
        return self.copy_name(str(plan.state.get(_COPY_ID, plan.rows_id)))

    def scratch_location(self, plan: Plan) -> str | None:
        return self.scratch_name(plan)

    def materialize(self, plan: Plan) -> None:
        """Copy the split source into ``plan``'s scratch table, unless it is there already
        (threads of this instance wait for the one copying)."""
        name = self.scratch_name(plan)
        with self._scratch_lock:
            if name in self._scratch_ready or name in self._uncopied:
                return
            refusal: object = (
                "it could not while planning" if plan.state.get(_READS_SOURCE) else None
            )
            if refusal is None and not self.scratch_exists(name):
                try:
                    self._copy(plan, name)
                except PermanentWarehouseError as exc:
                    if not self.cannot_copy(exc):
                        raise
                    refusal = exc
            if refusal is not None:
                log.warning(
                    "cannot copy %s (%s): every chunk read scans the source (grant the "
                    "right to create tables where scratch copies go for one scan)",
                    plan.request.source.describe(), refusal,
                )  # fmt: skip
                self._uncopied.add(name)
                return
            self._scratch_ready.add(name)

    def reads_copy(self, plan: Plan) -> bool:
        """Whether :meth:`rows_query` reads ``plan``'s copy: yes, unless this user may not
        make it."""
        with self._scratch_lock:
            return self.scratch_name(plan) not in self._uncopied

    def reads_chunks_alone(self, plan: Plan) -> bool:
        """As :meth:`~faucet_core.warehouse.Warehouse.reads_chunks_alone`: yes where the
        reads go to the copy (clustered by split and bucket)."""
        return self.reads_copy(plan)

    def rows_query(
        self, plan: Plan, chunks: Sequence[ChunkSpec] | None
    ) -> tuple[str, Sequence[Any]]:
        """The query of ``plan``'s rows (of ``chunks``, or all) after :meth:`materialize`,
        and its parameters: :meth:`scratch_rows` where it :meth:`reads_copy`, else
        :meth:`source_rows`."""
        if self.reads_copy(plan):
            return self.scratch_rows(plan, chunks), []
        return self.source_rows(plan, chunks)

    def _copied_rows(
        self,
        source: SourceSpec,
        columns: Sequence[str],
        key: Sequence[str],
        schema: pa.Schema | None,
        eval_buckets: int,
    ) -> tuple[str, Sequence[Any]]:
        """The query of a copy's rows (``columns``, the key hash, the split flag and the
        bucket) and its parameters."""
        hashed, params = self.hashed_rows(source, columns, key, schema)
        h = layout.HASH_COLUMN
        rows = (
            f"SELECT *, {self.dialect.is_eval(h, eval_buckets)} AS {layout.EVAL_COLUMN}, "
            f"{self.dialect.bucket(h)} AS {layout.BUCKET_COLUMN} FROM ({hashed}) AS faucet_rows"
        )
        return rows, params

    def _copy(self, plan: Plan, name: str) -> None:
        source = plan.request.source
        rows, params = self._copied_rows(
            source, plan.columns, plan.key, plan.schema, plan.eval_buckets
        )
        self._make_copy(source, name, rows, params)
        log.info("materialized %s into %s", source.describe(), self.scratch_location(plan))

    def _prepare_copy(self, source: SourceSpec) -> None:
        """Before a copy of ``source`` is made: its place ready, expired copies dropped."""
        self.prepare_scratch_place(source)
        self.drop_expired()

    def _make_copy(self, source: SourceSpec, name: str, rows: str, params: Sequence[Any]) -> None:
        """Make the copy ``name`` of ``rows``: in one statement, or under a temporary name
        then renamed; kept as the lifetime rule says, unless another process made it first."""
        self._prepare_copy(source)
        if self.scratch_created_atomically:
            self.create_scratch(source, name, rows, params)
        else:
            temporary = self.temporary_scratch_name()
            try:
                self.create_scratch(source, temporary, rows, params)
            except WarehouseError:
                with contextlib.suppress(WarehouseError):
                    self.drop_scratch(temporary)
                raise
            if not self._name_copy(temporary, name):
                return
        self._keep(name)

    def _keep(self, name: str) -> None:
        """The lifetime of the copy ``name``, made here: its expiry, or dropped on close."""
        if self.scratch_expires:
            self.set_expiry(name)
        else:
            self._scratch_owned.append(name)

    def _name_copy(self, temporary: str, name: str) -> bool:
        """Rename the complete copy ``temporary`` to ``name``; ``False`` (and the copy
        dropped) when another process named its copy, the same, first."""
        try:
            self.rename_scratch(temporary, name)
        except WarehouseError as exc:
            with contextlib.suppress(WarehouseError):
                self.drop_scratch(temporary)
            if isinstance(exc, PermanentWarehouseError) and self.scratch_exists(name):
                return False
            raise
        return True

    def count_buckets(self, request: PlanRequest) -> BucketCounts:
        """As :meth:`SqlWarehouse.count_buckets`; where the warehouse
        :meth:`copies_when_planning`, the rows counted are those of the copy, made first
        (under a temporary name that :meth:`planned` replaces with the plan's)."""
        if not self.copies_when_planning():
            return self.count_source(request)
        try:
            return self._count_a_copy(request)
        except PermanentWarehouseError as exc:
            if not self.cannot_copy(exc):
                raise
            log.warning(
                "cannot copy %s while planning (%s): counting the source as it is; a change "
                "of its rows before they are read fails the read (grant the right to create "
                "tables where scratch copies go for reads of the rows planned)",
                request.source.describe(), exc,
            )  # fmt: skip
            counted = self.count_source(request)
            return dataclasses.replace(counted, state={**counted.state, _READS_SOURCE: True})

    def count_source(self, request: PlanRequest) -> BucketCounts:
        """The source's rows counted as they are, without a copy (as
        :meth:`SqlWarehouse.count_buckets`). A warehouse that can keep the rows counted
        readable for the reads after (a snapshot it holds) says how in the counts'
        ``pinned``."""
        return super().count_buckets(request)

    def copies_when_planning(self) -> bool:
        """Whether the copy is made while planning (under a temporary name, renamed after
        the plan once it is made) and the plan counts its rows, so that every chunk reads
        the rows planned whatever the source does after (default: no, the copy is made at
        the first read that needs it). Needs :meth:`rename_scratch`."""
        return False

    def cannot_copy(self, error: PermanentWarehouseError) -> bool:
        """Whether ``error``, of making a copy, says the user may not make one (a read-only
        user or server): planning then counts the source as it is."""
        return False

    def has_copy(self, plan: Plan) -> bool:
        """Whether this instance made or found ``plan``'s copy (and no read found it gone)."""
        with self._scratch_lock:
            return self.scratch_name(plan) in self._scratch_ready

    def _count_a_copy(self, request: PlanRequest) -> BucketCounts:
        before = dataclasses.replace(self.costs)
        schema = self.uniform_lists(request, self.columns(request))
        columns = tuple(schema.names)
        source = request.source
        key, eval_buckets = request.key(columns), request.split.eval_buckets
        # Read again here, so the copy's name says the version of the rows it holds.
        copy_id = self.copy_id(source, self.data_version(source), columns, key, eval_buckets)
        name = self.copy_name(copy_id) if copy_id else self.temporary_scratch_name()
        try:
            if copy_id is None or not self.scratch_exists(name):
                rows, params = self._copied_rows(source, columns, key, schema, eval_buckets)
                if copy_id is not None:
                    self._make_copy(source, name, rows, params)
                else:  # under a temporary name, which planned() replaces
                    self._prepare_copy(source)
                    self.create_scratch(source, name, rows, params)
            hashed = f"SELECT {layout.HASH_COLUMN} FROM {self.scratch_reference(name)}"
            counted = self.query_counts(self.dialect.count_query(hashed, eval_buckets), [])
        except WarehouseError as exc:
            if copy_id is None:
                with contextlib.suppress(WarehouseError):
                    self.drop_scratch(name)
            if isinstance(exc, PermanentWarehouseError):  # e.g. a ds value the server refuses
                raise PermanentWarehouseError(
                    f"cannot count the rows of {source.describe()}: {exc}"
                ) from exc
            raise
        with self._scratch_lock:
            if copy_id is not None:
                self._scratch_ready.add(name)
            earlier, self._planned_copy = self._planned_copy, None if copy_id else name
        if earlier is not None:  # planned again before naming it: the earlier one is stale
            with contextlib.suppress(WarehouseError):
                self.drop_scratch(earlier)
        spent = dataclasses.asdict(self.costs - before)
        stats = {name: value for name, value in spent.items() if value}
        state = {_COPY_ID: copy_id} if copy_id else {}
        return BucketCounts(columns, counted, stats, schema=schema, state=state)

    def planned(self, plan: Plan) -> None:
        """Name the copy made under a temporary name while counting ``plan``'s rows after
        the plan (or drop it, when another process named the same copy first)."""
        with self._scratch_lock:
            temporary, self._planned_copy = self._planned_copy, None
            if temporary is None:
                return
            name = self.scratch_name(plan)
            if self._name_copy(temporary, name):
                self._keep(name)
            self._scratch_ready.add(name)
        log.info(
            "copied %s into %s while planning", plan.request.source.describe(),
            self.scratch_location(plan),
        )  # fmt: skip

    def scratch_gone(self, plan: Plan, what: str) -> ScratchDataMissing:
        """The error of a read that found ``plan``'s scratch table gone; the next
        :meth:`materialize` looks it up (and makes it) again."""
        with self._scratch_lock:
            self._scratch_ready.discard(self.scratch_name(plan))
        return ScratchDataMissing(f"{what}: the scratch table is gone")

    def scratch_rows(self, plan: Plan, chunks: Sequence[ChunkSpec] | None) -> str:
        """A query of the scratch table's rows (of ``chunks``, or all): ``plan.columns``,
        then the key hash; integers only in its condition."""
        selected = [quote_identifier(c) for c in plan.columns]
        selected.append(f"{layout.HASH_COLUMN} AS {quote_identifier(layout.HASH_COLUMN)}")
        sql = f"SELECT {', '.join(selected)} FROM {self.scratch_reference(self.scratch_name(plan))}"
        if chunks is None:
            return sql
        condition = self.in_chunks(plan, chunks, layout.EVAL_COLUMN, layout.BUCKET_COLUMN)
        return f"{sql} WHERE {condition}"

    def close(self) -> None:
        """Drop the scratch tables this instance made (unless copies expire)."""
        lock = getattr(self, "_scratch_lock", None)
        if lock is None:  # the constructor failed before the protocol's state was made
            return
        with lock:
            owned, self._scratch_owned = self._scratch_owned, []
            self._scratch_ready.difference_update(owned)
            if self._planned_copy is not None:  # planning failed after the copy
                owned.append(self._planned_copy)
                self._planned_copy = None
        for name in owned:
            try:
                self.drop_scratch(name)
            except Exception as exc:  # a server gone away keeps its tables
                log.warning("could not drop the scratch table %s: %s", name, exc)
