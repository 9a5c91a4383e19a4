"""Grouped inputs (``source.inputs``): a batch's features as one matrix or tensor per
group, preprocessed as without groups, through DataLoader workers, ranks and resume."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from faucet_core import ConfigError, Reader, load_config
from faucet_core.torch import FaucetDataLoader, FaucetIterableDataset

MakeReader = Callable[..., Reader]
GROUPS = {"user": ["x1", "emb"], "item": ["id"]}
EMB = ["emb[0]", "emb[1]", "emb[2]", "emb[3]"]


@pytest.fixture
def make_grouped(make_reader: MakeReader, vector_table_path: Path) -> MakeReader:
    def build(**settings: Any) -> Reader:
        defaults = {
            "database": str(vector_table_path), "table_name": "v", "inputs": GROUPS,
            "columns": ["id", "x1", "emb", "tags", "label"], "test_split_percent": 0,
        }  # fmt: skip
        return make_reader(**{**defaults, **settings})

    return build


def _check_rows(ids: np.ndarray, user: np.ndarray) -> None:
    """``user`` rows are ``x1`` and the embedding of the row ``ids`` names."""
    emb = np.column_stack([ids, 2 * ids, ids % 7, np.ones_like(ids)]).astype(np.float64)
    emb[ids % 10 == 3] = np.nan
    assert np.allclose(user[:, 0], ids / 10.0)
    assert np.array_equal(user[:, 1:], emb, equal_nan=True)


def test_numpy_batches_hold_a_matrix_per_group(make_grouped: MakeReader) -> None:
    reader = make_grouped(output="numpy")
    assert reader.inputs == {"user": ["x1", *EMB], "item": ["id"]}
    assert reader.feature_columns == ["x1", "emb", "id"]  # tags is in no group: not served
    batches = list(reader.iter_epoch())
    assert set(batches[0]["features"]) == {"user", "item"}
    user = np.concatenate([b["features"]["user"] for b in batches])
    ids = np.concatenate([b["features"]["item"] for b in batches])[:, 0]
    assert user.shape == (600, 5) and sorted(ids.tolist()) == list(range(600))
    _check_rows(ids, user)
    assert np.concatenate([b["labels"] for b in batches]).tolist() == (ids % 2).tolist()


def test_pandas_batches_hold_a_frame_per_group(make_grouped: MakeReader) -> None:
    batch = next(make_grouped(output="pandas").iter_epoch())
    assert list(batch["features"]["user"].columns) == ["x1", "emb"]
    assert list(batch["features"]["item"].columns) == ["id"]


def test_groups_take_the_features_their_columns_are_preprocessed_into(
    make_grouped: MakeReader,
) -> None:
    reader = make_grouped(output="numpy", preprocessing={"auto": True, "exclude": ["id"]})
    assert reader.inputs == {"user": ["x1", *EMB, "emb__missing"], "item": ["id"]}
    batch = next(reader.iter_epoch())
    user, item = batch["features"]["user"], batch["features"]["item"]
    assert user.shape[1] == 6 and item.shape[1] == 1
    ids = item[:, 0]
    assert np.array_equal(user[:, -1], (ids % 10 == 3).astype(np.float32))
    assert abs(float(user[:, 0].mean())) < 1.0  # x1 standardized


def test_a_group_column_that_gives_no_feature_is_named(make_grouped: MakeReader) -> None:
    inputs = {"user": ["x1"], "item": ["tags"]}  # lists of varying size: kept as they are
    with pytest.raises(ConfigError) as raised:
        make_grouped(output="numpy", inputs=inputs, preprocessing={"auto": True})
    assert str(raised.value).endswith(
        "source.inputs.item: tags gives no feature in numpy batches (kept)"
    )
    for output in ("pandas", "polars"):  # frames hold it as it is
        kept = make_grouped(output=output, inputs=inputs, preprocessing={"auto": True})
        assert kept.inputs == {"user": ["x1"], "item": ["tags"]}
    reader = make_grouped(output="arrow", inputs=inputs, preprocessing={"auto": True})
    assert reader.inputs == {"user": ["x1"], "item": ["tags"]}
    assert reader.feature_names == ["x1", "tags"]
    with pytest.raises(ConfigError, match=r"tags gives no feature in torch batches"):
        FaucetIterableDataset(reader)  # tensors: as in numpy batches
    assert next(reader.iter_epoch())["features"]["item"].column_names == ["tags"]


def test_a_group_column_the_preprocessing_drops_is_named_with_the_reason(
    make_grouped: MakeReader,
) -> None:
    query = "SELECT id, x1, CAST(NULL AS DOUBLE) AS blank, label FROM v"
    with pytest.raises(ConfigError) as raised:
        make_grouped(
            table_name=None,
            query=query,
            columns=None,
            output="arrow",
            inputs={"user": ["x1"], "item": ["blank"]},
            preprocessing={"auto": True},
        )
    assert str(raised.value).endswith(
        "source.inputs.item: blank gives no feature in arrow batches"
        " (dropped: NULL on every train row)"
    )


def test_a_group_column_missing_from_the_source_is_named(make_grouped: MakeReader) -> None:
    with pytest.raises(ConfigError, match=r"source\.inputs\.item.*'price'"):
        make_grouped(columns=None, inputs={"item": ["price"]})  # all columns: no price


@pytest.mark.parametrize(
    ("inputs", "message"),
    [({"labels": ["x1"]}, "names a batch's part"), ({"features": ["x1"]}, "names a batch's part"),
     ({"a": []}, "lists no column"),
     ({"a": ["x1"], "b": ["x1"]}, "x1 is in inputs.a too"),
     ({"a": ["label"]}, "label is in label_columns too"),
     ({"a": ["nowhere"]}, "not among columns")],
)  # fmt: skip
def test_groups_are_checked_as_the_config_loads(
    vector_table_path: Path, inputs: dict[str, list[str]], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(
            datastore="duckdb", database=str(vector_table_path), table_name="v",
            columns=["id", "x1", "label"], label_columns=["label"], inputs=inputs,
        )  # fmt: skip


def _ids(batches: list[Any]) -> list[int]:
    return [int(i) for features, _ in batches for i in features["item"][:, 0]]


def test_tensors_per_group_through_workers_ranks_and_resume(make_grouped: MakeReader) -> None:
    reader = make_grouped()
    dataset = FaucetIterableDataset(reader, features_dtype=torch.float32)
    assert dataset.inputs == {"user": ["x1", *EMB], "item": ["id"]}
    batches = list(DataLoader(dataset, batch_size=None, num_workers=2))
    user = torch.cat([features["user"] for features, _ in batches]).numpy()
    ids = np.array(_ids(batches))
    assert sorted(ids.tolist()) == list(range(600))
    _check_rows(ids, user.astype(np.float64))
    ranks = [
        _ids(list(FaucetIterableDataset(reader, rank=rank, world_size=2))) for rank in range(2)
    ]
    assert len(ranks[0]) == len(ranks[1]) == 300 and not set(ranks[0]) & set(ranks[1])
    loader = FaucetDataLoader(FaucetIterableDataset(reader))
    epoch = list(loader)  # epoch 1 whole, then epoch 2 broken off after two batches
    iterator = iter(loader)
    first = [next(iterator), next(iterator)]
    state = loader.state_dict()
    resumed = FaucetDataLoader(FaucetIterableDataset(reader))
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(_ids(epoch)) == 600
    assert sorted(_ids(first + rest)) == list(range(600))


def test_rows_carry_one_entry_per_group(make_grouped: MakeReader) -> None:
    dataset = FaucetIterableDataset(make_grouped(), rows=True)
    batch = next(iter(DataLoader(dataset, batch_size=8)))
    assert set(batch) == {"user", "item", "labels"}
    assert batch["user"].shape == (8, 5) and batch["item"].shape == (8, 1)


def _titles(ids: list[int]) -> list[str | None]:
    return [None if i % 50 == 7 else f"item {i}" for i in ids]


def test_a_text_column_of_its_own_group_is_a_list_of_strings(make_grouped: MakeReader) -> None:
    inputs = {"numbers": ["id", "x1"], "title": ["title"]}
    reader = make_grouped(columns=["id", "x1", "title", "label"], inputs=inputs,
                          preprocessing={"auto": True, "exclude": ["id", "title"]})  # fmt: skip
    dataset = FaucetIterableDataset(reader)
    batches = list(DataLoader(dataset, batch_size=None, num_workers=2))
    for features, _ in batches:
        ids = [int(i) for i in features["numbers"][:, 0]]
        assert features["title"] == _titles(ids)
    numpy = make_grouped(columns=["id", "x1", "title", "label"], inputs=inputs, output="numpy")
    batch = next(numpy.iter_epoch())["features"]
    assert batch["title"][:, 0].tolist() == _titles([int(i) for i in batch["numbers"][:, 0]])
    rows = DataLoader(FaucetIterableDataset(reader, rows=True), batch_size=4)
    batch = next(iter(rows))
    assert batch["title"] == _titles([int(i) for i in batch["numbers"][:, 0]])


def test_text_among_numbers_is_refused_with_the_way_to_serve_it(
    make_grouped: MakeReader,
) -> None:
    reader = make_grouped(columns=["id", "title", "label"], inputs=None)
    with pytest.raises(ConfigError, match=r"title \(string\).*input group of its own"):
        next(iter(FaucetIterableDataset(reader)))
