"""The plugin manager: entry points, built-in plugins, registration rules, listing."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pluggy
import pytest
from click.testing import CliRunner

from faucet_core import (
    UnknownDatastore,
    Warehouse,
    hookimpl,
    hookspecs,
    installed_plugins,
    plugins,
    warehouses,
)
from faucet_core.cli import cli, console
from faucet_core.plugins import get_warehouse_class, pm
from faucet_duckdb import DuckDBWarehouse

PLUGIN = """
from faucet_core import hookimpl
from faucet_duckdb import DuckDBWarehouse

class OtherDuckDB(DuckDBWarehouse):
    name = "other"

@hookimpl
def {hook}(register):
    register(OtherDuckDB)
"""

LIST = """
import json
from faucet_core import installed_plugins, warehouses
print(json.dumps({"warehouses": sorted(warehouses()),
                  "plugins": [p.__dict__ for p in installed_plugins()]}))
"""


def _distribution(folder: Path, hook: str = "register_warehouses") -> Path:
    """A distribution ``faucet-other`` with a ``faucet`` entry point, in ``folder``."""
    (folder / "faucet_other.py").write_text(PLUGIN.format(hook=hook))
    info = folder / "faucet_other-2.5.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: faucet-other\nVersion: 2.5.0\n")
    (info / "entry_points.txt").write_text("[faucet]\nother = faucet_other\n")
    return folder


def _python(
    code: str, path: Path | None, autoload: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new interpreter, as a user's program would run."""
    env = {k: v for k, v in os.environ.items() if k != "FAUCET_DISABLE_PLUGIN_AUTOLOAD"}
    if path is not None:
        env["PYTHONPATH"] = str(path)
    if not autoload:
        env["FAUCET_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )


def test_a_readers_plugins_leave_the_command_line_unloaded() -> None:
    """Loading every installed plugin, as opening a reader does, loads no library of the
    command line (25 ms of a first batch): the core's commands load when it asks for them."""
    unloaded = _python(
        "import json, sys\n"
        "from faucet_core import warehouses\n"
        "assert 'duckdb' in warehouses()\n"
        "names = ('click', 'rich', 'faucet_core.core_commands')\n"
        "print(json.dumps([name for name in names if name in sys.modules]))",
        None,
    )
    assert unloaded.returncode == 0, unloaded.stderr
    assert json.loads(unloaded.stdout) == []
    listed = _python(
        "import json\nfrom faucet_core.cli import cli\nprint(json.dumps(cli.list_commands(None)))",
        None,
    )
    assert listed.returncode == 0, listed.stderr
    core = {"plugins", "validate", "preview", "bench", "fit", "cache"}
    assert core | {"demo"} <= set(json.loads(listed.stdout))


def test_a_plugin_is_found_through_its_entry_point(tmp_path: Path) -> None:
    result = _python(LIST, _distribution(tmp_path))
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert {"other", "duckdb", "bigquery"} <= set(found["warehouses"])
    plugins = {p["name"]: p for p in found["plugins"]}
    other = plugins["other"]
    assert (other["distribution"], other["version"]) == ("faucet-other", "2.5.0")
    assert other["hooks"] == ["register_warehouses"]
    assert other["warehouses"] == ["other"]
    # The core's own commands: a built-in plugin, registered after the installed ones.
    assert plugins["faucet_core.commands"]["hooks"] == ["register_commands"]


def test_autoload_can_be_switched_off(tmp_path: Path) -> None:
    result = _python(LIST, _distribution(tmp_path), autoload=False)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["warehouses"] == []
    assert [p["name"] for p in found["plugins"]] == ["faucet_core.commands"]


def test_a_misspelled_hook_fails_loading_and_names_it(tmp_path: Path) -> None:
    result = _python(LIST, _distribution(tmp_path, hook="register_warehouse"))
    assert result.returncode == 1
    assert "PluginValidationError" in result.stderr and "register_warehouse" in result.stderr


@pytest.fixture
def fresh_manager(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pluggy.PluginManager:
    """This process's plugin manager as at its start, with ``faucet-other`` installed."""
    manager = pluggy.PluginManager("faucet")
    manager.add_hookspecs(hookspecs)
    monkeypatch.setattr(plugins, "pm", manager)
    monkeypatch.setattr(plugins, "_loaded", False)
    monkeypatch.syspath_prepend(str(_distribution(tmp_path)))
    # Noted as absent, so that the module the test imports is forgotten after it.
    monkeypatch.setitem(sys.modules, "faucet_other", None)
    del sys.modules["faucet_other"]
    return manager


def test_loading_in_this_process_registers_distributions_then_builtin_plugins(
    fresh_manager: pluggy.PluginManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(plugins.DISABLE_AUTOLOAD_ENV)
    plugins.load_plugins()
    names = [name for name, _ in fresh_manager.list_name_plugin()]
    assert {"other", "duckdb"} <= set(names[:-1])
    assert names[-1] == "faucet_core.commands"
    assert fresh_manager.get_plugin("faucet_core.commands") is importlib.import_module(
        "faucet_core.commands"
    )


def test_only_the_first_load_in_a_process_looks_for_plugins(
    fresh_manager: pluggy.PluginManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugins.load_plugins()  # the variable is set: nothing installed is loaded
    assert [name for name, _ in fresh_manager.list_name_plugin()] == ["faucet_core.commands"]
    monkeypatch.delenv(plugins.DISABLE_AUTOLOAD_ENV)
    plugins.load_plugins()
    assert [name for name, _ in fresh_manager.list_name_plugin()] == ["faucet_core.commands"]


def test_a_builtin_plugin_registered_by_hand_is_not_registered_again(
    fresh_manager: pluggy.PluginManager,
) -> None:
    commands = importlib.import_module("faucet_core.commands")
    fresh_manager.register(commands, name="commands")
    plugins.load_plugins()
    assert fresh_manager.get_name(commands) == "commands"


def test_a_warehouse_asked_for_where_none_is_registered_says_so(
    fresh_manager: pluggy.PluginManager,
) -> None:
    """The variable is set: no warehouse is loaded. The problem is the datastore's."""
    with pytest.raises(UnknownDatastore) as raised:
        get_warehouse_class("duckdb")
    assert raised.value.problems == [
        (
            "datastore",
            "unknown datastore 'duckdb'; installed warehouses: none. "
            "Install it with: pip install 'faucetml[duckdb]'",
        )
    ]


def test_only_warehouse_classes_register(register: Callable[[object], None]) -> None:
    class NotAWarehouse:
        @hookimpl
        def register_warehouses(self, register: Callable[[type[Warehouse]], None]) -> None:
            register(object)  # type: ignore[arg-type]

    register(NotAWarehouse())
    with pytest.raises(TypeError, match="not a Warehouse subclass"):
        warehouses()


def test_two_plugins_cannot_claim_one_name(register: Callable[[object], None]) -> None:
    class Impostor(DuckDBWarehouse):
        name = "duckdb"

    class Plugin:
        @hookimpl
        def register_warehouses(self, register: Callable[[type[Warehouse]], None]) -> None:
            register(Impostor)

    register(Plugin())
    with pytest.raises(ValueError, match="two plugins register the warehouse 'duckdb'"):
        warehouses()


def test_a_registered_plugin_is_listed(register: Callable[[object], None]) -> None:
    class Renamed(DuckDBWarehouse):
        name = "renamed"

    class Plugin:
        @hookimpl
        def register_warehouses(self, register: Callable[[type[Warehouse]], None]) -> None:
            register(Renamed)

    register(Plugin())
    assert warehouses()["renamed"] is Renamed
    (info,) = [p for p in installed_plugins() if "renamed" in p.warehouses]
    assert info.hooks == ("register_warehouses",)
    assert info.distribution is None  # registered in code, not installed


def test_an_unknown_name_lists_the_warehouses_there_are() -> None:
    with pytest.raises(
        UnknownDatastore,
        match="installed warehouses: bigquery, chunk-by-chunk-duckdb, chunk-ordered-duckdb, "
        "counting-duckdb, duckdb, feast, postgres, redshift, snowflake",
    ):
        get_warehouse_class("oracle")


def test_a_published_warehouse_that_is_not_installed_says_what_to_install() -> None:
    result = _python(
        "from faucet_core import load_config\nload_config(datastore='duckdb', table_name='t')",
        None,
        autoload=False,
    )
    assert result.returncode == 1
    assert "pip install 'faucetml[duckdb]'" in result.stderr


def test_the_plugin_listing_gives_each_plugin_distribution_and_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``faucet plugins`` says which distribution, at which version, brought a plugin in."""
    monkeypatch.syspath_prepend(str(_distribution(tmp_path)))
    pm.load_setuptools_entrypoints("faucet", name="other")
    try:
        result = CliRunner().invoke(cli, ["plugins", "--json"])
        assert result.exit_code == 0, result.output
        listed = {p["name"]: p for p in json.loads(result.stdout)}
        other = listed["other"]
        assert (other["distribution"], other["version"]) == ("faucet-other", "2.5.0")
        assert other["warehouses"] == ["other"]
        assert listed["duckdb"]["distribution"] is None  # registered in code by the tests
        monkeypatch.setattr(console, "width", 200)
        result = CliRunner().invoke(cli, ["plugins"])
        row = next(line for line in result.stdout.splitlines() if " other " in line)
        assert [cell.strip() for cell in row.strip("│ ").split("│")][:3] == [
            "other",
            "faucet-other",
            "2.5.0",
        ]
    finally:
        pm.unregister(name="other")
        sys.modules.pop("faucet_other", None)
