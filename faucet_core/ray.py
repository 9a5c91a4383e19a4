"""Ray Data: a plan's chunks as the read tasks of a ``ray.data.Dataset``.

Install with ``pip install 'faucetml[ray]'``. :func:`read_faucet` plans the source once,
on the driver (reusing a saved plan while the data is unchanged), fits the preprocessing
there and prepares the chunks, as a reader does before handing its plan to other
processes. Each read task of the dataset is then one chunk of the split, at its place in
that epoch's order: it opens the stream of the plan in whichever Ray worker runs it,
reads the chunk through the chunk cache of that node, permutes it as Faucet permutes it
for that seed and epoch, applies the preprocessing, and yields it as one Arrow table
(which Ray cuts into blocks of its target size).

So every row of the split is in exactly one block per dataset, each task's rows (and
their order) depend on the plan, the seed and the epoch alone, and concatenating the
blocks in task order gives Faucet's own stream of that epoch. What Ray decides is the
order in which blocks come out (the order tasks finish, unless
``DataContext.execution_options.preserve_order``), how they are cut and batched, and
which consumer of a split gets which block.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from faucet_core.batches import chunk_order
from faucet_core.config import FaucetConfig
from faucet_core.plan import ChunkSpec, Plan
from faucet_core.reader import Reader
from faucet_core.serving import Serving
from faucet_core.settings import load_config
from faucet_core.stream import Stream
from faucet_core.warehouse import SplitName

try:
    import ray.data
    from ray.data.block import BlockMetadata
    from ray.data.context import DataContext
    from ray.data.datasource import Datasource, ReadTask
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError("faucet_core.ray needs Ray Data: pip install 'faucetml[ray]'") from exc

__all__ = ["ChunkRead", "EpochLayout", "FaucetDatasource", "read_faucet"]


@dataclass(frozen=True)
class EpochLayout:
    """What every read task of a dataset shares: the stream, the split and its epoch.

    Attributes:
        serving: The stream each task opens, the driver's seed and preprocessing.
        split: ``"train"`` or ``"eval"``.
        epoch: The epoch (1-based) whose layout is read.
    """

    serving: Serving
    split: SplitName
    epoch: int

    def read(self, chunk: ChunkSpec, start: int) -> Iterator[pa.Table]:
        """Rows ``start:start + chunk.rows`` of the epoch (``chunk``'s), permuted as Faucet
        permutes them in this epoch and preprocessed, as one table.

        Raises:
            ChunkReadError: The chunk could not be read; names the chunk.
        """
        stream = Stream(self.serving.spec)
        try:
            if not stream.fetcher.cached(chunk):
                # A node that has not read this plan yet fills its cache from one scan
                # (or finds the warehouse's scratch copy), once for all its tasks.
                stream.prepare()
            stop = start + chunk.rows
            current = self.serving.open_pass(stream, self.split, self.epoch, start, stop)
            try:
                yield from current
            finally:
                current.close()
        finally:
            stream.close()


@dataclass(frozen=True)
class ChunkRead:
    """One read task: one chunk, at its place in the epoch's order; a picklable value that
    a Ray worker calls for the chunk's rows.

    Attributes:
        layout: What the dataset's tasks share, or a reference to it in Ray's object store
            (put there once, not copied into every task).
        chunk: The chunk.
        start: The chunk's first row in the epoch's order.
    """

    layout: EpochLayout | ray.ObjectRef[EpochLayout]
    chunk: ChunkSpec
    start: int

    def __call__(self) -> Iterator[pa.Table]:
        """The chunk's rows (see :meth:`EpochLayout.read`)."""
        layout = self.layout
        if not isinstance(layout, EpochLayout):
            layout = ray.get(layout)
        return layout.read(self.chunk, self.start)


class _DriverOnly:
    """Keeps the driver's reader open while the datasource lives; pickled, it holds nothing
    (Ray sends the datasource to other processes, which need no reader)."""

    def __init__(self, reader: Reader | None) -> None:
        self.reader = reader

    def __reduce__(self) -> tuple[type[_DriverOnly], tuple[None]]:
        return _DriverOnly, (None,)


class FaucetDatasource(Datasource):
    """A Ray Data source of one split of a plan, laid out as in one epoch.

    Build it with :func:`read_faucet`, or pass it to ``ray.data.read_datasource`` with
    Ray's read options. Its read tasks are the split's chunks in the epoch's order; each
    task is a :class:`ChunkRead`.

    Args:
        reader: A reader of the source; its plan, seed and preprocessor are used, and it is
            kept open on the driver while the datasource lives (a warehouse's scratch copy
            is released when it closes).
        split: ``"train"`` (shuffled as the config says) or ``"eval"`` (plan order).
        epoch: The epoch (1-based) whose chunk order and in-chunk shuffle are read.
    """

    def __init__(self, reader: Reader, split: SplitName = "train", epoch: int = 1) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if split not in ("train", "eval"):
            raise ValueError(f"split must be 'train' or 'eval', not {split!r}")
        if epoch < 1:
            raise ValueError(f"epoch is 1-based: {epoch} < 1")
        self.plan: Plan = reader.plan
        largest = max((c.rows for c in self.plan.chunks[split]), default=1)
        config = reader.config
        # Tasks run in other folders and machines: the cache folder is the driver's path.
        cache = config.cache.model_copy(update={"dir": config.cache.dir.absolute()})
        # A task's pass is one chunk: one table, which Ray cuts into blocks of its size.
        config = config.model_copy(
            update={"batch_size": largest, "drop_last": False, "cache": cache}
        )
        spec = dataclasses.replace(reader.serving.spec, config=config)
        self.layout = EpochLayout(dataclasses.replace(reader.serving, spec=spec), split, epoch)
        self._driver = _DriverOnly(reader)

    @property
    def split(self) -> SplitName:
        """The split read."""
        return self.layout.split

    @property
    def epoch(self) -> int:
        """The epoch (1-based) whose layout is read."""
        return self.layout.epoch

    def chunk_reads(
        self, layout: EpochLayout | ray.ObjectRef[EpochLayout] | None = None
    ) -> list[ChunkRead]:
        """The read tasks, in the epoch's order: concatenated, Faucet's stream of the epoch.

        ``layout``: a reference to :attr:`layout` in Ray's object store, for the tasks to
        hold instead of a copy.
        """
        serving = self.layout.serving
        shuffle = serving.spec.shuffles(self.split)
        order = chunk_order(self.plan.chunks[self.split], serving.seed, self.epoch, shuffle)
        starts = itertools.accumulate((c.rows for c in order), initial=0)
        shared = self.layout if layout is None else layout
        return [ChunkRead(shared, c, start) for c, start in zip(order, starts, strict=False)]

    def _bytes(self, rows: int) -> int | None:
        """About how many bytes ``rows`` rows of the plan take in Arrow."""
        size = self.plan.arrow_bytes()
        total = sum(self.plan.rows(split) for split in self.plan.chunks)
        return int(size * rows / total) if size is not None and total else None

    def get_name(self) -> str:
        return "Faucet"

    def estimate_inmemory_data_size(self) -> int | None:
        return self._bytes(self.plan.rows(self.split))

    def schema(self) -> pa.Schema | None:
        """The blocks' schema, when the plan says its column types."""
        if self.plan.schema is None:
            return None
        transform = self.layout.serving.transform
        if transform is None:
            return self.plan.schema
        return transform(self.plan.schema.empty_table()).schema

    def get_read_tasks(
        self,
        parallelism: int,
        per_task_row_limit: int | None = None,
        data_context: DataContext | None = None,
    ) -> list[ReadTask]:
        """One read task per chunk, whatever ``parallelism`` Ray asks for."""
        schema = self.schema()
        tasks = []
        for read in self.chunk_reads(ray.put(self.layout)):
            rows = read.chunk.rows
            metadata = BlockMetadata(
                num_rows=rows, size_bytes=self._bytes(rows), input_files=None, exec_stats=None
            )
            tasks.append(ReadTask(read, metadata, schema, per_task_row_limit))
        return tasks


def read_faucet(
    config_or_path: FaucetConfig | str | os.PathLike[str],
    split: SplitName = "train",
    epoch: int = 1,
    **overrides: Any,
) -> ray.data.Dataset:
    """A Ray dataset of one split of a source, laid out as Faucet lays out ``epoch``.

    The source is planned here, on the driver, once (a plan saved in the cache folder for
    the same data is reused), the preprocessing fitted, and the chunks prepared (the
    cache of this node filled from one scan where the warehouse can, else the warehouse's
    scratch copy made). Each read task is one chunk; see :mod:`faucet_core.ray`.

    Without a ``seed`` in the config, one is drawn here and shared by every task; give
    one to lay out several epochs (one dataset each) of the same stream.

    Args:
        config_or_path: A config, or the path of a config file.
        split: ``"train"`` or ``"eval"``.
        epoch: The epoch (1-based) whose chunk order and in-chunk shuffle are read.
        **overrides: Settings overriding the config file's (with a path).

    Raises:
        ConfigError, WarehouseError: Planning or preparing failed.
    """
    if isinstance(config_or_path, FaucetConfig):
        if overrides:
            raise TypeError("keyword overrides go with a config file, not a FaucetConfig")
        config = config_or_path
    else:
        config = load_config(config_or_path, **overrides)
    reader = Reader(config)  # draws the seed, when the config has none
    try:
        reader.prepare()
        source = FaucetDatasource(reader, split, epoch)
    except BaseException:
        reader.close()
        raise
    dataset: ray.data.Dataset = ray.data.read_datasource(source)
    return dataset
