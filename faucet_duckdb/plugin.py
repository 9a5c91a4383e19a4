"""Registers the DuckDB warehouse with Faucet (entry point ``faucet: duckdb``)."""

from __future__ import annotations

from collections.abc import Callable

from faucet_core import Warehouse, hookimpl


@hookimpl
def register_warehouses(register: Callable[[type[Warehouse]], None]) -> None:
    """Provide the ``duckdb`` datastore; DuckDB itself is imported only when used."""
    from faucet_duckdb.warehouse import DuckDBWarehouse

    register(DuckDBWarehouse)
