"""Plans: the chunks of each split, made once from a warehouse's bucket counts.

A :class:`Plan` is a value: it can be written as JSON, handed to other processes (DataLoader
workers, DDP ranks, other machines) and read back, and every process holding it reads the
same chunks. It cannot be changed once made.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from faucet_core import checks, layout
from faucet_core.warehouse import (
    BucketCounts,
    PermanentWarehouseError,
    PlanRequest,
    SourceSpec,
    SplitName,
    SplitSpec,
)

__all__ = ["PLAN_FORMAT", "ChunkSpec", "Plan", "make_plan"]

#: The version of the JSON layout of plans.
PLAN_FORMAT = 2

SPLITS: tuple[SplitName, ...] = ("train", "eval")
#: Bytes assumed per value of a column whose width varies (strings, lists).
_VARIABLE_WIDTH_GUESS = 32
#: The fields of a plan that are mappings, kept as read-only views.
_MAPPINGS = ("chunks", "stats", "state", "pinned")


@dataclass(frozen=True)
class ChunkSpec:
    """One chunk: the rows of one split whose bucket is in ``lo .. hi - 1``.

    Attributes:
        split: ``"train"`` or ``"eval"``.
        index: Position of the chunk in its split's chunk list.
        lo: First bucket of the chunk.
        hi: One past its last bucket.
        rows: Exact number of rows in it.
        checksum: The layout checksum of its rows' hashes.
    """

    split: SplitName
    index: int
    lo: int
    hi: int
    rows: int
    checksum: int

    @property
    def buckets(self) -> layout.BucketRange:
        """The chunk's split and bucket range."""
        return layout.BucketRange(self.split == "eval", self.lo, self.hi)

    def describe(self) -> str:
        """A short human label, used in errors and logs."""
        return f"{self.split} chunk {self.index} ({self.rows} rows)"


