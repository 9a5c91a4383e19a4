"""A loopback TCP proxy in front of the emulator: counts connections, can cut one short."""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.bqemulator import free_port


class TcpProxy:
    """Forwards loopback connections to ``upstream`` (``host:port``), counting them.

    With ``cut_after``, the first connection's response is cut after that many bytes.
    """

    def __init__(self, upstream: str, cut_after: int | None = None) -> None:
        host, port = upstream.split(":")
        self.upstream = (host, int(port))
        self.cut_after = cut_after
        self.connections = 0
        self.broken = 0
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            self.connections += 1
            server = socket.create_connection(self.upstream)
            cut = self.cut_after if self.connections == 1 else None
            threading.Thread(target=self._pipe, args=(client, server, None), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, cut), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket, cut: int | None) -> None:
        sent = 0
        try:
            while data := source.recv(65536):
                target.sendall(data)
                sent += len(data)
                if cut is not None and sent > cut:
                    self.broken += 1
                    break
        except OSError:
            pass
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        """Stop accepting connections."""
        self._server.close()
