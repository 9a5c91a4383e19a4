"""Registers the Redshift warehouse with Faucet (entry point ``faucet: redshift``)."""

from __future__ import annotations

from collections.abc import Callable

from faucet_core import Warehouse, hookimpl


@hookimpl
def register_warehouses(register: Callable[[type[Warehouse]], None]) -> None:
    """Provide the ``redshift`` datastore; the drivers are imported only when used."""
    from faucet_postgres.redshift import RedshiftWarehouse

    register(RedshiftWarehouse)
