"""Planning a source: ask the warehouse for its version and bucket counts, cut the chunks."""

from __future__ import annotations

import logging
import time

from faucet_core.plan import Plan, make_plan
from faucet_core.warehouse import PermanentWarehouseError, PlanRequest, Warehouse, WarehouseError

__all__ = ["plan_source"]

log = logging.getLogger("faucet")


def plan_source(warehouse: Warehouse, request: PlanRequest) -> Plan:
    """Plan ``request`` on ``warehouse``: one cheap version lookup and one counting query.

    Raises:
        PermanentWarehouseError: The source, a column or the split key does not exist,
            ``ds`` selects no rows, or the warehouse failed with an error of its own type.
        TransientWarehouseError: A failure worth trying again later.
    """
    started = time.perf_counter()
    try:
        version = warehouse.data_version(request.source)
        counted = warehouse.count_buckets(request)
    except WarehouseError:
        raise
    except Exception as exc:  # a plugin's own error type: retrying will not help
        raise PermanentWarehouseError(
            f"{warehouse.name} cannot plan {request.source.describe()}: {exc}"
        ) from exc
    plan = make_plan(warehouse.name, request, counted, version)
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
