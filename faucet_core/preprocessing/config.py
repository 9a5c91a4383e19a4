"""The ``preprocessing:`` section of a reader config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

__all__ = ["DATE_PARTS", "ColumnConfig", "PreprocessingConfig"]

DatePart = Literal[
    "epoch_seconds",
    "epoch_days",
    "year",
    "month",
    "day",
    "day_of_week",
    "day_of_year",
    "hour",
    "minute",
]
#: The numeric parts a date or timestamp column can be turned into.
DATE_PARTS: tuple[str, ...] = get_args(DatePart)


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnConfig(_Section):
    """How to transform one column; unset choices are made by ``auto`` (or left out)."""

    impute: Literal["mean", "median", "most_frequent", "constant"] | None = Field(
        None, description="How to fill NULLs (numeric: mean; categorical: the OOV slot)."
    )
    fill_value: float | str | None = Field(
        None, description="The value `impute: constant` fills in (default 0, or `missing`)."
    )
    indicator: bool | None = Field(
        None, description="Add a `<column>__missing` feature: 1 where the value was NULL."
    )
    scale: Literal["standard", "minmax", "log1p", "l2", "none"] | None = Field(
        None,
        description="Standardize, scale to [0, 1], take log(1 + x), or leave as is; for a "
        "vector column, divide each vector by its length (l2) or leave as is.",
    )
    clip: tuple[float, float] | None = Field(
        None, description="Bound the (imputed) value to [lo, hi] before scaling."
    )
    encode: Literal["index", "onehot", "none"] | None = Field(
        None, description="A category's index, one column per category, or no encoding."
    )
    max_categories: int | None = Field(
        None, ge=1, description="Categories kept; rarer and unseen ones share the OOV slot."
    )
    date_parts: Annotated[list[DatePart] | None, BeforeValidator(_as_list)] = Field(
        None, description="The numeric parts of a date or timestamp column."
    )

    @model_validator(mode="after")
    def _check(self) -> ColumnConfig:
        if self.clip is not None and self.clip[0] > self.clip[1]:
            raise ValueError(f"clip [{self.clip[0]}, {self.clip[1]}]: lo is above hi")
        return self


class PreprocessingConfig(_Section):
    """Imputation, scaling, encoding: fitted on the train split, applied to every batch."""

    auto: bool = Field(
        False, description="Choose a transform for every feature column from its type and stats."
    )
    columns: dict[str, ColumnConfig] = Field(
        default_factory=dict, description="Per-column choices, over `auto`'s (labels too)."
    )
    exclude: Annotated[list[str], BeforeValidator(_as_list)] = Field(
        default_factory=list, description="Columns passed through untouched."
    )
    max_categories: int = Field(
        20, ge=1, description="Default number of categories kept per categorical column."
    )
    spec: Path | None = Field(
        None, description="A saved preprocessor (`faucet fit -o`) to use instead of fitting."
    )

    @property
    def enabled(self) -> bool:
        """Whether any column is transformed."""
        return self.auto or bool(self.columns) or self.spec is not None

    @model_validator(mode="after")
    def _check(self) -> PreprocessingConfig:
        both = sorted(set(self.columns) & set(self.exclude))
        if both:
            raise ValueError(f"columns {both} are both configured and excluded")
        return self
