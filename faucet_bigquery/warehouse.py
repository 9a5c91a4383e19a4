"""The BigQuery warehouse: copy once while planning, count the copy, read with Storage Read.

Planning copies the split source into a scratch table (``CREATE TABLE IF NOT EXISTS ...
CLUSTER BY`` split and bucket, with an expiration), then counts the rows and checksum per
split and bucket from the copy's ``FARM_FINGERPRINT`` hash column: one billed scan of the
source, and the rows every chunk reads are the rows planned. The copy is named by what
decides its rows, as the core's protocol says (:mod:`faucet_core.scratch`), so any process
planning or reading the same data finds it and copies nothing. Chunks are read from it
with the Storage Read API (a row restriction on split and buckets, a short read session
per chunk read), or with a query job per chunk where that API is unavailable. The row
order inside a chunk is the core's, so no ``ORDER BY`` runs in BigQuery.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel

from faucet_bigquery.connection import BigQueryConnection
from faucet_bigquery.sql import TableName, column, is_column, parse_table
from faucet_core import layout
from faucet_core.plan import ChunkSpec, Plan
from faucet_core.preprocessing import StatsSql
from faucet_core.scratch import ScratchWarehouse
from faucet_core.streams import read_at_once
from faucet_core.warehouse import (
    BucketCounts,
    PermanentWarehouseError,
    PlanRequest,
    SourceSpec,
    TransientWarehouseError,
    WarehouseError,
)

__all__ = ["BigQueryWarehouse", "check_bytes_budget"]

log = logging.getLogger(__name__)

_EVAL, _BUCKET = layout.EVAL_COLUMN, layout.BUCKET_COLUMN
#: Table types whose metadata changes with their data (a snapshot never changes).
_VERSIONED_TYPES = frozenset({"TABLE", "SNAPSHOT"})


def check_bytes_budget(processed: int | None, limit: int | None, what: str) -> None:
    """Fail before a query that would process more than ``limit`` bytes."""
    if limit is not None and processed is not None and processed > limit:
        raise PermanentWarehouseError(
            f"{what} would process {processed:,} bytes, over maximum_bytes_billed {limit:,}"
        )


#: Times a read stream cut short is opened again without a batch read between them, and
#: the seconds before the first (doubled each time).
_RESUMES, _RESUME_BACKOFF = 5, 0.2
#: Streams a scan (the cache fill's read) asks for, at least: BigQuery serves each stream
#: at a few tens of MB/s, so a whole table is read at a useful rate only through several
#: (BigQuery gives fewer to a small table).
SCAN_STREAMS = 16
#: Rows asked for per page of a query's result: every count of a plan (a row per split and
#: bucket) in one, where BigQuery's 10 MB a page allows.
_PAGE_ROWS = 2 * layout.BUCKETS


def _resumable(exc: Exception) -> bool:
    """Whether a read stream that failed with ``exc`` can be opened again where it
    stopped: the connection broke (as the client library judges it)."""
    from google.api_core import exceptions as google

    if isinstance(exc, google.InternalServerError):
        return "RST_STREAM" in str(exc)
    return isinstance(exc, (google.ServiceUnavailable, google.Unknown))


def _message(exc: BaseException) -> str:
    """A Google API error's own message (without the request), on one line."""
    errors = getattr(exc, "errors", None) or [{}]
    first = errors[0] if isinstance(errors[0], dict) else {}
    return " ".join(str(first.get("message") or getattr(exc, "message", None) or exc).split())


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


_ARROW_TYPES: dict[str, pa.DataType] = {
    "INTEGER": pa.int64(),
    "INT64": pa.int64(),
    "FLOAT": pa.float64(),
    "FLOAT64": pa.float64(),
    "NUMERIC": pa.decimal128(38, 9),
    "BIGNUMERIC": pa.decimal256(76, 38),
    "BOOLEAN": pa.bool_(),
    "BOOL": pa.bool_(),
    "STRING": pa.string(),
    "BYTES": pa.binary(),
    "DATE": pa.date32(),
    "DATETIME": pa.timestamp("us"),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"),
    "TIME": pa.time64("us"),
    "JSON": pa.string(),
}


