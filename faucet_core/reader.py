"""The reader: the classic ``prep_for_epoch()`` / ``get_batch()`` API and a Pythonic one.

A :class:`Reader` plans its source when it is created (so a missing table or a bad
credential fails here, before any thread starts), then serves passes of its
:class:`~faucet_core.stream.Stream`: training epochs (shuffled) and eval passes (in plan
order), formatted as pandas, numpy or Arrow.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from faucet_core.batches import batch_count
from faucet_core.config import FaucetConfig
from faucet_core.errors import ConfigError, ReaderStateError, ResumeError
from faucet_core.output import Batch, BatchFormatter
from faucet_core.plan import Plan
from faucet_core.planner import PlanOrigin, obtain_plan
from faucet_core.position import Partition, StreamPosition
from faucet_core.preprocessing import Preprocessor
from faucet_core.preprocessing.obtain import obtain_preprocessor
from faucet_core.serving import Serving
from faucet_core.settings import load_config
from faucet_core.stream import Pass, PassMetrics, Stream, StreamSpec
from faucet_core.warehouse import SplitName, WarehouseCosts

#: A reader serves its training stream as one worker of one rank.
_ONE_WORKER = Partition()

__all__ = ["Reader", "get_batch_reader"]


class Reader:
    """Streams shuffled mini-batches of one source, split into train and eval.

    Build one with :func:`get_batch_reader`, :meth:`from_config` or from a
    :class:`~faucet_core.config.FaucetConfig`. Use it as a context manager (or call
    :meth:`close`) so its threads stop and the warehouse is released.

    Args:
        config: The validated configuration.
        plan: A plan made elsewhere (by another process, see :meth:`Plan.to_json`); the
            reader then asks the warehouse nothing until a chunk is missing from the cache.
            Without it, the reader reuses the plan saved in the cache folder for the same
            source at the same data version, or plans the source (and saves the plan).
        preprocessor: A preprocessor fitted elsewhere, used instead of fitting the
            config's ``preprocessing``.

    Attributes:
        config: The validated configuration.
        plan_origin: ``"warehouse"`` (planned now), ``"cache"`` (a saved plan) or ``"given"``.
        serving: The stream, seed and preprocessing this reader serves (shared with the
            PyTorch dataset and the Ray datasource).
        stream: The pipeline serving the passes (shared with the PyTorch dataset).
        metrics: One :class:`~faucet_core.stream.PassMetrics` per pass started so far.
    """

    def __init__(
        self,
        config: FaucetConfig,
        *,
        plan: Plan | None = None,
        preprocessor: Preprocessor | None = None,
    ) -> None:
        self.config = config
        self.metrics: list[PassMetrics] = []
        self._epoch = 0
        self._resume_at = 0  # batches of the next epoch already consumed
        self._skipped = 0  # batches of the current epoch skipped when it resumed
        self._passes: dict[SplitName, Pass] = {}
        warehouse_class = config.warehouse_class
        warehouse = None
        self.plan_origin: PlanOrigin = "given"
        if plan is None:
            warehouse = warehouse_class(config.connection)
            try:
                plan, self.plan_origin = obtain_plan(config, warehouse)
            except BaseException:
                warehouse.close()
                raise
        elif plan.datastore != config.datastore or plan.request != config.plan_request():
            raise ConfigError(
                [("", "the plan given was made for another datastore, source, split or chunk_size")]
            )
        groups = config.source.inputs or {}
        wanted = {f"inputs.{group}": members for group, members in groups.items()}
        wanted["pad"] = list(config.source.pad or {})
        for setting, members in wanted.items():
            absent = [c for c in members if c not in plan.columns]
            if absent:
                if warehouse is not None:
                    warehouse.close()
                message = f"{absent} not among the columns {list(plan.columns)}"
                raise ConfigError([(f"source.{setting}", message)])
        missing = [c for c in config.source.label_columns if c not in plan.columns]
        if missing:
            if warehouse is not None:
                warehouse.close()
            raise ConfigError(
                [("source.label_columns", f"{missing} not among the columns {list(plan.columns)}")]
            )
        self.stream = Stream(StreamSpec(warehouse_class, config, plan), warehouse)
        seed = config.seed if config.seed is not None else secrets.randbits(32)
        try:
            if preprocessor is None and config.preprocessing.enabled:
                preprocessor = obtain_preprocessor(config, plan, self.stream)
        except BaseException:
            self.stream.close()
            raise
        self.serving = Serving(self.stream.spec, seed, config.seed is not None, preprocessor)
        self._formatter = BatchFormatter(
            self.feature_columns,
            self.label_columns,
            self.config.output,
            self.serving.input_columns(self.config.output),
        )

    @property
    def plan(self) -> Plan:
        """The chunk plan."""
        return self.serving.plan

    @property
    def seed(self) -> int:
        """The shuffle seed in use (drawn at random when the config has none)."""
        return self.serving.seed

    @property
    def preprocessor(self) -> Preprocessor | None:
        """The fitted :class:`~faucet_core.preprocessing.Preprocessor` applied to every
        batch, or ``None`` without a ``preprocessing`` section."""
        return self.serving.preprocessor

    @property
    def feature_columns(self) -> list[str]:
        """The names of a batch's features (the preprocessor's ``feature_names`` with one,
        and in pandas and Arrow batches the columns it keeps as they are)."""
        return self.serving.feature_columns(self.config.output)

    @property
    def feature_names(self) -> list[str]:
        """The names of the columns of a batch's features: :attr:`feature_columns`, with a
        vector column in a numpy batch as its elements ``name[0]``, ``name[1]``, ..."""
        return self.serving.feature_names(self.config.output)

    @property
    def inputs(self) -> dict[str, list[str]] | None:
        """The feature names of each input group (``source.inputs``), as in a batch's
        features, which are then a dict of one matrix (DataFrame, table) per group; ``None``
        without groups."""
        return self.serving.input_names(self.config.output)

    @property
    def label_columns(self) -> list[str]:
        """The names of a batch's labels."""
        return self.serving.label_columns

    @classmethod
    def from_config(cls, path: str | os.PathLike[str], **overrides: Any) -> Reader:
        """A reader for the YAML/TOML/JSON config at ``path``; keywords override the file."""
        return cls(load_config(path, **overrides))

    @property
    def costs(self) -> WarehouseCosts:
        """What the warehouse spent for this reader in this process: query jobs, bytes
        processed and billed (planning included), bytes read; zeros where the warehouse
        does not say."""
        return self.stream.costs()

    @property
    def cache(self) -> Any:
        """The chunk cache (a :class:`~faucet_core.cache.ChunkCache`), or ``None``."""
        return self.stream.cache

    # The classic API.

    def prep_for_epoch(self) -> None:
        """Start the next training epoch (shuffled anew). Abandons an unfinished one."""
        self._check_open()
        if self._epoch >= self.config.epochs:
            raise ReaderStateError(
                f"all {self.config.epochs} epochs were served; raise `epochs` for more"
            )
        self._epoch += 1
        consumed, self._resume_at = self._resume_at, 0
        start, _ = self.serving.rows("train", _ONE_WORKER, worker=0, consumed=consumed)
        self._start("train", start)
        self._skipped = consumed

    def prep_for_eval(self) -> None:
        """Start a pass over the eval split (in plan order, not shuffled)."""
        self._check_open()
        self._start("eval", 0)

    def get_batch(self, eval: bool = False) -> Batch | None:
        """The next batch of the current training epoch (or eval pass), ``None`` at its end.

        Raises:
            ChunkReadError: A chunk could not be read (after retries); names the chunk.
            ReaderStateError: No epoch (or eval pass) was started.
        """
        self._check_open()
        split: SplitName = "eval" if eval else "train"
        current = self._passes.get(split)
        if current is None:
            start = "prep_for_eval()" if eval else "prep_for_epoch()"
            raise ReaderStateError(f"call {start} before get_batch(eval={eval})")
        parts = current.next_parts()
        if parts is None:
            return None
        return self._formatter.from_parts(parts)

    # The Pythonic API.

    def iter_epoch(self) -> Iterator[Batch]:
        """Start the next training epoch and iterate over its batches."""
        self.prep_for_epoch()
        return self._iterate(eval=False)

    def iter_eval(self) -> Iterator[Batch]:
        """Start an eval pass and iterate over its batches."""
        self.prep_for_eval()
        return self._iterate(eval=True)

    def _iterate(self, eval: bool) -> Iterator[Batch]:
        while (batch := self.get_batch(eval=eval)) is not None:
            yield batch

    def iter_range(
        self,
        split: SplitName,
        epoch: int,
        start: int,
        stop: int,
        shuffle: bool | None = None,
    ) -> Iterator[Batch]:
        """Batches of rows ``start:stop`` of ``split`` as laid out in ``epoch`` (1-based).

        Leaves the reader's own epochs alone. A ``stop`` past the split's end wraps around
        to its first rows; ``shuffle`` defaults to the config's for train, ``False`` for eval.
        """
        self._check_open()
        current = self.serving.open_pass(
            self.stream, split, epoch, start, stop, shuffle, self._formatter.parts
        )
        try:
            while (parts := current.next_parts()) is not None:
                yield self._formatter.from_parts(parts)
        finally:
            current.close()

    @property
    def epoch(self) -> int:
        """The current training epoch, 1-based (0 before the first)."""
        return self._epoch

    def rows(self, split: SplitName = "train") -> int:
        """Rows in ``split``."""
        return self.plan.rows(split)

    def batches_per_epoch(self, split: SplitName = "train") -> int:
        """Batches one pass over ``split`` yields."""
        return batch_count(self.plan.rows(split), self.config.batch_size, self.config.drop_last)

    def prepare(self) -> None:
        """Make sure every chunk can be read, from this process or another one.

        The warehouse's one-time work (materializing the split) runs here unless the cache
        already holds every chunk. Readers do this by themselves on their first cache miss;
        call it before handing the plan to readers in other processes.
        """
        self._check_open()
        self.stream.prepare()

    def position(self) -> StreamPosition:
        """Where the training stream is: the epoch under way and its batches consumed."""
        current = self._passes.get("train")
        if current is None:
            epoch, batches = self._epoch + 1, self._resume_at
        elif current.metrics.finished:
            epoch, batches = self._epoch + 1, 0
        else:
            epoch, batches = self._epoch, self._skipped + current.metrics.batches
        return self.serving.position("train", _ONE_WORKER, epoch, batches)

    def state_dict(self) -> dict[str, Any]:
        """The position in the training stream, in a few plain values (for checkpoints).

        A reader of the same plan and settings given it by :meth:`load_state_dict` serves
        exactly the rest of the stream: no batch repeated, none skipped.
        """
        return self.position().as_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the stream saved by :meth:`state_dict` (or by a one-worker
        :class:`~faucet_core.torch.FaucetDataLoader`).

        The next :meth:`prep_for_epoch` resumes the saved epoch where it stopped.

        Raises:
            ResumeError: The state is from another plan (the data, the source, the split or
                the chunking changed) or other settings; mixing streams would repeat or skip
                rows, so it is refused.
        """
        self._check_open()
        serving, position = self.serving.resume(state, "train", _ONE_WORKER)
        if position.epoch - 1 > self.config.epochs:
            raise ResumeError(
                f"the state is past epoch {position.epoch - 1} of {self.config.epochs}"
            )
        for current in self._passes.values():
            current.close()
        self._passes.clear()
        self.serving = serving
        self._epoch, self._resume_at = position.epoch - 1, position.batches

    def close(self) -> None:
        """Stop background threads and release the warehouse. Safe to call twice."""
        for current in self._passes.values():
            current.close()
        self.stream.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _start(self, split: SplitName, start: int) -> None:
        """Open a pass of ``split`` from row ``start`` to its end (a reader serves it whole)."""
        previous = self._passes.pop(split, None)
        if previous is not None:
            previous.close()
        current = self.serving.open_pass(
            self.stream, split, self._epoch, start, None, parts=self._formatter.parts
        )
        self._passes[split] = current
        self.metrics.append(current.metrics)

    def _check_open(self) -> None:
        if self.stream.closed:
            raise ReaderStateError("the reader is closed")


def get_batch_reader(datastore: str, **settings: Any) -> Reader:
    """Create a :class:`Reader` from flat keyword settings (the classic entry point).

    Keywords naming reader settings (``table_name``, ``ds``, ``epochs``, ``batch_size``,
    ``chunk_size``, ``test_split_percent``, ``seed``, ``cache_dir``, ...) configure the
    reader; every other keyword (``database``, ``credential_path``, ...) goes to the
    warehouse's connection settings. ``FAUCET_*`` environment variables fill in settings
    not given here.

    Raises:
        ConfigError: A setting is invalid; the message lists every problem with its field.
    """
    return Reader(load_config(datastore=datastore, **settings))
