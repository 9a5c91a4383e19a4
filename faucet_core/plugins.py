"""The plugin manager: loading warehouse plugins and telling which warehouses exist."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import pluggy

from faucet_core import hookspecs
from faucet_core.errors import UnknownDatastore
from faucet_core.warehouse import Warehouse

__all__ = [
    "DISABLE_AUTOLOAD_ENV",
    "KNOWN_WAREHOUSE_EXTRAS",
    "PluginInfo",
    "get_plugin_manager",
    "get_warehouse_class",
    "installed_plugins",
    "load_plugins",
    "make_plugin_manager",
    "warehouses",
]

#: Set to ``1`` to skip entry-point loading (tests register their plugins by hand).
DISABLE_AUTOLOAD_ENV = "FAUCET_DISABLE_PLUGIN_AUTOLOAD"

#: Warehouses this project publishes, with the pip extra that installs each.
KNOWN_WAREHOUSE_EXTRAS: dict[str, str] = {
    "bigquery": "faucetml[bigquery]",
    "duckdb": "faucetml[duckdb]",
}

_manager: pluggy.PluginManager | None = None
_lock = threading.Lock()


def make_plugin_manager() -> pluggy.PluginManager:
    """Return a new manager with Faucet's hook specs and no plugins."""
    manager = pluggy.PluginManager("faucet")
    manager.add_hookspecs(hookspecs)
    if os.environ.get("FAUCET_TRACE_HOOKS"):
        manager.trace.root.setwriter(print)
        manager.enable_tracing()
    return manager


def load_plugins(manager: pluggy.PluginManager) -> None:
    """Load the ``faucet`` entry points into ``manager`` and check their hook names."""
    if os.environ.get(DISABLE_AUTOLOAD_ENV) != "1":
        manager.load_setuptools_entrypoints("faucet")
    manager.check_pending()


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide manager, with installed plugins loaded on first use."""
    global _manager
    with _lock:
        if _manager is None:
            manager = make_plugin_manager()
            load_plugins(manager)
            _manager = manager
        return _manager


def warehouses(manager: pluggy.PluginManager | None = None) -> dict[str, type[Warehouse]]:
    """Map each registered ``datastore`` name to its warehouse class."""
    found: dict[str, type[Warehouse]] = {}

    def register(cls: type[Warehouse]) -> None:
        if not (isinstance(cls, type) and issubclass(cls, Warehouse)):
            raise TypeError(f"register_warehouses got {cls!r}, not a Warehouse subclass")
        if cls.name in found and found[cls.name] is not cls:
            raise ValueError(
                f"two plugins register the warehouse {cls.name!r}: "
                f"{found[cls.name].__module__} and {cls.__module__}"
            )
        found[cls.name] = cls

    (manager or get_plugin_manager()).hook.register_warehouses(register=register)
    return found


def get_warehouse_class(
    datastore: str, manager: pluggy.PluginManager | None = None
) -> type[Warehouse]:
    """The warehouse class for ``datastore``.

    Raises:
        UnknownDatastore: No installed plugin provides it; the message lists those that do
            and, for warehouses this project publishes, the extra to install.
    """
    available = warehouses(manager)
    if datastore in available:
        return available[datastore]
    installed = ", ".join(sorted(available)) or "none"
    message = f"unknown datastore {datastore!r}; installed warehouses: {installed}"
    if datastore in KNOWN_WAREHOUSE_EXTRAS:
        message += f". Install it with: pip install '{KNOWN_WAREHOUSE_EXTRAS[datastore]}'"
    raise UnknownDatastore([("datastore", message)])


@dataclass(frozen=True)
class PluginInfo:
    """One loaded plugin: where it comes from and what it provides."""

    name: str
    distribution: str | None
    version: str | None
    hooks: tuple[str, ...]
    warehouses: tuple[str, ...]


def installed_plugins(manager: pluggy.PluginManager | None = None) -> list[PluginInfo]:
    """Describe every plugin registered with ``manager`` (default: the process-wide one)."""
    manager = manager or get_plugin_manager()
    dists = {id(plugin): dist for plugin, dist in manager.list_plugin_distinfo()}
    infos = []
    for name, plugin in manager.list_name_plugin():
        if plugin is None:
            continue
        callers = manager.get_hookcallers(plugin) or []
        provided: list[str] = []
        impl = getattr(plugin, "register_warehouses", None)
        if impl is not None and "register_warehouses" in {c.name for c in callers}:
            impl(register=lambda cls, names=provided: names.append(cls.name))
        dist = dists.get(id(plugin))
        infos.append(
            PluginInfo(
                name=name,
                distribution=dist.project_name if dist is not None else None,
                version=dist.version if dist is not None else None,
                hooks=tuple(sorted(c.name for c in callers)),
                warehouses=tuple(sorted(provided)),
            )
        )
    return sorted(infos, key=lambda info: info.name)
