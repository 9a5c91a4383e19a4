"""The setting a misspelt or misplaced name probably meant, for errors that help.

Used for every way settings arrive: config files, keyword arguments and ``FAUCET_*``
variables (:mod:`faucet_core.settings`).
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Sequence

from pydantic import BaseModel

__all__ = ["closest", "model_at", "sections", "setting_paths"]


def _squashed(name: str) -> str:
    return name.casefold().replace("_", "").replace("-", "")


def closest(name: str, candidates: Iterable[str], cutoff: float = 0.7) -> str | None:
    """The candidate ``name`` most probably meant, or None when none is close.

    A candidate that differs only in case, ``_`` or ``-`` wins (``chunksize`` means
    ``chunk_size``); otherwise the most similar one at least ``cutoff`` alike.
    """
    names = list(dict.fromkeys(candidates))
    for candidate in names:
        if _squashed(candidate) == _squashed(name):
            return candidate
    matches = difflib.get_close_matches(name.lower(), names, cutoff=cutoff)
    return matches[0] if matches else None


def _section_model(annotation: object) -> type[BaseModel] | None:
    """The model a field holds, through ``X | None``; None for other types."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for member in typing.get_args(annotation):
            model = _section_model(member)
            if model is not None:
                return model
    return None


def model_at(
    root: type[BaseModel], path: Sequence[str | int], connection: type[BaseModel] | None
) -> type[BaseModel] | None:
    """The settings model that holds the field at ``path`` (None where none is known).

    ``connection`` stands for the ``connection`` section, whose model is the warehouse's.
    Per-column sections (``preprocessing.columns.<name>``) resolve to their column model.
    """
    model: type[BaseModel] | None = root
    parts = list(path[:-1])
    while parts and model is not None:
        part = parts.pop(0)
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        if part == "connection" and model is root:
            model = connection
            continue
        annotation = field.annotation
        if typing.get_origin(annotation) is dict:
            if not parts:
                return None
            parts.pop(0)  # the key, e.g. a column's name
            annotation = typing.get_args(annotation)[1]
        model = _section_model(annotation)
    return model


def sections(
    root: type[BaseModel], connection: type[BaseModel] | None
) -> dict[str, type[BaseModel]]:
    """The settings of ``root`` that are sections, with their models (``connection``'s is
    ``connection``, left out when None)."""
    found = {}
    for name, field in root.model_fields.items():
        section = connection if name == "connection" else _section_model(field.annotation)
        if section is not None:
            found[name] = section
    return found


def setting_paths(
    root: type[BaseModel], connection: type[BaseModel] | None
) -> list[tuple[str, ...]]:
    """Every setting's path: ``(epochs,)``, ``(source, table)``, ``(connection, database)``."""
    found = sections(root, connection)
    paths: list[tuple[str, ...]] = []
    for name in root.model_fields:
        if name in found:
            paths += [(name, inner) for inner in found[name].model_fields]
        else:
            paths.append((name,))
    return paths
