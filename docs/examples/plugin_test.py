"""Testing a warehouse plugin: register it on a fresh plugin manager and check the contract."""

import sys
from pathlib import Path

from faucet_core import get_batch_reader, installed_plugins, warehouses
from faucet_core.plugins import make_plugin_manager

# The example plugin, imported from its folder; a plugin's own tests import it normally.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples/faucet-example-plugin"))
import faucet_example_plugin

manager = make_plugin_manager()  # Faucet's hook specs and no plugin: installed ones stay out
manager.register(faucet_example_plugin, name="synthetic")
assert set(warehouses(manager)) == {"synthetic"}
assert installed_plugins(manager)[0].hooks == ("register_warehouses",)


def read(chunk_size: int) -> tuple[list[int], list[int]]:
    """The ids of one training epoch and of one eval pass."""
    with get_batch_reader(
        datastore="synthetic",
        manager=manager,
        rows=3000,  # a connection setting of the synthetic warehouse
        table_name="numbers",
        chunk_size=chunk_size,
        batch_size=128,
        test_split_percent=10,
        label_columns=["label"],
        use_cache=False,
        output="arrow",
    ) as reader:
        train = [i for b in reader.iter_epoch() for i in b["features"]["id"].to_pylist()]
        evaluation = [i for b in reader.iter_eval() for i in b["features"]["id"].to_pylist()]
    return train, evaluation


train, evaluation = read(chunk_size=700)
assert sorted(train + evaluation) == list(range(3000))  # every row exactly once
assert sorted(read(chunk_size=250)[1]) == sorted(evaluation)  # the split ignores chunk size
print(f"{len(train)} train rows, {len(evaluation)} eval rows")
