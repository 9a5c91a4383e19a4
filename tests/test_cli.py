"""The ``faucet`` command line, run through click's runner and as the installed script."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner
from rich.console import Console

from faucet_core import Reader
from faucet_core.cli import _print_error, cli, console, metrics_table, progress_bar, run_pass
from faucet_core.errors import ConfigError
from faucet_core.hookspecs import hookimpl
from faucet_core.plan import Plan
from faucet_core.scratch import ScratchWarehouse
from faucet_core.stream import PassMetrics
from faucet_core.warehouse import PlanRequest, SourceSpec, Warehouse
from faucet_duckdb import DuckDBWarehouse
from tests.conftest import cells


@pytest.fixture
def config(tmp_path: Path, table_path: Path) -> Path:
    path = tmp_path / "faucet.yaml"
    settings = {
        "datastore": "duckdb",
        "connection": {"database": str(table_path)},
        "source": {"table": "t", "split_key": "id", "label_columns": ["label"]},
        "epochs": 2,
        "batch_size": 500,
        "chunk_size": 2_000,
        "test_split_percent": 20,
        "seed": 3,
        "cache": {"dir": str(tmp_path / "cache")},
    }
    path.write_text(yaml.safe_dump(settings))
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_the_installed_script_lists_plugins_as_json() -> None:
    env = {k: v for k, v in os.environ.items() if k != "FAUCET_DISABLE_PLUGIN_AUTOLOAD"}
    output = subprocess.run(
        [Path(sys.executable).with_name("faucet"), "plugins", "--json"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    plugins = {p["name"]: p for p in json.loads(output)}
    duckdb = next(p for p in plugins.values() if "duckdb" in p["warehouses"])
    assert duckdb["distribution"] == "faucetml"
    assert {"register_warehouses", "register_commands"} <= set(duckdb["hooks"])


def test_validate_accepts_a_good_config_and_says_what_planning_costs(config: Path) -> None:
    code, out, _ = run("validate", str(config))
    assert code == 0
    assert "valid (duckdb, source t)" in out
    assert "plan: none saved for this data" in out
    assert run("bench", str(config), "--epochs", "1", "--no-eval")[0] == 0
    code, out, _ = run("validate", str(config))
    assert "plan: a saved plan fits this data" in out
    assert "scratch copy" not in out  # DuckDB does not say where


def test_validate_prints_every_problem_on_its_own_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'datastore = "duckdb"\nbatch_size = 0\nsurprise = 1\n'
        '[connection]\ndatabase = "/no/such.duckdb"\n[source]\n'
    )
    code, _, err = run("validate", str(bad))
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 4
    assert all(line.startswith(f"error: {bad}: ") for line in lines)
    joined = "\n".join(lines)
    for path in ("batch_size:", "surprise:", "connection.database:", "source:"):
        assert path in joined
    assert "Traceback" not in err


def test_errors_are_one_line_unless_debug(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    code, _, err = run("validate", str(missing))
    assert code == 1
    assert err.count("\n") == 1 and str(missing) in err
    result = CliRunner().invoke(cli, ["--debug", "validate", str(missing)])
    assert result.exit_code == 1
    # raised as it is, with its traceback, under --debug (not a one-line exit)
    assert isinstance(result.exception, ConfigError) and str(missing) in str(result.exception)


def _table_rows(out: str) -> list[list[str]]:
    """The cells of every table row printed (rich's box drawing)."""
    return [
        [cell.strip() for cell in line.strip("│┃ ").split("│" if "│" in line else "┃")]
        for line in out.splitlines()
        if line.startswith(("│", "┃"))
    ]


def test_preview_reports_splits_costs_preprocessing_and_a_batch_as_tables(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console, "width", 200)
    with Reader.from_config(config) as reader:
        train, eval_ = reader.rows("train"), reader.rows("eval")
    text = config.read_text() + "preprocessing: {auto: true, exclude: [id]}\n"
    config.write_text(text)
    code, out, _ = run("preview", str(config), "--rows", "3")
    assert code == 0, out
    rows = _table_rows(out)
    assert ["split", "rows", "share", "asked", "chunks", "rows per chunk", "batches"] in rows
    total = train + eval_
    assert ["eval", f"{eval_:,}", f"{eval_ / total:.1%}", "20.0%"] == rows[
        rows.index(["split", "rows", "share", "asked", "chunks", "rows per chunk", "batches"]) + 2
    ][:4]
    assert ["a saved plan", "0", "0 bytes", "0 bytes"] in rows
    assert any(row[:2] == ["x2", "numeric"] for row in rows)  # the preprocessing
    assert "first 3 rows of a train batch" in out
    header = next(row for row in rows if row[:2] == ["label", "id"])
    batch = rows[rows.index(header) + 1 : rows.index(header) + 4]
    assert len(batch) == 3 and all(len(row) == len(header) for row in batch)
    assert "{" not in out  # no Python dicts
    assert "warning" not in out


def test_preview_shows_input_groups_as_group_columns(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console, "width", 200)
    config.write_text(config.read_text().replace(
        "split_key: id", "split_key: id\n  inputs: {a: [x1, x2], b: [id]}"
    ))  # fmt: skip
    code, out, _ = run("preview", str(config), "--rows", "2")
    assert code == 0, out
    rows = _table_rows(out[out.index("first 2 rows") :])
    assert rows[0] == ["label", "a.x1", "a.x2", "b.id"]
    assert "(3 features)" in out


def test_the_batch_preview_fits_the_terminal(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "width", 30)
    code, out, _ = run("preview", str(config), "--rows", "2")
    assert code == 0, out
    batch = out[out.index("first 2 rows") :]
    assert max(len(line) for line in batch.splitlines()) <= 30
    assert "and 2 more columns, beyond the terminal's width" in " ".join(batch.split())


def test_preview_and_validate_warn_of_a_split_that_strays(config: Path) -> None:
    config.write_text(config.read_text().replace("split_key: id", "split_key: label"))
    code, out, _ = run("validate", str(config))
    assert code == 0 and "warning" not in out  # nothing planned yet: nothing known
    code, out, _ = run("preview", str(config))
    assert code == 0, out
    flat = " ".join(out.split())
    assert "warning: the split is not as asked" in flat or "split is empty" in flat
    assert "The split key (label)" in flat
    code, out, _ = run("validate", str(config))  # a saved plan now tells the shares
    assert "warning:" in out and "The split key (label)" in " ".join(out.split())


def test_bench_reports_cache_use(config: Path) -> None:
    code, out, _ = run("bench", str(config))
    assert code == 0, out
    rows = [line for line in out.splitlines() if " train " in line and "│" in line]
    assert len(rows) == 2
    fetched_cached = [line.split("│")[-3:-1] for line in rows]
    assert [(f.strip() != "0", c.strip() != "0") for f, c in fetched_cached] == [
        (True, False),
        (False, True),
    ]


def test_cache_info_and_clear(config: Path, tmp_path: Path) -> None:
    assert run("bench", str(config), "--epochs", "1", "--no-eval")[0] == 0
    code, out, _ = run("cache", "info", "--config", str(config))
    assert code == 0
    # One scan of the source cached every chunk, the eval chunk too.
    assert f"{tmp_path / 'cache'}: 4 chunks" in out and "1 saved plans, 0 fitted" in out
    preprocessing = {"auto": True, "exclude": ["id"]}
    with Reader.from_config(config, preprocessing=preprocessing) as reader:
        assert reader.plan_origin == "cache" and reader.preprocessor is not None
    out = run("cache", "info", "--config", str(config))[1]
    assert "1 saved plans, 1 fitted preprocessors" in out  # a preprocessor is no plan
    code, out, _ = run("cache", "clear", "--dir", str(tmp_path / "cache"), "--yes")
    assert code == 0 and "freed" in out
    assert "0 chunks" in run("cache", "info", "--dir", str(tmp_path / "cache"))[1]
    assert "0 saved plans" in run("cache", "info", "--dir", str(tmp_path / "cache"))[1]


def test_demo_trains_a_model(tmp_path: Path) -> None:
    code, out, _ = run("demo", "--rows", "20000", "--dir", str(tmp_path / "demo"))
    assert code == 0, out
    accuracy = [float(line.rsplit(" ", 1)[1]) for line in out.splitlines() if "accuracy" in line]
    assert len(accuracy) == 2
    assert accuracy[-1] > 0.8  # the label is a noisy linear function of the features
    assert (tmp_path / "demo" / "faucet-demo.yaml").is_file()
    assert "cache" in out and "hits" in out


def test_the_example_config_is_valid(monkeypatch: pytest.MonkeyPatch, table_path: Path) -> None:
    monkeypatch.setenv("FAUCET_EXAMPLE_DATABASE", str(table_path))
    example = Path(__file__).parents[1] / "examples" / "duckdb.yaml"
    code, _, err = run("validate", str(example))
    assert code == 0, err


def test_the_bigquery_example_config_is_valid(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key = tmp_path / "key.json"
    key.write_text('{"type": "service_account"}')
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    example = Path(__file__).parents[1] / "examples" / "bigquery.yaml"
    code, out, err = run("validate", "--offline", str(example))
    assert code == 0, err
    assert "valid (bigquery, source my-project.analytics.training_events)" in out


def test_fit_shows_its_decisions_and_saves_them(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console, "width", 200)  # one line per column
    spec = tmp_path / "spec.json"
    code, out, err = run("fit", str(config), "-o", str(spec))
    assert code == 0, err
    assert "no preprocessing section: fitting `auto: true`" in out
    assert "name" in out and "onehot of 20 categories" in out  # 5,000 names: the top 20
    assert "rarer values share the __other__ slot" in out
    assert "x1" in out and "standard" in out
    from faucet_core import Preprocessor

    assert "x1" in Preprocessor.load(spec).feature_names


@pytest.mark.parametrize("eval", [False, True])
def test_a_pass_with_a_progress_bar_counts_every_batch(config: Path, eval: bool) -> None:
    split = "eval" if eval else "train"
    progress = progress_bar()  # not started: nothing drawn, the tasks still counted
    with Reader.from_config(config) as reader:
        if eval:
            run_pass(reader, progress, eval=False)  # eval follows an epoch, as in bench
        started = time.perf_counter()
        metrics, first = run_pass(reader, progress, eval=eval)
        elapsed = time.perf_counter() - started
        batches = reader.batches_per_epoch(split)
    task = progress.tasks[-1]
    assert task.description == f"epoch 1 {split}"
    assert task.total == task.completed == batches
    assert re.fullmatch(r"[1-9][\d,]* rows/s", task.fields["rate"])
    assert (metrics.split, metrics.rows) == (split, reader.rows(split))
    assert 0 < first <= elapsed  # the time to the first batch, within the pass


def test_the_metrics_table_has_a_row_per_pass() -> None:
    passes = [
        (PassMetrics("train", 1, rows=12_345, chunks_fetched=3, wait_seconds=0.257,
                     elapsed_seconds=2.0), 0.1234),
        (PassMetrics("eval", 1, rows=10, chunks_cached=2), 0.0),
    ]  # fmt: skip
    assert cells(metrics_table(passes)) == [
        ["epoch", "split", "rows", "rows/s", "first batch", "waited", "fetched", "cached"],
        ["1", "train", "12,345", "6,172", "0.123s", "0.26s", "3", "0"],
        ["1", "eval", "10", "0", "0.000s", "0.00s", "0", "2"],
    ]


def test_the_progress_bar_shows_the_pass_its_count_rate_and_times() -> None:
    progress = progress_bar()
    assert progress.console is console and not progress.live.transient
    progress.add_task("epoch 2 train", total=40, rate="1,234 rows/s", completed=10)
    recorded = Console(width=120, record=True)
    recorded.print(progress.make_tasks_table(progress.tasks))
    line = recorded.export_text().strip()
    assert re.fullmatch(
        r"epoch 2 train\s+\S+\s+10/40\s+1,234 rows/s\s+\d:\d\d:\d\d\s+(-:--:--|\d:\d\d:\d\d)", line
    ), line


def test_an_error_without_a_file_or_a_field_is_one_plain_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _print_error(ConfigError([("", "the file must hold a mapping"), ("epochs", "required")]))
    assert capsys.readouterr().err.splitlines() == [
        "error: the file must hold a mapping",
        "error: epochs: required",
    ]


class _ScratchSaying(DuckDBWarehouse):
    name = "scratch-saying"

    def scratch_location(self, plan: Plan) -> str | None:
        return f"scratch.t_{plan.fingerprint[:8]}"


def test_validate_names_the_scratch_copy_a_saved_plan_reads(
    config: Path, register: Callable[[object], None]
) -> None:
    _use_test_warehouse(config, _ScratchSaying, register)
    assert "scratch copy" not in run("validate", str(config))[1]  # no plan: no copy yet
    with Reader.from_config(config) as reader:
        fingerprint = reader.plan.fingerprint
    out = run("validate", str(config))[1]
    assert (
        f"scratch copy: scratch.t_{fingerprint[:8]} (made, if missing, on the first cache miss)"
        in out
    )


def test_validate_says_when_a_source_is_planned_on_every_run(config: Path) -> None:
    settings = yaml.safe_load(config.read_text())
    _, out, _ = run("validate", str(config))
    assert "no data version" not in out  # a DuckDB table has one
    # A query of an in-memory database: no file whose changes would version it.
    settings["connection"] = {}
    query = "SELECT range AS id, range % 2 AS label FROM range(1000)"
    settings["source"] = {**settings["source"], "table": None, "query": query}
    config.write_text(yaml.safe_dump(settings))
    _, out, _ = run("validate", str(config))
    assert (
        "the source has no data version (a query): it is planned again on every run unless "
        "cache.plan_ttl allows reusing its plan"
    ) in out.splitlines()
    settings["cache"]["plan_ttl"] = "1h"
    config.write_text(yaml.safe_dump(settings))
    _, out, _ = run("validate", str(config))
    assert "no data version" not in out


class _Greeter:
    """A plugin adding a ``hello`` command, counting how often it is asked for commands."""

    def __init__(self) -> None:
        self.asked = 0

    @hookimpl
    def register_commands(self, cli: click.Group) -> None:
        self.asked += 1

        @cli.command("hello")
        def hello() -> None:
            click.echo("hello from a plugin")


def test_a_plugin_registered_later_adds_its_command_once(
    register: Callable[[object], None],
) -> None:
    """Commands of a plugin registered after the group was first used are found by name,
    and the plugin is asked for them once, however many commands run."""
    assert run("--help")[0] == 0  # the plugins registered so far have been asked
    greeter = _Greeter()
    register(greeter)
    try:
        assert run("hello") == (0, "hello from a plugin\n", "")
        assert run("hello")[1] == "hello from a plugin\n"
        assert "hello" in run("--help")[1]
        assert run("validate", "--help")[0] == 0
        assert greeter.asked == 1
    finally:
        cli.commands.pop("hello", None)


def test_a_pass_over_an_empty_split_shows_no_rate_and_no_time_to_a_first_batch(
    config: Path,
) -> None:
    progress = progress_bar()
    with Reader.from_config(config, test_split_percent=0) as reader:
        run_pass(reader, progress, eval=False)
        metrics, first = run_pass(reader, progress, eval=True)
    assert (metrics.split, metrics.rows) == ("eval", 0)
    task = progress.tasks[-1]
    assert (task.description, task.total, task.completed) == ("epoch 1 eval", 0, 0)
    assert task.fields["rate"] == ""
    assert first == 0.0
    assert cells(metrics_table([(metrics, first)]))[1][4] == "0.000s"
    recorded = Console(width=120, record=True)
    recorded.print(progress.make_tasks_table([task]))
    line = recorded.export_text().strip()
    assert re.fullmatch(r"epoch 1 eval\s+\S+\s+0/0\s+\d:\d\d:\d\d\s+\S+", line), line


class _NoteTaking(DuckDBWarehouse):
    """DuckDB, saying in its cost notes which saved plan a reader would reuse."""

    name = "note-taking"

    def cost_notes(self, request: PlanRequest, plan: Plan | None) -> list[str]:
        table = request.source.table
        return [f"note: {table} reuses plan {plan.fingerprint}" if plan else f"note: plans {table}"]


class _CopyingWhilePlanning(DuckDBWarehouse, ScratchWarehouse):
    """DuckDB, said to make a scratch copy while planning (as server warehouses do)."""

    name = "copying-while-planning"

    def copies_when_planning(self) -> bool:
        return True

    def estimate(self, request: PlanRequest) -> dict[str, int]:
        planning, copying = {"t": (2**20, 3 * 2**20)}[request.source.table]  # its tables' sizes
        return {"planning": planning, "materializing": copying}

    def scratch_reference(self, name: str) -> str:
        raise NotImplementedError

    def scratch_exists(self, name: str) -> bool:
        raise NotImplementedError

    def create_scratch(self, source: SourceSpec, name: str, rows: str, params: Any) -> None:
        raise NotImplementedError

    def drop_scratch(self, name: str) -> None:
        raise NotImplementedError


class _CopyingOnFirstMiss(_CopyingWhilePlanning):
    """DuckDB, said to make its scratch copy on the first chunk the cache lacks."""

    name = "copying-on-first-miss"

    def copies_when_planning(self) -> bool:
        return False


class _EstimatingPlanning(_CopyingOnFirstMiss):
    """DuckDB, estimating its counting query only."""

    name = "estimating-planning"

    def estimate(self, request: PlanRequest) -> dict[str, int]:
        return {"planning": 2**20}


class _TestWarehouses:
    @hookimpl
    def register_warehouses(self, register: Callable[[type[Warehouse]], None]) -> None:
        for warehouse in (
            _ScratchSaying, _NoteTaking, _CopyingWhilePlanning, _CopyingOnFirstMiss,
            _EstimatingPlanning,
        ):  # fmt: skip
            register(warehouse)


def _use_test_warehouse(
    config: Path, warehouse: type[Warehouse], register: Callable[[object], None]
) -> None:
    """Make the config file ``config`` read its table through ``warehouse``."""
    register(_TestWarehouses())
    text = config.read_text().replace("datastore: duckdb", f"datastore: {warehouse.name}")
    config.write_text(text)


def test_validate_shows_the_warehouse_notes_on_the_saved_plan_it_would_reuse(
    config: Path, register: Callable[[object], None]
) -> None:
    _use_test_warehouse(config, _NoteTaking, register)
    out = run("validate", str(config))[1]
    assert "note: plans t" in out.splitlines()
    with Reader.from_config(config) as reader:
        fingerprint = reader.plan.fingerprint
    out = run("validate", str(config))[1]
    assert f"plan: a saved plan fits this data ({fingerprint}): planning runs no query" in out
    assert f"note: t reuses plan {fingerprint}" in out.splitlines()


def test_validate_says_whether_planning_counts_the_source_or_makes_a_scratch_copy(
    config: Path, register: Callable[[object], None]
) -> None:
    out = run("validate", str(config))[1]
    assert "plan: none saved for this data; planning runs one counting query" in out.splitlines()
    _use_test_warehouse(config, _CopyingWhilePlanning, register)
    code, out, err = run("validate", str(config))
    assert code == 0, err
    assert out.splitlines()[-2:] == [
        "plan: none saved for this data; planning makes the scratch copy and counts its rows",
        "will scan 3.0 MiB for the scratch copy, made while planning (its rows are then "
        "counted from it)",
    ]


def test_validate_says_what_planning_and_a_later_scratch_copy_will_scan(
    config: Path, register: Callable[[object], None]
) -> None:
    _use_test_warehouse(config, _CopyingOnFirstMiss, register)
    code, out, err = run("validate", str(config))
    assert code == 0, err
    assert out.splitlines()[-2:] == [
        "plan: none saved for this data; planning runs one counting query",
        "will scan 1.0 MiB to plan, and 3.0 MiB for the scratch copy (on the first chunk the "
        "cache lacks)",
    ]


def test_validate_says_only_what_the_warehouse_estimates(
    config: Path, register: Callable[[object], None]
) -> None:
    _use_test_warehouse(config, _EstimatingPlanning, register)
    code, out, err = run("validate", str(config))
    assert code == 0, err
    assert out.splitlines()[-2:] == [
        "plan: none saved for this data; planning runs one counting query",
        "will scan 1.0 MiB to plan",
    ]


def test_a_saved_plan_of_a_table_that_did_not_change_fits_whatever_its_age(
    config: Path,
) -> None:
    """plan_ttl limits the reuse of plans of sources without a data version only."""
    settings = yaml.safe_load(config.read_text())
    settings["cache"]["plan_ttl"] = 0
    config.write_text(yaml.safe_dump(settings))
    with Reader.from_config(config) as reader:
        fingerprint = reader.plan.fingerprint
    out = run("validate", str(config))[1]
    assert f"plan: a saved plan fits this data ({fingerprint})" in out
    out = run("preview", str(config))[1]
    assert f"plan: a saved plan fits this data ({fingerprint})" in " ".join(out.split())


def test_validate_reuses_no_saved_plan_when_plans_are_not_saved(
    config: Path, tmp_path: Path
) -> None:
    """With the cache off, no plan is saved or reused: validate looks for none, whatever
    the plans folder holds (a plan filed under the name "None", here)."""
    with Reader.from_config(config):
        pass
    (saved,) = (tmp_path / "cache" / "plans").glob("*.json")
    saved.rename(saved.with_name("None.json"))
    settings = yaml.safe_load(config.read_text())
    settings["cache"]["enabled"] = False
    config.write_text(yaml.safe_dump(settings))
    code, out, err = run("validate", str(config))
    assert code == 0, err
    assert "plan: none saved for this data; planning runs one counting query" in out.splitlines()


def test_the_warning_of_a_split_that_strays_stands_out_in_yellow(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config.write_text(config.read_text().replace("split_key: id", "split_key: label"))
    monkeypatch.setattr(console, "record", True)
    code, out, _ = run("preview", str(config))
    assert code == 0, out
    printed = console.export_text(styles=True)
    assert "\x1b[33mwarning: " in printed
