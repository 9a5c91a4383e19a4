"""The feast datastore on the example repo (DuckDB offline store, SQLite registry): rows
joined point in time, every row once, entities never split, resume, errors naming names."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from faucet_core import ConfigError, PermanentWarehouseError, Reader
from tests.feast.conftest import FEATURES, expected_features, served_rows

MakeReader = Callable[..., Reader]


def test_features_are_those_of_each_event_time(
    make_feast_reader: MakeReader, feast_repo: Path
) -> None:
    reader = make_feast_reader()
    served = pd.concat([served_rows(reader), served_rows(reader, eval=True)]).set_index("order_id")
    data = feast_repo / "data"
    orders = pq.read_table(data / "orders.parquet").to_pandas()
    hourly = pq.read_table(data / "driver_hourly.parquet").to_pandas()
    assert len(served) == len(orders) == 3_000

    # No value was written after its event: each conv_rate is one hourly row's.
    written_at = hourly.set_index("conv_rate")["event_timestamp"]
    found = served.dropna(subset=["conv_rate"])
    times = written_at.loc[found["conv_rate"].to_numpy()].to_numpy()
    assert (times <= found["event_timestamp"].to_numpy()).all()
    # ... although for most events a newer row of the same driver exists.
    newer = orders.merge(
        hourly[["driver_id", "event_timestamp"]], on="driver_id", suffixes=("", "_w")
    )
    assert (newer["event_timestamp_w"] > newer["event_timestamp"]).groupby(
        newer["order_id"]
    ).any().mean() > 0.9

    expected = expected_features(data)
    got = served[["conv_rate", "acc_rate", "trips_today", "rating"]].loc[expected.index]
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert got["conv_rate"].isna().sum() > 0  # events before any stats, or past the TTL
    assert got["conv_rate"].notna().sum() > 2_500


def test_every_row_once_and_each_driver_in_one_split(make_feast_reader: MakeReader) -> None:
    reader = make_feast_reader(epochs=2)
    first = served_rows(reader)
    second = served_rows(reader)
    held_out = served_rows(reader, eval=True)
    assert sorted(first["order_id"]) == sorted(second["order_id"])
    assert first["order_id"].is_unique and held_out["order_id"].is_unique
    assert list(first["order_id"]) != list(second["order_id"])  # shuffled anew
    assert sorted([*first["order_id"], *held_out["order_id"]]) == list(range(3_000))
    train_drivers, eval_drivers = set(first["driver_id"]), set(held_out["driver_id"])
    assert train_drivers and eval_drivers and not train_drivers & eval_drivers
    assert 0.1 < len(held_out) / 3_000 < 0.35
    assert reader.metrics[1].chunks_cached == len(reader.plan.chunks["train"])


def test_the_split_key_defaults_to_the_entity_keys_and_can_be_set(
    make_feast_reader: MakeReader,
) -> None:
    by_order = make_feast_reader(split_key=["order_id"])
    train, held_out = served_rows(by_order), served_rows(by_order, eval=True)
    assert sorted([*train["order_id"], *held_out["order_id"]]) == list(range(3_000))
    assert set(train["driver_id"]) & set(held_out["driver_id"])  # orders, not drivers, split


def test_a_restored_reader_serves_exactly_the_rest(make_feast_reader: MakeReader) -> None:
    settings = {"epochs": 2, "batch_size": 200, "seed": 5}
    reader = make_feast_reader(**settings)
    full = []
    for _ in range(2):
        full += [b["features"]["order_id"].to_pylist() for b in reader.iter_epoch()]
    interrupted = make_feast_reader(**settings)
    interrupted.prep_for_epoch()
    served = [interrupted.get_batch()["features"]["order_id"].to_pylist() for _ in range(7)]
    state = interrupted.state_dict()
    interrupted.close()
    restored = make_feast_reader(**{**settings, "seed": None})
    restored.load_state_dict(state)
    rest = []
    while restored.epoch < 2:
        rest += [b["features"]["order_id"].to_pylist() for b in restored.iter_epoch()]
    assert served + rest == full
    assert restored.plan_origin == "cache"  # the same data version: the saved plan


def test_a_feature_service_reads_its_features(make_feast_reader: MakeReader) -> None:
    reader = make_feast_reader(features=None, feature_service="driver_activity")
    assert set(reader.plan.columns) == {
        "order_id", "driver_id", "event_timestamp", "completed",
        "conv_rate", "acc_rate", "trips_today", "rating",
    }  # fmt: skip


def test_full_feature_names_and_selected_columns(make_feast_reader: MakeReader) -> None:
    reader = make_feast_reader(
        full_feature_names=True,
        columns=["driver_hourly__conv_rate", "driver_daily__rating", "completed"],
    )
    batch = next(reader.iter_epoch())
    assert batch["features"].column_names == ["driver_hourly__conv_rate", "driver_daily__rating"]
    assert reader.plan.state["retrieval"] == "spilled"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"features": ["driver_hourly:conv_rate", "drivers:rating"]},
         r"connection.features: 'drivers:rating': no feature view 'drivers' in the Feast "
         r"registry \(project faucet_drivers\); it has: driver_daily, driver_hourly"),
        ({"features": ["driver_hourly:speed"]},
         r"connection.features: 'driver_hourly:speed': feature view 'driver_hourly' has no "
         r"feature 'speed'; it has: acc_rate, conv_rate, trips_today"),
        ({"features": None, "feature_service": "drivers"},
         r"connection.feature_service: no feature service 'drivers' .* it has: driver_activity"),
    ],
)  # fmt: skip
def test_unknown_names_are_errors_naming_the_setting(
    make_feast_reader: MakeReader, settings: dict[str, object], message: str
) -> None:
    with pytest.raises(PermanentWarehouseError, match=message):
        make_feast_reader(**settings)


def test_entity_rows_without_the_join_keys_are_an_error(
    make_feast_reader: MakeReader, tmp_path: Path, feast_repo: Path
) -> None:
    orders = pq.read_table(feast_repo / "data" / "orders.parquet").drop_columns(["driver_id"])
    pq.write_table(orders, tmp_path / "orders.parquet")
    with pytest.raises(
        PermanentWarehouseError,
        match=r"source.files: the entity rows lack the join keys \['driver_id'\]",
    ):
        make_feast_reader(files=[str(tmp_path / "orders.parquet")])


def test_a_split_key_not_in_the_rows_is_an_error_naming_the_source(
    make_feast_reader: MakeReader, feast_repo: Path
) -> None:
    with pytest.raises(
        PermanentWarehouseError,
        match=r"source.split_key \['customer_id'\] not found in the Feast retrieval of files "
        rf"{feast_repo}/data/orders.parquet; it has \['order_id', 'driver_id'",
    ):
        make_feast_reader(split_key=["customer_id"])


def test_entity_rows_must_be_files_for_the_duckdb_store(make_feast_reader: MakeReader) -> None:
    with pytest.raises(
        PermanentWarehouseError,
        match=r"source.query: the duckdb offline store joins entity rows from source.files",
    ):
        make_feast_reader(files=None, query="SELECT 1")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"features": ["conv_rate"]},
            r"connection: features: \['conv_rate'\] are not view:feature",
        ),
        ({"feature_service": "driver_activity"}, "give exactly one of features"),
        ({"repo_path": "/nowhere"}, "repo_path: no feature_store.yaml in /nowhere"),
    ],
)
def test_settings_are_checked_before_feast_is_asked(
    make_feast_reader: MakeReader, settings: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        make_feast_reader(**settings)


def test_the_data_version_follows_the_entity_rows_and_the_features(
    make_feast_reader: MakeReader, feast_repo: Path, tmp_path: Path
) -> None:
    orders = tmp_path / "orders.parquet"
    pq.write_table(pq.read_table(feast_repo / "data" / "orders.parquet").slice(0, 1_000), orders)
    first = make_feast_reader(files=[str(orders)])
    again = make_feast_reader(files=[str(orders)])
    other_features = make_feast_reader(files=[str(orders)], features=FEATURES[:2])
    assert first.plan.data_version is not None and first.plan_origin == "warehouse"
    assert again.plan_origin == "cache" and again.plan.fingerprint == first.plan.fingerprint
    assert other_features.plan.data_version != first.plan.data_version
    pq.write_table(pq.read_table(feast_repo / "data" / "orders.parquet").slice(0, 900), orders)
    changed = make_feast_reader(files=[str(orders)])
    assert (
        changed.plan_origin == "warehouse" and changed.plan.data_version != first.plan.data_version
    )
    assert changed.rows("train") + changed.rows("eval") == 900


def test_the_retrieval_is_spilled_to_a_scratch_folder_removed_on_close(
    make_feast_reader: MakeReader, tmp_path: Path
) -> None:
    reader = make_feast_reader()
    folder = Path(reader.plan.state["folder"])
    assert folder.parent == tmp_path / "scratch" and (folder / "rows.parquet").is_file()
    served_rows(reader)
    reader.close()
    assert not folder.exists()


def test_a_reader_given_the_plan_reads_the_planners_files_or_writes_them_again(
    make_feast_reader: MakeReader, tmp_path: Path
) -> None:
    planner = make_feast_reader()
    folder = Path(planner.plan.state["folder"])
    # As another process would: its own warehouse, its own empty cache, the plan given.
    other = make_feast_reader(plan=planner.plan, cache_dir=str(tmp_path / "other-cache"))
    assert other.plan_origin == "given"
    expected = served_rows(planner).sort_values("order_id", ignore_index=True)
    pd.testing.assert_frame_equal(
        served_rows(other).sort_values("order_id", ignore_index=True), expected
    )
    assert other.metrics[-1].chunks_fetched == len(planner.plan.chunks["train"])
    assert sorted(p.name for p in folder.parent.glob("faucet-feast-[0-9a-f]*")) == [folder.name]
    planner.close()
    other.close()
    assert not folder.exists()  # removed by the planner, which made it

    late = make_feast_reader(plan=planner.plan, cache_dir=str(tmp_path / "late-cache"))
    rows = served_rows(late).sort_values("order_id", ignore_index=True)
    assert folder.exists()  # the retrieval, written again where the plan says
    pd.testing.assert_frame_equal(rows, expected)
    late.close()
    assert not folder.exists()
