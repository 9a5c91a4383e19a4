"""The feature definitions of the example repo: drivers, their hourly and daily stats."""

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float32, Int64

DATA = Path(__file__).resolve().parent / "data"

driver = Entity(
    name="driver", join_keys=["driver_id"], value_type=ValueType.INT64, description="A driver."
)

hourly_source = FileSource(
    name="driver_hourly_source",
    path=str(DATA / "driver_hourly.parquet"),
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)
driver_hourly = FeatureView(
    name="driver_hourly",
    entities=[driver],
    ttl=timedelta(hours=6),
    schema=[
        Field(name="conv_rate", dtype=Float32),
        Field(name="acc_rate", dtype=Float32),
        Field(name="trips_today", dtype=Int64),
    ],
    source=hourly_source,
)

daily_source = FileSource(
    name="driver_daily_source",
    path=str(DATA / "driver_daily.parquet"),
    timestamp_field="event_timestamp",
)
driver_daily = FeatureView(
    name="driver_daily",
    entities=[driver],
    ttl=timedelta(days=2),
    schema=[Field(name="rating", dtype=Float32), Field(name="lifetime_trips", dtype=Int64)],
    source=daily_source,
)

driver_activity = FeatureService(
    name="driver_activity", features=[driver_hourly, driver_daily[["rating"]]]
)
