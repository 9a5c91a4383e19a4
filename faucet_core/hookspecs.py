"""Hook specifications of Faucet's plugin system (specs only).

Plugins implement these with :data:`faucet_core.hookimpl` and are found through the
``faucet`` entry-point group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from faucet_core.warehouse import Warehouse

__all__ = ["hookimpl", "hookspec", "register_commands", "register_warehouses"]

hookspec = pluggy.HookspecMarker("faucet")
hookimpl = pluggy.HookimplMarker("faucet")


@hookspec
def register_warehouses(register: Callable[[type[Warehouse]], None]) -> None:
    """Register warehouse classes.

    :param register: Call it once per :class:`~faucet_core.warehouse.Warehouse` subclass the
        plugin provides. The class's ``name`` is the ``datastore`` value users write and its
        ``connection_model`` validates the ``connection:`` section of their config.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``faucet`` command line.

    :param cli: The root :class:`click.Group`; decorate new commands with ``@cli.command()``.
    """
