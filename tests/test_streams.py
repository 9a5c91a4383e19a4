"""Reading several streams of one result at once (faucet_core.streams)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest

from faucet_core.streams import read_at_once


def _batch(value: int) -> pa.RecordBatch:
    return pa.record_batch({"x": [value]})


class _Stream:
    """What a stream's reader opened: cancelled from another thread."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        self.cancelled.set()


def test_every_batch_of_every_stream_arrives_once() -> None:
    def read(name: str, opened: list[Any]) -> Iterator[pa.RecordBatch]:
        for i in range(20):
            yield _batch(int(name) * 100 + i)

    values = [b.column(0)[0].as_py() for b in read_at_once(["1", "2", "3"], read)]
    assert sorted(values) == [s * 100 + i for s in (1, 2, 3) for i in range(20)]


def test_an_error_of_one_stream_is_raised_and_cancels_the_others() -> None:
    opened_streams: list[_Stream] = []
    good_opened = threading.Event()

    def read(name: str, opened: list[Any]) -> Iterator[pa.RecordBatch]:
        if name == "bad":
            assert good_opened.wait(timeout=10)
            raise RuntimeError("stream bad failed")
        stream = _Stream()
        opened.append(stream)
        opened_streams.append(stream)
        good_opened.set()
        yield _batch(1)
        assert stream.cancelled.wait(timeout=10)  # a stuck read, until cancelled

    before = threading.active_count()
    with pytest.raises(RuntimeError, match="stream bad failed"):
        list(read_at_once(["good", "bad"], read))
    assert len(opened_streams) == 1 and opened_streams[0].cancelled.is_set()
    assert threading.active_count() == before  # every thread ended


def test_a_consumer_that_stops_early_cancels_and_ends_every_stream() -> None:
    streams: list[_Stream] = []
    both_opened = threading.Barrier(2)

    def read(name: str, opened: list[Any]) -> Iterator[pa.RecordBatch]:
        stream = _Stream()
        opened.append(stream)
        streams.append(stream)
        both_opened.wait(timeout=10)
        i = 0
        while not stream.cancelled.is_set():
            yield _batch(i)
            i += 1

    before = threading.active_count()
    batches = read_at_once(["a", "b"], read)
    taken = [next(batches) for _ in range(5)]
    batches.close()
    assert len(taken) == 5
    assert len(streams) == 2 and all(stream.cancelled.is_set() for stream in streams)
    assert threading.active_count() == before
