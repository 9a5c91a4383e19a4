"""The BigQuery warehouse: plan with two query jobs, read chunks with the Storage Read API.

Planning materializes the filtered, split source once (``CREATE TABLE ... AS SELECT`` into
a scratch dataset, with an expiration, dropped on close) and counts its rows per hash
bucket in a second job. Chunks are runs of buckets, read with the Storage Read API (a
row restriction on the scratch table, selected columns, a new short read session per
chunk read, so no session expires mid-training), or with REST paging where that API is
unavailable. The number of query jobs is two per reader, whatever the chunk count and
the number of epochs.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from faucet_bigquery.connection import BigQueryConnection
from faucet_bigquery.sql import FINE_BUCKETS, TableName, column, hashes, parse_table
from faucet_core.warehouse import (
    ChunkSpec,
    PermanentWarehouseError,
    Plan,
    PlanRequest,
    SourceSpec,
    SplitName,
    TransientWarehouseError,
    Warehouse,
    WarehouseError,
    stable_digest,
)

if TYPE_CHECKING:
    pass

__all__ = ["BigQueryWarehouse", "check_bytes_budget", "group_buckets"]

log = logging.getLogger(__name__)

_EVAL, _BUCKET, _ORDER, _TIE = "__faucet_eval", "__faucet_bucket", "__faucet_order", "__faucet_tie"
_INTERNAL = (_EVAL, _BUCKET, _ORDER, _TIE)


def check_bytes_budget(processed: int | None, limit: int | None, what: str) -> None:
    """Fail before a query that would process more than ``limit`` bytes."""
    if limit is not None and processed is not None and processed > limit:
        raise PermanentWarehouseError(
            f"{what} would process {processed:,} bytes, over maximum_bytes_billed {limit:,}"
        )


def group_buckets(counts: Sequence[tuple[int, int]], chunk_size: int) -> list[tuple[int, int, int]]:
    """Cut ``(bucket, rows)`` counts, in bucket order, into chunks of about ``chunk_size``.

    Returns ``(first bucket, last bucket + 1, rows)`` per chunk; chunk boundaries fall at
    the bucket where the running total crosses each multiple of the target size.
    """
    total = sum(rows for _, rows in counts)
    if not total:
        return []
    target = total / max(1, math.ceil(total / chunk_size))
    chunks: list[tuple[int, int, int]] = []
    start, rows, running = 0, 0, 0
    for bucket, n in counts:
        rows += n
        running += n
        if running >= target * (len(chunks) + 1) - 1e-9:
            end = FINE_BUCKETS if running == total else bucket + 1
            chunks.append((start, end, rows))
            start, rows = end, 0
    return chunks


def _classify(exc: Exception, what: str) -> WarehouseError:
    """A Google API error as a transient (retried) or permanent warehouse error."""
    from google.api_core import exceptions as google

    transient: tuple[type[BaseException], ...] = (
        google.TooManyRequests,
        google.InternalServerError,
        google.BadGateway,
        google.ServiceUnavailable,
        google.GatewayTimeout,
        google.DeadlineExceeded,
        google.Aborted,
        google.RetryError,
        ConnectionError,
        TimeoutError,
    )
    try:
        import requests

        transient += (requests.ConnectionError, requests.Timeout)
    except ImportError:  # pragma: no cover - requests comes with google-cloud-bigquery
        pass
    message = getattr(exc, "message", None) or str(exc)
    if isinstance(exc, transient):
        return TransientWarehouseError(f"{what}: {message}")
    return PermanentWarehouseError(f"{what}: {message}")


class BigQueryWarehouse(Warehouse):
    """Reads a BigQuery table or query through a materialized, split scratch table."""

    name = "bigquery"
    connection_model = BigQueryConnection
    connection: BigQueryConnection

    def __init__(self, connection: BaseModel) -> None:
        super().__init__(connection)
        try:
            self._credentials = self.connection.credentials()
            self.client = self.connection.bigquery_client(self._credentials)
        except Exception as exc:
            where = self.connection.credential_path or "Application Default Credentials"
            raise PermanentWarehouseError(f"cannot use the credentials of {where}: {exc}") from exc
        from google.cloud import bigquery

        # The client libraries retry for ten minutes by default; the core retries chunks.
        self._retry = bigquery.DEFAULT_RETRY.with_deadline(self.connection.timeout)
        self._read_client: Any = None
        self._lock = threading.Lock()
        self._owned: list[TableName] = []
        self.jobs: list[str] = []

    @property
    def fingerprint(self) -> str:
        return stable_digest("bigquery", self.client.project, self.connection.api_endpoint)

    @property
    def read_client(self) -> Any:
        """The Storage Read API client, made on first use."""
        with self._lock:
            if self._read_client is None:
                self._read_client = self.connection.read_client(self._credentials)
            return self._read_client

    def _query(self, what: str, sql: str, params: Sequence[Any] = (), dry_run: bool = False) -> Any:
        from google.cloud import bigquery

        config = bigquery.QueryJobConfig(
            query_parameters=list(params),
            dry_run=dry_run,
            maximum_bytes_billed=self.connection.maximum_bytes_billed,
        )
        try:
            job = self.client.query(
                sql, job_config=config, retry=self._retry, timeout=self.connection.timeout
            )
            if not dry_run:
                self.jobs.append(job.job_id)
                job.result(retry=self._retry, timeout=self.connection.job_timeout)
        except Exception as exc:
            raise _classify(exc, what) from exc
        return job

    def _source(self, source: SourceSpec) -> tuple[str, list[Any], str, list[str] | None]:
        """``(FROM clause with WHERE, parameters, description, columns if known)``."""
        from google.cloud import bigquery

        if source.files:
            raise PermanentWarehouseError(
                "the bigquery warehouse reads source.table or source.query"
            )
        params: list[Any] = []
        if source.table:
            table = parse_table(source.table, self.client.project)
            what = f"table {table.id}"
            try:
                metadata = self.client.get_table(
                    table.id, retry=self._retry, timeout=self.connection.timeout
                )
            except Exception as exc:
                raise _classify(exc, f"cannot read {what}") from exc
            names = [f.name for f in metadata.schema]
            from_sql = f"{table.sql} AS faucet_source"
        else:
            what, names = "the source query", None
            from_sql = f"({source.query}) AS faucet_source"
            metadata = None
        where = "TRUE"
        if source.ds is not None:
            try:
                dt.date.fromisoformat(source.ds)
            except ValueError:
                raise PermanentWarehouseError(
                    f"source.ds {source.ds!r} is not a date (YYYY-MM-DD)"
                ) from None
            partition = source.partition_column
            kind = "DATE"
            if partition is None and metadata is not None:
                tp = metadata.time_partitioning
                if tp is None:
                    raise PermanentWarehouseError(
                        f"source.ds is set but {what} is not partitioned by time "
                        "(set source.partition_column)"
                    )
                partition = tp.field or "_PARTITIONDATE"
            if partition is None:
                raise PermanentWarehouseError(
                    "source.ds with a query needs source.partition_column"
                )
            if metadata is not None and partition != "_PARTITIONDATE":
                types = {f.name: f.field_type for f in metadata.schema}
                if partition not in types:
                    raise PermanentWarehouseError(f"{what} has no column {partition!r}")
                kind = types[partition]
            quoted = partition if partition == "_PARTITIONDATE" else column(partition)
            value = quoted if kind == "DATE" else f"DATE({quoted})"
            where = f"{value} = @faucet_ds"
            params.append(bigquery.ScalarQueryParameter("faucet_ds", "DATE", source.ds))
        return f"{from_sql} WHERE {where}", params, what, names

    def plan(self, request: PlanRequest) -> Plan:

        source, split = request.source, request.split
        from_where, params, what, names = self._source(source)
        columns = list(source.columns) if source.columns is not None else names
        if columns is not None and names is not None:
            missing = [c for c in columns + list(split.key or ()) if c not in names]
            if missing:
                raise PermanentWarehouseError(
                    f"columns {missing} not found in {what}; it has {names}"
                )
        h = hashes(split.key, columns, split.eval_buckets, hashed=_ORDER)
        selected = ", ".join(column(c) for c in columns) if columns else "faucet_source.*"
        check_bytes_budget(
            self._query(f"cannot plan {what}", f"SELECT {selected} FROM {from_where}", params,
                        dry_run=True).total_bytes_processed if self.connection.maximum_bytes_billed
            is not None else None,
            self.connection.maximum_bytes_billed,
            f"reading {what}",
        )  # fmt: skip
        scratch = self._scratch_table()
        minutes = int(self.connection.scratch_expiration_hours * 60)
        # Each row's key is hashed once; its split and bucket come from that hash's digits.
        job = self._query(
            f"cannot materialize {what}",
            f"CREATE OR REPLACE TABLE {scratch.sql} CLUSTER BY {_EVAL}, {_BUCKET} "
            f"OPTIONS(expiration_timestamp=TIMESTAMP_ADD(CURRENT_TIMESTAMP(), "
            f"INTERVAL {minutes} MINUTE)) AS SELECT * EXCEPT ({_ORDER}, {_TIE}), "
            f"{h.is_eval} AS {_EVAL}, {h.bucket} AS {_BUCKET}, {_ORDER}, {_TIE} FROM ("
            f"SELECT {selected}, {h.key_hash} AS {_ORDER}, {h.row_hash} AS {_TIE} "
            f"FROM {from_where}) ORDER BY {_EVAL}, {_BUCKET}, {_ORDER}, {_TIE}",
            params,
        )
        stats = {
            "bytes_processed": job.total_bytes_processed,
            "bytes_billed": job.total_bytes_billed,
            "scratch_table": scratch.id,
        }
        log.info("materialized %s into %s: %s", what, scratch.id, stats)
        if columns is None:
            schema = self.client.get_table(
                scratch.id, retry=self._retry, timeout=self.connection.timeout
            ).schema
            columns = [f.name for f in schema if f.name not in _INTERNAL]
        counted = self._query(
            f"cannot count {scratch.id}",
            f"SELECT {_EVAL}, {_BUCKET}, COUNT(*), BIT_XOR({_TIE}) FROM {scratch.sql} "
            f"GROUP BY {_EVAL}, {_BUCKET} ORDER BY {_EVAL}, {_BUCKET}",
        ).result()
        rows = [tuple(r) for r in counted]
        chunks: dict[SplitName, list[ChunkSpec]] = {"train": [], "eval": []}
        offset = 0
        splits: tuple[tuple[SplitName, bool], ...] = (("eval", True), ("train", False))
        for split_name, is_eval in splits:
            counts = [(int(b), int(n)) for e, b, n, _ in rows if bool(e) == is_eval]
            for lo, hi, n in group_buckets(counts, request.chunk_size):
                token = {"table": scratch.id, "eval": is_eval, "lo": lo, "hi": hi,
                         "offset": offset, "columns": columns}  # fmt: skip
                chunks[split_name].append(ChunkSpec(split_name, len(chunks[split_name]), n, token))
                offset += n
        if source.ds is not None and not rows:
            raise PermanentWarehouseError(f"{what} has no rows for ds={source.ds!r}")
        fingerprint = stable_digest(
            "bigquery", source, split, columns, request.chunk_size, [list(r) for r in rows]
        )
        stats["rows"] = {s: sum(c.rows for c in chunks[s]) for s in chunks}
        return Plan(fingerprint, tuple(columns), chunks, stats=stats)

    def _scratch_table(self) -> TableName:
        from google.cloud import bigquery

        dataset = bigquery.Dataset(f"{self.client.project}.{self.connection.scratch_dataset}")
        if self.connection.location:
            dataset.location = self.connection.location
        dataset.default_table_expiration_ms = int(
            self.connection.scratch_expiration_hours * 3600 * 1000
        )
        try:
            self.client.create_dataset(
                dataset, exists_ok=True, retry=self._retry, timeout=self.connection.timeout
            )
        except Exception as exc:
            raise _classify(exc, f"cannot create the scratch dataset {dataset.dataset_id}") from exc
        table = TableName(
            self.client.project, self.connection.scratch_dataset, f"faucet_{uuid.uuid4().hex}"
        )
        with self._lock:
            self._owned.append(table)
        return table

    def read_chunk(self, chunk: ChunkSpec) -> pa.Table:
        token = chunk.token
        try:
            if self.connection.use_storage_api:
                table = self._read_storage(token)
            else:
                table = self._read_rest(token, chunk.rows)
        except WarehouseError:
            raise
        except Exception as exc:
            raise _classify(exc, f"cannot read {chunk.describe()} of {token['table']}") from exc
        order = pc.sort_indices(table, sort_keys=[(_ORDER, "ascending"), (_TIE, "ascending")])
        return table.take(order).select(token["columns"])

    def _read_storage(self, token: dict[str, Any]) -> pa.Table:
        from google.cloud.bigquery_storage_v1 import types

        project, dataset, name = token["table"].split(".")
        restriction = (
            f"{_EVAL} = {str(token['eval']).lower()} AND {_BUCKET} >= {token['lo']} "
            f"AND {_BUCKET} < {token['hi']}"
        )
        session = self.read_client.create_read_session(
            retry=None,
            timeout=self.connection.timeout,
            parent=f"projects/{self.client.project}",
            read_session=types.ReadSession(
                table=f"projects/{project}/datasets/{dataset}/tables/{name}",
                data_format=types.DataFormat.ARROW,
                read_options=types.ReadSession.TableReadOptions(
                    selected_fields=[*token["columns"], _ORDER, _TIE],
                    row_restriction=restriction,
                ),
            ),
            max_stream_count=1,
        )
        if not session.streams:
            raise PermanentWarehouseError(f"no rows in {token['table']} for {restriction}")
        schema = pa.ipc.read_schema(pa.py_buffer(session.arrow_schema.serialized_schema))
        batches = [
            pa.ipc.read_record_batch(
                pa.py_buffer(response.arrow_record_batch.serialized_record_batch), schema
            )
            for stream in session.streams
            for response in self.read_client.read_rows(
                stream.name, retry=None, timeout=self.connection.timeout
            )
        ]
        return pa.Table.from_batches(batches, schema)

    def _read_rest(self, token: dict[str, Any], rows: int) -> pa.Table:
        wanted = {*token["columns"], *_INTERNAL}
        schema = self.client.get_table(
            token["table"], retry=self._retry, timeout=self.connection.timeout
        ).schema
        fields = [field for field in schema if field.name in wanted]
        table = self.client.list_rows(
            token["table"],
            selected_fields=fields,
            start_index=token["offset"],
            max_results=rows,
            retry=self._retry,
            timeout=self.connection.timeout,
        ).to_arrow(create_bqstorage_client=False)
        eval_ok = pc.all(pc.equal(table[_EVAL], token["eval"])).as_py()
        bucket = table[_BUCKET]
        in_range = pc.all(
            pc.and_(pc.greater_equal(bucket, token["lo"]), pc.less(bucket, token["hi"]))
        )
        if not (eval_ok and in_range.as_py()):
            raise PermanentWarehouseError(
                f"{token['table']} does not keep its rows in split and bucket order, which "
                "REST paging needs; use the Storage Read API (use_storage_api: true)"
            )
        return table

    def close(self) -> None:
        for table in getattr(self, "_owned", ()):
            try:
                self.client.delete_table(
                    table.id, not_found_ok=True, retry=self._retry, timeout=self.connection.timeout
                )
            except Exception as exc:  # the table expires by itself anyway
                log.warning("could not drop the scratch table %s: %s", table.id, exc)
        self._owned = []
        for client in (getattr(self, "client", None), self._read_client):
            close = getattr(getattr(client, "transport", client), "close", None)
            if callable(close):
                close()
