"""The plugin manager: one per process, loading installed plugins then the built-in ones.

Installed plugins come from the ``faucet`` entry-point group (unless
``FAUCET_DISABLE_PLUGIN_AUTOLOAD=1``, which tests set so that only the plugins they register
themselves take part). Built-in plugins, the core's own commands, are registered after them
the same way. ``FAUCET_TRACE_HOOKS=1`` prints every hook call.
"""

from __future__ import annotations

import importlib
import os
import threading
from dataclasses import dataclass

import pluggy

from faucet_core import hookspecs
from faucet_core.errors import UnknownDatastore
from faucet_core.warehouse import Warehouse

__all__ = [
    "BUILTIN_PLUGINS",
    "DISABLE_AUTOLOAD_ENV",
    "KNOWN_WAREHOUSE_EXTRAS",
    "PluginInfo",
    "get_warehouse_class",
    "installed_plugins",
    "load_plugins",
    "pm",
    "warehouses",
]

#: Set to ``1`` to skip entry-point loading (tests register their plugins by hand).
DISABLE_AUTOLOAD_ENV = "FAUCET_DISABLE_PLUGIN_AUTOLOAD"

#: Modules of the core that are plugins themselves, registered after the installed ones.
BUILTIN_PLUGINS = ("faucet_core.commands",)

#: Warehouses this project publishes, with the pip extra that installs each.
KNOWN_WAREHOUSE_EXTRAS: dict[str, str] = {
    "bigquery": "faucetml[bigquery]",
    "duckdb": "faucetml[duckdb]",
    "feast": "faucetml[feast]",
    "postgres": "faucetml[postgres]",
    "redshift": "faucetml[redshift]",
    "snowflake": "faucetml[snowflake]",
}

#: The process's plugin manager.
pm = pluggy.PluginManager("faucet")
pm.add_hookspecs(hookspecs)
if os.environ.get("FAUCET_TRACE_HOOKS") == "1":
    pm.trace.root.setwriter(print)
    pm.enable_tracing()

_loaded = False
_lock = threading.Lock()


def load_plugins() -> None:
    """Load installed plugins, then the built-in ones; only the first call does anything.

    Raises:
        pluggy.PluginValidationError: A plugin implements a hook that does not exist (a
            misspelt name) or with the wrong arguments.
    """
    global _loaded
    with _lock:
        if _loaded:
            return
        _loaded = True
        if os.environ.get(DISABLE_AUTOLOAD_ENV) != "1":
            pm.load_setuptools_entrypoints("faucet")
        for name in BUILTIN_PLUGINS:
            module = importlib.import_module(name)
            if not pm.is_registered(module):
                pm.register(module)  # under its module's name
        pm.check_pending()


def warehouses() -> dict[str, type[Warehouse]]:
    """Map each registered ``datastore`` name to its warehouse class."""
    load_plugins()
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

    pm.hook.register_warehouses(register=register)
    return found


def get_warehouse_class(datastore: str) -> type[Warehouse]:
    """The warehouse class for ``datastore``.

    Raises:
        UnknownDatastore: No installed plugin provides it; the message lists those that do
            and, for warehouses this project publishes, the extra to install.
    """
    available = warehouses()
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


def installed_plugins() -> list[PluginInfo]:
    """Describe every registered plugin, built-in ones included."""
    load_plugins()
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    infos = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        callers = pm.get_hookcallers(plugin) or []
        provided: list[str] = []
        for caller in callers:
            if caller.name == "register_warehouses":
                for impl in caller.get_hookimpls():
                    if impl.plugin is plugin:
                        impl.function(register=lambda cls, into=provided: into.append(cls.name))
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
