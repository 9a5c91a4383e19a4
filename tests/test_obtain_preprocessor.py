"""How a reader gets its preprocessing (preprocessing.obtain): reused or fitted, and its cost."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from faucet_core import ConfigError, Plan, Reader, Warehouse, hookimpl
from faucet_core.preprocessing.preprocessor import SPEC_FORMAT
from faucet_core.preprocessing.stats import StatsRequest, TrainStats
from faucet_core.warehouse import PlanRequest
from faucet_duckdb import DuckDBWarehouse
from tests.conftest import epoch_ids

MakeReader = Callable[..., Reader]

#: What the billing warehouse says planning (its counting query) and a statistics query cost.
PLANNING_BYTES = 10_000
STATS_BYTES = 300
#: The columns of ``table_path``'s table ``t``.
COLUMNS = ["id", "x1", "x2", "name", "label", "ds"]


class BillingDuckDB(DuckDBWarehouse):
    """DuckDB billing its queries as BigQuery would (a job and bytes billed for the counting
    query, another for a statistics query), and counting its statistics queries."""

    name = "billing-duckdb"
    stats_queries: ClassVar[int] = 0

    def count_buckets(self, request: PlanRequest) -> Any:
        counted = super().count_buckets(request)
        self.costs.query_jobs += 1
        self.costs.bytes_billed += PLANNING_BYTES
        return counted

    def column_stats(self, plan: Plan, request: StatsRequest) -> TrainStats | None:
        type(self).stats_queries += 1
        found = super().column_stats(plan, request)
        self.costs.query_jobs += 1
        self.costs.bytes_billed += STATS_BYTES
        return found


class UntypedDuckDB(DuckDBWarehouse):
    """DuckDB knowing no column types before reading, as SQLite (``LIMIT 0``)."""

    name = "untyped-duckdb"

    def count_buckets(self, request: PlanRequest) -> Any:
        return dataclasses.replace(super().count_buckets(request), schema=None)


class _Plugin:
    @hookimpl
    def register_warehouses(self, register: Callable[[type[Warehouse]], None]) -> None:
        register(BillingDuckDB)
        register(UntypedDuckDB)


@pytest.fixture
def billing(register: Callable[[object], None]) -> type[BillingDuckDB]:
    register(_Plugin())
    BillingDuckDB.stats_queries = 0
    return BillingDuckDB


@pytest.fixture
def make(make_reader: MakeReader, billing: type[BillingDuckDB]) -> MakeReader:
    """Readers of ``table_path`` on the billing warehouse, a fifth of the rows for eval."""

    def build(**settings: Any) -> Reader:
        return make_reader(**{"datastore": billing.name, "test_split_percent": 20, **settings})

    return build


def _logged(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    """What obtaining the preprocessing logged: (level, whole message) pairs."""
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.module == "obtain"]


def test_a_pass_counts_only_what_it_spent(make: MakeReader) -> None:
    """Planning billed a job; the epoch after it, reading the cache's fill, billed none."""
    reader = make()
    assert reader.costs.query_jobs == 1
    epoch_ids(reader)
    assert (reader.metrics[-1].query_jobs, reader.metrics[-1].bytes_billed) == (0, 0)
    assert reader.costs.query_jobs == 1


def test_fitting_records_the_train_rows_the_plan_and_what_the_statistics_query_cost(
    make: MakeReader, billing: type[BillingDuckDB]
) -> None:
    reader = make(preprocessing={"auto": True, "exclude": ["id"]})
    assert reader.plan_origin == "warehouse"
    assert billing.stats_queries == 1
    # Planning's job and bytes are the reader's, not the fit's.
    assert (reader.costs.query_jobs, reader.costs.bytes_billed) == (2, PLANNING_BYTES + STATS_BYTES)
    assert reader.preprocessor is not None
    assert reader.preprocessor.fitted_on == {
        "rows": reader.rows("train"),
        "plan": reader.plan.fingerprint,
        "query_jobs": 1,
        "bytes_billed": STATS_BYTES,
    }


def test_fitting_logs_the_train_rows_it_was_fitted_on(
    make: MakeReader, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="faucet"):
        reader = make(preprocessing={"auto": True})
    assert _logged(caplog) == [
        ("INFO", f"fitted preprocessing on {reader.rows('train')} train rows")
    ]


def test_a_second_reader_of_the_same_plan_reuses_the_saved_preprocessor(
    make: MakeReader, billing: type[BillingDuckDB], caplog: pytest.LogCaptureFixture
) -> None:
    settings = {"auto": True, "exclude": ["id"]}
    first = make(preprocessing=settings)
    assert billing.stats_queries == 1
    with caplog.at_level(logging.INFO, logger="faucet"):
        second = make(preprocessing=settings, seed=2)
    assert second.plan_origin == "cache"
    assert billing.stats_queries == 1  # not fitted again
    assert _logged(caplog) == []
    assert second.preprocessor == first.preprocessor
    assert second.preprocessor is not None
    # What the fit cost when it ran, though this reader spent nothing.
    assert (second.costs.query_jobs, second.costs.bytes_billed) == (0, 0)
    assert second.preprocessor.fitted_on["query_jobs"] == 1
    assert second.preprocessor.fitted_on["bytes_billed"] == STATS_BYTES


