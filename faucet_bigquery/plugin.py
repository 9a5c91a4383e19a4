"""Registers the BigQuery warehouse with Faucet (entry point ``faucet: bigquery``)."""

from __future__ import annotations

from collections.abc import Callable

from faucet_core import Warehouse, hookimpl


@hookimpl
def register_warehouses(register: Callable[[type[Warehouse]], None]) -> None:
    """Provide the ``bigquery`` datastore; Google's libraries are imported only when used."""
    from faucet_bigquery.warehouse import BigQueryWarehouse

    register(BigQueryWarehouse)
