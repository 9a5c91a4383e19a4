"""The core's own commands, registered as a built-in plugin. The commands' module, with the
command-line libraries it needs, loads when the command line asks for commands, not when
a reader loads its plugins."""

from __future__ import annotations

from typing import TYPE_CHECKING

from faucet_core.hookspecs import hookimpl

if TYPE_CHECKING:
    import click


@hookimpl
def register_commands(cli: click.Group) -> None:
    """Add the core's commands (:mod:`faucet_core.core_commands`)."""
    from faucet_core.core_commands import COMMANDS

    for command in COMMANDS:
        cli.add_command(command)
