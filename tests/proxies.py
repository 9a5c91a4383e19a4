"""Loopback proxies in front of the emulator: a TCP proxy that counts connections, can
cut one short and can inject seeded faults into a share of the connections it accepts;
and an HTTP proxy that answers chosen requests as the real service would (an error it
documents, a field the emulator lacks)."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import http.server
import json
import re
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.bqemulator import free_port

#: What a faulty connection suffers: reset at once (RST), dropped after the client's first
#: bytes (closed without a reply), cut short mid-response (RST), or delayed before it is
#: forwarded.
FAULT_KINDS = ("reset", "drop", "cut", "delay")


@dataclass
class ConnectionFaults:
    """Which connections a :class:`TcpProxy` breaks: the n-th fails by a seeded draw.

    Args:
        rate: The share of connections that suffer a fault.
        seed: The seed of the draws.
        delay: Seconds a delayed connection waits before it is forwarded.
        kinds: The faults drawn from (evenly).
        lifetime: ``(least, most)``: every connection is reset after a seeded number of
            response bytes in this range, as a long-lived connection (gRPC's) would be by a
            network that breaks it now and then; ``None``: only the drawn faults.

    Attributes:
        injected: Faults injected, per kind.
    """

    rate: float
    seed: int = 0
    delay: float = 0.2
    kinds: tuple[str, ...] = FAULT_KINDS
    lifetime: tuple[int, int] | None = None
    injected: Counter[str] = field(default_factory=Counter)

    def draw(self, *key: object) -> float:
        """A number in [0, 1) that depends on the seed and ``key`` alone."""
        digest = hashlib.sha256(repr((self.seed, *key)).encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    def fault(self, connection: int) -> str | None:
        """The fault of the ``connection``-th connection (1-based), or ``None``."""
        if self.draw("connection", connection) >= self.rate:
            return None
        return self.kinds[int(self.draw("kind", connection) * len(self.kinds))]


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP reset instead of an orderly end (waking a thread blocked
    reading it first: closing alone would leave that read, and the connection, open)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)
    sock.close()


class TcpProxy:
    """Forwards loopback connections to ``upstream`` (``host:port``), counting them.

    With ``cut_after``, the first connection's response is cut after that many bytes. With
    ``faults``, a seeded share of connections is reset, dropped, cut short or delayed. With
    ``rate``, responses flow at that many bytes per second (a slow link).
    """

    def __init__(
        self,
        upstream: str,
        cut_after: int | None = None,
        faults: ConnectionFaults | None = None,
        rate: float | None = None,
    ) -> None:
        host, port = upstream.split(":")
        self.upstream = (host, int(port))
        self.cut_after = cut_after
        self.rate = rate
        self.faults = faults
        self.connections = 0
        self.accepted = threading.Event()  # set at the first connection
        self.broken = 0
        self.response_bytes = 0
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            self.connections += 1
            self.accepted.set()
            fault = self.faults.fault(self.connections) if self.faults is not None else None
            threading.Thread(
                target=self._serve, args=(client, self.connections, fault), daemon=True
            ).start()

    def _serve(self, client: socket.socket, number: int, fault: str | None) -> None:
        if fault is not None:
            assert self.faults is not None
            self.faults.injected[fault] += 1
        if fault == "reset":
            _reset(client)
            return
        if fault == "drop":
            client.settimeout(5)
            with contextlib.suppress(OSError):
                client.recv(65536)
            client.close()
            return
        if fault == "delay":
            assert self.faults is not None
            self._closed.wait(self.faults.delay)
        try:
            server = socket.create_connection(self.upstream)
        except OSError:
            client.close()
            return
        cut = self.cut_after if number == 1 else None
        hard = self.faults is not None and (fault == "cut" or self.faults.lifetime is not None)
        if self.faults is not None and fault == "cut":
            cut = 1 + int(self.faults.draw("cut", number) * 4096)
        elif self.faults is not None and self.faults.lifetime is not None:
            least, most = self.faults.lifetime
            cut = least + int(self.faults.draw("lifetime", number) * (most - least))
        threading.Thread(target=self._pipe, args=(client, server, None), daemon=True).start()
        self._pipe(server, client, cut, hard, counted=fault == "cut", responses=True)

    def _pipe(
        self,
        source: socket.socket,
        target: socket.socket,
        cut: int | None,
        hard: bool = False,
        counted: bool = True,
        responses: bool = False,
    ) -> None:
        """Forward ``source`` to ``target``; past ``cut`` bytes, end both (``hard``: at
        exactly ``cut`` bytes, with a reset, counted as a ``lifetime`` fault unless
        ``counted`` already). ``responses``: count the bytes in :attr:`response_bytes`."""
        sent = 0
        try:
            while data := source.recv(65536):
                if hard and cut is not None and sent + len(data) > cut:
                    target.sendall(data[: cut - sent])
                    sent = cut + 1
                else:
                    target.sendall(data)
                    sent += len(data)
                if responses:
                    self.response_bytes += len(data)
                    if self.rate:  # the link's pace, not a wait for another thread
                        self._closed.wait(len(data) / self.rate)
                if cut is not None and sent > cut:
                    self.broken += 1
                    if hard and not counted and self.faults is not None:
                        self.faults.injected["lifetime"] += 1
                    break
        except OSError:
            pass
        for sock in (source, target):
            if hard and cut is not None and sent > cut:
                _reset(sock)
                continue
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        """Stop accepting connections."""
        self._closed.set()
        self._server.close()


@dataclass
class HttpRule:
    """What an :class:`HttpProxy` does with the requests whose method and path match.

    Args:
        method: The HTTP method (``GET``, ``POST``, ...).
        path: A regular expression searched for in the path (query string included).
        status: Answer with this status and :attr:`body` instead of forwarding.
        body: The JSON body of that answer.
        rewrite: Forward, then answer with ``rewrite(the upstream's JSON body)``.
        sent: Only requests whose body holds this text.
    """

    method: str
    path: str
    status: int | None = None
    body: dict[str, object] | None = None
    rewrite: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    sent: str | None = None

    def matches(self, method: str, path: str, body: bytes) -> bool:
        if self.sent is not None and self.sent.encode() not in body:
            return False
        return method == self.method and re.search(self.path, path) is not None


def google_error(status: int, reason: str, message: str) -> dict[str, object]:
    """The body of a Google API error, as BigQuery's REST API answers one."""
    names = {
        400: "INVALID_ARGUMENT",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        409: "ALREADY_EXISTS",
    }
    return {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
            "status": names.get(status, "UNKNOWN"),
        }
    }


class HttpProxy:
    """Forwards HTTP requests on a loopback port to ``upstream`` (``http://host:port``),
    answering as its :class:`HttpRule` s say where one matches, and logging every request
    as ``(method, path)`` in :attr:`requests`."""

    def __init__(self, upstream: str, rules: list[HttpRule] | None = None) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.rules = list(rules or [])
        self.requests: list[tuple[str, str]] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                proxy.requests.append((self.command, self.path))
                rule = next(
                    (r for r in proxy.rules if r.matches(self.command, self.path, body)), None
                )
                if rule is not None and rule.status is not None:
                    self._answer(rule.status, json.dumps(rule.body or {}).encode())
                    return
                upstream = http.client.HTTPConnection(proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                upstream.request(self.command, self.path, body or None, headers)
                response = upstream.getresponse()
                data = response.read()
                upstream.close()
                if rule is not None and rule.rewrite is not None and response.status == 200:
                    data = json.dumps(rule.rewrite(json.loads(data))).encode()
                self._answer(response.status, data)

            def _answer(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()


class StorageReadProxy:
    """A Storage Read API server on a loopback port that forwards to the emulator's and
    honours ``ReadRowsRequest.offset`` as BigQuery documents it (the stream starts at that
    row), which the emulator ignores: it reads the stream from its start and leaves out
    the rows before the offset. With ``refuse_sessions``, it refuses every read session
    with that message, as BigQuery refuses an account without the permission."""

    _SERVICE = "google.cloud.bigquery.storage.v1.BigQueryRead"

    def __init__(self, upstream: str, refuse_sessions: str | None = None) -> None:
        import grpc
        from google.cloud.bigquery_storage_v1 import types

        self._types = types
        self._refusal = refuse_sessions  # answer CreateReadSession PERMISSION_DENIED with it
        self._channel = grpc.insecure_channel(upstream)
        self._create = self._channel.unary_unary(
            f"/{self._SERVICE}/CreateReadSession",
            request_serializer=types.CreateReadSessionRequest.serialize,
            response_deserializer=types.ReadSession.deserialize,
        )
        self._read = self._channel.unary_stream(
            f"/{self._SERVICE}/ReadRows",
            request_serializer=types.ReadRowsRequest.serialize,
            response_deserializer=types.ReadRowsResponse.deserialize,
        )
        self._schemas: dict[str, Any] = {}  # session name: its Arrow schema
        handlers = {
            "CreateReadSession": grpc.unary_unary_rpc_method_handler(
                self._create_session,
                request_deserializer=types.CreateReadSessionRequest.deserialize,
                response_serializer=types.ReadSession.serialize,
            ),
            "ReadRows": grpc.unary_stream_rpc_method_handler(
                self._read_rows,
                request_deserializer=types.ReadRowsRequest.deserialize,
                response_serializer=types.ReadRowsResponse.serialize,
            ),
        }
        from concurrent import futures

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(self._SERVICE, handlers),)
        )
        port = self._server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{port}"
        self._server.start()

    def _create_session(self, request: Any, context: Any) -> Any:
        import grpc
        import pyarrow as pa

        if self._refusal is not None:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, self._refusal)

        session = self._create(request)
        schema = pa.ipc.read_schema(pa.py_buffer(session.arrow_schema.serialized_schema))
        self._schemas[session.name] = schema
        return session

    def _read_rows(self, request: Any, context: Any) -> Any:
        import pyarrow as pa

        skip = request.offset
        session = request.read_stream.rsplit("/streams/", 1)[0]
        upstream = self._types.ReadRowsRequest(read_stream=request.read_stream)
        for response in self._read(upstream):
            if skip >= response.row_count:
                skip -= response.row_count
                continue
            if skip:
                schema = self._schemas[session]
                data = response.arrow_record_batch.serialized_record_batch
                batch = pa.ipc.read_record_batch(pa.py_buffer(data), schema).slice(skip)
                response.arrow_record_batch.serialized_record_batch = batch.serialize().to_pybytes()
                response.row_count = batch.num_rows
                response.arrow_record_batch.row_count = batch.num_rows
                skip = 0
            yield response

    def close(self) -> None:
        """Stop serving."""
        self._server.stop(grace=None)
        self._channel.close()