def arrow_type(field: Any) -> pa.DataType:
    """The Arrow type BigQuery's Arrow results give a column of this schema field."""
    if field.field_type in ("RECORD", "STRUCT"):
        kind = pa.struct([pa.field(sub.name, arrow_type(sub)) for sub in field.fields])
    else:
        kind = _ARROW_TYPES.get(field.field_type, pa.string())
    return pa.list_(kind) if field.mode == "REPEATED" else kind


class BigQueryWarehouse(ScratchWarehouse):
    """Reads a BigQuery table or query through a materialized, clustered scratch table."""

    name = "bigquery"
    connection_model = BigQueryConnection
    connection: BigQueryConnection
    scratch_created_atomically = True
    scratch_expires = True
    stats_sql = StatsSql(
        float="IF(IS_NAN(CAST({c} AS FLOAT64)), NULL, CAST({c} AS FLOAT64))",
        median="APPROX_QUANTILES({c}, 1000)[OFFSET(500)]",
        text="CAST({c} AS STRING)",
        top="APPROX_TOP_COUNT({c}, {k})",
        length="ARRAY_LENGTH({c})",
    )

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
        self._reads_opening: Any = None  # the Storage Read connection, opened while planning
        self._lock = threading.Lock()
        self._tables: dict[str, Any] = {}
        self._query_jobs: dict[str, Any] = {}  # dry runs of query sources
        self._locations: dict[str, str | None] = {}
        self._read_threads = 1  # until the core says how many threads read
        #: Ids of the query jobs this instance ran.
        self.jobs: list[str] = []

    @property
    def read_client(self) -> Any:
        """The Storage Read API client, made on first use."""
        with self._lock:
            if self._read_client is None:
                self._read_client = self.connection.read_client(self._credentials)
            return self._read_client

    def _job(
        self,
        what: str,
        sql: str,
        params: Sequence[Any] = (),
        dry_run: bool = False,
        limited: bool = True,
    ) -> Any:
        """Run a query job (``dry_run``: only estimate it); ``limited``: it carries
        ``maximum_bytes_billed``."""
        from google.cloud import bigquery

        config = bigquery.QueryJobConfig(
            query_parameters=list(params),
            dry_run=dry_run,
            use_query_cache=False if dry_run else None,
            maximum_bytes_billed=self.connection.maximum_bytes_billed if limited else None,
        )
        try:
            job = self.client.query(
                sql, job_config=config, retry=self._retry, timeout=self.connection.timeout
            )
            if not dry_run:
                with self._lock:
                    self.jobs.append(job.job_id)
                    self.costs.query_jobs += 1
                # Waited for with a first page's size, the call that says the job is done
                # brings that page too (read by :meth:`_result`): one round trip less.
                job.result(
                    retry=self._retry, timeout=self.connection.job_timeout, page_size=_PAGE_ROWS
                )
                with self._lock:
                    self.costs.bytes_processed += job.total_bytes_processed or 0
                    self.costs.bytes_billed += job.total_bytes_billed or 0
        except Exception as exc:
            raise _classify(exc, what) from exc
        return job

    def _guarded_job(self, what: str, sql: str, params: Sequence[Any]) -> Any:
        """Run a query job, after a dry run when ``maximum_bytes_billed`` is set."""
        limit = self.connection.maximum_bytes_billed
        if limit is not None:
            estimate = self._job(what, sql, params, dry_run=True).total_bytes_processed
            check_bytes_budget(estimate, limit, what)
        return self._job(what, sql, params)

    def query(self, sql: str, params: Sequence[Any]) -> pa.Table:
        return self._result(self._guarded_job("query failed", sql, params))

    def query_counts(self, sql: str, params: Sequence[Any]) -> pa.Table:
        """The counts of ``sql`` packed into one string (``split,bucket,rows,checksum;``
        for each), unpacked here: the client library converts a result's values one by one
        (on bqemulator, 0.97 s for 50,000 rows of three integers, against 0.05 s packed)."""
        packed = (
            "SELECT STRING_AGG(FORMAT('%d,%d,%d,%d', IF(is_eval, 1, 0), bucket, row_count, "
            f"checksum), ';') AS counts FROM ({sql}) AS faucet_counts"
        )
        text = self.query(packed, params).column("counts")[0].as_py() or ""
        values = np.array(text.replace(";", ",").split(",") if text else [], dtype=np.int64)
        split, bucket, rows, checksum = values.reshape(-1, len(layout.COUNT_COLUMNS)).T
        return pa.table(
            [split.astype(bool), bucket, rows, checksum], names=list(layout.COUNT_COLUMNS)
        )

    def _result(self, job: Any) -> pa.Table:
        """The rows of the finished query ``job``, as Arrow, in pages as large as BigQuery
        sends (at most 10 MB): a page costs a round trip."""
        try:
            result = job.result(
                retry=self._retry, timeout=self.connection.job_timeout, page_size=_PAGE_ROWS
            )
            return result.to_arrow(create_bqstorage_client=False)
        except Exception as exc:
            raise _classify(exc, "cannot read a query result") from exc

    def quote(self, name: str) -> str:
        return column(name)

    def hash_sql(self, columns: Sequence[str]) -> str:
        return f"FARM_FINGERPRINT(TO_JSON_STRING(STRUCT({', '.join(column(c) for c in columns)})))"

    def _table(self, name: str) -> Any:
        """The table's metadata (``tables.get``: no bytes billed), once per instance."""
        table = parse_table(name, self.client.project)
        with self._lock:
            metadata = self._tables.get(table.id)
        if metadata is None:
            try:
                metadata = self.client.get_table(
                    table.id, retry=self._retry, timeout=self.connection.timeout
                )
            except Exception as exc:
                raise _classify(exc, f"cannot read table {table.id}") from exc
            with self._lock:
                self._tables[table.id] = metadata
        return metadata

    def source_identity(self, source: SourceSpec) -> str:
        """The project that unqualified table names, and the query, run in."""
        return str(self.client.project)

    def data_version(self, source: SourceSpec) -> str | None:
        """A table's last modification time, rows, bytes and etag (metadata only); ``None``
        for a query, and for sources whose data changes while that metadata stays the same:
        a view, a materialized view, an external table, a table with rows in its streaming
        buffer."""
        if not source.table:
            return None
        metadata = self._table(source.table)
        if metadata.table_type not in _VERSIONED_TYPES or metadata.streaming_buffer is not None:
            return None
        return layout.stable_digest(
            str(metadata.modified), metadata.num_rows, metadata.num_bytes, metadata.etag
        )

    def source_schema(self, source: SourceSpec) -> pa.Schema:
        """From the table's metadata, or a dry run of the query: no bytes billed."""
        if source.table:
            fields = self._table(source.table).schema
        else:
            sql, params = self.from_sql(source)
            fields = self._job(
                "cannot plan the source query", f"SELECT * FROM {sql}", params, True
            ).schema
        return pa.schema([pa.field(f.name, arrow_type(f)) for f in fields])

    def from_sql(self, source: SourceSpec) -> tuple[str, Sequence[Any]]:
        from google.cloud import bigquery

        if source.files:
            raise PermanentWarehouseError(
                "the bigquery warehouse reads source.table or source.query"
            )
        metadata = None
        if source.table:
            table = parse_table(source.table, self.client.project)
            relation = f"{table.sql} AS faucet_source"
            metadata = self._table(source.table)
        else:
            relation = f"({source.query}) AS faucet_source"
        if source.ds is None:
            return relation, []
        try:
            dt.date.fromisoformat(source.ds)
        except ValueError:
            raise PermanentWarehouseError(
                f"source.ds {source.ds!r} is not a date (YYYY-MM-DD)"
            ) from None
        partition = source.partition_column
        kind = "DATE"
        if partition is None:
            if metadata is None:
                raise PermanentWarehouseError(
                    "source.ds with a query needs source.partition_column"
                )
            if metadata.time_partitioning is None:
                raise PermanentWarehouseError(
                    f"source.ds is set but {source.describe()} is not partitioned by time "
                    "(set source.partition_column)"
                )
            partition = metadata.time_partitioning.field or "_PARTITIONDATE"
        if partition != "_PARTITIONDATE":
            types = self._column_types(source)
            if partition not in types:
                raise PermanentWarehouseError(f"{source.describe()} has no column {partition!r}")
            kind = types[partition]
        quoted = (
            partition
            if partition == "_PARTITIONDATE"
            else column(partition, "source.partition_column")
        )
        value = quoted if kind == "DATE" else f"DATE({quoted})"
        param = bigquery.ScalarQueryParameter("faucet_ds", "DATE", source.ds)
        return f"{relation} WHERE {value} = @faucet_ds", [param]

    def _column_types(self, source: SourceSpec) -> dict[str, str]:
        """The BigQuery type of each column of ``source`` before ``ds`` filters it: from
        the table's metadata, or a dry run of the query (not billed), once per query."""
        if source.table:
            return {f.name: f.field_type for f in self._table(source.table).schema}
        return {f.name: f.field_type for f in self._query_dry_run(source).schema}

    def _query_dry_run(self, source: SourceSpec) -> Any:
        """A dry run (not billed) of ``source``'s query before ``ds`` filters it: its
        columns and the tables it reads; once per query."""
        query = source.query or ""
        with self._lock:
            job = self._query_jobs.get(query)
        if job is None:
            job = self._job(
                "cannot plan the source query",
                f"SELECT * FROM ({query}) AS faucet_source", (), dry_run=True,
            )  # fmt: skip
            with self._lock:
                self._query_jobs[query] = job
        return job

    def columns(self, request: PlanRequest) -> pa.Schema:
        """The source's columns, checked as the core does, and each a name Faucet can
        quote for BigQuery (see :func:`~faucet_bigquery.sql.column`).

        Raises:
            PermanentWarehouseError: Naming the setting whose columns cannot be read.
        """
        schema = super().columns(request)
        for setting, names in (("columns", schema.names), ("split_key", request.split.key or ())):
            unfit = [name for name in names if not is_column(name)]
            if unfit:
                raise PermanentWarehouseError(
                    f"source.{setting} {unfit}: not column names Faucet reads from BigQuery "
                    "(letters, digits and _, not starting with a digit); select others with "
                    "source.columns"
                )
        return schema

    def estimate(self, request: PlanRequest) -> dict[str, int]:
        """A dry run (not billed) of the scratch copy's query, made while planning; the
        counting query then reads the copy's hash column only."""
        columns = self.columns(request).names
        source = request.source
        copying, params = self.hashed_rows(source, columns, request.key(columns))
        what = f"cannot estimate {source.describe()}"
        job = self._job(what, copying, params, dry_run=True)
        return {"materializing": job.total_bytes_processed or 0}

    def access_problems(self, request: PlanRequest) -> list[str]:
        """Each thing the run does, tried without reading data or billing: the source's
        metadata (``tables.get``, or a dry run of the query), the scratch dataset (looked
        up, and its location), the copy (a dry run of its ``CREATE TABLE``: running jobs,
        reading the source, creating tables there), a Storage Read session (on the source
        table, reading no row). One line per refusal, BigQuery's message naming the
        permission."""
        from google.api_core.exceptions import Forbidden, NotFound

        source = request.source
        try:
            schema = self.source_schema(source)
        except WarehouseError as exc:
            if isinstance(exc.__cause__, Forbidden):
                return [f"read the source's metadata: {_message(exc.__cause__)}"]
            raise
        problems = []
        scratch = self._scratch_table("")
        try:
            self.prepare_scratch_place(source, create=False)
        except WarehouseError as exc:
            cause = exc.__cause__
            problems.append(
                f"use the scratch dataset: {_message(cause) if cause else exc}"
            )  # fmt: skip
        columns = (
            schema.names
            if source.columns is None
            else [c for c in source.columns if c in schema.names]
        )
        key = request.key(columns)
        rows, params = self._copied_rows(source, columns, key, None, request.split.eval_buckets)
        table = self._scratch_table(f"faucet_access_check_{uuid.uuid4().hex}")
        try:
            self._job(
                f"cannot check the copy of {source.describe()}",
                f"CREATE TABLE {table.sql} CLUSTER BY {_EVAL}, {_BUCKET} AS {rows}", params,
                dry_run=True,
            )  # fmt: skip
        except WarehouseError as exc:
            if isinstance(exc.__cause__, Forbidden):
                problems.append(
                    f"make the scratch copy in {scratch.dataset}: {_message(exc.__cause__)}"
                )
            elif not isinstance(exc.__cause__, NotFound):  # NotFound: no scratch dataset yet
                raise
        if self.connection.use_storage_api and source.table:
            problems += self._read_session_problems(parse_table(source.table, self.client.project))
        return problems

    def _read_session_problems(self, table: TableName) -> list[str]:
        """A refusal of a Storage Read session on ``table`` that reads no row."""
        from google.api_core.exceptions import Forbidden
        from google.cloud.bigquery_storage_v1 import types

        try:
            self.read_client.create_read_session(
                retry=None, timeout=self.connection.timeout,
                parent=f"projects/{self.client.project}",
                read_session=types.ReadSession(
                    table=table.path, data_format=types.DataFormat.ARROW,
                    read_options=types.ReadSession.TableReadOptions(row_restriction="FALSE"),
                ),
                max_stream_count=1,
            )  # fmt: skip
        except Forbidden as exc:
            return [
                f"read with the Storage Read API (or set use_storage_api: false): {_message(exc)}"
            ]
        except Exception as exc:
            raise _classify(exc, f"cannot check a read session of {table.id}") from exc
        return []

    def count_buckets(self, request: PlanRequest) -> BucketCounts:
        """As the core's, while the Storage Read API's connection opens: the first chunk's
        read would otherwise wait for its handshakes, after planning."""
        if self.connection.use_storage_api:
            self._open_reads()
        return super().count_buckets(request)

    def _open_reads(self) -> None:
        """Start opening the Storage Read API's connection; the first read waits for it."""
        import grpc

        try:
            channel = self.read_client.transport.grpc_channel
        except Exception as exc:  # the first read says what is wrong
            log.debug("cannot open a Storage Read connection while planning: %s", exc)
            return
        with self._lock:
            if self._reads_opening is None:
                self._reads_opening = grpc.channel_ready_future(channel)

    def copies_when_planning(self) -> bool:
        """Yes: planning bills one scan of the source (the copy), and counts the copy's
        hash column; every chunk reads the rows planned, whatever the source does after."""
        return True

    def scratch_location(self, plan: Plan) -> str:
        return self.scratch_table(plan).id

    def scratch_table(self, plan: Plan) -> TableName:
        """The scratch table of ``plan``'s rows: the same for every process and chunk size."""
        return self._scratch_table(self.scratch_name(plan))

    def _scratch_table(self, name: str) -> TableName:
        return TableName(self.client.project, self.connection.scratch_dataset, name)

    def scratch_reference(self, name: str) -> str:
        return self._scratch_table(name).sql

    def scratch_exists(self, name: str) -> bool:
        from google.api_core.exceptions import NotFound

        table = self._scratch_table(name)
        try:
            self.client.get_table(table.id, retry=self._retry, timeout=self.connection.timeout)
        except NotFound:
            return False
        except Exception as exc:
            raise _classify(exc, f"cannot look up the scratch table {table.id}") from exc
        return True

    def prepare_scratch_place(self, source: SourceSpec, create: bool = True) -> None:
        """The scratch dataset, in ``source``'s location (a query reads and writes in one
        location): looked up first, since creating one, even one that exists, needs the
        right to create datasets; made if missing, with the scratch tables' expiration as
        its default.

        Raises:
            PermanentWarehouseError: It exists in another location than the source.
        """
        from google.api_core.exceptions import NotFound
        from google.cloud import bigquery

        scratch = self._scratch_table("")
        dataset_id = f"{scratch.project}.{scratch.dataset}"
        location = self._source_location(source)
        try:
            found = self.client.get_dataset(
                dataset_id, retry=self._retry, timeout=self.connection.timeout
            )
        except NotFound:
            found = None
        except Exception as exc:
            raise _classify(exc, f"cannot look up the scratch dataset {dataset_id}") from exc
        if found is not None:
            if location and found.location and found.location.lower() != location.lower():
                raise PermanentWarehouseError(
                    f"the scratch dataset {dataset_id} is in {found.location} and "
                    f"{source.describe()} in {location}: a query reads and writes in one "
                    f"location (set connection.scratch_dataset to a dataset in {location})"
                )
            return
        if not create:
            return
        dataset = bigquery.Dataset(dataset_id)
        dataset.location = location or "US"  # BigQuery's own default, said outright
        hours = self.connection.scratch_expiration_hours
        dataset.default_table_expiration_ms = int(hours * 3600 * 1000)
        try:
            self.client.create_dataset(
                dataset, exists_ok=True, retry=self._retry, timeout=self.connection.timeout
            )
        except Exception as exc:
            raise _classify(exc, f"cannot create the scratch dataset {dataset_id}") from exc

    def _source_location(self, source: SourceSpec) -> str | None:
        """Where ``source``'s data is: ``connection.location``, else its dataset's location
        (for a query, that of the first table a dry run says it reads); ``None`` for a
        query that reads no table."""
        if self.connection.location:
            return self.connection.location
        if source.table:
            table = parse_table(source.table, self.client.project)
            return self._dataset_location(table.project, table.dataset)
        for read in self._query_dry_run(source).referenced_tables or []:
            return self._dataset_location(read.project, read.dataset_id)
        return None

    def _dataset_location(self, project: str, dataset: str) -> str | None:
        """The location of a dataset (``datasets.get``: not billed), once per instance."""
        key = f"{project}.{dataset}"
        with self._lock:
            if key in self._locations:
                return self._locations[key]
        try:
            found = self.client.get_dataset(key, retry=self._retry, timeout=self.connection.timeout)
            location: str | None = found.location
        except Exception as exc:
            raise _classify(exc, f"cannot look up the dataset {key}") from exc
        with self._lock:
            self._locations[key] = location
        return location

    def create_scratch(
        self, source: SourceSpec, name: str, rows: str, params: Sequence[Any]
    ) -> None:
        """``CREATE TABLE IF NOT EXISTS ... AS``, clustered by split and bucket, expiring
        ``scratch_expiration_hours`` from now."""
        table = self._scratch_table(name)
        minutes = int(self.connection.scratch_expiration_hours * 60)
        job = self._guarded_job(
            f"cannot materialize {source.describe()}",
            f"CREATE TABLE IF NOT EXISTS {table.sql} CLUSTER BY {_EVAL}, {_BUCKET} "
            f"OPTIONS(expiration_timestamp=TIMESTAMP_ADD(CURRENT_TIMESTAMP(), "
            f"INTERVAL {minutes} MINUTE)) AS {rows}",
            params,
        )
        log.info(
            "copied into %s: %s bytes processed, %s billed",
            table.id,
            job.total_bytes_processed,
            job.total_bytes_billed,
        )

    def rename_scratch(self, temporary: str, name: str) -> None:
        """A copy job (not billed) to ``name``, refused if it holds rows, then the
        temporary table dropped: BigQuery tables are renamed by copying."""
        from google.cloud import bigquery

        source, target = self._scratch_table(temporary), self._scratch_table(name)
        config = bigquery.CopyJobConfig(write_disposition="WRITE_EMPTY")
        try:
            job = self.client.copy_table(
                source.id, target.id, job_config=config, retry=self._retry,
                timeout=self.connection.timeout,
            )  # fmt: skip
            job.result(retry=self._retry, timeout=self.connection.job_timeout)
        except Exception as exc:
            raise _classify(exc, f"cannot name the scratch table {target.id}") from exc
        self.drop_scratch(temporary)

    def set_expiry(self, name: str) -> None:
        """``scratch_expiration_hours`` from now (a copy job's table has none of its own)."""
        table = self._scratch_table(name)
        expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(
            hours=self.connection.scratch_expiration_hours
        )
        try:
            metadata = self.client.get_table(
                table.id, retry=self._retry, timeout=self.connection.timeout
            )
            metadata.expires = expires
            self.client.update_table(
                metadata, ["expires"], retry=self._retry, timeout=self.connection.timeout
            )
        except Exception as exc:
            raise _classify(exc, f"cannot set the expiry of {table.id}") from exc

    def drop_scratch(self, name: str) -> None:
        table = self._scratch_table(name)
        try:
            self.client.delete_table(
                table.id, not_found_ok=True, retry=self._retry, timeout=self.connection.timeout
            )
        except Exception as exc:
            raise _classify(exc, f"cannot drop the scratch table {table.id}") from exc

    def read_buckets(self, plan: Plan, chunk: ChunkSpec) -> pa.Table:
        from google.api_core.exceptions import NotFound

        scratch = self.scratch_table(plan)
        try:
            if self.connection.use_storage_api:
                return self._read_storage(scratch, plan, chunk)
            return self._read_query(scratch, plan, chunk)
        except NotFound as exc:
            raise self.scratch_gone(plan, f"cannot read {scratch.id}") from exc
        except WarehouseError:
            raise
        except Exception as exc:
            raise _classify(exc, f"cannot read {chunk.describe()} of {scratch.id}") from exc

    def _read_storage(self, scratch: TableName, plan: Plan, chunk: ChunkSpec) -> pa.Table:
        restriction = self.dialect.in_range(_EVAL, _BUCKET, chunk.buckets)
        streams = self.connection.read_streams or self._read_threads
        schema, batches = self._read_session(scratch, plan, restriction, streams)
        return pa.Table.from_batches(list(batches), schema)

    def _read_session(
        self, scratch: TableName, plan: Plan, restriction: str | None, streams: int
    ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """One Storage Read API session of at most ``streams`` streams over ``scratch``'s
        rows (those of ``restriction``, or all): their schema, and their record batches as
        they arrive."""
        from google.cloud.bigquery_storage_v1 import types

        lz4 = types.ArrowSerializationOptions.CompressionCodec.LZ4_FRAME
        session = self.read_client.create_read_session(
            retry=None,
            timeout=self.connection.timeout,
            parent=f"projects/{self.client.project}",
            read_session=types.ReadSession(
                table=scratch.path,
                data_format=types.DataFormat.ARROW,
                read_options=types.ReadSession.TableReadOptions(
                    selected_fields=[*plan.columns, layout.HASH_COLUMN],
                    row_restriction=restriction or "",
                    arrow_serialization_options=types.ArrowSerializationOptions(
                        buffer_compression=lz4
                    ),
                ),
            ),
            max_stream_count=streams,
        )
        if not session.streams and restriction is not None:
            raise PermanentWarehouseError(f"no rows in {scratch.id} for {restriction}")
        schema = pa.ipc.read_schema(pa.py_buffer(session.arrow_schema.serialized_schema))
        names = [stream.name for stream in session.streams]
        read = functools.partial(self._stream_batches, schema=schema)
        if len(names) == 1:
            return schema, read(names[0], [])
        return schema, read_at_once(names, read)

    def _stream_batches(
        self, name: str, opened: list[Any], schema: pa.Schema
    ) -> Iterator[pa.RecordBatch]:
        """The record batches of the read stream ``name`` (its calls added to ``opened``,
        to cancel). It may take ``stream_timeout``. Cut short, it is opened again at the
        row it stopped at (its offset), so no row comes twice: up to :data:`_RESUMES`
        times in a row without a batch between them."""
        offset, resumes = 0, 0
        while True:
            try:
                rows = self.read_client.read_rows(
                    name, offset=offset, retry=None, timeout=self.connection.stream_timeout
                )
                opened.append(rows)
                for response in rows:
                    data = response.arrow_record_batch.serialized_record_batch
                    with self._lock:
                        self.costs.bytes_read += len(data)
                    offset += response.row_count
                    resumes = 0
                    yield pa.ipc.read_record_batch(pa.py_buffer(data), schema)
                return
            except Exception as exc:
                if not _resumable(exc) or resumes >= _RESUMES:
                    raise
                resumes += 1
                log.info("resuming the read stream %s at row %d: %s", name, offset, exc)
                time.sleep(_RESUME_BACKOFF * 2 ** (resumes - 1))  # the link comes back

    def reading_with(self, threads: int) -> None:
        """A chunk's read session asks for this many streams, a scan's at least as many,
        unless ``read_streams`` says."""
        self._read_threads = threads

    def scan(
        self, plan: Plan, chunks: Sequence[ChunkSpec] | None = None
    ) -> Iterator[pa.RecordBatch] | None:
        """The scratch table's rows (of ``chunks``, or all) through one Storage Read API
        session, after materializing it if need be; ``None`` without that API (chunks are
        then read one by one, with a query job each)."""
        if not self.connection.use_storage_api:
            return None
        self.materialize(plan)
        scratch = self.scratch_table(plan)
        restriction = None
        if chunks is not None:
            restriction = self.in_chunks(plan, chunks, _EVAL, _BUCKET)
        return self._scanned(scratch, plan, restriction)

    def _scanned(
        self, scratch: TableName, plan: Plan, restriction: str | None
    ) -> Iterator[pa.RecordBatch]:
        from google.api_core.exceptions import NotFound

        try:
            streams = self.connection.read_streams or max(self._read_threads, SCAN_STREAMS)
            _, batches = self._read_session(scratch, plan, restriction, streams)
            yield from batches
        except NotFound as exc:
            raise self.scratch_gone(plan, f"cannot read {scratch.id}") from exc
        except WarehouseError:
            raise
        except Exception as exc:
            raise _classify(exc, f"cannot read {scratch.id}") from exc

    def _read_query(self, scratch: TableName, plan: Plan, chunk: ChunkSpec) -> pa.Table:
        """A chunk read with a query job on the clustered scratch table (no Storage API)."""
        from google.cloud import bigquery

        selected = ", ".join(column(c) for c in [*plan.columns, layout.HASH_COLUMN])
        params = [
            bigquery.ScalarQueryParameter("faucet_eval", "BOOL", chunk.buckets.eval),
            bigquery.ScalarQueryParameter("faucet_lo", "INT64", chunk.lo),
            bigquery.ScalarQueryParameter("faucet_hi", "INT64", chunk.hi),
        ]
        condition = f"{_EVAL} = @faucet_eval AND {_BUCKET} >= @faucet_lo AND {_BUCKET} < @faucet_hi"
        # Not held to maximum_bytes_billed: a dry run of it counts the whole copy (pruning
        # by the clustering happens only when it runs), and the copy was billed already.
        what = f"cannot read {chunk.describe()} of {scratch.id}"
        job = self._job(what, f"SELECT {selected} FROM {scratch.sql} WHERE {condition}", params,
                        limited=False)  # fmt: skip
        return self._result(job)

    def close(self) -> None:
        super().close()
        opening = getattr(self, "_reads_opening", None)
        if opening is not None:
            opening.cancel()  # else it keeps trying to connect
        for client in (getattr(self, "client", None), self._read_client):
            close = getattr(getattr(client, "transport", client), "close", None)
            if callable(close):
                close()
