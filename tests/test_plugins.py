"""The plugin manager: entry points, registration rules, listing."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pluggy
import pytest

import faucet_duckdb.plugin
from faucet_core import UnknownDatastore, Warehouse, hookimpl
from faucet_core.plugins import (
    get_warehouse_class,
    installed_plugins,
    load_plugins,
    make_plugin_manager,
    warehouses,
)
from faucet_duckdb import DuckDBWarehouse

PLUGIN = """
from faucet_core import hookimpl
from faucet_duckdb import DuckDBWarehouse

class OtherDuckDB(DuckDBWarehouse):
    name = "other"

@hookimpl
def register_warehouses(register):
    register(OtherDuckDB)
"""


@pytest.fixture
def distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A distribution with a ``faucet`` entry point, installed by putting it on sys.path."""
    (tmp_path / "faucet_other.py").write_text(PLUGIN)
    info = tmp_path / "faucet_other-2.5.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: faucet-other\nVersion: 2.5.0\n")
    (info / "entry_points.txt").write_text("[faucet]\nother = faucet_other\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("FAUCET_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    importlib.invalidate_caches()
    yield tmp_path
    sys.modules.pop("faucet_other", None)


def test_a_plugin_is_found_through_its_entry_point(distribution: Path) -> None:
    manager = make_plugin_manager()
    load_plugins(manager)
    assert warehouses(manager)["other"].__module__ == "faucet_other"
    info = next(p for p in installed_plugins(manager) if p.name == "other")
    assert (info.distribution, info.version) == ("faucet-other", "2.5.0")
    assert info.hooks == ("register_warehouses",)
    assert info.warehouses == ("other",)
    assert "duckdb" in warehouses(manager)  # the project's own plugin, by its entry point


def test_autoload_can_be_switched_off(distribution: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAUCET_DISABLE_PLUGIN_AUTOLOAD", "1")
    manager = make_plugin_manager()
    load_plugins(manager)
    assert warehouses(manager) == {}


def test_only_warehouse_classes_register() -> None:
    class NotAWarehouse:
        @hookimpl
        def register_warehouses(self, register: Callable[[type[Warehouse]], None]) -> None:
            register(object)  # type: ignore[arg-type]

    manager = make_plugin_manager()
    manager.register(NotAWarehouse())
    with pytest.raises(TypeError, match="not a Warehouse subclass"):
        warehouses(manager)


def test_two_plugins_cannot_claim_one_name() -> None:
    class Impostor(DuckDBWarehouse):
        name = "duckdb"

    class Plugin:
        @hookimpl
        def register_warehouses(self, register: Callable[[type[Warehouse]], None]) -> None:
            register(Impostor)

    manager = make_plugin_manager()
    manager.register(faucet_duckdb.plugin)
    manager.register(Plugin())
    with pytest.raises(ValueError, match="two plugins register the warehouse 'duckdb'"):
        warehouses(manager)


def test_a_misspelled_hook_is_caught() -> None:
    class Typo:
        @hookimpl
        def register_warehouse(self, register: object) -> None:
            pass

    manager = make_plugin_manager()
    manager.register(Typo())
    with pytest.raises(pluggy.PluginValidationError, match="register_warehouse"):
        load_plugins(manager)


def test_an_unknown_name_lists_what_is_installed(manager: pluggy.PluginManager) -> None:
    with pytest.raises(
        UnknownDatastore, match="installed warehouses: bigquery, counting-duckdb, duckdb"
    ):
        get_warehouse_class("postgres", manager)
