"""The settings of the ``feast`` datastore: which Feast repo, which features, and how to read.

Validated without Feast installed (``faucet validate --offline``, the settings reference):
names are checked against the Feast registry when the warehouse opens the repo.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

__all__ = ["FeastConnection"]

_FEATURE_REF = re.compile(r"^[^:\s]+:[^:\s]+$")
_MEMORY = re.compile(r"^\d+(\.\d+)?\s*([KMGT]i?B|B)$", re.IGNORECASE)


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class FeastConnection(BaseModel):
    """Connection settings of the ``feast`` datastore: a repo, and its features to read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    repo_path: Path | None = Field(
        None,
        description="The Feast repo folder (holding `feature_store.yaml`); default: the "
        "folder of `feature_store_yaml`.",
    )
    feature_store_yaml: Path | None = Field(
        None, description="A `feature_store.yaml` to use (default: the one in `repo_path`)."
    )
    features: Annotated[list[str], BeforeValidator(_as_list)] | None = Field(
        None,
        description="Features to join to the entity rows, as `view:feature` references; or "
        "give `feature_service`.",
    )
    feature_service: str | None = Field(
        None, description="A feature service of the registry whose features to join."
    )
    full_feature_names: bool = Field(
        False, description="Name feature columns `view__feature` rather than `feature`."
    )
    push_down: bool = Field(
        True,
        description="Hand the retrieval's SQL to the warehouse plugin of the offline store, "
        "where the store gives SQL and such a plugin is installed; `false`: always read the "
        "retrieval into local files.",
    )
    scratch_dir: Path | None = Field(
        None,
        description="Folder for the retrieval's local files and DuckDB's spill files "
        "(default: the system temp folder).",
    )
    memory_limit: str | None = Field(
        "256MB",
        description="DuckDB's memory limit for the point-in-time join of the DuckDB offline "
        "store and for reading its result; past it, DuckDB spills to `scratch_dir`. `null`: "
        "DuckDB's default.",
    )
    threads: int | None = Field(None, ge=1, description="DuckDB worker threads (default: all).")

    @model_validator(mode="after")
    def _check(self) -> FeastConnection:
        if self.repo_path is None and self.feature_store_yaml is None:
            raise ValueError("give repo_path (a Feast repo folder) or feature_store_yaml")
        if (
            self.repo_path is not None
            and self.feature_store_yaml is None
            and not (self.repo_path / "feature_store.yaml").is_file()
        ):
            raise ValueError(f"repo_path: no feature_store.yaml in {self.repo_path}")
        if self.feature_store_yaml is not None and not self.feature_store_yaml.is_file():
            raise ValueError(f"feature_store_yaml: no such file: {self.feature_store_yaml}")
        if (self.features is None) == (self.feature_service is None):
            raise ValueError("give exactly one of features (view:feature references) or "
                             "feature_service")  # fmt: skip
        if self.memory_limit is not None and not _MEMORY.match(self.memory_limit):
            raise ValueError(f"memory_limit: not a size: {self.memory_limit!r} (e.g. 512MB, 4GB)")
        if self.features is not None:
            if not self.features:
                raise ValueError("features: give at least one view:feature reference")
            wrong = [ref for ref in self.features if not _FEATURE_REF.match(ref)]
            if wrong:
                raise ValueError(f"features: {wrong} are not view:feature references")
            if len(set(self.features)) != len(self.features):
                raise ValueError(f"features lists a feature twice: {self.features}")
        return self

    @property
    def repo(self) -> Path:
        """The repo folder: ``repo_path``, else the folder of ``feature_store_yaml``."""
        return self.repo_path or Path(str(self.feature_store_yaml)).parent

    @property
    def yaml_path(self) -> Path:
        """The ``feature_store.yaml`` in use."""
        return self.feature_store_yaml or self.repo / "feature_store.yaml"
