"""A Feast repo opened for reading: its store, the features asked for, checked by name.

Imports Feast, so only the warehouse imports this module, when it is first used.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import feast
from feast.repo_config import load_repo_config

from faucet_core.warehouse import PermanentWarehouseError
from faucet_feast.connection import FeastConnection

__all__ = ["FeastRepo", "Features", "open_repo"]

_SQLITE = "sqlite:///"


@dataclass(frozen=True)
class Features:
    """The features of a source, as found in the registry.

    Attributes:
        request: What ``get_historical_features`` takes: the refs, or the feature service.
        refs: Every ``view:feature`` reference read.
        views: The feature views they come from (on-demand views' sources included).
        join_keys: The entity columns the entity rows must have, in order.
    """

    request: Any
    refs: tuple[str, ...]
    views: tuple[Any, ...]
    join_keys: tuple[str, ...]


def _listed(names: Sequence[str]) -> str:
    return ", ".join(sorted(names)) or "none"


def open_repo(connection: FeastConnection) -> FeastRepo:
    """Open the repo of ``connection``.

    Raises:
        PermanentWarehouseError: ``feature_store.yaml`` is invalid, or the registry cannot
            be opened.
    """
    try:
        config = load_repo_config(connection.repo.resolve(), connection.yaml_path.resolve())
        registry = config.registry
        path = getattr(registry, "path", "")
        # As when `feast apply` runs in the repo: a relative SQLite registry is the repo's.
        if path.startswith(_SQLITE) and not os.path.isabs(path[len(_SQLITE) :]):
            registry.path = _SQLITE + str(connection.repo.resolve() / path[len(_SQLITE) :])
        store = feast.FeatureStore(config=config, repo_path=str(connection.repo.resolve()))
        store.refresh_registry()
    except Exception as exc:
        raise PermanentWarehouseError(
            f"cannot open the Feast repo {connection.repo} ({connection.yaml_path.name}): {exc}"
        ) from exc
    return FeastRepo(connection, store)


class FeastRepo:
    """A Feast feature store and what a Faucet source reads from it."""

    def __init__(self, connection: FeastConnection, store: Any) -> None:
        self.connection = connection
        self.store = store

    @property
    def project(self) -> str:
        """The Feast project."""
        return str(self.store.project)

    @property
    def offline_store_type(self) -> str:
        """The ``offline_store.type`` of ``feature_store.yaml`` (``duckdb``, ``postgres``...)."""
        return str(self.store.config.offline_store.type)

    @property
    def offline_store(self) -> Any:
        """The offline store's settings (a Feast config model)."""
        return self.store.config.offline_store

    def _views(self) -> dict[str, Any]:
        return {view.name: view for view in self.store.list_all_feature_views()}

    def features(self) -> Features:
        """The features of ``connection.features`` or ``connection.feature_service``.

        Raises:
            PermanentWarehouseError: A feature view, a feature or the feature service is not
                in the registry; names the setting, and lists what the registry has.
        """
        views = self._views()
        name = self.connection.feature_service
        if name is not None:
            services = {s.name: s for s in self.store.list_feature_services()}
            if name not in services:
                raise PermanentWarehouseError(
                    f"connection.feature_service: no feature service {name!r} in the Feast "
                    f"registry (project {self.project}); it has: {_listed(list(services))}"
                )
            service = services[name]
            refs = tuple(
                f"{projection.name_to_use()}:{feature.name}"
                for projection in service.feature_view_projections
                for feature in projection.features
            )
            used = [(views[p.name], p.join_key_map) for p in service.feature_view_projections]
            return Features(service, refs, *self._keys(used))
        refs = tuple(self.connection.features or ())
        used = []
        for ref in refs:
            view_name, feature = ref.split(":")
            if view_name not in views:
                raise PermanentWarehouseError(
                    f"connection.features: {ref!r}: no feature view {view_name!r} in the Feast "
                    f"registry (project {self.project}); it has: {_listed(list(views))}"
                )
            view = views[view_name]
            names = [f.name for f in view.features]
            if feature not in names:
                raise PermanentWarehouseError(
                    f"connection.features: {ref!r}: feature view {view_name!r} has no feature "
                    f"{feature!r}; it has: {_listed(names)}"
                )
            used.append((view, {}))
        return Features(list(refs), refs, *self._keys(used))

    def _keys(
        self, used: list[tuple[Any, dict[str, str]]]
    ) -> tuple[tuple[Any, ...], tuple[str, ...]]:
        """The views read (the sources of on-demand views too) and their join keys."""
        views: dict[str, Any] = {}
        keys: dict[str, None] = {}
        pending = list(used)
        while pending:
            view, key_map = pending.pop(0)
            if view.name in views:
                continue
            views[view.name] = view
            sources = getattr(view, "source_feature_view_projections", None)
            if sources is not None:  # an on-demand view: its keys are its sources'
                all_views = self._views()
                pending += [(all_views[p.name], p.join_key_map) for p in sources.values()]
                continue
            for column in view.entity_columns:
                keys[key_map.get(column.name, column.name)] = None
        return tuple(views.values()), tuple(keys)

    def version_parts(self, features: Features) -> list[Any] | None:
        """What the retrieval's result depends on in the registry and the feature data:
        the registry's last update, each view's, and the size and modification time of
        each view's source files; ``None`` when a view reads anything but local files."""
        from feast.infra.offline_stores.file_source import FileSource

        parts: list[Any] = [feast.__version__, str(self.store.registry.proto().last_updated)]
        for view in features.views:
            parts.append([view.name, str(getattr(view, "last_updated_timestamp", ""))])
            source = getattr(view, "batch_source", None)
            if source is None:
                continue  # an on-demand view: its sources are listed too
            if not isinstance(source, FileSource):
                return None
            path = FileSource.get_uri_for_file_path(str(self.connection.repo), source.path)
            if "://" in path or not os.path.exists(path):
                return None
            parts.append(_file_stats(Path(path)))
        return parts


def _file_stats(path: Path) -> list[tuple[str, int, int]]:
    """Size and modification time of ``path``, or of every file under it."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
