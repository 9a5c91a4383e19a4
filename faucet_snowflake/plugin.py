"""Registers the Snowflake warehouse with Faucet (entry point ``faucet: snowflake``)."""

from __future__ import annotations

from collections.abc import Callable

from faucet_core import Warehouse, hookimpl


@hookimpl
def register_warehouses(register: Callable[[type[Warehouse]], None]) -> None:
    """Provide the ``snowflake`` datastore; the connector is imported only when used."""
    from faucet_snowflake.warehouse import SnowflakeWarehouse

    register(SnowflakeWarehouse)
