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
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError, create_model
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from faucet_core.config import FaucetConfig
from faucet_core.errors import ConfigError, UnknownDatastore
from faucet_core.plugins import get_warehouse_class
from faucet_core.suggestions import closest, model_at, sections, setting_paths

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = [
    "build_config",
    "config_from_kwargs",
    "env_settings",
    "load_config",
    "misspelt_variables",
    "read_config_file",
]

_DATASTORE = TypeAdapter(str)  # FaucetConfig.datastore's type


def _connection_model(data: Mapping[str, Any]) -> type[BaseModel] | None:
    try:  # the datastore as the config reads it (bytes decoded)
        datastore = _DATASTORE.validate_python(data.get("datastore"))
        return get_warehouse_class(datastore).connection_model
    except (ValidationError, UnknownDatastore):
        return None


def _keyword_vocabulary(connection: type[BaseModel] | None) -> list[str]:
    """Every keyword :func:`config_from_kwargs` understands."""
    names = [*FaucetConfig.model_fields, *_SOURCE_KEYWORDS, *_CACHE_KEYWORDS, *_RETRY_KEYWORDS]
    return names + list(connection.model_fields if connection is not None else ())


def _unknown_setting(
    loc: tuple[str | int, ...], data: Mapping[str, Any], keywords: Collection[str]
) -> tuple[str, str]:
    """The path and message for a setting no model has, with what it probably meant."""
    connection = _connection_model(data)
    name = str(loc[-1])
    takes = ""
    if loc[:1] == ("connection",) and connection is not None:
        known = ", ".join(connection.model_fields)
        takes = f" (the connection takes: {known or 'nothing'})"
    if loc == ("connection", name) and name in keywords:
        meant = closest(name, _keyword_vocabulary(connection))
        hint = f"; did you mean {meant}?" if meant else takes
        return name, f"unknown setting{hint}"
    prefix = ".".join(str(part) for part in loc[:-1])
    model = model_at(FaucetConfig, loc, connection)
    meant = closest(name, model.model_fields) if model is not None else None
    if meant is not None:
        meant = f"{prefix}.{meant}" if prefix else meant
    else:
        paths = setting_paths(FaucetConfig, connection)
        by_leaf = {path[-1]: ".".join(path) for path in reversed(paths)}
        leaf = closest(name, by_leaf, cutoff=0.8)
        meant = by_leaf[leaf] if leaf is not None else None
    hint = f"; did you mean {meant}?" if meant else takes
    return ".".join(str(part) for part in loc), f"unknown setting{hint}"


def _problems(
    error: ValidationError, data: Mapping[str, Any], keywords: Collection[str]
) -> list[tuple[str, str]]:
    problems = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"])
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            path, message = _unknown_setting(tuple(item["loc"]), data, keywords)
        elif item["type"] == "missing":
            message = "required"
        elif item["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        problems.append((path, message))
    return problems


def build_config(
    data: Mapping[str, Any], origin: str | None = None, keywords: Collection[str] = ()
) -> FaucetConfig:
    """Validate a merged settings mapping into a :class:`FaucetConfig`.

    ``keywords`` are the connection settings that came as keyword arguments: a problem
    with one is reported by the keyword's name.

    Raises:
        UnknownDatastore: ``datastore`` names no installed warehouse (other problems are
            listed with it).
        ConfigError: Every problem found, each with its field path, and ``origin``.
    """
    try:
        return FaucetConfig.model_validate(dict(data))
    except ValidationError as exc:
        problems = _problems(exc, data, keywords)
    error_type = (
        UnknownDatastore if any(path == "datastore" for path, _ in problems) else ConfigError
    )
    raise error_type(problems, origin)


_ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _dotted(path: tuple[str | int, ...]) -> str:
    """A field path as errors show it: ``source.label_columns[0]``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text


def _expand_env(value: Any, path: tuple[str | int, ...], problems: list[tuple[str, str]]) -> Any:
    """Replace ``${NAME}`` in strings with environment variables (how secrets get in)."""
    if isinstance(value, dict):
        return {k: _expand_env(v, (*path, str(k)), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, (*path, i), problems) for i, v in enumerate(value)]
    if isinstance(value, str):
        unset = [name for name in _ENV_VAR.findall(value) if name not in os.environ]
        problems += [(_dotted(path), f"environment variable {name} is not set") for name in unset]
        if unset:
            return value
        return _ENV_VAR.sub(lambda match: os.environ[match.group(1)], value)
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
        content = file.read_bytes()
    except OSError as exc:
        raise ConfigError([("", f"cannot read the file: {exc.strerror or exc}")], origin) from exc
    try:
        text = content.decode()
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
    except (
        UnicodeDecodeError,
        yaml.YAMLError,
        tomllib.TOMLDecodeError,
        json.JSONDecodeError,
    ) as exc:
        raise ConfigError([("", f"cannot parse the file: {exc}")], origin) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([("", "the file must hold a mapping of settings")], origin)
    problems: list[tuple[str, str]] = []
    expanded: dict[str, Any] = _expand_env(data, (), problems)
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


_PREFIX = "FAUCET_"
_NESTED = "__"


class _Environment(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=_PREFIX, env_nested_delimiter=_NESTED, case_sensitive=False, extra="ignore"
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


def misspelt_variables() -> list[tuple[str, str]]:
    """``FAUCET_*`` variables that name no setting but are close to one, with that one.

    :func:`env_settings` ignores variables naming no setting (other tools may use the
    prefix); one that is probably a misspelling is a problem to report instead.
    """
    problems = []
    known = sections(FaucetConfig, None)
    for variable in os.environ:
        if not variable.upper().startswith(_PREFIX):
            continue
        name = variable[len(_PREFIX) :].lower()
        section, nested, field = name.partition(_NESTED)
        if not nested:
            if name in FaucetConfig.model_fields:
                continue
            meant = closest(name, FaucetConfig.model_fields, cutoff=0.8)
        elif section == "connection":
            continue  # the connection's own validation names an unknown field
        elif section in known:
            if field in known[section].model_fields:
                continue
            inner = closest(field, known[section].model_fields, cutoff=0.8)
            meant = f"{section}{_NESTED}{inner}" if inner else None
        else:
            outer = closest(section, [*known, "connection"], cutoff=0.8)
            meant = f"{outer}{_NESTED}{field}" if outer else None
        if meant is not None:
            suggestion = f"{_PREFIX}{meant.upper()}"
            problems.append((variable, f"names no setting; did you mean {suggestion}?"))
    return problems


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
    "inputs": "inputs",
    "pad": "pad",
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
    misspelt = misspelt_variables()
    if misspelt:
        raise ConfigError(misspelt, f"{_PREFIX}* environment variables")
    data = _merge(data, env_settings())
    keywords = config_from_kwargs(kwargs)
    data = _merge(data, keywords)
    origin = str(path) if path is not None else "keyword arguments"
    if path is not None and kwargs:
        origin += " (with keyword overrides)"
    return build_config(data, origin, keywords=set(kwargs) & set(keywords.get("connection", {})))
