"""What a reader, a PyTorch dataset and a Ray datasource serve, as one picklable value.

A :class:`Serving` holds the stream (warehouse class, config, plan), the shuffle seed and
the fitted preprocessing. Every setting those three derive from them is derived here,
once: the transform applied to each chunk, the columns of a batch's features and labels,
the rows a rank's worker serves, and what a saved position must share to resume.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa

from faucet_core import vectors
from faucet_core.batches import Parts
from faucet_core.config import FaucetConfig
from faucet_core.errors import ConfigError
from faucet_core.plan import Plan
from faucet_core.position import Partition, StreamPosition, worker_rows
from faucet_core.preprocessing import Preprocessor
from faucet_core.stream import Pass, Stream, StreamSpec
from faucet_core.warehouse import SplitName

__all__ = ["BatchFormat", "Serving"]

#: What batches are made into: the config's ``output``, or tensors (PyTorch).
BatchFormat = Literal["pandas", "polars", "numpy", "arrow", "torch"]


def _chained(steps: list[Callable[[pa.Table], pa.Table]], table: pa.Table) -> pa.Table:
    for step in steps:
        table = step(table)
    return table


@dataclass(frozen=True)
class Serving:
    """A stream, the seed its passes are shuffled by, and the preprocessing they apply.

    Attributes:
        spec: The stream: warehouse class, config and plan.
        seed: The shuffle seed in use.
        seed_configured: Whether the config gave the seed (a resumed stream must then have
            it), rather than it being drawn.
        preprocessor: Applied to every chunk's rows, or ``None``.
    """

    spec: StreamSpec
    seed: int
    seed_configured: bool
    preprocessor: Preprocessor | None = None

    @property
    def config(self) -> FaucetConfig:
        """The configuration."""
        return self.spec.config

    @property
    def plan(self) -> Plan:
        """The plan."""
        return self.spec.plan

    @property
    def source_labels(self) -> list[str]:
        """The source's label columns (the preprocessor's input)."""
        return list(self.config.source.label_columns)

    @property
    def padded(self) -> dict[str, int]:
        """The list columns padded to a length (``source.pad``)."""
        return dict(self.config.source.pad or {})

    @property
    def schema(self) -> pa.Schema | None:
        """The columns as the preprocessing (or a batch, without one) gets them, with their
        types: the plan's, padded columns as vectors followed by their lengths."""
        schema = self.plan.schema
        return vectors.padded_schema(schema, self.padded) if schema is not None else None

    @property
    def columns(self) -> list[str]:
        """The names of :attr:`schema`'s columns (known without the plan's types)."""
        names: list[str] = []
        for name in self.plan.columns:
            names += [name, vectors.length_column(name)] if name in self.padded else [name]
        return names

    @property
    def conform(self) -> Callable[[pa.Table], pa.Table] | None:
        """What a chunk's rows go through to have :attr:`schema`
        (:func:`~faucet_core.vectors.serve`), if anything."""
        if not vectors.needs_serving(self.plan.schema, self.padded):
            return None
        return functools.partial(vectors.serve, schema=self.plan.schema, lengths=self.padded)

    @property
    def transform(self) -> Callable[[pa.Table], pa.Table] | None:
        """What each chunk's rows go through before they are cut into batches:
        :attr:`conform`, then the preprocessing."""
        conform = self.conform
        if self.preprocessor is None:
            return conform
        transform = functools.partial(
            self.preprocessor.transform_table, label_columns=self.source_labels
        )
        return transform if conform is None else functools.partial(_chained, [conform, transform])

    def feature_columns(self, into: BatchFormat) -> list[str]:
        """The columns of a batch's features: those of the input groups, with groups;
        else the preprocessor's features (and, in pandas and Arrow batches, the columns it
        keeps as they are), else every column that is not a label."""
        groups = self.input_columns(into)
        if groups is not None:
            return [column for columns in groups.values() for column in columns]
        if self.preprocessor is None:
            labels = set(self.source_labels)
            return [c for c in self.columns if c not in labels]
        kept = self.preprocessor.kept if into in ("pandas", "polars", "arrow") else []
        return [*self.preprocessor.feature_names, *kept]

    def input_columns(self, into: BatchFormat) -> dict[str, list[str]] | None:
        """The columns of each input group (``source.inputs``) in a batch, after the
        preprocessing (a column gives the features it is transformed into); ``None``
        without groups.

        Raises:
            ConfigError: A group's column gives no feature in ``into`` batches (naming it).
        """
        groups = self.config.source.inputs
        if not groups:
            return None
        padded = self.padded
        groups = {  # a padded column brings its length
            group: [name for c in columns
                    for name in ([c, vectors.length_column(c)] if c in padded else [c])]
            for group, columns in groups.items()
        }  # fmt: skip
        if self.preprocessor is None:
            return {group: list(columns) for group, columns in groups.items()}
        transforms = {t.name: t for t in self.preprocessor.features}
        found: dict[str, list[str]] = {}
        for group, columns in groups.items():
            found[group] = []
            for column in columns:
                transform = transforms[column]
                text = len(columns) == 1 and self._is_text(column)  # strings for a tokenizer
                if transform.kind == "kept" and (into in ("pandas", "polars", "arrow") or text):
                    found[group].append(column)
                elif transform.outputs():
                    found[group] += transform.outputs()
                else:
                    why = f"{transform.kind}{': ' + transform.note if transform.note else ''}"
                    message = f"{column} gives no feature in {into} batches ({why})"
                    raise ConfigError([(f"source.inputs.{group}", message)])
        return found

    def _is_text(self, column: str) -> bool:
        schema = self.schema
        return schema is not None and vectors.is_text(schema.field(column).type)

    def _matrix_names(self, into: BatchFormat, columns: list[str]) -> list[str]:
        schema = self.schema
        if into not in ("numpy", "torch") or self.preprocessor is not None or schema is None:
            return columns
        return vectors.expanded_names(schema, columns)

    def feature_names(self, into: BatchFormat) -> list[str]:
        """The columns of a batch's features as a numpy matrix or a tensor has them: a
        vector column (without preprocessing) as its elements ``name[i]``; in other
        formats, :meth:`feature_columns`."""
        return self._matrix_names(into, self.feature_columns(into))

    def input_names(self, into: BatchFormat) -> dict[str, list[str]] | None:
        """:meth:`feature_names` of each input group, or ``None`` without groups."""
        groups = self.input_columns(into)
        if groups is None:
            return None
        return {group: self._matrix_names(into, columns) for group, columns in groups.items()}

    @property
    def label_columns(self) -> list[str]:
        """The columns of a batch's labels (one-hot encoded ones, with preprocessing)."""
        if self.preprocessor is None:
            return self.source_labels
        return self.preprocessor.label_names(self.source_labels)

    def rows(
        self, split: SplitName, partition: Partition, worker: int, consumed: int
    ) -> tuple[int, int]:
        """Rows ``start:stop`` of an epoch of ``split`` that ``worker`` of ``partition``
        serves, ``consumed`` batches in."""
        config = self.config
        total = self.plan.rows(split)
        return worker_rows(total, config.batch_size, config.drop_last, partition, worker, consumed)

    def open_pass(
        self,
        stream: Stream,
        split: SplitName,
        epoch: int,
        start: int,
        stop: int | None,
        shuffle: bool | None = None,
        parts: Callable[[pa.Table], Parts] | None = None,
    ) -> Pass:
        """A pass of ``stream`` over rows ``start:stop`` of ``split`` in ``epoch`` (1-based),
        shuffled by this seed, through this preprocessing (each chunk cut into ``parts``:
        see :meth:`Stream.open_pass`)."""
        return stream.open_pass(
            split, epoch, self.seed, start, stop, shuffle, self.transform, parts
        )

    def stream_settings(self, split: SplitName, partition: Partition) -> dict[str, Any]:
        """What a saved position of ``split`` served by ``partition`` must share to resume."""
        settings = {
            "split": split,
            "batch_size": self.config.batch_size,
            "drop_last": self.config.drop_last,
            "shuffle": self.config.shuffle,
            "rank": partition.rank,
            "world_size": partition.world_size,
            "remainder": partition.remainder,
            "workers": partition.workers,
        }
        if partition.dispatch:  # only then: positions saved before it existed still resume
            settings["dispatch"] = True
        return settings

    def position(
        self, split: SplitName, partition: Partition, epoch: int, batches: int
    ) -> StreamPosition:
        """The position ``batches`` batches into ``epoch`` (1-based) of ``split``."""
        settings = self.stream_settings(split, partition)
        return StreamPosition(self.plan.fingerprint, self.seed, epoch, batches, settings)

    def resume(
        self, state: Mapping[str, Any], split: SplitName, partition: Partition
    ) -> tuple[Serving, StreamPosition]:
        """The saved position ``state``, checked against this stream, and this value with
        the position's seed.

        Raises:
            ResumeError: The state is from another plan, seed (when configured) or settings.
        """
        position = StreamPosition.from_dict(state)
        settings = self.stream_settings(split, partition)
        if self.seed_configured:
            settings["seed"] = self.seed
        position.check(self.plan.fingerprint, settings)
        return dataclasses.replace(self, seed=position.seed), position
