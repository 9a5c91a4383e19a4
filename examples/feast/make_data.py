"""Writes the example repo's data: drivers' hourly and daily stats, and orders to train on.

Run ``python examples/feast/make_data.py [--orders N]``, then ``feast apply`` in
``examples/feast/feature_repo``. Every ``conv_rate`` is distinct, so a test can tell which
hourly row a feature value came from.
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent / "feature_repo"
#: The first hour of stats (UTC; numpy datetimes carry no time zone).
START = np.datetime64("2024-06-01T00:00:00", "us")
UTC = pa.timestamp("us", tz="UTC")


def write_data(
    folder: Path, *, drivers: int = 50, hours: int = 72, orders: int = 3_000, seed: int = 0
) -> dict[str, Path]:
    """Write the three Parquet files into ``folder``; return their paths by name."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ids = np.arange(1001, 1001 + drivers, dtype=np.int64)
    skill = dict(zip(ids.tolist(), rng.uniform(0.2, 0.9, drivers), strict=True))  # per driver

    # Hourly stats, with about one hour in ten missing, and a day off (hours 24 to 35) for
    # every tenth driver: orders of its second half find no stats within the TTL.
    driver, hour = (a.ravel() for a in np.meshgrid(ids, np.arange(hours), indexing="ij"))
    day_off = (driver % 10 == 0) & (hour >= 24) & (hour < 36)
    kept = (rng.random(driver.size) > 0.1) & ~day_off
    driver, hour = driver[kept], hour[kept]
    written = START + hour.astype("timedelta64[h]")
    hourly = pa.table(
        {
            "driver_id": driver,
            "event_timestamp": pa.array(written, UTC),
            "created": pa.array(written + np.timedelta64(1, "m"), UTC),
            "conv_rate": pa.array(rng.permutation(driver.size) / driver.size, pa.float32()),
            "acc_rate": pa.array(
                np.clip(
                    [skill[d] for d in driver.tolist()] + rng.normal(0, 0.1, driver.size), 0, 1
                ),
                pa.float32(),
            ),
            "trips_today": rng.integers(0, 40, driver.size),
        }
    )

    days = hours // 24 + 1
    driver_d, day = (a.ravel() for a in np.meshgrid(ids, np.arange(days), indexing="ij"))
    daily = pa.table(
        {
            "driver_id": driver_d,
            "event_timestamp": pa.array(START + day.astype("timedelta64[D]"), UTC),
            "rating": pa.array(rng.uniform(3, 5, driver_d.size), pa.float32()),
            "lifetime_trips": day * 100 + rng.integers(0, 100, driver_d.size),
        }
    )

    # Orders from three hours before the first stats to the last hour, at any second.
    span = int(timedelta(hours=hours + 3).total_seconds())
    seconds = rng.integers(0, span, orders)
    events = np.array((START - np.timedelta64(3, "h")), dtype="datetime64[us]") + seconds.astype(
        "timedelta64[s]"
    )
    driver_o = rng.choice(ids, orders)
    completed = rng.random(orders) < np.array([skill[d] for d in driver_o.tolist()])
    entity_rows = pa.table(
        {
            "order_id": np.arange(orders, dtype=np.int64),
            "driver_id": driver_o,
            "event_timestamp": pa.array(events, UTC),
            "completed": completed.astype(np.int64),
        }
    )

    paths = {
        "driver_hourly": folder / "driver_hourly.parquet",
        "driver_daily": folder / "driver_daily.parquet",
        "orders": folder / "orders.parquet",
    }
    pq.write_table(hourly, paths["driver_hourly"])
    pq.write_table(daily, paths["driver_daily"])
    pq.write_table(entity_rows, paths["orders"])
    return paths


def main() -> None:
    """Write the example data into the example repo's ``data`` folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=3_000, help="entity rows to write")
    parser.add_argument("--folder", type=Path, default=REPO / "data", help="where to write")
    args = parser.parse_args()
    for name, path in write_data(args.folder, orders=args.orders).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
