"""Writes reference/configuration.md from the Pydantic models (run by mkdocs-gen-files)."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from faucet_core.config import FaucetConfig
from faucet_core.plugins import warehouses

PAGE = "reference/configuration.md"


def type_name(annotation: Any) -> str:
    """A short readable name for a field's type."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return type_name(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return " | ".join(f'"{a}"' for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def default_text(field: FieldInfo) -> str:
    """The default of a field, as shown in the table."""
    if field.default_factory is not None:
        try:
            value = field.default_factory()  # type: ignore[call-arg]
        except Exception:
            return "(computed)"
        return "(see below)" if isinstance(value, BaseModel) else f"`{value!r}`"
    if field.default is PydanticUndefined:
        return "**required**"
    return f"`{field.default!r}`"


def rows(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Markdown table rows for ``model``'s fields, nested sections flattened."""
    lines = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines += rows(annotation, f"{path}.")
            continue
        if name == "connection":
            continue
        env = "FAUCET_" + path.upper().replace(".", "__")
        description = (field.description or "").replace("|", "\\|")
        lines.append(
            f"| `{path}` | `{type_name(annotation)}` | {default_text(field)} | "
            f"`{env}` | {description} |"
        )
    return lines


def config_reference() -> str:
    """The whole configuration reference page."""
    header = "| setting | type | default | environment | description |\n|---|---|---|---|---|"
    parts = [
        "# Configuration settings",
        "",
        "Generated from the Pydantic models in `faucet_core/config.py` and the connection "
        "models of the installed warehouses; edit those, not this page.",
        "",
        "## Reader settings",
        "",
        header,
        *rows(FaucetConfig),
    ]
    for name, warehouse in sorted(warehouses().items()):
        parts += [
            "",
            f"## `connection` of `datastore: {name}`",
            "",
            header,
            *rows(warehouse.connection_model, "connection."),
        ]
    return "\n".join(parts) + "\n"


if __name__ == "<run_path>":  # run by mkdocs-gen-files during a docs build; not on import
    import mkdocs_gen_files

    with mkdocs_gen_files.open(PAGE, "w") as page:
        page.write(config_reference())
