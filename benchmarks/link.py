"""A network between the benchmarks' contenders and a local stand-in of a warehouse.

Every contender of a network benchmark reaches its stand-in through a :class:`Link`: a
round-trip time added to every exchange and a throughput limit where the real service has
one. :class:`TcpLink` carries one connection per client connection (PostgreSQL's protocol,
Snowflake's and BigQuery's HTTPS), limited per connection; :class:`ReadStreamLink` is a
BigQuery Storage Read API server in front of the emulator's, limited per stream, as
BigQuery limits each stream of a read session. Both count the bytes they carry to the
client in a counter shared with the contenders' processes, so a benchmark can show what
went over the link while something ran.

The links run in the benchmark's own process; each contender runs in a process of its own
(:func:`processes.run_apart`), so its peak memory is its own and the link's work is not its
CPU.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, replace
from multiprocessing.sharedctypes import Synchronized
from typing import Any, ClassVar

#: Round-trip time between a VM and a service in its own cloud region, in seconds: "under
#: 1 ms in the 95th percentile" within a Google Cloud region (Google Cloud, "Best practices
#: for Compute Engine regions selection").
REGION_RTT = 0.001
#: Throughput of one BigQuery Storage Read API stream, in bytes per second: about 500 Mbit/s
#: for a session of 3 streams read on one channel from a VM in the table's region
#: (googleapis/python-bigquery-storage pull request 47), so about 20 MB/s a stream; 30 MB/s
#: reported for ``to_dataframe`` (googleapis/python-bigquery-storage issue 3, streams not
#: given); about 250 MiB/s "on the high end" for 100 streams (googleapis/java-bigquerystorage
#: issue 809). Google documents no figure.
READ_STREAM_RATE = 20e6
#: Throughput of one TCP connection between two VMs of a region, in bytes per second:
#: "single-flow traffic is limited to 5 Gbps" outside a cluster placement group (Amazon EC2
#: User Guide, "Amazon EC2 instance network bandwidth").
FLOW_RATE = 5e9 / 8

#: The most streams bqemulator gives a read session.
EMULATOR_MOST_STREAMS = 10


@dataclass(frozen=True)
class Link:
    """What a link adds: ``rtt`` seconds to every round trip, ``handshakes`` round trips
    before a new connection's first request (TCP's, then TLS 1.3's), and at most ``rate``
    bytes per second per connection or stream (``None``: no limit)."""

    rtt: float = REGION_RTT
    rate: float | None = FLOW_RATE
    handshakes: int = 2

    def with_rtt(self, rtt: float) -> Link:
        """This link with another round-trip time."""
        return replace(self, rtt=rtt)

    def with_rate(self, rate: float | None) -> Link:
        """This link with another throughput."""
        return replace(self, rate=rate)

    def describe(self) -> str:
        """The link in words, for a benchmark's header."""
        rate = "no limit" if self.rate is None else f"{self.rate / 1e6:,.0f} MB/s"
        return f"RTT {self.rtt * 1000:g} ms, {rate}, {self.handshakes} round trips to connect"


def byte_counter() -> Synchronized[int]:
    """A count of bytes that the links of this process and contenders' processes share."""
    return multiprocessing.get_context("spawn").Value("q", 0)


def _count(counter: Synchronized[int] | None, size: int) -> None:
    if counter is not None:
        with counter.get_lock():
            counter.value += size


class _Pace:
    """When each piece of data may leave one end of a link: not before it arrived plus half
    the round trip, and not before the pieces ahead of it left at the link's rate."""

    def __init__(self, link: Link, not_before: float = 0.0) -> None:
        self.link = link
        self.free_at = not_before

    def wait(self, arrived: float, size: int) -> None:
        start = max(arrived + self.link.rtt / 2, self.free_at)
        delay = start - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # the link's own pace, not a wait for another thread
        self.free_at = start + (size / self.link.rate if self.link.rate else 0.0)


