"""Testing a warehouse plugin: register it in the test, and hold it to Faucet's guarantees."""

import os
import sqlite3
import sys
import tempfile
from pathlib import Path

# As in a conftest.py: only the plugins the tests register take part, installed or not.
os.environ["FAUCET_DISABLE_PLUGIN_AUTOLOAD"] = "1"

from faucet_core import get_batch_reader, installed_plugins, warehouses
from faucet_core.plugins import pm

# The SQLite plugin, imported from its folder; a plugin's own tests import it normally.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples/faucet-sqlite"))
import faucet_sqlite

pm.register(faucet_sqlite, name="sqlite")  # as its entry point does once it is installed
assert warehouses() == {"sqlite": faucet_sqlite.SQLiteWarehouse}
assert any("sqlite" in plugin.warehouses for plugin in installed_plugins())

folder = Path(tempfile.mkdtemp())
database = folder / "example.sqlite"
with sqlite3.connect(database) as db:
    db.execute("CREATE TABLE events (id INTEGER, x REAL, label INTEGER)")
    db.executemany("INSERT INTO events VALUES (?, ?, ?)", [(i, i / 10, i % 2) for i in range(3000)])


def read(chunk_size: int) -> tuple[list[int], list[int]]:
    """The ids of one training epoch and of one eval pass."""
    with get_batch_reader(
        datastore="sqlite",
        database=str(database),  # the plugin's connection setting
        table_name="events",
        split_key="id",
        chunk_size=chunk_size,
        batch_size=128,
        test_split_percent=10,
        label_columns=["label"],
        cache_dir=str(folder / "cache"),
        output="arrow",
    ) as reader:
        train = [i for b in reader.iter_epoch() for i in b["features"]["id"].to_pylist()]
        evaluation = [i for b in reader.iter_eval() for i in b["features"]["id"].to_pylist()]
    return train, evaluation


train, evaluation = read(chunk_size=700)
assert sorted(train + evaluation) == list(range(3000))  # every row exactly once
assert sorted(read(chunk_size=250)[1]) == sorted(evaluation)  # the split ignores chunk size
pm.unregister(faucet_sqlite)
print(f"{len(train)} train rows, {len(evaluation)} eval rows")
