"""Planning a source: once per version of its data, reusing saved plans where they fit.

:func:`obtain_plan` looks for a saved plan of the same request and data version in the
cache folder (see :mod:`faucet_core.plan_cache`) before asking the warehouse; a source
without a data version (a query) is planned again unless ``cache.plan_ttl`` allows
reusing its plan. :func:`plan_source` asks the warehouse: one cheap version lookup and
one counting query.
"""

from __future__ import annotations

import logging
import time
from typing import Literal

from faucet_core.config import FaucetConfig
from faucet_core.plan import Plan, make_plan
from faucet_core.plan_cache import PlanCache
from faucet_core.warehouse import (
    PermanentWarehouseError,
    PlanRequest,
    SourceSpec,
    Warehouse,
    WarehouseError,
)

__all__ = [
    "PlanOrigin",
    "data_version",
    "obtain_plan",
    "plan_source",
    "saved_plan_key",
    "source_identity",
]

log = logging.getLogger("faucet")

#: Where a reader's plan came from.
PlanOrigin = Literal["warehouse", "cache", "given"]


def _as_warehouse_error(warehouse: Warehouse, source: SourceSpec, exc: Exception) -> Exception:
    if isinstance(exc, WarehouseError):
        return exc
    # A plugin's own error type: retrying will not help.
    return PermanentWarehouseError(f"{warehouse.name} cannot plan {source.describe()}: {exc}")


def data_version(warehouse: Warehouse, source: SourceSpec) -> str | None:
    """The warehouse's version of ``source`` (metadata only).

    Raises:
        PermanentWarehouseError: The source does not exist, or the warehouse failed with an
            error of its own type.
    """
    try:
        return warehouse.data_version(source)
    except Exception as exc:
        raise _as_warehouse_error(warehouse, source, exc) from exc


def source_identity(warehouse: Warehouse, source: SourceSpec) -> str:
    """Where ``source``'s data lives, as the warehouse says
    (:meth:`Warehouse.source_identity`).

    Raises:
        PermanentWarehouseError: The warehouse failed with an error of its own type.
    """
    try:
        return warehouse.source_identity(source)
    except Exception as exc:
        raise _as_warehouse_error(warehouse, source, exc) from exc


def plan_source(warehouse: Warehouse, request: PlanRequest, version: str | None) -> Plan:
    """Plan ``request`` on ``warehouse``, whose data is at ``version``: one counting query.

    Raises:
        PermanentWarehouseError: The source, a column or the split key does not exist,
            ``ds`` selects no rows, or the warehouse failed with an error of its own type.
        TransientWarehouseError: A failure worth trying again later.
    """
    started = time.perf_counter()
    try:
        counted = warehouse.count_buckets(request)
    except Exception as exc:
        raise _as_warehouse_error(warehouse, request.source, exc) from exc
    identity = source_identity(warehouse, request.source)
    plan = make_plan(warehouse.name, request, counted, version, identity)
    try:
        warehouse.planned(plan)
    except Exception as exc:
        raise _as_warehouse_error(warehouse, request.source, exc) from exc
    log.info(
        "planned %s of %s in %.2fs: train %d rows in %d chunks, eval %d rows in %d chunks",
        request.source.describe(),
        warehouse.name,
        time.perf_counter() - started,
        plan.rows("train"),
        len(plan.chunks["train"]),
        plan.rows("eval"),
        len(plan.chunks["eval"]),
    )
    return plan


def saved_plan_key(config: FaucetConfig, warehouse: Warehouse, version: str | None) -> str | None:
    """The key of ``config``'s saved plan at ``version``, or ``None`` when its plans are not
    saved (no cache, or no version and no ``plan_ttl``).

    The key holds where the data lives (:meth:`Warehouse.source_identity`): the connection
    settings alone do not say it where a secret (a DSN) holds the server.
    """
    if not config.cache.enabled or (version is None and config.cache.plan_ttl is None):
        return None
    request = config.plan_request()
    identity = source_identity(warehouse, request.source)
    connection = config.connection.model_dump_json()
    return PlanCache.key(config.datastore, connection, identity, request, version)


def saved_plan(config: FaucetConfig, key: str, version: str | None) -> Plan | None:
    """The plan saved under ``key``, if it is still fresh enough to serve."""
    max_age = None if version is not None else config.cache.plan_ttl
    return PlanCache(config.cache.dir).get(key, max_age=max_age)


def obtain_plan(config: FaucetConfig, warehouse: Warehouse) -> tuple[Plan, PlanOrigin]:
    """``config``'s plan: a saved one for the source's current version, else a new one
    (then saved for the next reader).

    Processes planning the same source at once take turns, so only one asks the
    warehouse. A split that would surprise (:meth:`Plan.split_surprise`) is logged as a
    warning.

    Raises:
        PermanentWarehouseError: As :func:`plan_source`.
    """
    plan, origin = _saved_or_new_plan(config, warehouse)
    surprise = plan.split_surprise()
    if surprise is not None:
        log.warning(surprise)
    return plan, origin


def _saved_or_new_plan(config: FaucetConfig, warehouse: Warehouse) -> tuple[Plan, PlanOrigin]:
    request = config.plan_request()
    version = data_version(warehouse, request.source)
    key = saved_plan_key(config, warehouse, version)
    if key is None:
        return plan_source(warehouse, request, version), "warehouse"
    plans = PlanCache(config.cache.dir)
    with plans.lock(key):
        plan = saved_plan(config, key, version)
        if plan is not None:
            log.info(
                "reusing the saved plan of %s (%s): the data has not changed",
                request.source.describe(),
                plan.fingerprint,
            )
            return plan, "cache"
        plan = plan_source(warehouse, request, version)
        plans.put(key, plan)
    return plan, "warehouse"
