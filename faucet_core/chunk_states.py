"""The state of each chunk of a plan in one process, and where each chunk came from.

One object, shared by the chunk fetcher and the cache fill, says of every chunk whether
it is missing (not cached, as far as this process knows), being filled (the cache fill's
scan will write it), being read (by itself, from the warehouse), cached, or failed (its
last read failed; the next fetch reads it again), and where its rows came from: the
cache (cached before this process asked), this process's fill (one scan of the source),
or a read of the chunk by itself. A chunk this process read from the warehouse counts as
fetched the first time it is served, and as cached after that.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Iterable, Mapping

from faucet_core.plan import ChunkSpec, Plan

__all__ = ["ChunkState", "ChunkStates", "Origin"]


class ChunkState(enum.Enum):
    """Where a chunk is, in this process."""

    MISSING = "missing"
    FILLING = "being filled"
    READING = "being read"
    CACHED = "cached"
    FAILED = "failed"


class Origin(enum.Enum):
    """Where a chunk's rows came from, when they are served."""

    #: The cache held them, or this process served them before.
    CACHE = "cache"
    #: This process's cache fill, from one scan of the source.
    FILL = "fill"
    #: A read of the chunk by itself, from the warehouse.
    WAREHOUSE = "warehouse"


class ChunkStates:
    """The state and origin of every chunk of ``plan`` in this process. Thread-safe.

    Args:
        plan: The plan whose chunks these are.
    """

    def __init__(self, plan: Plan) -> None:
        self.chunks = plan.every_chunk
        self._index = {(c.split, c.index): i for i, c in enumerate(self.chunks)}
        #: Notified on every change of state; a fill's own waits use it too.
        self.condition = threading.Condition()
        self._states = [ChunkState.MISSING] * len(self.chunks)
        self._origins: dict[int, Origin] = {}  # of the chunks this process fetched
        self._served: set[int] = set()  # cached by this process's fill, served once since
        self._checked: set[str] = set()  # cache files whose rows were checked against the plan

    def index(self, chunk: ChunkSpec) -> int:
        """``chunk``'s position in :attr:`chunks`."""
        return self._index[(chunk.split, chunk.index)]

    def state(self, chunk: ChunkSpec) -> ChunkState:
        """Where ``chunk`` is."""
        with self.condition:
            return self._states[self.index(chunk)]

    def origin(self, chunk: ChunkSpec) -> Origin | None:
        """Where this process got ``chunk``'s rows from the warehouse (by the fill, or by
        itself); ``None`` if it did not."""
        with self.condition:
            return self._origins.get(self.index(chunk))

    def counts(self) -> Mapping[ChunkState, int]:
        """How many chunks are in each state."""
        with self.condition:
            return {state: self._states.count(state) for state in ChunkState}

    # A cache fill's transitions

    def filling(self) -> list[int]:
        """Mark every missing chunk as being filled; returns their indexes."""
        with self.condition:
            wanted = [i for i, s in enumerate(self._states) if s is ChunkState.MISSING]
            self._set(wanted, ChunkState.FILLING)
            return wanted

    def found(self, indexes: Iterable[int]) -> None:
        """The fill found these chunks cached already (by another process)."""
        with self.condition:
            self._set(indexes, ChunkState.CACHED)

    def committing(self, indexes: Iterable[int]) -> None:
        """The fill is about to put these chunks in the cache: a reader that finds one
        there from now on serves it as this fill's (the first serving counts as fetched)."""
        with self.condition:
            for index in indexes:
                self._origins.setdefault(index, Origin.FILL)

    def filled(self, indexes: Iterable[int], entries: Mapping[int, str]) -> None:
        """The fill committed ``entries`` (chunk index: cache file name; their rows were
        checked against the plan as they were written), of the chunks ``indexes`` it was
        committing; the others were not stored (a full disk)."""
        with self.condition:
            for index in indexes:
                if index not in entries and self._origins.get(index) is Origin.FILL:
                    del self._origins[index]
            self._checked.update(entries.values())
            self._set(entries, ChunkState.CACHED)

    def fill_over(self) -> None:
        """The fill ended: the chunks it did not cache are missing."""
        with self.condition:
            filling = [i for i, s in enumerate(self._states) if s is ChunkState.FILLING]
            self._set(filling, ChunkState.MISSING)

    def wait_filled(
        self, chunk: ChunkSpec, stopped: Callable[[], bool], timeout: float | None = None
    ) -> ChunkState:
        """Wait while ``chunk`` is being filled (until ``stopped()``, or ``timeout``
        seconds); returns its state then."""
        index = self.index(chunk)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.condition:
            while self._states[index] is ChunkState.FILLING and not stopped():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self.condition.wait(left)
            return self._states[index]

    # A read of a chunk by itself

    def reading(self, chunk: ChunkSpec) -> None:
        """``chunk`` is being read by itself (unless the fill is writing it anyway)."""
        index = self.index(chunk)
        with self.condition:
            if self._states[index] is not ChunkState.FILLING:
                self._set([index], ChunkState.READING)

    def read(self, chunk: ChunkSpec, cached: bool) -> None:
        """``chunk`` was read from the warehouse by itself (and served: counted as
        fetched); ``cached``: this process put it in the cache."""
        index = self.index(chunk)
        with self.condition:
            self._origins[index] = Origin.WAREHOUSE
            if self._states[index] is ChunkState.READING:
                self._set([index], ChunkState.CACHED if cached else ChunkState.MISSING)

    def read_failed(self, chunk: ChunkSpec) -> None:
        """``chunk`` could not be read by itself."""
        index = self.index(chunk)
        with self.condition:
            if self._states[index] is ChunkState.READING:
                self._set([index], ChunkState.FAILED)

    # Serving from the cache

    def checked(self, name: str) -> bool:
        """Whether the cache file ``name`` was checked against the plan in this process."""
        with self.condition:
            return name in self._checked

    def check_passed(self, name: str) -> None:
        """The cache file ``name`` holds its chunk's rows as planned."""
        with self.condition:
            self._checked.add(name)

    def serve_cached(self, chunk: ChunkSpec) -> Origin:
        """Where ``chunk``, served from the cache now, came from: :attr:`Origin.FILL` the
        first time a chunk this process's fill cached is served (counted as fetched once),
        else :attr:`Origin.CACHE`."""
        index = self.index(chunk)
        with self.condition:
            self._set([index], ChunkState.CACHED)
            if self._origins.get(index) is Origin.FILL and index not in self._served:
                self._served.add(index)
                return Origin.FILL
            return Origin.CACHE

    def discarded(self, chunk: ChunkSpec) -> None:
        """``chunk``'s cache entry failed its check and was dropped: it is missing."""
        with self.condition:
            self._set([self.index(chunk)], ChunkState.MISSING)

    def _set(self, indexes: Iterable[int], state: ChunkState) -> None:
        """Move chunks to ``state`` and wake the waiters (called with the condition held)."""
        for index in indexes:
            self._states[index] = state
        self.condition.notify_all()
