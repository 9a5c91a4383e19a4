"""An example Faucet warehouse plugin: a synthetic table computed on the fly.

Row ``i`` has ``id = i``, ``x = (i * 37) % 101 / 100`` and ``label = i % 2``. The split and
the chunks are computed from ``id`` alone, so they are stable, as Faucet requires.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from faucet_core import (
    ChunkSpec,
    PermanentWarehouseError,
    Plan,
    PlanRequest,
    Warehouse,
    hookimpl,
)


class SyntheticConnection(BaseModel):
    """Settings of the ``synthetic`` datastore."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rows: int = Field(10_000, ge=0, description="Rows in the synthetic table.")


def _bucket(row_id: int, salt: str, buckets: int) -> int:
    digest = hashlib.blake2b(f"{salt}:{row_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % buckets


class SyntheticWarehouse(Warehouse):
    """Serves the synthetic table ``numbers``."""

    name = "synthetic"
    connection_model = SyntheticConnection
    connection: SyntheticConnection

    @property
    def fingerprint(self) -> str:
        return f"synthetic-v1-{self.connection.rows}"

    def plan(self, request: PlanRequest) -> Plan:
        if request.source.table != "numbers":
            raise PermanentWarehouseError(f"no table {request.source.table!r}; try 'numbers'")
        eval_ids = {
            i for i in range(self.connection.rows)
            if _bucket(i, "split", 10_000) < request.split.eval_buckets
        }  # fmt: skip
        chunks: dict[str, list[ChunkSpec]] = {}
        for split in ("train", "eval"):
            ids = [i for i in range(self.connection.rows) if (i in eval_ids) == (split == "eval")]
            count = max(1, -(-len(ids) // request.chunk_size))
            members: list[list[int]] = [[] for _ in range(count)]
            for i in ids:
                members[_bucket(i, "chunk", count)].append(i)
            chunks[split] = [
                ChunkSpec(split, n, len(m), token=m)  # type: ignore[arg-type]
                for n, m in enumerate(x for x in members if x)
            ]
        return Plan(
            fingerprint=f"{self.fingerprint}-{request.split}-{request.chunk_size}",
            columns=("id", "x", "label"),
            chunks=chunks,  # type: ignore[arg-type]
        )

    def read_chunk(self, chunk: ChunkSpec) -> pa.Table:
        ids = chunk.token
        return pa.table(
            {
                "id": pa.array(ids, pa.int64()),
                "x": pa.array([(i * 37) % 101 / 100 for i in ids], pa.float64()),
                "label": pa.array([i % 2 for i in ids], pa.int64()),
            }
        )


@hookimpl
def register_warehouses(register: Callable[[type[Warehouse]], None]) -> None:
    """Provide the ``synthetic`` datastore."""
    register(SyntheticWarehouse)