class TcpLink:
    """Forwards loopback connections to ``upstream`` (``host:port``) through ``link``,
    counting the bytes sent back to clients in ``counter`` and the connections in
    ``connections``. ``address`` is where clients connect. ``connect_only``: only a new
    connection's handshakes wait for the link; its data passes at once (another link
    behind it paces the data)."""

    def __init__(
        self,
        upstream: str,
        link: Link,
        counter: Synchronized[int] | None = None,
        connect_only: bool = False,
    ) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.link = link
        self._data_link = Link(rtt=0.0, rate=None) if connect_only else link
        self.counter = counter
        self.connections = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        opened = time.monotonic()
        try:
            server = socket.create_connection(self.upstream)
        except OSError:
            client.close()
            return
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ready = opened + self.link.rtt * self.link.handshakes
        ends = [
            threading.Thread(target=self._carry, args=(client, server, ready, None)),
            threading.Thread(target=self._carry, args=(server, client, 0.0, self.counter)),
        ]
        for end in ends:
            end.start()
        for end in ends:
            end.join()
        for sock in (client, server):
            sock.close()

    def _carry(
        self,
        source: socket.socket,
        target: socket.socket,
        not_before: float,
        counter: Synchronized[int] | None,
    ) -> None:
        """Carry one direction: a thread receives, this one sends at the link's pace."""
        pieces: queue.Queue[tuple[float, bytes] | None] = queue.Queue(maxsize=256)

        def receive() -> None:
            try:
                while data := source.recv(65536):
                    pieces.put((time.monotonic(), data))
            except OSError:
                pass
            pieces.put(None)

        threading.Thread(target=receive, daemon=True).start()
        pace = _Pace(self._data_link, not_before)
        broken = False
        while (piece := pieces.get()) is not None:
            if broken:
                continue  # drain, so the receiving thread ends
            arrived, data = piece
            pace.wait(arrived, len(data))
            try:
                target.sendall(data)
            except OSError:
                broken = True
                with contextlib.suppress(OSError):
                    source.shutdown(socket.SHUT_RDWR)
                continue
            _count(counter, len(data))
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Stop accepting connections."""
        self._server.close()


class ReadStreamLink:
    """A BigQuery Storage Read API server that forwards to ``upstream`` (the emulator's)
    through ``link``: a new connection (a client's gRPC channel) waits for the link's
    handshakes (TLS, as BigQuery's endpoint speaks), each call waits a round trip, and each
    ``ReadRows`` stream flows at the link's rate on its own, as BigQuery serves each stream
    of a session. Messages pass as bytes, unparsed; the bytes of every ``ReadRows``
    response count in ``counter``, the streams read in ``streams``. A session that leaves
    the number of streams to BigQuery gets the emulator's most, where the emulator would
    give one."""

    _SERVICE = "google.cloud.bigquery.storage.v1.BigQueryRead"
    _OPTIONS: ClassVar[list[tuple[str, int]]] = [
        ("grpc.max_receive_message_length", -1),
        ("grpc.max_send_message_length", -1),
    ]

    def __init__(self, upstream: str, link: Link, counter: Synchronized[int] | None = None) -> None:
        import grpc

        self.link = link
        self.counter = counter
        self.streams = 0
        self._channel = grpc.insecure_channel(upstream, options=self._OPTIONS)
        self._create = self._channel.unary_unary(f"/{self._SERVICE}/CreateReadSession")
        self._read = self._channel.unary_stream(f"/{self._SERVICE}/ReadRows")
        handlers = {
            "CreateReadSession": grpc.unary_unary_rpc_method_handler(self._create_session),
            "ReadRows": grpc.unary_stream_rpc_method_handler(self._read_rows),
        }
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=64), options=self._OPTIONS
        )
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(self._SERVICE, handlers),)
        )
        port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        self._connections = TcpLink(f"127.0.0.1:{port}", link, connect_only=True)
        self.address = self._connections.address

    def _create_session(self, request: bytes, context: Any) -> bytes:
        from google.cloud.bigquery_storage_v1 import types

        asked = types.CreateReadSessionRequest.deserialize(request)
        if asked.max_stream_count == 0:
            # BigQuery then chooses the streams "to produce reasonable throughput"; the
            # emulator gives one: ask it for its most.
            asked.max_stream_count = EMULATOR_MOST_STREAMS
            request = types.CreateReadSessionRequest.serialize(asked)
        time.sleep(self.link.rtt)  # the request's way there and the session's way back
        return bytes(self._create(request, timeout=3600))

    def _read_rows(self, request: bytes, context: Any) -> Iterator[bytes]:
        self.streams += 1
        pace = _Pace(self.link, time.monotonic() + self.link.rtt / 2)
        for response in self._read(request, timeout=6 * 3600):
            pace.wait(time.monotonic(), len(response))
            _count(self.counter, len(response))
            yield response

    def close(self) -> None:
        """Stop serving."""
        self._connections.close()
        self._server.stop(grace=None)
        self._channel.close()
