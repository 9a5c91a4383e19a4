"""Redshift with temporary IAM logins: boto3 asks a local Redshift API (tests/iamserver.py)
for logins of a PostgreSQL role on the Redshift stand-in, whose password changes."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from faucet_core import ConfigError, Reader
from faucet_postgres.iam import IamCredentials, IamSettings
from tests.conftest import ROWS, epoch_ids
from tests.iamserver import IamEndpoint, running_iam_endpoint
from tests.pgserver import IAM_USER, PostgresServer

MakeReader = Callable[..., Reader]
SCRATCH = "iam_scratch"


@pytest.fixture
def admin_url(redshift_url: str) -> str:
    """The stand-in database, as its superuser, with role :data:`IAM_USER` allowed to read
    ``t`` and to make scratch tables in :data:`SCRATCH`."""
    url = "postgresql://" + redshift_url.split("://", 1)[1]
    with psycopg.connect(url, autocommit=True) as db:
        if not db.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [IAM_USER]).fetchone():
            db.execute(f'CREATE ROLE "{IAM_USER}" LOGIN')
        db.execute(f'GRANT SELECT ON t TO "{IAM_USER}"')
        db.execute(f'CREATE SCHEMA IF NOT EXISTS {SCRATCH} AUTHORIZATION "{IAM_USER}"')
    return url


@pytest.fixture
def iam(admin_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, IamEndpoint]]:
    """The local Redshift API and boto3's environment (keys, a region, no profile)."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "eu-west-1"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    with running_iam_endpoint(admin_url) as served:
        yield served


@pytest.fixture
def make_iam_reader(
    iam: tuple[str, IamEndpoint], postgres_server: PostgresServer, make_reader: MakeReader
) -> MakeReader:
    """Readers of ``t`` on the stand-in that log in through IAM (a provisioned cluster)."""
    url, _ = iam
    return functools.partial(
        make_reader, datastore="redshift", database=None, host="127.0.0.1",
        port=postgres_server.port, dbname="redshift_standin", scratch_attributes="",
        scratch_schema=SCRATCH, test_split_percent=0,
        iam={"cluster_identifier": "training", "db_user": "trainer", "endpoint_url": url},
    )  # fmt: skip


def test_an_iam_login_reads_every_row(
    make_iam_reader: MakeReader, iam: tuple[str, IamEndpoint]
) -> None:
    _, endpoint = iam
    reader = make_iam_reader()
    assert sorted(epoch_ids(reader)) == list(range(ROWS))
    (asked,) = endpoint.requests  # one login for the whole run: it lasts an hour
    assert asked["ClusterIdentifier"] == "training" and asked["DbUser"] == "trainer"
    assert (asked["DbName"], asked["DurationSeconds"]) == ("redshift_standin", "900")


def test_a_password_changed_mid_epoch_is_renewed_once(
    make_iam_reader: MakeReader, iam: tuple[str, IamEndpoint]
) -> None:
    _, endpoint = iam
    # Chunk by chunk from the scratch copy, one chunk ahead: each read is a new login.
    reader = make_iam_reader(use_cache=False, chunk_size=300, prefetch_chunks=1, batch_size=100)
    reader.prep_for_epoch()
    served = [i for _ in range(2) for i in reader.get_batch()["features"]["id"].tolist()]
    endpoint.rotate()  # the login in use stops working
    batch = reader.get_batch()
    while batch is not None:
        served += batch["features"]["id"].tolist()
        batch = reader.get_batch()
    assert sorted(served) == list(range(ROWS))
    assert len(endpoint.requests) == 2  # the first login, and one after the refusal


def test_logins_are_renewed_before_they_expire(iam: tuple[str, IamEndpoint]) -> None:
    url, endpoint = iam
    now = [time.time()]
    settings = IamSettings(cluster_identifier="training", db_user="trainer", endpoint_url=url)
    credentials = IamCredentials(settings, "redshift_standin", clock=lambda: now[0])
    first = credentials.current()
    assert first.user == IAM_USER and first.expires == pytest.approx(now[0] + 3600, abs=5)
    now[0] += 3600 - 301  # more than 5 minutes left: kept
    assert credentials.current() is first and len(endpoint.requests) == 1
    now[0] += 2  # less than 5 minutes left: renewed
    assert credentials.current() is not first and len(endpoint.requests) == 2
    assert credentials.passwords == [first.password, first.password]  # not rotated meanwhile


def test_a_serverless_workgroup_hands_out_logins(
    make_iam_reader: MakeReader, iam: tuple[str, IamEndpoint]
) -> None:
    url, endpoint = iam
    reader = make_iam_reader(iam={"workgroup": "analytics", "endpoint_url": url})
    assert sorted(epoch_ids(reader)) == list(range(ROWS))
    (asked,) = endpoint.requests
    assert asked == {"workgroupName": "analytics", "dbName": "redshift_standin",
                     "durationSeconds": 900}  # fmt: skip


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"password": "pw", "iam": {"workgroup": "w"}}, "either password or iam"),
        ({"iam": {"cluster_identifier": "c"}}, "db_user is needed"),
        ({"iam": {"cluster_identifier": "c", "db_user": "u", "workgroup": "w"}}, "either"),
        ({"iam": {"workgroup": "w", "duration_seconds": 60}}, "duration_seconds"),
    ],
)
def test_iam_settings_are_checked(
    make_iam_reader: MakeReader, settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        make_iam_reader(**settings)
