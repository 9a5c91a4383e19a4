"""Connection settings of the ``bigquery`` datastore, and the clients built from them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from faucet_bigquery.sql import PROJECT_ID

if TYPE_CHECKING:
    from google.cloud import bigquery
    from google.cloud.bigquery_storage_v1 import BigQueryReadClient

__all__ = ["BigQueryConnection"]

_DATASET = re.compile(r"[A-Za-z0-9_]{1,1024}")
#: A project ID, with the domain of a domain-scoped project (``example.com:project``).
_PROJECT = re.compile(rf"(?:[a-z0-9.-]+:)?{PROJECT_ID}")


class BigQueryConnection(BaseModel):
    """Connection settings of the ``bigquery`` datastore."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    credential_path: Path | None = Field(
        None,
        description="Service-account JSON key file (default: Application Default Credentials).",
    )
    project: str | None = Field(
        None, description="Project that runs the jobs (default: the credentials' project)."
    )
    location: str | None = Field(None, description="Location of jobs and scratch data, e.g. `EU`.")
    api_endpoint: str | None = Field(
        None, description="REST endpoint, for emulators and private endpoints."
    )
    read_api_endpoint: str | None = Field(
        None,
        description="Storage Read API `host:port`; plaintext gRPC when `api_endpoint` is http://.",
    )
    anonymous: bool = Field(False, description="Use anonymous credentials (emulators).")
    scratch_dataset: str = Field(
        "faucet_scratch", description="Dataset for the materialized split (created if missing)."
    )
    scratch_expiration_hours: float = Field(
        24.0,
        ge=1,
        description="Hours a scratch table is kept (for other processes, reruns) before "
        "expiring; at least 1, BigQuery's least table expiration.",
    )
    use_storage_api: bool = Field(
        True,
        description="Read chunks with the Storage Read API; `false` runs a query per chunk.",
    )
    maximum_bytes_billed: int | None = Field(
        None, ge=0, description="Refuse a query job that would process more bytes (dry-run first)."
    )
    read_streams: int | None = Field(
        None,
        ge=1,
        description="Storage Read streams asked for per read session, read at once "
        "(default: 16 for the cache fill's reads, the reader's fetch_threads for a chunk "
        "read without the cache).",
    )
    timeout: float = Field(
        120.0, gt=0, description="Seconds one API call may take, its own retries included."
    )
    stream_timeout: float = Field(
        6 * 3600.0,
        gt=0,
        description="Seconds one Storage Read stream may take to be read whole (a read "
        "session lasts 6 hours); a stream cut short is resumed where it stopped.",
    )
    job_timeout: float = Field(
        3600.0, gt=0, description="Seconds to wait for a query job to finish."
    )

    @field_validator("credential_path")
    @classmethod
    def _readable_key(cls, value: Path | None) -> Path | None:
        if value is None:
            return value
        try:
            key = json.loads(value.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ValueError(f"cannot read the credential file {value}: {exc.strerror}") from exc
        except json.JSONDecodeError as exc:
            raise ValueError(f"the credential file {value} is not JSON: {exc}") from exc
        if not isinstance(key, dict) or "type" not in key:
            raise ValueError(f"the credential file {value} is not a Google credential (no 'type')")
        return value

    @field_validator("scratch_dataset")
    @classmethod
    def _plain_dataset(cls, value: str) -> str:
        # Part of the scratch table's name in SQL: a dataset ID, nothing else.
        if not _DATASET.fullmatch(value):
            raise ValueError(f"{value!r} is not a dataset ID (letters, digits and _, at most 1024)")
        return value

    @field_validator("project")
    @classmethod
    def _plain_project(cls, value: str | None) -> str | None:
        if value is not None and not _PROJECT.fullmatch(value):
            raise ValueError(f"{value!r} is not a project ID (lower-case letters, digits, -)")
        return value

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> BigQueryConnection:
        if self.anonymous and self.credential_path is not None:
            raise ValueError("give credential_path or anonymous, not both")
        return self

    @property
    def plaintext(self) -> bool:
        """Whether the Storage Read API is reached without TLS (emulators)."""
        return bool(self.api_endpoint and self.api_endpoint.startswith("http://"))

    def credentials(self) -> Any:
        """The credentials these settings name."""
        if self.anonymous:
            from google.auth.credentials import AnonymousCredentials

            return AnonymousCredentials()
        if self.credential_path is not None:
            from google.oauth2 import service_account

            return service_account.Credentials.from_service_account_file(
                str(self.credential_path),
                scopes=["https://www.googleapis.com/auth/cloud-platform"],
            )
        import google.auth

        credentials, _ = google.auth.default(
            scopes=["https://www.googleapis.com/auth/cloud-platform"]
        )
        return credentials

    def bigquery_client(self, credentials: Any) -> bigquery.Client:
        """A REST client for jobs and metadata."""
        from google.cloud import bigquery

        options = {"api_endpoint": self.api_endpoint} if self.api_endpoint else None
        return bigquery.Client(
            project=self.project,
            credentials=credentials,
            location=self.location,
            client_options=options,
        )

    def read_client(self, credentials: Any) -> BigQueryReadClient:
        """A Storage Read API client."""
        from google.cloud.bigquery_storage_v1 import BigQueryReadClient

        if self.read_api_endpoint and self.plaintext:
            import grpc
            from google.cloud.bigquery_storage_v1.services.big_query_read.transports import (
                BigQueryReadGrpcTransport,
            )

            # As the client library's own channels: a response may hold more than gRPC's
            # default 4 MiB (an emulator sends a stream's rows in few large messages).
            unlimited = [("grpc.max_receive_message_length", -1)]
            channel = grpc.insecure_channel(self.read_api_endpoint, options=unlimited)
            return BigQueryReadClient(transport=BigQueryReadGrpcTransport(channel=channel))
        options = {"api_endpoint": self.read_api_endpoint} if self.read_api_endpoint else None
        return BigQueryReadClient(credentials=credentials, client_options=options)
