"""Registers the PostgreSQL warehouse with Faucet (entry point ``faucet: postgres``)."""

from __future__ import annotations

from collections.abc import Callable

from faucet_core import Warehouse, hookimpl


@hookimpl
def register_warehouses(register: Callable[[type[Warehouse]], None]) -> None:
    """Provide the ``postgres`` datastore; the drivers are imported only when used."""
    from faucet_postgres.warehouse import PostgresWarehouse

    register(PostgresWarehouse)
