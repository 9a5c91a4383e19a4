"""Where settings come from: config files, ``FAUCET_*`` variables and keyword arguments.

Settings are merged with this precedence, highest first: keyword arguments, ``FAUCET_*``
environment variables, the config file, defaults; then validated once into a
:class:`~faucet_core.config.FaucetConfig`, and every problem is reported with its field
path and where the settings came from.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError, create_model
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from faucet_core.config import FaucetConfig
from faucet_core.errors import ConfigError, UnknownDatastore
from faucet_core.plugins import get_warehouse_class

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = [
    "build_config",
    "config_from_kwargs",
    "env_settings",
    "load_config",
    "read_config_file",
]


def _problems(error: ValidationError, data: Mapping[str, Any]) -> list[tuple[str, str]]:
    problems = []
    for item in error.errors(include_url=False):
        path = ".".join(str(part) for part in item["loc"])
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown setting"
            if item["loc"][:1] == ("connection",):
                known = ", ".join(
                    get_warehouse_class(data["datastore"]).connection_model.model_fields
                )
                message += f" (the connection takes: {known or 'nothing'})"
        elif item["type"] == "missing":
            message = "required"
        elif item["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        problems.append((path, message))
    return problems


def build_config(data: Mapping[str, Any], origin: str | None = None) -> FaucetConfig:
    """Validate a merged settings mapping into a :class:`FaucetConfig`.

    Raises:
        UnknownDatastore: ``datastore`` names no installed warehouse (other problems are
            listed with it).
        ConfigError: Every problem found, each with its field path, and ``origin``.
    """
    try:
        return FaucetConfig.model_validate(dict(data))
    except ValidationError as exc:
        problems = _problems(exc, data)
    error_type = (
        UnknownDatastore if any(path == "datastore" for path, _ in problems) else ConfigError
    )
    raise error_type(problems, origin)


_ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand_env(value: Any, path: str, problems: list[tuple[str, str]]) -> Any:
    """Replace ``${NAME}`` in strings with environment variables (how secrets get in)."""
    if isinstance(value, dict):
        return {
            k: _expand_env(v, f"{path}.{k}" if path else str(k), problems) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_expand_env(v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                problems.append((path, f"environment variable {name} is not set"))
                return ""
            return os.environ[name]

        return _ENV_VAR.sub(substitute, value)
    return value


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML, TOML or JSON config file into a mapping, expanding ``${ENV}`` values.

    Raises:
        ConfigError: The file is missing, unparsable, of an unknown type, or names an unset
            environment variable.
    """
    file = Path(path)
    origin = str(file)
    suffix = file.suffix.lower()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([("", f"cannot read the file: {exc.strerror or exc}")], origin) from exc
    try:
        if suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        elif suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(
                [("", f"unknown config file type {suffix!r} (use .yaml, .yml, .toml or .json)")],
                origin,
            )
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError([("", f"cannot parse the file: {exc}")], origin) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([("", "the file must hold a mapping of settings")], origin)
    problems: list[tuple[str, str]] = []
    expanded: dict[str, Any] = _expand_env(data, "", problems)
    if problems:
        raise ConfigError(problems, origin)
    return expanded


@functools.cache
def _env_model() -> type[BaseSettings]:
    """A settings class shaped like :class:`FaucetConfig` whose values all stay text.

    Validation is :class:`FaucetConfig`'s alone; this only finds the variables.
    """
    fields: dict[str, Any] = {}
    for name, field in FaucetConfig.model_fields.items():
        annotation = field.annotation
        if name == "connection":
            fields[name] = (dict[str, Any] | None, None)
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            section = create_model(  # type: ignore[call-overload]
                f"Env{annotation.__name__}", **{n: (Any, None) for n in annotation.model_fields}
            )
            fields[name] = (section | None, None)
        else:
            fields[name] = (Any, None)
    return create_model("FaucetEnvironment", __base__=_Environment, **fields)


class _Environment(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FAUCET_", env_nested_delimiter="__", case_sensitive=False, extra="ignore"
    )


def env_settings() -> dict[str, Any]:
    """Settings from ``FAUCET_<FIELD>`` and ``FAUCET_<SECTION>__<FIELD>`` variables.

    Values stay text (validation converts numbers, booleans, and lists given as JSON).
    Variables naming no setting or section are ignored, so unrelated ``FAUCET_*``
    variables do no harm.
    """
    found = EnvSettingsSource(_env_model())()

    def drop_unset(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: drop_unset(v) for k, v in value.items() if v is not None}
        return value

    return drop_unset(found)  # type: ignore[no-any-return]


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


_SOURCE_KEYWORDS = {
    "table_name": "table",
    "table": "table",
    "query": "query",
    "files": "files",
    "ds": "ds",
    "partition_column": "partition_column",
    "columns": "columns",
    "label_columns": "label_columns",
    "split_key": "split_key",
}
_CACHE_KEYWORDS = {
    "cache_dir": "dir",
    "cache_max_bytes": "max_bytes",
    "cache_fill_buffer": "fill_buffer",
    "use_cache": "enabled",
    "plan_ttl": "plan_ttl",
}
_RETRY_KEYWORDS = {
    "retry_attempts": "attempts",
    "initial_backoff": "initial_backoff",
    "max_backoff": "max_backoff",
    "chunk_timeout": "chunk_timeout",
}


def config_from_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Turn the flat keywords of :func:`~faucet_core.get_batch_reader` into nested settings.

    Keywords naming a reader setting go to it (``table_name`` to ``source.table``,
    ``cache_dir`` to ``cache.dir``, ...); sections may also be given whole
    (``source={...}``); every other keyword belongs to the warehouse's connection.
    """
    settings: dict[str, Any] = {}
    top_level = set(FaucetConfig.model_fields)
    for key, value in kwargs.items():
        if key in _SOURCE_KEYWORDS:
            settings.setdefault("source", {})[_SOURCE_KEYWORDS[key]] = value
        elif key in _CACHE_KEYWORDS:
            settings.setdefault("cache", {})[_CACHE_KEYWORDS[key]] = value
        elif key in _RETRY_KEYWORDS:
            settings.setdefault("retry", {})[_RETRY_KEYWORDS[key]] = value
        elif key in top_level:
            existing = settings.get(key)
            settings[key] = _merge(existing, value) if isinstance(existing, dict) else value
        else:
            settings.setdefault("connection", {})[key] = value
    return settings


def load_config(path: str | os.PathLike[str] | None = None, **kwargs: Any) -> FaucetConfig:
    """Load a reader config: keywords > ``FAUCET_*`` environment > file > defaults.

    Raises:
        ConfigError: With every problem and where the settings came from.
    """
    data: dict[str, Any] = read_config_file(path) if path is not None else {}
    data = _merge(data, env_settings())
    data = _merge(data, config_from_kwargs(kwargs))
    origin = str(path) if path is not None else "keyword arguments"
    if path is not None and kwargs:
        origin += " (with keyword overrides)"
    return build_config(data, origin)
