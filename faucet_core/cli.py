"""The ``faucet`` command group, its error display and progress style.

Every command comes from a plugin's ``register_commands`` hook: the core's own
(``plugins``, ``validate``, ``preview``, ``bench``, ``fit``, ``cache``) from its
built-in plugin :mod:`faucet_core.commands`, others from installed plugins. The group
asks plugins for their commands when it is first used, so commands of plugins
registered later (in tests) appear too.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from faucet_core.errors import ConfigError, FaucetError
from faucet_core.plugins import load_plugins, pm
from faucet_core.reader import Reader
from faucet_core.stream import PassMetrics
from faucet_core.warehouse import SplitName, WarehouseError

__all__ = [
    "add_plugin_commands",
    "cli",
    "console",
    "main",
    "metrics_table",
    "progress_bar",
    "run_pass",
]

#: Where the commands print.
console = Console()


class _Cli(click.Group):
    """Adds plugin commands on first use; prints user errors as one line each."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        add_plugin_commands(self)
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        add_plugin_commands(self)
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (FaucetError, WarehouseError, OSError) as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            _print_error(exc)
            sys.exit(1)


def _print_error(exc: BaseException) -> None:
    if isinstance(exc, ConfigError):
        where = f"{exc.origin}: " if exc.origin else ""
        for path, message in exc.problems:
            click.echo(f"error: {where}{path + ': ' if path else ''}{message}", err=True)
    else:
        first, *_ = str(exc).splitlines() or [type(exc).__name__]
        click.echo(f"error: {first}", err=True)


@click.group(cls=_Cli)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="faucetml")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Faucet: shuffled mini-batches streamed out of data warehouses."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def progress_bar() -> Progress:
    """The progress bar style of the ``faucet`` commands."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def run_pass(reader: Reader, progress: Progress, eval: bool) -> tuple[PassMetrics, float]:
    """Serve one pass with a progress bar; returns its metrics and time to first batch."""
    split: SplitName = "eval" if eval else "train"
    if eval:
        reader.prep_for_eval()
    else:
        reader.prep_for_epoch()
    total = reader.batches_per_epoch(split)
    task = progress.add_task(f"epoch {reader.epoch} {split}", total=total, rate="")
    started = time.perf_counter()
    first = 0.0
    while (batch := reader.get_batch(eval=eval)) is not None:
        if not first:
            first = time.perf_counter() - started
        metrics = reader.metrics[-1]
        progress.update(task, advance=1, rate=f"{metrics.rows_per_second:,.0f} rows/s")
        del batch
    return reader.metrics[-1], first


def metrics_table(passes: list[tuple[PassMetrics, float]]) -> Table:
    """A table of pass metrics: throughput, first batch, waits, chunk sources."""
    table = Table("epoch", "split", "rows", "rows/s", "first batch", "waited", "fetched", "cached")
    for metrics, first in passes:
        table.add_row(
            str(metrics.epoch),
            metrics.split,
            f"{metrics.rows:,}",
            f"{metrics.rows_per_second:,.0f}",
            f"{first:.3f}s",
            f"{metrics.wait_seconds:.2f}s",
            str(metrics.chunks_fetched),
            str(metrics.chunks_cached),
        )
    return table


_registered: list[object] = []
_registered_lock = threading.Lock()


def add_plugin_commands(group: click.Group) -> None:
    """Let every plugin not asked yet add its commands to ``group`` (``register_commands``)."""
    load_plugins()
    with _registered_lock:
        done = [p for p in pm.get_plugins() if any(p is seen for seen in _registered)]
        pending = [p for p in pm.get_plugins() if not any(p is seen for seen in done)]
        if pending:
            pm.subset_hook_caller("register_commands", remove_plugins=done)(cli=group)
            _registered.extend(pending)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``faucet`` console script."""
    cli.main(args=argv, prog_name="faucet")