@dataclass(frozen=True)
class Plan:
    """What a reader serves: the chunks of each split, and what identifies their rows.

    Attributes:
        datastore: The warehouse that made the plan.
        request: The source, split and chunk size it was made for.
        columns: The columns every chunk has, in order.
        data_version: The source's version when it was planned (``None``: unknown).
        rows_id: Identifies the rows of each split and their buckets: where the data lives
            and its version, the source, the split, the columns and the rows counted per
            bucket.
            Scratch copies and cached chunks are named after it.
        chunks: The chunk list of each split.
        stats: Facts about planning worth showing (rows per split, bytes processed); for
            display only.
        schema: The Arrow types of ``columns``, when the warehouse said them.
        state: What the warehouse that made the plan needs to read its chunks in any
            process (:attr:`BucketCounts.state`): JSON values, part of the fingerprint.
        pinned: What keeps the rows counted readable while the warehouse instance that
            planned them holds it (:attr:`BucketCounts.pinned`): JSON values, not part of
            the fingerprint; a reader whose warehouse no longer holds it reads the rows as
            they are, checked against the plan.
    """

    datastore: str
    request: PlanRequest
    columns: tuple[str, ...]
    data_version: str | None
    rows_id: str
    chunks: Mapping[SplitName, tuple[ChunkSpec, ...]]
    stats: Mapping[str, Any] = field(default_factory=dict)
    schema: pa.Schema | None = None
    state: Mapping[str, Any] = field(default_factory=dict)
    pinned: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in _MAPPINGS:  # read-only views: a plan is not changed once made
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    def __reduce__(self) -> tuple[Any, ...]:
        values = [getattr(self, f.name) for f in dataclasses.fields(self)]
        return type(self), tuple(dict(v) if isinstance(v, Mapping) else v for v in values)

    @functools.cached_property
    def fingerprint(self) -> str:
        """Identifies the exact chunks, and how they are read: two plans with the same
        fingerprint read the same."""
        ranges = [
            (c.split, c.lo, c.hi, c.rows, c.checksum)
            for split in SPLITS
            for c in self.chunks[split]
        ]
        if not self.state:
            return layout.stable_digest(self.rows_id, ranges)
        return layout.stable_digest(self.rows_id, ranges, dict(self.state))

    @property
    def key(self) -> tuple[str, ...]:
        """The columns whose hash places each row."""
        return self.request.key(self.columns)

    @property
    def eval_buckets(self) -> int:
        """How many of the 10,000 split buckets are eval."""
        return self.request.split.eval_buckets

    def rows(self, split: SplitName) -> int:
        """Total rows of ``split``."""
        return sum(c.rows for c in self.chunks[split])

    def split_surprise(self) -> str | None:
        """What would surprise in the split, said plainly; None when nothing would.

        Rows go to eval by their key's hash: with many distinct keys, eval holds close to
        ``test_split_percent`` of the rows, but a key with few distinct values sends each
        value's rows to one side. Said: the source has no rows; a split that was asked for
        is empty; eval's share is further from the asked one than a quarter of the smaller
        side's share and than chance allows (four standard deviations of the share).
        """
        rows = {split: self.rows(split) for split in SPLITS}
        total = sum(rows.values())
        source = self.request.source.describe()
        if total == 0:
            return f"{source} has no rows: both splits are empty"
        asked = self.eval_buckets / layout.SPLIT_BUCKETS
        share = rows["eval"] / total
        key = ", ".join(self.key)
        said = (
            f"eval holds {share:.1%} of the {total:,} rows of {source} where "
            f"test_split_percent asks {asked:.1%}"
        )
        empty = "eval" if asked > 0 and rows["eval"] == 0 else None
        empty = "train" if rows["train"] == 0 else empty
        chance = 4 * math.sqrt(asked * (1 - asked) / total)
        if empty is None and abs(share - asked) <= max(0.25 * min(asked, 1 - asked), chance):
            return None
        what = f"the {empty} split is empty" if empty else "the split is not as asked"
        return (
            f"{what}: {said}. The split key ({key}) sends all rows of one key value to one "
            "side; a key with few distinct values splits unevenly: choose one with many "
            "(an id)"
        )

    @property
    def every_chunk(self) -> list[ChunkSpec]:
        """The chunks of both splits, train then eval: the order in which the chunk states
        and the checks of a process number them."""
        return [c for split in SPLITS for c in self.chunks[split]]

    def arrow_bytes(self) -> int | None:
        """About how many bytes the chunks of both splits take in Arrow, key hashes
        included, or ``None`` if the plan does not say its schema."""
        if self.schema is None:
            return None
        width = 8  # the key hash
        for kind in self.schema.types:
            try:
                width += max(kind.bit_width // 8, 1)
            except ValueError:  # no fixed width
                width += _VARIABLE_WIDTH_GUESS
        return width * sum(self.rows(split) for split in SPLITS)

    def chunk_key(self, chunk: ChunkSpec) -> str:
        """The cache key of ``chunk``: the same for the same rows, whatever the chunking."""
        return layout.stable_digest(self.rows_id, chunk.split, chunk.lo, chunk.hi)

    def to_json(self) -> str:
        """The plan as JSON text; :meth:`from_json` reads it back exactly."""
        data = {
            "format": PLAN_FORMAT,
            "fingerprint": self.fingerprint,
            "datastore": self.datastore,
            "request": dataclasses.asdict(self.request),
            "columns": list(self.columns),
            "data_version": self.data_version,
            "rows_id": self.rows_id,
            "chunks": {
                split: [[c.lo, c.hi, c.rows, c.checksum] for c in self.chunks[split]]
                for split in SPLITS
            },
            "stats": dict(self.stats),
            "state": dict(self.state),
            "pinned": dict(self.pinned),
            "schema": (
                base64.b64encode(self.schema.serialize().to_pybytes()).decode()
                if self.schema is not None
                else None
            ),
        }
        return json.dumps(data, default=str)

    @classmethod
    def from_json(cls, text: str | bytes) -> Plan:
        """Read a plan written by :meth:`to_json`.

        Raises:
            ValueError: The text is not a plan of this format, or it was altered (its
                fingerprint does not match its chunks).
        """
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
                raise ValueError(f"not a Faucet plan of format {PLAN_FORMAT}")
            request = data["request"]
            source: dict[str, Any] = {
                name: tuple(value) if isinstance(value, list) else value
                for name, value in request["source"].items()
            }
            key = request["split"]["key"]
            plan = cls(
                datastore=data["datastore"],
                request=PlanRequest(
                    SourceSpec(**source),
                    SplitSpec(tuple(key) if key else None, request["split"]["test_split_percent"]),
                    request["chunk_size"],
                ),
                columns=tuple(data["columns"]),
                data_version=data["data_version"],
                rows_id=data["rows_id"],
                chunks={
                    split: tuple(
                        ChunkSpec(split, index, *values)
                        for index, values in enumerate(data["chunks"][split])
                    )
                    for split in SPLITS
                },
                stats=data["stats"],
                schema=(
                    pa.ipc.read_schema(pa.py_buffer(base64.b64decode(data["schema"])))
                    if data["schema"] is not None
                    else None
                ),
                state=data.get("state", {}),
                pinned=data.get("pinned", {}),
            )
        except (KeyError, TypeError, AttributeError, ValueError, pa.ArrowException) as exc:
            raise ValueError(f"not a Faucet plan: {exc}") from exc
        if plan.fingerprint != data["fingerprint"]:
            raise ValueError("the plan was altered: its fingerprint does not match its chunks")
        return plan


def make_plan(
    datastore: str,
    request: PlanRequest,
    counted: BucketCounts,
    data_version: str | None,
    identity: str,
) -> Plan:
    """Cut a warehouse's bucket counts into the chunks of each split.

    ``identity`` says where the source's data lives
    (:meth:`~faucet_core.warehouse.Warehouse.source_identity`); it is part of the rows id.

    Raises:
        PermanentWarehouseError: The counts break the layout (rows with a NULL key hash, a
            bucket out of range, counted twice, or empty), or ``ds`` selects no rows.
    """
    try:
        counts = layout.bucket_counts(counted.counts)
    except (ValueError, pa.ArrowException) as exc:
        raise PermanentWarehouseError(f"{datastore} counted buckets wrongly: {exc}") from exc
    # A NULL hash gives a NULL split and bucket.
    unplaced = pc.or_(pc.is_null(counts.column("is_eval")), pc.is_null(counts.column("bucket")))
    if pc.any(unplaced).as_py():
        nulls = pc.sum(pc.filter(counts.column("row_count"), unplaced)).as_py() or 0
        raise PermanentWarehouseError(
            f"the {datastore} warehouse counted rows that break the layout: "
            f"{checks.null_hashes(nulls)} (a hash of {', '.join(request.key(counted.columns))} "
            f"in {request.source.describe()}); each row needs a 64-bit key hash, never NULL, "
            "to be placed in a split and a bucket"
        )
    evals = layout.integers(pc.cast(counts.column("is_eval"), pa.int8())).astype(bool)
    buckets, rows, checksums = (
        layout.integers(counts.column(name)) for name in ("bucket", "row_count", "checksum")
    )
    keys = evals.astype(np.int64) * layout.BUCKETS + buckets
    wrong = (buckets < 0) | (buckets >= layout.BUCKETS) | (rows <= 0)
    if wrong.any() or len(np.unique(keys)) != len(keys):
        raise PermanentWarehouseError(
            f"{datastore} counted impossible buckets: buckets are 0..{layout.BUCKETS - 1}, "
            "each counted once, with rows"
        )
    source = request.source
    if source.ds is not None and not len(keys):
        what = dataclasses.replace(source, ds=None).describe()
        raise PermanentWarehouseError(f"{what} has no rows for ds={source.ds!r}")
    order = np.argsort(keys)
    table = np.stack([keys[order], rows[order], checksums[order]])
    rows_id = layout.stable_digest(
        layout.LAYOUT_VERSION,
        datastore,
        identity,
        data_version,
        dataclasses.asdict(source),
        request.key(counted.columns),
        request.split.eval_buckets,
        counted.columns,
        hashlib.sha256(table.tobytes()).hexdigest(),  # int64, C order
    )
    chunks = {}
    for split in SPLITS:
        mask = evals == (split == "eval")
        ranges = layout.group_buckets(
            buckets[mask], rows[mask], checksums[mask], request.chunk_size
        )
        chunks[split] = tuple(
            ChunkSpec(split, index, *values) for index, values in enumerate(ranges)
        )
    stats = {"rows": {split: sum(c.rows for c in chunks[split]) for split in SPLITS}}
    return Plan(
        datastore=datastore,
        request=request,
        columns=tuple(counted.columns),
        data_version=data_version,
        rows_id=rows_id,
        chunks=chunks,
        stats={**stats, **counted.stats},
        schema=counted.schema,
        state=counted.state,
        pinned=counted.pinned,
    )
