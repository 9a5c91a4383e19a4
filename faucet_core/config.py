"""The reader configuration: Pydantic models, validated in one pass with every field's path.

The ``connection:`` section is validated by the chosen warehouse's own model, so a config
holds an instance of that model (a ``DuckDBConnection``, a ``BigQueryConnection``): a
config pickles as it is, to DataLoader workers and other processes, without validating
its settings again. Loading settings from files, ``FAUCET_*`` variables and keywords is
:mod:`faucet_core.settings`'s job.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationInfo,
    field_validator,
    model_validator,
)

from faucet_core.errors import UnknownDatastore
from faucet_core.fill import BUFFER_BYTES
from faucet_core.plugins import get_warehouse_class
from faucet_core.preprocessing.config import PreprocessingConfig
from faucet_core.warehouse import PlanRequest, SourceSpec, SplitSpec, Warehouse

__all__ = [
    "ByteSize",
    "CacheConfig",
    "Duration",
    "FaucetConfig",
    "RetryConfig",
    "SourceConfig",
    "default_cache_dir",
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


#: A byte count, given as a number or with a unit (``512MiB``, ``10GB``).
ByteSize = Annotated[int, BeforeValidator(_parse_bytes), Field(ge=0)]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_SECONDS = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _parse_duration(value: Any) -> Any:
    """Accept ``90`` (seconds), ``"30m"``, ``"12h"``, ``"2d"``."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"not a duration: {value!r} (use seconds or 30s, 10m, 12h, 2d)")
        return float(match.group(1)) * _SECONDS[match.group(2)]
    return value


#: A duration in seconds, given as a number or with a unit (``30m``, ``12h``, ``2d``).
Duration = Annotated[float, BeforeValidator(_parse_duration), Field(ge=0)]


def _as_list(value: Any) -> Any:
    """A lone name is a list of one; text starting with ``[`` is a JSON list."""
    if isinstance(value, str):
        if value.lstrip().startswith("["):
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a JSON list: {value!r}") from exc
        return [value]
    return value


Names = Annotated[list[str], BeforeValidator(_as_list)]


def _renamed_keys(
    mapping: dict[Any, Any], rename: Callable[[str], str], where: str
) -> dict[Any, Any]:
    renamed: dict[Any, Any] = {}
    for key, value in mapping.items():
        name = rename(key) if isinstance(key, str) else key
        if name in renamed:
            raise ValueError(f"{where} names the column {name} twice")
        renamed[name] = value
    return renamed


