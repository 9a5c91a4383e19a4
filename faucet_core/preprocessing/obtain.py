"""A reader's preprocessor: loaded from a saved spec, found beside the plan, or fitted."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator

import pyarrow as pa

from faucet_core import layout, vectors
from faucet_core.config import FaucetConfig
from faucet_core.errors import ConfigError
from faucet_core.plan import Plan
from faucet_core.plan_cache import PlanCache
from faucet_core.preprocessing.fit import fit_preprocessor
from faucet_core.preprocessing.preprocessor import Preprocessor
from faucet_core.preprocessing.stats import StatsRequest, TrainStats, stats_from_tables
from faucet_core.stream import Stream

__all__ = ["obtain_preprocessor"]

log = logging.getLogger("faucet")


def _check_names(config: FaucetConfig, plan: Plan) -> None:
    settings = config.preprocessing
    problems = []
    pad = config.source.pad or {}
    columns = [*plan.columns, *(vectors.length_column(name) for name in pad)]
    for section, names in (("columns", list(settings.columns)), ("exclude", settings.exclude)):
        unknown = [name for name in names if name not in columns]
        if unknown:
            problems.append(
                (
                    f"preprocessing.{section}",
                    f"{unknown} not among the columns {columns}",
                )
            )
    if problems:
        raise ConfigError(problems)


def _schema(plan: Plan, stream: Stream) -> pa.Schema:
    """The plan's column types; where the warehouse did not know them (SQLite's ``LIMIT 0``
    has no types), those of the first train chunk, which the first epoch reads anyway."""
    schema = plan.schema
    if schema is not None and not any(pa.types.is_null(f.type) for f in schema):
        return schema
    first = next((chunk for chunks in plan.chunks.values() for chunk in chunks), None)
    if first is None:
        return schema or pa.schema([pa.field(name, pa.null()) for name in plan.columns])
    return stream.fetcher.fetch(first).table.select(list(plan.columns)).schema


def obtain_preprocessor(config: FaucetConfig, plan: Plan, stream: Stream) -> Preprocessor:
    """The preprocessor of ``config`` for ``plan``.

    ``preprocessing.spec`` names a saved one; else the one fitted for this plan and these
    settings is reused from the cache folder; else it is fitted now, from one statistics
    query of the warehouse (or one pass over the cached train chunks) and saved there.

    Raises:
        ConfigError: The settings name unknown columns, or the spec cannot be read.
    """
    settings = config.preprocessing
    if settings.spec is not None:
        try:
            return Preprocessor.load(settings.spec)
        except (OSError, ValueError) as exc:
            raise ConfigError([("preprocessing.spec", str(exc))]) from exc
    _check_names(config, plan)
    labels = list(config.source.label_columns)
    pad = dict(config.source.pad or {})  # padded columns are fitted as served
    key = layout.stable_digest(plan.fingerprint, settings.model_dump_json(), labels, pad)
    saved = PlanCache(config.cache.dir).get_preprocessor(key) if config.cache.enabled else None
    if saved is not None:
        try:
            return Preprocessor.from_json(saved)
        except ValueError as exc:
            log.warning("fitting again: the saved preprocessor is unreadable: %s", exc)
    before = dataclasses.replace(stream.costs())

    # Padded columns and their lengths are Faucet's, and no warehouse computes a mean
    # vector: their statistics come from one pass over the train chunks, as served.
    made = {name for column in pad for name in (column, vectors.length_column(column))}

    def statistics(request: StatsRequest) -> TrainStats:
        local = request.restricted(lambda c: c in made or c in request.vector_means)
        remote = request.restricted(lambda c: c not in local.columns)
        found = stream.warehouse().column_stats(plan, remote) if remote.columns else None
        if found is None:
            return stats_from_tables(_train_tables(plan, stream, request, pad), request)
        if not local.columns:
            return found
        served = stats_from_tables(_train_tables(plan, stream, local, pad), local)
        return dataclasses.replace(found, columns={**found.columns, **served.columns})

    schema = vectors.padded_schema(_schema(plan, stream), pad)
    fitted = fit_preprocessor(settings, schema, labels, statistics)
    spent = stream.costs() - before
    fitted = dataclasses.replace(
        fitted,
        fitted_on={
            **fitted.fitted_on,
            "plan": plan.fingerprint,
            "query_jobs": spent.query_jobs,
            "bytes_billed": spent.bytes_billed,
        },
    )
    if config.cache.enabled:
        PlanCache(config.cache.dir).put_preprocessor(key, fitted.to_json())
    log.info("fitted preprocessing on %s train rows", fitted.fitted_on.get("rows"))
    return fitted


def _train_tables(
    plan: Plan, stream: Stream, request: StatsRequest, pad: dict[str, int]
) -> Iterator[pa.Table]:
    """The train chunks' columns of ``request``, as served (lists as vectors, padded)."""
    columns = list(request.columns)
    lengths = {vectors.length_column(name): name for name in pad}
    raw = list(dict.fromkeys(lengths.get(c, c) for c in columns))
    for chunk in plan.chunks["train"]:
        table = stream.fetcher.fetch(chunk).table.select(raw)
        yield vectors.serve(table, plan.schema, pad).select(columns)
