"""Registers the DuckDB warehouse with Faucet (entry point ``faucet: duckdb``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from faucet_core import Warehouse, hookimpl

if TYPE_CHECKING:
    import click


@hookimpl
def register_warehouses(register: Callable[[type[Warehouse]], None]) -> None:
    """Provide the ``duckdb`` datastore; DuckDB itself is imported only when used."""
    from faucet_duckdb.warehouse import DuckDBWarehouse

    register(DuckDBWarehouse)


@hookimpl
def register_commands(cli: click.Group) -> None:
    """Add ``faucet demo``, which trains a small model on a generated DuckDB table."""
    from faucet_duckdb.demo import demo

    cli.add_command(demo)
