"""The core's own commands: plugins, validate, preview, bench, fit and cache (added to the
command line by the built-in plugin :mod:`faucet_core.commands`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from faucet_core.cache import ChunkCache
from faucet_core.cli import console, metrics_table, progress_bar, run_pass
from faucet_core.config import FaucetConfig, default_cache_dir
from faucet_core.plan import Plan
from faucet_core.plan_cache import PlanCache
from faucet_core.planner import data_version, saved_plan, saved_plan_key
from faucet_core.plugins import installed_plugins
from faucet_core.preprocessing import PreprocessingConfig
from faucet_core.reader import Reader
from faucet_core.report import (
    batch_table,
    costs_table,
    facts_table,
    preprocessing_table,
    size,
    splits_table,
)
from faucet_core.scratch import ScratchWarehouse
from faucet_core.settings import load_config
from faucet_core.warehouse import PermanentWarehouseError, Warehouse

#: The CONFIG argument of the commands that read a reader config.
_config_argument = click.argument("config", type=click.Path(dir_okay=False, path_type=Path))


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


#: What each part of an estimate (:meth:`Warehouse.estimate`) scans for, where the copy is
#: made on a cache miss.
_SCANS = {
    "planning": "to plan",
    "materializing": "for the scratch copy (on the first chunk the cache lacks)",
}


def planning_costs(config: FaucetConfig, warehouse: Warehouse) -> tuple[list[str], Plan | None]:
    """What reading ``config`` will cost before its first batch: whether a saved plan
    fits, else what the warehouse estimates planning and its scratch copy will process,
    and what else it says (:meth:`Warehouse.cost_notes`). Returns those lines and the
    saved plan a reader would reuse now, if any."""
    request = config.plan_request()
    version = data_version(warehouse, request.source)
    key = saved_plan_key(config, warehouse, version)
    plan = saved_plan(config, key, version) if key is not None else None
    if plan is not None:
        lines = [f"plan: a saved plan fits this data ({plan.fingerprint}): planning runs no query"]
        location = warehouse.scratch_location(plan)
        if location:
            lines.append(f"scratch copy: {location} (made, if missing, on the first cache miss)")
        return [*lines, *warehouse.cost_notes(request, plan)], plan
    copies = isinstance(warehouse, ScratchWarehouse) and warehouse.copies_when_planning()
    planning = "makes the scratch copy and counts its rows" if copies else "runs one counting query"
    lines = [f"plan: none saved for this data; planning {planning}"]
    estimate = warehouse.estimate(request)
    if copies and "materializing" in estimate:
        lines.append(
            f"will scan {size(estimate['materializing'])} for the scratch copy, made while "
            "planning (its rows are then counted from it)"
        )
    elif estimate:
        scans = [f"{size(estimate[p])} {what}" for p, what in _SCANS.items() if p in estimate]
        lines.append(f"will scan {', and '.join(scans)}")
    if version is None and config.cache.plan_ttl is None:
        lines.append(
            "the source has no data version (a query): it is planned again on every run "
            "unless cache.plan_ttl allows reusing its plan"
        )
    return [*lines, *warehouse.cost_notes(request, None)], None


@click.command()
@_config_argument
@click.option(
    "--offline", is_flag=True, help="Check the config only; do not ask the warehouse anything."
)
def validate(config: Path, offline: bool) -> None:
    """Check CONFIG against the schemas, that the account can do what the run needs, and
    say what planning it will cost."""
    settings = load_config(config)
    source = settings.source
    what = source.table or ("query" if source.query else f"{len(source.files or [])} files")
    click.echo(f"{config}: valid ({settings.datastore}, source {what})")
    if offline:
        return
    warehouse = settings.warehouse_class(settings.connection)
    try:
        problems = warehouse.access_problems(settings.plan_request())
        if problems:
            for problem in problems:
                click.echo(f"missing: {problem}")
            raise PermanentWarehouseError(
                f"the account cannot do {len(problems)} thing(s) the run needs (above)"
            )
        if problems is not None:
            click.echo("access: the account can do everything the run needs")
        lines, plan = planning_costs(settings, warehouse)
    finally:
        warehouse.close()
    for line in lines:
        click.echo(line)
    if plan is not None:
        _warn_of_surprises(plan)


@click.command()
@_config_argument
@click.option("--rows", default=5, show_default=True, help="Rows of the batch to show.")
def preview(config: Path, rows: int) -> None:
    """Plan CONFIG and report its splits, costs, plan and preprocessing, and one batch."""
    settings = load_config(config, output="pandas", epochs=1)
    warehouse = settings.warehouse_class(settings.connection)
    try:
        costs, _ = planning_costs(settings, warehouse)
    finally:
        warehouse.close()
    for line in costs:
        console.print(line)
    with Reader(settings) as reader:
        plan = reader.plan
        console.print(splits_table(reader))
        _warn_of_surprises(plan)
        console.print(costs_table(reader.costs, reader.plan_origin == "cache"))
        facts = {k: v for k, v in {**plan.stats, **plan.state}.items() if k != "rows"}
        if facts:
            console.print(facts_table(facts))
        if reader.preprocessor is not None:
            console.print(preprocessing_table(reader.preprocessor))
        split_eval = reader.rows("train") == 0
        if split_eval:
            reader.prep_for_eval()
        else:
            reader.prep_for_epoch()
        batch = reader.get_batch(eval=split_eval)
        if batch is None:
            console.print("the source has no rows: no batch to show")
            return
        import pandas as pd  # output: pandas, so already imported by the reader

        features = batch["features"]
        if isinstance(features, dict):  # input groups: their columns as group.column
            features = pd.concat([f.add_prefix(f"{g}.") for g, f in features.items()], axis=1)
        frames = [batch["labels"], features] if batch["labels"] is not None else []
        frame = pd.concat(frames or [features], axis=1).head(rows)
        table, hidden = batch_table(frame, console.width)
        console.print(
            f"first {len(frame)} rows of a {'eval' if split_eval else 'train'} batch "
            f"({len(features.columns)} features):"
        )
        console.print(table)
        if hidden:
            console.print(f"and {hidden} more columns, beyond the terminal's width")


def _warn_of_surprises(plan: Plan) -> None:
    surprise = plan.split_surprise()
    if surprise is not None:
        console.print(Text(f"warning: {surprise}", style="yellow"))


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
        spent = reader.costs
        console.print(
            f"warehouse: {spent.query_jobs} query jobs, {size(spent.bytes_billed)} billed, "
            f"{size(spent.bytes_read)} read by other means; plan: {reader.plan_origin}"
        )


@click.command()
@_config_argument
@click.option(
    "-o", "--output", "spec", type=click.Path(dir_okay=False, path_type=Path),
    help="Save the fitted preprocessor here (JSON), for readers and serving.",
)  # fmt: skip
def fit(config: Path, spec: Path | None) -> None:
    """Fit CONFIG's preprocessing on its train split and show what it decided per column.

    Without a ``preprocessing`` section, fits ``auto`` preprocessing of every feature.
    """
    settings = load_config(config)
    if not settings.preprocessing.enabled:
        auto = PreprocessingConfig(auto=True)
        settings = settings.model_copy(update={"preprocessing": auto})
        console.print("no preprocessing section: fitting `auto: true`")
    with Reader(settings) as reader:
        preprocessor = reader.preprocessor
        assert preprocessor is not None  # enabled above
        table = preprocessing_table(preprocessor)
        console.print(table)
        fitted = preprocessor.fitted_on
        console.print(
            f"{len(preprocessor.feature_names)} features, fitted on {fitted.get('rows', 0):,} "
            f"train rows ({fitted.get('query_jobs', 0)} query jobs, "
            f"{size(int(fitted.get('bytes_billed', 0)))} billed)"
        )
        if spec is not None:
            preprocessor.save(spec)
            console.print(f"saved to {spec}")


@click.group()
def cache() -> None:
    """Inspect or clear the local chunk cache."""


def _cache_dir(directory: Path | None, config: Path | None) -> Path:
    if directory is not None:
        return directory
    if config is not None:
        return load_config(config).cache.dir
    return default_cache_dir()


#: The options of the cache commands: the cache folder, given or a reader config's.
_cache_dir_option = click.option(
    "--dir", "directory", type=click.Path(file_okay=False, path_type=Path)
)
_cache_config_option = click.option(
    "--config", type=click.Path(dir_okay=False, path_type=Path),
    help="Use the cache folder of this reader config.",
)  # fmt: skip


@cache.command("info")
@_cache_dir_option
@_cache_config_option
def cache_info(directory: Path | None, config: Path | None) -> None:
    """Show where the cache is and what it holds."""
    folder = _cache_dir(directory, config)
    if not folder.is_dir():
        click.echo(f"{folder}: empty (no cache folder yet)")
        return
    store = ChunkCache(folder)
    plans, preprocessors = PlanCache(folder).count()
    click.echo(
        f"{folder}: {len(store)} chunks, {store.total_bytes / 2**20:,.1f} MiB; {plans} saved "
        f"plans, {preprocessors} fitted preprocessors"
    )


@cache.command("clear")
@_cache_dir_option
@_cache_config_option
@click.confirmation_option(prompt="Delete every cached chunk and saved plan?")
def cache_clear(directory: Path | None, config: Path | None) -> None:
    """Delete every cached chunk and saved plan."""
    folder = _cache_dir(directory, config)
    if not folder.is_dir():
        click.echo(f"{folder}: nothing to clear")
        return
    freed = ChunkCache(folder).clear() + PlanCache(folder).clear()
    click.echo(f"{folder}: freed {freed / 2**20:,.1f} MiB")


#: The commands, in the order the command line lists them.
COMMANDS: tuple[click.Command, ...] = (plugins, validate, preview, bench, fit, cache)