def _stored_names(
    section: Any, rename: Callable[[str], str], lists: tuple[str, ...], keyed: tuple[str, ...]
) -> Any:
    """The raw config ``section`` with the column names it holds as the warehouse stores
    them (:meth:`Warehouse.column_name`): in the name lists of ``lists`` (``inputs``: of
    each group), the keys of ``keyed`` and ``partition_column``."""
    if isinstance(section, BaseModel):
        section = section.model_dump(exclude_unset=True)
    if not isinstance(section, dict):
        return section  # reported by the section's own validation

    def names(value: Any) -> Any:
        value = _as_list(value)
        if not isinstance(value, list):
            return value
        return [rename(name) if isinstance(name, str) else name for name in value]

    section = dict(section)
    for field in lists:
        if field == "inputs" and isinstance(section.get(field), dict):
            section[field] = {group: names(members) for group, members in section[field].items()}
        elif section.get(field) is not None:
            section[field] = names(section[field])
    for field in keyed:
        if isinstance(section.get(field), dict):
            section[field] = _renamed_keys(section[field], rename, field)
    if isinstance(section.get("partition_column"), str):
        section["partition_column"] = rename(section["partition_column"])
    return section


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
    files: Names | None = Field(
        None, description="Parquet or CSV files, for warehouses that read files."
    )
    ds: str | None = Field(None, description="Partition value: only rows of this partition.")
    partition_column: str | None = Field(
        None, description="Column that `ds` filters (default: the warehouse's choice, `ds`)."
    )
    columns: Names | None = Field(None, description="Columns to read (default: all).")
    label_columns: Names = Field(
        default_factory=list, description="Columns returned as labels, not features."
    )
    split_key: Names | None = Field(
        None, description="Columns hashed to assign rows to train/eval (default: all columns)."
    )
    inputs: dict[str, Names] | None = Field(
        None,
        description="Groups of feature columns, each a matrix (numpy) or tensor of its own "
        "in a batch's features, for models with several inputs: `{user: [age, user_emb], "
        "item: [price, item_emb]}`. The features are then these groups alone.",
    )
    pad: dict[str, Annotated[int, Field(ge=1)]] | None = Field(
        None,
        description="List columns to pad with zeros (or cut) to a length, `{tags: 8}`: each "
        "becomes a vector column of that many values, followed by `<column>__length`, how "
        "many of them are the row's own.",
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
        self._check_inputs()
        for column in self.pad or {}:
            if column in self.label_columns:
                raise ValueError(f"pad: {column} is a label column")
            if self.columns is not None and column not in self.columns:
                raise ValueError(f"pad: {column} is not among columns")
        return self

    def _check_inputs(self) -> None:
        seen: dict[str, str] = {}
        for group, members in (self.inputs or {}).items():
            if group in ("features", "labels"):
                raise ValueError(f"inputs: {group!r} names a batch's part; call the group else")
            if not members:
                raise ValueError(f"inputs.{group} lists no column")
            for column in members:
                where = "label_columns" if column in self.label_columns else seen.get(column)
                if where is not None:
                    raise ValueError(f"inputs.{group}: {column} is in {where} too")
                if self.columns is not None and column not in self.columns:
                    raise ValueError(f"inputs.{group}: {column} is not among columns")
                seen[column] = f"inputs.{group}"

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
    fill_buffer: ByteSize = Field(
        BUFFER_BYTES,
        description="Bytes of rows held in memory while the cache is filled from one scan "
        "of the source; more are written out.",
    )
    plan_ttl: Duration | None = Field(
        None,
        description="Reuse the plan of a source without a data version (a query) for this "
        "long, e.g. `12h`; default: plan such sources again every time.",
    )


class RetryConfig(_Section):
    """Retries of transient warehouse errors, and how long a chunk may take."""

    attempts: int = Field(5, ge=1, description="Tries per chunk before giving up.")
    initial_backoff: float = Field(0.5, ge=0, description="Seconds before the first retry.")
    max_backoff: float = Field(30.0, ge=0, description="Longest wait between two tries.")
    chunk_timeout: float = Field(
        900.0, gt=0, description="Seconds get_batch() waits for one chunk before failing."
    )


class _Unvalidated(BaseModel):
    """Stands for a connection that cannot be validated: its datastore is unknown."""


class FaucetConfig(_Section):
    """The whole configuration of one reader."""

    datastore: str = Field(description="Warehouse plugin to read from, e.g. `duckdb`.")
    connection: SerializeAsAny[BaseModel] = Field(
        default_factory=dict,
        validate_default=True,
        description="Connection settings, validated by the warehouse's own model.",
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
    output: Literal["pandas", "polars", "numpy", "arrow"] = Field(
        "pandas", description="Type of `batch['features']` and `batch['labels']`."
    )
    drop_last: bool = Field(False, description="Drop a last batch smaller than batch_size.")
    cache: CacheConfig = Field(default_factory=CacheConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    preprocessing: PreprocessingConfig = Field(default_factory=PreprocessingConfig)

    @field_validator("datastore")
    @classmethod
    def _installed(cls, value: str) -> str:
        try:
            get_warehouse_class(value)
        except UnknownDatastore as exc:
            raise ValueError(exc.problems[0][1]) from None
        return value

    @field_validator("connection", mode="before")
    @classmethod
    def _connection(cls, value: Any, info: ValidationInfo) -> Any:
        datastore = info.data.get("datastore")
        if datastore is None:  # unknown: reported on `datastore` alone
            return _Unvalidated()
        model = get_warehouse_class(datastore).connection_model
        if isinstance(value, model):
            return value
        return model.model_validate({} if value is None else value)

    @field_validator("source", "preprocessing", mode="before")
    @classmethod
    def _column_names(cls, value: Any, info: ValidationInfo) -> Any:
        # Column names as the warehouse resolves them, before any check compares two.
        datastore = info.data.get("datastore")
        if datastore is None:
            return value
        rename = get_warehouse_class(datastore).column_name
        if info.field_name == "source":
            lists = ("columns", "label_columns", "split_key", "inputs")
            return _stored_names(value, rename, lists, ("pad",))
        return _stored_names(value, rename, ("exclude",), ("columns",))

    @property
    def warehouse_class(self) -> type[Warehouse]:
        """The warehouse class of :attr:`datastore`, from the installed plugins."""
        return get_warehouse_class(self.datastore)

    def split_spec(self) -> SplitSpec:
        """The warehouse-facing description of the train/eval split."""
        key = self.source.split_key
        return SplitSpec(tuple(key) if key else None, self.test_split_percent)

    def plan_request(self) -> PlanRequest:
        """What to plan: the source, the split and the chunk size."""
        return PlanRequest(self.source.spec(), self.split_spec(), self.chunk_size)
