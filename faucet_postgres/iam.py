"""Temporary Redshift credentials from IAM, kept fresh for a whole run.

Redshift hands out a database user and password valid for 15 to 60 minutes:
``GetClusterCredentials`` for a provisioned cluster, ``GetCredentials`` for a Serverless
workgroup (through boto3, with the AWS credentials of the environment: a profile, a role,
environment variables). A reader opens connections for its whole run, so
:class:`IamCredentials` asks for new ones before the current ones expire (when a third of
their life, at most 5 minutes, is left), and once more when the server refuses them (a
password rotated early, a clock off).
"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from faucet_core.warehouse import PermanentWarehouseError, TransientWarehouseError

__all__ = ["IamCredentials", "IamSettings", "TemporaryLogin"]

#: Refresh when this much of a login's life is left, at most.
_MARGIN_SECONDS = 300.0


class IamSettings(BaseModel):
    """How to get temporary credentials: a provisioned cluster (``cluster_identifier`` and
    ``db_user``) or a Serverless ``workgroup``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster_identifier: str | None = Field(
        None, description="The provisioned cluster (GetClusterCredentials)."
    )
    db_user: str | None = Field(
        None, description="The database user to log in as, on a provisioned cluster."
    )
    db_groups: list[str] = Field(
        default_factory=list, description="Database groups the user joins for the session."
    )
    auto_create: bool = Field(False, description="Create `db_user` if it does not exist.")
    workgroup: str | None = Field(
        None, description="The Serverless workgroup (GetCredentials), instead of a cluster."
    )
    duration_seconds: int = Field(
        900, ge=900, le=3600, description="How long each login is valid, in seconds."
    )
    region: str | None = Field(None, description="AWS region (default: the environment's).")
    profile: str | None = Field(None, description="AWS profile (default: the environment's).")
    endpoint_url: str | None = Field(
        None, description="The Redshift API's URL, for a VPC endpoint (default: AWS's)."
    )

    @model_validator(mode="after")
    def _cluster_or_workgroup(self) -> IamSettings:
        if (self.cluster_identifier is None) == (self.workgroup is None):
            raise ValueError("give either cluster_identifier (with db_user) or workgroup")
        if self.cluster_identifier is not None and self.db_user is None:
            raise ValueError("db_user is needed with cluster_identifier")
        return self


@dataclass(frozen=True)
class TemporaryLogin:
    """A database user and password, valid until ``expires`` (seconds since the epoch)."""

    user: str
    password: str
    expires: float
    issued: float


class IamCredentials:
    """The current temporary login for ``settings`` and database ``dbname``, fetched from
    Redshift's API when missing, about to expire, or refused."""

    def __init__(
        self, settings: IamSettings, dbname: str, clock: Callable[[], float] = time.time
    ) -> None:
        import boto3

        session = boto3.Session(profile_name=settings.profile, region_name=settings.region)
        service = "redshift" if settings.cluster_identifier else "redshift-serverless"
        self._client = session.client(service, endpoint_url=settings.endpoint_url)
        self._settings = settings
        self._dbname = dbname
        self._clock = clock
        self._lock = threading.Lock()
        self._login: TemporaryLogin | None = None
        #: Every password handed out, to keep out of error messages.
        self.passwords: list[str] = []

    def current(self) -> TemporaryLogin:
        """The login to connect with: the last one, or a new one if it is about to expire."""
        with self._lock:
            login = self._login
            if login is None or self._clock() >= login.expires - self._margin(login):
                login = self._login = self._fetch()
            return login

    def refused(self, login: TemporaryLogin) -> TemporaryLogin:
        """A new login after the server refused ``login`` (unless another thread already
        replaced it)."""
        with self._lock:
            if self._login is None or self._login.password == login.password:
                self._login = self._fetch()
            return self._login

    @staticmethod
    def _margin(login: TemporaryLogin) -> float:
        return min(_MARGIN_SECONDS, (login.expires - login.issued) / 3)

    def _fetch(self) -> TemporaryLogin:
        settings = self._settings
        issued = self._clock()
        try:
            if settings.cluster_identifier is not None:
                found = self._client.get_cluster_credentials(
                    DbUser=settings.db_user, DbName=self._dbname,
                    ClusterIdentifier=settings.cluster_identifier,
                    DurationSeconds=settings.duration_seconds, AutoCreate=settings.auto_create,
                    DbGroups=settings.db_groups,
                )  # fmt: skip
                user, password, expires = found["DbUser"], found["DbPassword"], found["Expiration"]
            else:
                found = self._client.get_credentials(
                    workgroupName=settings.workgroup, dbName=self._dbname,
                    durationSeconds=settings.duration_seconds,
                )  # fmt: skip
                user, password, expires = found["dbUser"], found["dbPassword"], found["expiration"]
        except Exception as exc:
            raise _api_error(exc) from None
        self.passwords.append(password)
        return TemporaryLogin(user, password, _seconds(expires), issued)


def _seconds(moment: Any) -> float:
    """An expiry (a datetime, as boto3 parses it) in seconds since the epoch."""
    if isinstance(moment, datetime.datetime):
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.timezone.utc)
        return float(moment.timestamp())
    return float(moment)


def _api_error(exc: Exception) -> PermanentWarehouseError | TransientWarehouseError:
    """A failed credentials request: permanent when AWS refused it (access, a missing
    cluster or user), else (a network error, throttling) worth a retry."""
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    message = f"cannot get Redshift credentials from IAM: {code + ': ' if code else ''}{exc}"
    if code and code not in ("Throttling", "ThrottlingException", "ServiceUnavailable"):
        return PermanentWarehouseError(message)
    return TransientWarehouseError(message)
