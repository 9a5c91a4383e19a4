"""The reader configuration: Pydantic models and the one loader for files, env and keywords.

Settings are merged with this precedence, highest first: keyword arguments, ``FAUCET_*``
environment variables, the config file, defaults. The ``connection:`` section is validated
by the chosen warehouse's own model, in the same pass as the rest, so every problem is
reported at once with its field path.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import pluggy
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from faucet_core.errors import ConfigError, UnknownDatastore
from faucet_core.plugins import get_warehouse_class
from faucet_core.warehouse import SourceSpec, SplitSpec

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = [
    "CacheConfig",
    "FaucetConfig",
    "RetryConfig",
    "SourceConfig",
    "build_config",
    "config_from_kwargs",
    "default_cache_dir",
    "env_overrides",
    "load_config",
    "read_config_file",
]

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def _parse_bytes(value: Any) -> Any:
    """Accept ``10737418240``, ``"10GiB"``, ``"512 MB"``."""
    if isinstance(value, str):
        match = _SIZE.match(value)
        if not match or match.group(2).lower() not in _UNITS:
            raise ValueError(f"not a size: {value!r} (use bytes or a unit: 512MiB, 10GB, 1TiB)")
        return int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    return value


ByteSize = Annotated[int, BeforeValidator(_parse_bytes), Field(ge=0)]


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/faucet``, else ``~/.cache/faucet``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "faucet"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Section):
    """What to read, and which columns are labels and split key."""

    table: str | None = Field(None, description="Table to read (as the warehouse names it).")
    query: str | None = Field(None, description="SQL query to read instead of a table.")
    files: Annotated[list[str] | None, BeforeValidator(_as_list)] = Field(
        None, description="Parquet or CSV files, for warehouses that read files."
    )
    ds: str | None = Field(None, description="Partition value: only rows of this partition.")
    partition_column: str | None = Field(
        None, description="Column that `ds` filters (default: the warehouse's choice, `ds`)."
    )
    columns: Annotated[list[str] | None, BeforeValidator(_as_list)] = Field(
        None, description="Columns to read (default: all)."
    )
    label_columns: Annotated[list[str], BeforeValidator(_as_list)] = Field(
        default_factory=list, description="Columns returned as labels, not features."
    )
    split_key: Annotated[list[str] | None, BeforeValidator(_as_list)] = Field(
        None, description="Columns hashed to assign rows to train/eval (default: all columns)."
    )

    @field_validator("ds", mode="before")
    @classmethod
    def _date_to_text(cls, value: Any) -> Any:
        # YAML and TOML turn 2024-01-31 into a date; the warehouse casts the text back.
        return value.isoformat() if isinstance(value, dt.date) else value

    @model_validator(mode="after")
    def _check(self) -> SourceConfig:
        given = [name for name in ("table", "query", "files") if getattr(self, name)]
        if len(given) != 1:
            found = ", ".join(given) if given else "none"
            raise ValueError(f"give exactly one of table, query or files (found: {found})")
        for name in ("columns", "label_columns", "split_key"):
            values = getattr(self, name) or []
            if len(set(values)) != len(values):
                raise ValueError(f"{name} lists a column twice: {values}")
        if self.columns is not None:
            missing = [c for c in self.label_columns if c not in self.columns]
            if missing:
                raise ValueError(f"label_columns {missing} are not among columns {self.columns}")
        return self

    def spec(self) -> SourceSpec:
        """The warehouse-facing description of this source."""
        return SourceSpec(
            table=self.table,
            query=self.query,
            files=tuple(self.files) if self.files else None,
            ds=self.ds,
            partition_column=self.partition_column,
            columns=tuple(self.columns) if self.columns is not None else None,
        )


class CacheConfig(_Section):
    """The local chunk cache."""

    enabled: bool = Field(True, description="Keep fetched chunks on local disk.")
    dir: Path = Field(default_factory=default_cache_dir, description="Cache folder.")
    max_bytes: ByteSize = Field(
        10 * 2**30, description="Byte budget; least recently used chunks are evicted past it."
    )


class RetryConfig(_Section):
    """Retries of transient warehouse errors, and how long a chunk may take."""

    attempts: int = Field(5, ge=1, description="Tries per chunk before giving up.")
    initial_backoff: float = Field(0.5, ge=0, description="Seconds before the first retry.")
    max_backoff: float = Field(30.0, ge=0, description="Longest wait between two tries.")
    chunk_timeout: float = Field(
        900.0, gt=0, description="Seconds get_batch() waits for one chunk before failing."
    )


class FaucetConfig(_Section):
    """The whole configuration of one reader."""

    datastore: str = Field(description="Warehouse plugin to read from, e.g. `duckdb`.")
    connection: Any = Field(
        default_factory=dict, description="Connection settings, validated by the warehouse."
    )
    source: SourceConfig
    epochs: int = Field(1, ge=1, description="Training epochs the reader serves.")
    batch_size: int = Field(1024, ge=1, description="Rows per mini-batch.")
    chunk_size: int = Field(100_000, ge=1, description="Rows per chunk fetched and cached.")
    test_split_percent: float = Field(
        0.0, ge=0, lt=100, description="Share of rows (0-100) held out for eval."
    )
    shuffle: bool = Field(True, description="Shuffle chunk order and rows every epoch.")
    seed: int | None = Field(None, ge=0, description="Shuffle seed; default: drawn at random.")
    prefetch_chunks: int = Field(2, ge=0, description="Chunks fetched ahead of the consumer.")
    fetch_threads: int = Field(2, ge=1, description="Background threads fetching chunks.")
    output: Literal["pandas", "numpy", "arrow"] = Field(
        "pandas", description="Type of `batch['features']` and `batch['labels']`."
    )
    drop_last: bool = Field(False, description="Drop a last batch smaller than batch_size.")
    cache: CacheConfig = Field(default_factory=CacheConfig)  # type: ignore[arg-type]
    retry: RetryConfig = Field(default_factory=RetryConfig)  # type: ignore[arg-type]

    def split_spec(self) -> SplitSpec:
        """The warehouse-facing description of the train/eval split."""
        key = self.source.split_key
        return SplitSpec(tuple(key) if key else None, self.test_split_percent)


@functools.cache
def _model_for(connection_model: type[BaseModel]) -> type[FaucetConfig]:
    """A :class:`FaucetConfig` whose ``connection`` is validated by ``connection_model``."""
    try:
        connection_model()
        default: Any = Field(default_factory=connection_model)
    except ValidationError:
        default = ...
    return create_model(
        f"FaucetConfig[{connection_model.__name__}]",
        __base__=FaucetConfig,
        connection=(connection_model, default),
    )


def _problems(
    error: ValidationError, connection_model: type[BaseModel] | None
) -> list[tuple[str, str]]:
    problems = []
    for item in error.errors(include_url=False):
        path = ".".join(str(part) for part in item["loc"])
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown setting"
            if item["loc"][:1] == ("connection",) and connection_model is not None:
                known = ", ".join(connection_model.model_fields) or "none"
                message += f" (the connection takes: {known})"
        elif item["type"] == "missing":
            message = "required"
        elif item["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        problems.append((path, message))
    return problems


def build_config(
    data: Mapping[str, Any], origin: str | None = None, manager: pluggy.PluginManager | None = None
) -> FaucetConfig:
    """Validate a merged settings mapping into a :class:`FaucetConfig`.

    Raises:
        ConfigError: Every problem found, each with its field path, and ``origin``.
    """
    datastore = data.get("datastore")
    problems: list[tuple[str, str]] = []
    connection_model: type[BaseModel] | None = None
    model: type[FaucetConfig] = FaucetConfig
    if isinstance(datastore, str):
        try:
            connection_model = get_warehouse_class(datastore, manager).connection_model
            model = _model_for(connection_model)
        except UnknownDatastore as exc:
            problems += exc.problems
    try:
        config = model.model_validate(dict(data))
    except ValidationError as exc:
        problems += _problems(exc, connection_model)
    if problems:
        error_type = UnknownDatastore if problems[0][0] == "datastore" else ConfigError
        raise error_type(problems, origin)
    return config


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


_SECTIONS = ("connection", "source", "cache", "retry")


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Settings from ``FAUCET_<FIELD>`` and ``FAUCET_<SECTION>__<FIELD>`` variables.

    Values stay text (validation converts numbers and booleans); a value starting with ``[``
    is read as a JSON list. Variables whose first part names no setting or section are
    ignored, so unrelated ``FAUCET_*`` variables do no harm.
    """
    environ = os.environ if environ is None else environ
    top_level = set(FaucetConfig.model_fields) - set(_SECTIONS)
    result: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith("FAUCET_"):
            continue
        parts = name[len("FAUCET_") :].lower().split("__")
        if not (
            (len(parts) == 1 and parts[0] in top_level)
            or (len(parts) == 2 and parts[0] in _SECTIONS and parts[1])
        ):
            continue
        value: Any = raw
        if raw.lstrip().startswith("["):
            with contextlib.suppress(json.JSONDecodeError):  # else text; validation reports it
                value = json.loads(raw)
        target = result
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return result


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
_CACHE_KEYWORDS = {"cache_dir": "dir", "cache_max_bytes": "max_bytes", "use_cache": "enabled"}
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


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    manager: pluggy.PluginManager | None = None,
    **kwargs: Any,
) -> FaucetConfig:
    """Load a reader config: keywords > ``FAUCET_*`` environment > file > defaults.

    Raises:
        ConfigError: With every problem and where the settings came from.
    """
    data: dict[str, Any] = read_config_file(path) if path is not None else {}
    data = _merge(data, env_overrides(environ))
    data = _merge(data, config_from_kwargs(kwargs))
    origin = str(path) if path is not None else "keyword arguments"
    if path is not None and kwargs:
        origin += " (with keyword overrides)"
    return build_config(data, origin, manager)
