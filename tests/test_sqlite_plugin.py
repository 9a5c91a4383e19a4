"""The SQLite plugin of the tutorial (examples/faucet-sqlite): a third-party warehouse
written against the contract, installed through its entry point, held to every guarantee."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from faucet_core import PermanentWarehouseError, Reader
from tests.conftest import epoch_ids

EXAMPLE = Path(__file__).parents[1] / "examples" / "faucet-sqlite"
ROWS = 3_000


@pytest.fixture(scope="module")
def sqlite_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``t``: ``id``, a feature, a label and a ``ds`` text date over three days."""
    path = tmp_path_factory.mktemp("sqlite") / "w.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (id INTEGER, x REAL, label INTEGER, ds TEXT)")
        db.executemany(
            "INSERT INTO t VALUES (?, ?, ?, ?)",
            [(i, (i * 37 % 101) / 100, i % 4 == 0, f"2024-01-0{1 + i % 3}") for i in range(ROWS)],
        )
    return path


@pytest.fixture
def plugin(register: Callable[[object], None], monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The plugin module, imported from its folder and registered for the test."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import faucet_sqlite

    register(faucet_sqlite)
    return faucet_sqlite


@pytest.fixture
def make_sqlite_reader(
    plugin: ModuleType, make_reader: Callable[..., Reader], sqlite_path: Path
) -> Callable[..., Reader]:
    def build(**settings: Any) -> Reader:
        return make_reader(
            **{"datastore": "sqlite", "database": str(sqlite_path), "chunk_size": 700, **settings}
        )

    return build


def test_every_row_once_and_a_stable_split(make_sqlite_reader: Callable[..., Reader]) -> None:
    reader = make_sqlite_reader(test_split_percent=20, epochs=2)
    for _ in range(2):
        train, evaluation = epoch_ids(reader), epoch_ids(reader, eval=True)
        assert len(train) == len(set(train)) and len(evaluation) == len(set(evaluation))
        assert sorted(train + evaluation) == list(range(ROWS))
    assert 0.15 < len(evaluation) / ROWS < 0.25
    other_chunks = make_sqlite_reader(test_split_percent=20, chunk_size=2_500, use_cache=False)
    assert sorted(epoch_ids(other_chunks, eval=True)) == sorted(evaluation)


def test_ds_query_and_columns(make_sqlite_reader: Callable[..., Reader]) -> None:
    day = make_sqlite_reader(ds="2024-01-02", columns=["id", "label"])
    assert sorted(epoch_ids(day)) == [i for i in range(ROWS) if i % 3 == 1]
    assert day.feature_columns == ["id"]
    query = make_sqlite_reader(table_name=None, query="SELECT id, label FROM t WHERE id < 100")
    assert sorted(epoch_ids(query)) == list(range(100))


def test_errors_name_the_problem(make_sqlite_reader: Callable[..., Reader]) -> None:
    with pytest.raises(PermanentWarehouseError, match="no such table: nope"):
        make_sqlite_reader(table_name="nope")
    with pytest.raises(PermanentWarehouseError, match=r"source.split_key \['nokey'\]"):
        make_sqlite_reader(split_key="nokey")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The plugin pip-installed into a folder of its own (not into the venv)."""
    source = tmp_path_factory.mktemp("source") / "faucet-sqlite"
    shutil.copytree(EXAMPLE, source)  # building writes into the folder: not into the repo's
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
         "--no-build-isolation", "--target", str(target), str(source)],
        check=True,
    )  # fmt: skip
    yield target


def test_installed_it_is_found_through_its_entry_point(
    installed: Path, sqlite_path: Path, tmp_path: Path
) -> None:
    code = f"""
import json
from faucet_core import get_batch_reader, installed_plugins
info = next(p for p in installed_plugins() if "sqlite" in p.warehouses)
with get_batch_reader(datastore="sqlite", database={str(sqlite_path)!r}, table_name="t",
                      chunk_size=700, batch_size=128, test_split_percent=10, split_key="id",
                      label_columns=["label"], cache_dir={str(tmp_path)!r}) as reader:
    train = [i for b in reader.iter_epoch() for i in b["features"]["id"].tolist()]
    evaluation = [i for b in reader.iter_eval() for i in b["features"]["id"].tolist()]
print(json.dumps({{"dist": info.distribution, "version": info.version,
                   "train": train, "eval": evaluation}}))
"""
    env = {k: v for k, v in os.environ.items() if k != "FAUCET_DISABLE_PLUGIN_AUTOLOAD"}
    env["PYTHONPATH"] = str(installed)
    output = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env
    ).stdout
    result = json.loads(output)
    assert (result["dist"], result["version"]) == ("faucet-sqlite", "0.1.0")
    assert sorted(result["train"] + result["eval"]) == list(range(ROWS))
    assert 150 < len(result["eval"]) < 450


def test_the_same_table_in_two_files_is_two_sources(
    make_sqlite_reader: Callable[..., Reader], sqlite_path: Path, tmp_path: Path
) -> None:
    # The plugin keeps the default source identity: a digest of its connection settings.
    copy = tmp_path / "copy.sqlite"
    shutil.copy(sqlite_path, copy)
    with sqlite3.connect(copy) as db:
        db.execute("UPDATE t SET x = -1")
    first, second = make_sqlite_reader(), make_sqlite_reader(database=str(copy))
    warehouse = first.config.warehouse_class(first.config.connection)
    source = first.plan.request.source
    identity = warehouse.source_identity(source)
    assert identity == warehouse.source_identity(source)
    assert identity != second.config.warehouse_class(second.config.connection).source_identity(
        source
    )
    assert first.plan.rows_id != second.plan.rows_id  # same spelling, other data: not shared
    second.prep_for_epoch()
    xs = {x for batch in iter(second.get_batch, None) for x in batch["features"]["x"]}
    assert xs == {-1}
