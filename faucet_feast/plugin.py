"""Registers the Feast warehouse with Faucet (entry point ``faucet: feast``)."""

from __future__ import annotations

from collections.abc import Callable

from faucet_core import Warehouse, hookimpl


@hookimpl
def register_warehouses(register: Callable[[type[Warehouse]], None]) -> None:
    """Provide the ``feast`` datastore; Feast itself is imported only when a source is read."""
    from faucet_feast.warehouse import FeastWarehouse

    register(FeastWarehouse)
