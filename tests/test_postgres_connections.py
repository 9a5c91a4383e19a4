"""Every way libpq connects, for every query Faucet runs (counting with psycopg, reading
rows with ADBC, the scratch copy), against a real PostgreSQL server."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from faucet_core import ConfigError, Reader, WarehouseError
from tests.conftest import ROWS, epoch_ids
from tests.pgserver import READER, READER_PASSWORD, PostgresServer

MakeReader = Callable[..., Reader]

#: A schema the password-checked role may create scratch tables in.
SCRATCH = "reader_scratch"
#: A role whose name and password need quoting in a connection string.
ODD_USER, ODD_PASSWORD = "odd user", "p@ss w'rd=1 \\"


@pytest.fixture(scope="module")
def roles(postgres_server: PostgresServer) -> PostgresServer:
    """The server, with a scratch schema of :data:`READER`'s and the role :data:`ODD_USER`."""
    with psycopg.connect(postgres_server.url, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA IF NOT EXISTS {SCRATCH} AUTHORIZATION {READER}")
        if not db.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [ODD_USER]).fetchone():
            db.execute(
                f"""CREATE ROLE "{ODD_USER}" LOGIN PASSWORD '{ODD_PASSWORD.replace("'", "''")}'"""
            )
            db.execute(f'GRANT SELECT ON t TO "{ODD_USER}"')
            db.execute(f'GRANT USAGE, CREATE ON SCHEMA {SCRATCH} TO "{ODD_USER}"')
    return postgres_server


@pytest.fixture
def make_pg_reader(make_reader: MakeReader) -> MakeReader:
    """Readers of table ``t`` of the ``postgres`` datastore, every row in train."""
    return functools.partial(
        make_reader, datastore="postgres", database=None, test_split_percent=0,
        scratch_schema=SCRATCH,
    )  # fmt: skip


@pytest.fixture
def libpq_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder for ``.pgpass`` and service files; libpq's environment cleared."""
    for name in ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "PGSERVICE",
                 "PGPASSFILE", "PGSERVICEFILE", "PGSSLMODE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    folder = tmp_path / "libpq"
    folder.mkdir()
    yield folder


def read_every_way(make_pg_reader: MakeReader, **connection: object) -> None:
    """Each query Faucet runs, through ``connection``: planning, the cache fill's scan,
    chunk reads from the scratch copy (``ds``), and the data version."""
    scanned = make_pg_reader(**connection)
    assert sorted(epoch_ids(scanned)) == list(range(ROWS))
    assert scanned.plan.data_version is not None
    copied = make_pg_reader(**connection, ds="2024-01-02", use_cache=False)
    assert sorted(epoch_ids(copied)) == [i for i in range(ROWS) if i % 3 == 1]


def test_a_unix_socket_url(roles: PostgresServer, make_pg_reader: MakeReader) -> None:
    dsn = f"postgresql://postgres@/postgres?host={roles.sockets}&port={roles.port}"
    read_every_way(make_pg_reader, dsn=dsn)


def test_keyword_words(roles: PostgresServer, make_pg_reader: MakeReader) -> None:
    dsn = f"host={roles.sockets} port={roles.port} dbname=postgres user=postgres"
    read_every_way(make_pg_reader, dsn=dsn)


def test_libpq_environment(
    roles: PostgresServer, make_pg_reader: MakeReader, libpq_files: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    environment = {"PGHOST": "127.0.0.1", "PGPORT": str(roles.port), "PGUSER": READER,
                   "PGPASSWORD": READER_PASSWORD, "PGDATABASE": "postgres"}  # fmt: skip
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    read_every_way(make_pg_reader, dsn=None)


def test_a_pgpass_file(
    roles: PostgresServer, make_pg_reader: MakeReader, libpq_files: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    passwords = libpq_files / "pgpass"
    passwords.write_text(f"127.0.0.1:{roles.port}:postgres:{READER}:{READER_PASSWORD}\n")
    passwords.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passwords))
    dsn = f"host=127.0.0.1 port={roles.port} dbname=postgres user={READER}"
    read_every_way(make_pg_reader, dsn=dsn)


def test_a_service_file(
    roles: PostgresServer, make_pg_reader: MakeReader, libpq_files: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    services = libpq_files / "pg_service.conf"
    services.write_text(
        f"[training]\nhost=127.0.0.1\nport={roles.port}\ndbname=postgres\nuser={READER}\n"
        f"password={READER_PASSWORD}\nsslmode=disable\n"
    )
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    read_every_way(make_pg_reader, dsn="service=training")
    with pytest.raises(WarehouseError, match="definition of service"):
        make_pg_reader(dsn="service=missing")


def test_parts_that_need_quoting(roles: PostgresServer, make_pg_reader: MakeReader) -> None:
    read_every_way(
        make_pg_reader, dsn=None, host="127.0.0.1", port=roles.port, user=ODD_USER,
        password=ODD_PASSWORD, dbname="postgres", sslmode="prefer",
    )  # fmt: skip


def test_sslmode_the_server_cannot_meet(roles: PostgresServer, make_pg_reader: MakeReader) -> None:
    with pytest.raises(WarehouseError, match="does not support SSL"):
        make_pg_reader(dsn=f"host=127.0.0.1 port={roles.port} user=postgres sslmode=require")


def test_every_form_is_the_same_source(roles: PostgresServer, make_pg_reader: MakeReader) -> None:
    """The plan names the server as the connection made it: two spellings of one server
    share their saved plan and cached chunks."""
    socket = make_pg_reader(
        dsn=f"host={roles.sockets} port={roles.port} dbname=postgres user=postgres"
    )
    url = make_pg_reader(
        dsn=f"postgresql://postgres@/postgres?host={roles.sockets}&port={roles.port}"
    )
    assert socket.plan.rows_id == url.plan.rows_id
    tcp = make_pg_reader(dsn=f"postgresql://postgres@127.0.0.1:{roles.port}/postgres")
    assert tcp.plan.rows_id != socket.plan.rows_id  # another host: maybe another server


def test_a_dsn_libpq_cannot_parse_is_a_config_error(make_pg_reader: MakeReader) -> None:
    with pytest.raises(ConfigError, match="dsn is not a libpq connection string") as raised:
        make_pg_reader(dsn="host=localhost password=se cret")
    assert "cret" not in str(raised.value)
