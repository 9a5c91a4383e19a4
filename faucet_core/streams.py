"""Reading several streams of one result at once.

Where one stream is the bottleneck of a large read (a BigQuery Storage Read stream, one
connection's transfer and decoding), a warehouse splits its read into streams, each read
by a thread of its own here; their record batches are handed on in the order they arrive
(the core orders rows itself).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

__all__ = ["read_at_once"]

_DONE = object()  # a stream's thread ended
#: Batches read and waiting for the consumer, of all streams.
WAITING = 4


def read_at_once(
    names: list[str], read: Callable[[str, list[Any]], Iterator[pa.RecordBatch]]
) -> Iterator[pa.RecordBatch]:
    """The batches of every stream of ``names``, each read by ``read(name, opened)`` in a
    thread of its own (``opened`` collects what it opens, to cancel: each object's
    ``cancel()``, if it has one, is called from another thread), as they
    arrive. The first error of any stream is raised; when the consumer stops early or an
    error is raised, every stream is cancelled and every thread ends before this returns.
    At most :data:`WAITING` batches wait to be consumed, and one per stream being handed
    on: memory does not grow with the streams' pace or number beyond that."""
    arrived: queue.Queue[Any] = queue.Queue(maxsize=WAITING)
    opened: list[Any] = []
    stopping = threading.Event()

    def run(name: str) -> None:
        try:
            for batch in read(name, opened):
                arrived.put(batch)
                if stopping.is_set():
                    return
        except BaseException as exc:  # handed to the consumer, who raises it
            if not stopping.is_set():
                arrived.put(exc)
        finally:
            arrived.put(_DONE)

    threads = [
        threading.Thread(target=run, args=(name,), name=f"faucet-stream-{i}", daemon=True)
        for i, name in enumerate(names)
    ]
    for thread in threads:
        thread.start()
    ended = 0
    try:
        while ended < len(threads):
            item = arrived.get()
            if item is _DONE:
                ended += 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        stopping.set()
        for stream in list(opened):
            cancel = getattr(stream, "cancel", None)
            if callable(cancel):
                cancel()
        while ended < len(threads):  # unblock the threads still handing batches on
            if arrived.get() is _DONE:
                ended += 1
        for thread in threads:
            thread.join()
