"""The core's own commands, registered as a built-in plugin: plugins, validate, preview,
bench and cache."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.table import Table

from faucet_core.cache import ChunkCache
from faucet_core.cli import console, metrics_table, progress_bar, run_pass
from faucet_core.config import default_cache_dir
from faucet_core.hookspecs import hookimpl
from faucet_core.plugins import installed_plugins
from faucet_core.reader import Reader
from faucet_core.settings import load_config

F = TypeVar("F", bound=Callable[..., Any])


def _config_argument(function: F) -> F:
    return click.argument("config", type=click.Path(dir_okay=False, path_type=Path))(function)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins(as_json: bool) -> None:
    """List installed plugins: distribution, version, hooks and warehouses."""
    found = installed_plugins()
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(p) for p in found], indent=2))
        return
    table = Table("plugin", "distribution", "version", "hooks", "warehouses")
    for plugin in found:
        table.add_row(
            plugin.name,
            plugin.distribution or "-",
            plugin.version or "-",
            ", ".join(plugin.hooks),
            ", ".join(plugin.warehouses) or "-",
        )
    console.print(table)


@click.command()
@_config_argument
def validate(config: Path) -> None:
    """Check CONFIG against the core schema and its warehouse's connection schema."""
    settings = load_config(config)
    source = settings.source
    what = source.table or ("query" if source.query else f"{len(source.files or [])} files")
    click.echo(f"{config}: valid ({settings.datastore}, source {what})")


@click.command()
@_config_argument
@click.option("--rows", default=5, show_default=True, help="Rows of the batch to show.")
def preview(config: Path, rows: int) -> None:
    """Plan CONFIG and show its splits, chunks and the first rows of one batch."""
    with Reader.from_config(config, output="pandas", epochs=1) as reader:
        table = Table("split", "rows", "chunks", "batches per pass")
        for split in ("train", "eval"):
            table.add_row(
                split,
                f"{reader.rows(split):,}",
                str(len(reader.plan.chunks[split])),
                f"{reader.batches_per_epoch(split):,}",
            )
        console.print(table)
        for key, value in reader.plan.stats.items():
            console.print(f"{key}: {value}")
        split_eval = reader.rows("train") == 0
        if split_eval:
            reader.prep_for_eval()
        else:
            reader.prep_for_epoch()
        batch = reader.get_batch(eval=split_eval)
        if batch is None:
            console.print("the source has no rows")
            return
        console.print(f"first {rows} rows of a {'eval' if split_eval else 'train'} batch:")
        console.print(batch["features"].head(rows).to_string())
        if batch["labels"] is not None:
            console.print(batch["labels"].head(rows).to_string())


@click.command()
@_config_argument
@click.option("--epochs", type=int, help="Override the configured number of epochs.")
@click.option("--eval/--no-eval", "with_eval", default=True, show_default=True)
def bench(config: Path, epochs: int | None, with_eval: bool) -> None:
    """Stream CONFIG's epochs as fast as possible and report throughput."""
    overrides: dict[str, Any] = {"epochs": epochs} if epochs else {}
    with Reader.from_config(config, **overrides) as reader:
        passes = []
        with progress_bar() as progress:
            for _ in range(reader.config.epochs):
                passes.append(run_pass(reader, progress, eval=False))
                if with_eval and reader.rows("eval"):
                    passes.append(run_pass(reader, progress, eval=True))
        console.print(metrics_table(passes))


@click.group()
def cache() -> None:
    """Inspect or clear the local chunk cache."""


def _cache_dir(directory: Path | None, config: Path | None) -> Path:
    if directory is not None:
        return directory
    if config is not None:
        return load_config(config).cache.dir
    return default_cache_dir()


_cache_options = [
    click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path)),
    click.option("--config", type=click.Path(dir_okay=False, path_type=Path),
                 help="Use the cache folder of this reader config."),
]  # fmt: skip


def _with_cache_options(function: F) -> F:
    for option in reversed(_cache_options):
        function = option(function)
    return function


@cache.command("info")
@_with_cache_options
def cache_info(directory: Path | None, config: Path | None) -> None:
    """Show where the cache is and what it holds."""
    folder = _cache_dir(directory, config)
    if not folder.is_dir():
        click.echo(f"{folder}: empty (no cache folder yet)")
        return
    store = ChunkCache(folder)
    click.echo(f"{folder}: {len(store)} chunks, {store.total_bytes / 2**20:,.1f} MiB")


@cache.command("clear")
@_with_cache_options
@click.confirmation_option(prompt="Delete every cached chunk?")
def cache_clear(directory: Path | None, config: Path | None) -> None:
    """Delete every cached chunk."""
    folder = _cache_dir(directory, config)
    if not folder.is_dir():
        click.echo(f"{folder}: nothing to clear")
        return
    freed = ChunkCache(folder).clear()
    click.echo(f"{folder}: freed {freed / 2**20:,.1f} MiB")


@hookimpl
def register_commands(cli: click.Group) -> None:
    """Add the core's commands."""
    for command in (plugins, validate, preview, bench, cache):
        cli.add_command(command)