def test_a_reader_without_the_cache_fits_again(
    make: MakeReader, billing: type[BillingDuckDB]
) -> None:
    first = make(preprocessing={"auto": True})
    uncached = make(preprocessing={"auto": True}, use_cache=False)
    assert billing.stats_queries == 2
    assert first.preprocessor is not None and uncached.preprocessor is not None
    # The same fit, made anew (its means may differ in the last bits: DuckDB sums in
    # parallel), at the cost of a statistics query of its own.
    assert uncached.preprocessor.fitted_on == first.preprocessor.fitted_on
    assert uncached.costs.query_jobs == 2  # planning, and the statistics query


def test_a_reader_of_another_plan_fits_its_own_preprocessor(
    make: MakeReader, billing: type[BillingDuckDB]
) -> None:
    first = make(preprocessing={"auto": True})
    other = make(preprocessing={"auto": True}, test_split_percent=30)
    assert billing.stats_queries == 2
    assert other.plan.fingerprint != first.plan.fingerprint
    assert other.preprocessor is not None
    assert other.preprocessor.fitted_on["plan"] == other.plan.fingerprint
    assert other.preprocessor.fitted_on["rows"] == other.rows("train")


def test_other_label_columns_are_fitted_anew(
    make: MakeReader, billing: type[BillingDuckDB]
) -> None:
    first = make(preprocessing={"auto": True, "exclude": ["id", "ds"]})
    other = make(preprocessing={"auto": True, "exclude": ["id", "ds"]}, label_columns=["x2"])
    assert billing.stats_queries == 2
    assert first.preprocessor is not None and other.preprocessor is not None
    assert [t.name for t in first.preprocessor.features] == ["id", "x1", "x2", "name", "ds"]
    assert [t.name for t in other.preprocessor.features] == ["id", "x1", "name", "label", "ds"]
    assert other.label_columns == ["x2"]


def test_vector_means_alone_run_no_statistics_query(
    make_reader: MakeReader, vector_table_path: Path, billing: type[BillingDuckDB]
) -> None:
    # No warehouse computes a vector's mean: it comes from the train chunks, and the
    # warehouse is asked nothing.
    reader = make_reader(
        datastore=billing.name, database=str(vector_table_path), table_name="v",
        columns=["id", "x1", "emb", "label"], test_split_percent=0,
        preprocessing={"columns": {"emb": {"impute": "mean"}}},
    )  # fmt: skip
    assert billing.stats_queries == 0
    assert reader.preprocessor is not None
    assert reader.preprocessor.fitted_on == {
        "rows": 600,
        "plan": reader.plan.fingerprint,
        "query_jobs": 0,
        "bytes_billed": 0,
    }


def test_unknown_columns_under_columns_and_exclude_are_named(make: MakeReader) -> None:
    with pytest.raises(ConfigError) as raised:
        make(preprocessing={"columns": {"nope": {"scale": "standard"}}, "exclude": ["gone"]})
    assert raised.value.problems == [
        ("preprocessing.columns", f"['nope'] not among the columns {COLUMNS}"),
        ("preprocessing.exclude", f"['gone'] not among the columns {COLUMNS}"),
    ]
    with pytest.raises(ConfigError) as raised:
        make(preprocessing={"auto": True, "exclude": ["id", "gone", "lost"]})
    assert raised.value.problems == [
        ("preprocessing.exclude", f"['gone', 'lost'] not among the columns {COLUMNS}"),
    ]


def test_a_padded_columns_length_may_be_preprocessed(
    make_reader: MakeReader, vector_table_path: Path
) -> None:
    settings = {"database": str(vector_table_path), "table_name": "v",
                "columns": ["id", "tags", "label"], "pad": {"tags": 2}}  # fmt: skip
    reader = make_reader(
        **settings, preprocessing={"columns": {"tags__length": {"scale": "minmax"}}}
    )
    assert reader.preprocessor is not None
    (length,) = [t for t in reader.preprocessor.features if t.name == "tags__length"]
    assert length.kind == "numeric"
    with pytest.raises(ConfigError) as raised:
        make_reader(**settings, preprocessing={"exclude": ["tags__len"], "auto": True})
    columns = ["id", "tags", "label", "tags__length"]
    assert raised.value.problems == [
        ("preprocessing.exclude", f"['tags__len'] not among the columns {columns}"),
    ]


def test_a_spec_that_is_no_preprocessor_is_a_config_error_naming_the_file(
    make: MakeReader, tmp_path: Path
) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text('{"format": 0}', encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        make(preprocessing={"spec": str(spec)})
    message = f"{spec}: not a Faucet preprocessor of format {SPEC_FORMAT}"
    assert raised.value.problems == [("preprocessing.spec", message)]


def test_a_source_of_no_rows_and_no_known_types_keeps_its_columns_as_they_are(
    make: MakeReader,
) -> None:
    """With no chunk to read the types from, every column is of no known type (NULL): kept
    as it is, beside the features."""
    reader = make(
        datastore="untyped-duckdb", table_name=None, query="SELECT * FROM t WHERE false",
        preprocessing={"auto": True},
    )  # fmt: skip
    assert reader.plan.schema is None and not reader.plan.every_chunk
    assert reader.preprocessor is not None
    kinds = {t.name: (t.kind, t.note) for t in reader.preprocessor.features}
    assert kinds == {c: ("kept", "") for c in COLUMNS if c != "label"}
