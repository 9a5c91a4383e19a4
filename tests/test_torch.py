"""PyTorch: DataLoader workers, DDP ranks (real gloo processes) and exact resume."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import faucet_duckdb.plugin
from faucet_core import ChunkSpec, ConfigError, Plan, Reader, ResumeError, Warehouse, hookimpl
from faucet_core.plugins import pm
from faucet_core.position import rank_rows
from faucet_core.settings import load_config
from faucet_core.torch import FaucetDataLoader, FaucetIterableDataset, LoaderMetrics
from faucet_core.warehouse import PermanentWarehouseError
from tests.conftest import FRAMEWORK_SETTINGS, ROWS, ChunkByChunkDuckDB, epoch_ids

MakeReader = Callable[..., Reader]
SETTINGS = {"batch_size": 128, "chunk_size": 700, "seed": 5, "test_split_percent": 10}


def _ids(batches: list[tuple[torch.Tensor, torch.Tensor | None]]) -> list[list[int]]:
    return [features[:, 0].long().tolist() for features, _ in batches]


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_workers_deliver_every_row_once(make_reader: MakeReader, workers: int) -> None:
    reader = make_reader(**SETTINGS, columns=["id", "x1", "label"])
    dataset = FaucetIterableDataset(reader)
    batches = list(FaucetDataLoader(dataset, num_workers=workers))
    ids = [i for batch in _ids(batches) for i in batch]
    assert len(ids) == len(set(ids)) == reader.rows("train")
    assert len(batches) == len(dataset)
    features, labels = batches[0]
    assert features.shape == (128, 2) and labels is not None and labels.shape == (128,)


def test_without_workers_the_stream_is_the_readers(make_reader: MakeReader) -> None:
    reader = make_reader(**SETTINGS, columns=["id", "label"])
    expected = [b["features"]["id"].tolist() for b in make_reader(**SETTINGS).iter_epoch()]
    dataset = FaucetIterableDataset(reader)
    assert _ids(list(dataset)) == expected


def test_two_workers_serve_the_same_batches_in_another_interleaving(
    make_reader: MakeReader,
) -> None:
    reader = make_reader(**SETTINGS, columns=["id", "label"])
    single = _ids(list(FaucetDataLoader(FaucetIterableDataset(reader), num_workers=0)))
    double = _ids(list(FaucetDataLoader(FaucetIterableDataset(reader), num_workers=2)))
    assert sorted(map(tuple, single)) == sorted(map(tuple, double))


def test_set_epoch_reshuffles(make_reader: MakeReader) -> None:
    dataset = FaucetIterableDataset(make_reader(**SETTINGS, columns=["id", "label"]))
    dataset.set_epoch(0)
    first = _ids(list(dataset))
    dataset.set_epoch(0)
    assert _ids(list(dataset)) == first  # the same epoch, selected again
    dataset.set_epoch(1)
    second = _ids(list(dataset))
    assert second != first
    assert sorted(itertools.chain(*second)) == sorted(itertools.chain(*first))


def test_spawned_workers_read_a_warehouse_registered_in_this_process_only(
    make_reader: MakeReader,
) -> None:
    # `counting-duckdb` comes from a plugin the tests register: a spawned worker has no
    # such plugin, and needs none, since the dataset carries its warehouse class.
    reader = make_reader(**SETTINGS, datastore="counting-duckdb", columns=["id", "label"])
    loader = FaucetDataLoader(
        FaucetIterableDataset(reader), num_workers=1, multiprocessing_context="spawn"
    )
    ids = [i for batch in _ids(list(loader)) for i in batch]
    assert sorted(ids) == sorted(epoch_ids(make_reader(**SETTINGS)))


def test_a_readers_state_resumes_a_loader_without_workers(make_reader: MakeReader) -> None:
    settings = {**SETTINGS, "columns": ["id", "label"]}
    reader = make_reader(**settings)
    reader.prep_for_epoch()
    served = [reader.get_batch()["features"]["id"].tolist() for _ in range(5)]
    loader = FaucetDataLoader(FaucetIterableDataset(make_reader(**settings)))
    loader.load_state_dict(reader.state_dict())
    full = [b["features"]["id"].tolist() for b in make_reader(**settings).iter_epoch()]
    assert served + _ids(list(loader)) == full


def test_pinned_memory_and_float32_features(make_reader: MakeReader) -> None:
    reader = make_reader(**SETTINGS, columns=["x1", "x2", "label"])
    dataset = FaucetIterableDataset(reader, features_dtype=torch.float32)
    features, labels = next(iter(FaucetDataLoader(dataset, pin_memory=True)))
    assert features.dtype == torch.float32 and labels is not None


@pytest.mark.parametrize("workers", [0, 2, 3])
@pytest.mark.parametrize("stop_after", [0, 3, 10, 17, 34])
def test_resume_serves_exactly_the_rest(
    make_reader: MakeReader, workers: int, stop_after: int
) -> None:
    settings = {**SETTINGS, "batch_size": 130, "columns": ["id", "label"]}
    full = _ids(
        list(FaucetDataLoader(FaucetIterableDataset(make_reader(**settings)), num_workers=workers))
    )
    assert len(full) > 34 and len(full) % 3  # 3 workers get unequal runs of batches

    loader = FaucetDataLoader(FaucetIterableDataset(make_reader(**settings)), num_workers=workers)
    served = list(itertools.islice(loader, stop_after))  # trained on these, then stopped
    state = loader.state_dict()
    assert state["batches"] == stop_after

    restored = FaucetDataLoader(
        FaucetIterableDataset(make_reader(**{**settings, "seed": None})), num_workers=workers
    )
    restored.load_state_dict(state)
    rest = list(restored)
    assert _ids(served) + _ids(rest) == full
    assert restored.dataset.epoch == 2  # the resumed epoch finished


def test_resume_refuses_other_workers_or_plans(make_reader: MakeReader) -> None:
    loader = FaucetDataLoader(FaucetIterableDataset(make_reader(**SETTINGS)), num_workers=0)
    state = loader.state_dict()
    other_workers = FaucetDataLoader(FaucetIterableDataset(make_reader(**SETTINGS)), num_workers=2)
    with pytest.raises(ResumeError, match="workers was 1"):
        other_workers.load_state_dict(state)
    other_plan = FaucetDataLoader(
        FaucetIterableDataset(make_reader(**{**SETTINGS, "chunk_size": 900}))
    )
    with pytest.raises(ResumeError, match="another plan"):
        other_plan.load_state_dict(state)
    unshuffled = FaucetDataLoader(
        FaucetIterableDataset(make_reader(**{**SETTINGS, "shuffle": False})), num_workers=0
    )
    with pytest.raises(ResumeError, match="shuffle was True"):
        unshuffled.load_state_dict(state)
    other_rank = FaucetDataLoader(
        FaucetIterableDataset(make_reader(**SETTINGS), rank=1, world_size=2)
    )
    with pytest.raises(ResumeError, match="rank was 0"):
        other_rank.load_state_dict(state)


def test_text_columns_are_a_clear_error(make_reader: MakeReader) -> None:
    dataset = FaucetIterableDataset(make_reader(**SETTINGS, columns=["id", "name", "label"]))
    with pytest.raises(ConfigError, match=r"name \(string\) cannot become tensors"):
        next(iter(dataset))


@pytest.mark.parametrize(
    ("columns", "labels"), [(["name", "label"], ["label"]), (["id", "name"], ["name"])]
)
def test_one_text_column_outside_an_input_group_is_a_clear_error(
    make_reader: MakeReader, columns: list[str], labels: list[str]
) -> None:
    # Only an input group of one text column is served as strings: not features, not labels.
    settings = {**SETTINGS, "columns": columns, "label_columns": labels}
    dataset = FaucetIterableDataset(make_reader(**settings))
    with pytest.raises(ConfigError, match=r"name \(string\) cannot become tensors"):
        next(iter(dataset))


def test_loader_metrics_split_waiting_from_training(make_reader: MakeReader) -> None:
    loader = FaucetDataLoader(
        FaucetIterableDataset(make_reader(**SETTINGS, columns=["x1", "label"]))
    )
    for _ in loader:
        pass
    assert loader.metrics.batches == len(loader.dataset)
    assert 0 < loader.metrics.wait_fraction <= 1


@pytest.mark.parametrize("remainder", ["drop", "pad"])
def test_rank_rows_are_equal_and_cover_the_epoch(remainder: str) -> None:
    for total in (0, 1, 7, 100, 101):
        for world in (1, 2, 3, 8):
            ranges = [rank_rows(total, r, world, remainder) for r in range(world)]  # type: ignore[arg-type]
            assert len({stop - start for start, stop in ranges}) == 1
            covered = [i % max(total, 1) for start, stop in ranges for i in range(start, stop)]
            if remainder == "drop":
                assert covered == list(range(total - total % world))
            else:
                assert set(covered) == set(range(total))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def ddp_reader(rank: int, world: int, port: int, database: str, cache: str) -> Iterator[Reader]:
    """In a spawned DDP rank: the process group, and a reader of table ``t`` (id, label)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    pm.register(faucet_duckdb.plugin)  # a spawned process: the tests' plugins are not there
    try:
        from faucet_core import get_batch_reader

        with get_batch_reader(
            datastore="duckdb", database=database, table_name="t", columns=["id", "label"],
            split_key="id", label_columns=["label"], batch_size=100, chunk_size=800,
            seed=9, cache_dir=cache,
        ) as reader:  # fmt: skip
            yield reader
    finally:
        dist.destroy_process_group()


def gather_to_file(rank: int, world: int, served: object, out: str) -> None:
    """Gather each rank's ``served`` on rank 0, which writes them to ``out`` as JSON."""
    gathered: list[object] = [None] * world
    dist.all_gather_object(gathered, served)
    if rank == 0:
        Path(out).write_text(json.dumps(gathered))


def _ddp_rank(
    rank: int, world: int, port: int, database: str, cache: str, out: str, remainder: str
) -> None:
    with ddp_reader(rank, world, port, database, cache) as reader:
        dataset = FaucetIterableDataset(reader, remainder=remainder)  # type: ignore[arg-type]
        loader = FaucetDataLoader(dataset, num_workers=2)
        ids = [i for features, _ in loader for i in features[:, 0].long().tolist()]
        gather_to_file(rank, world, {"ids": ids, "steps": loader.metrics.batches}, out)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("remainder", ["drop", "pad"])
def test_two_ddp_ranks_get_disjoint_rows_and_equal_steps(
    table_path: Path, tmp_path: Path, remainder: str
) -> None:
    out = tmp_path / "ranks.json"
    mp.spawn(
        _ddp_rank,
        args=(2, _free_port(), str(table_path), str(tmp_path / "cache"), str(out), remainder),
        nprocs=2,
        join=True,
    )
    ranks = json.loads(out.read_text())
    steps = [r["steps"] for r in ranks]
    assert steps[0] == steps[1] > 0
    first, second = (set(r["ids"]) for r in ranks)
    assert len(first) == len(ranks[0]["ids"]) and len(second) == len(ranks[1]["ids"])
    if remainder == "drop":
        assert not first & second
        assert len(first | second) == ROWS - ROWS % 2
    else:
        assert first | second == set(range(ROWS))


def test_workers_serve_the_readers_preprocessed_batches(make_reader: MakeReader) -> None:
    settings = {**SETTINGS, "columns": ["x1", "x2", "name", "label"], "output": "numpy"}
    preprocessing = {"auto": True}
    expected = list(make_reader(**settings, preprocessing=preprocessing).iter_epoch())
    dataset = FaucetIterableDataset(make_reader(**settings, preprocessing=preprocessing))
    served = list(FaucetDataLoader(dataset, num_workers=1))  # in another process
    assert len(served) == len(expected)
    for (features, labels), batch in zip(served, expected, strict=True):
        assert labels is not None
        assert torch.equal(features, torch.from_numpy(batch["features"]))
        assert torch.equal(labels, torch.from_numpy(batch["labels"]))


def test_the_datasets_epochs_are_the_readers(make_reader: MakeReader) -> None:
    reader = make_reader(**SETTINGS, columns=["id", "label"], epochs=2)
    epochs = [[b["features"]["id"].tolist() for b in reader.iter_epoch()] for _ in range(2)]
    dataset = FaucetIterableDataset(make_reader(**SETTINGS, columns=["id", "label"]))
    assert dataset.epoch == 1
    dataset.set_epoch(1)  # a loop's 0-based counter: Faucet's epoch 2
    assert dataset.epoch == 2 and _ids(list(dataset)) == epochs[1]
    dataset.set_epoch(1, skip_batches=2)  # resumed after two batches of it
    assert (dataset.epoch, dataset.skip_batches) == (2, 2)
    assert _ids(list(dataset)) == epochs[1][2:]
    dataset.select_epoch(1)
    assert _ids(list(dataset)) == epochs[0]
    with pytest.raises(ValueError, match="1-based"):
        dataset.select_epoch(0)
    with pytest.raises(ValueError, match="skip_batches counts batches consumed: -1 < 0"):
        dataset.set_epoch(1, skip_batches=-1)
    assert (dataset.epoch, dataset.skip_batches) == (1, 0)  # the last selection stands
    dataset.select_epoch(1, skip_batches=0)  # nothing consumed: allowed


def test_from_config_reads_the_file_with_overrides_and_owns_its_reader(
    config_file: Path, make_reader: MakeReader
) -> None:
    with FaucetIterableDataset.from_config(config_file, batch_size=50) as dataset:
        assert (dataset.split, dataset.remainder, dataset.dispatch, dataset.rows) == (
            "train", "drop", False, False,
        )  # fmt: skip
        assert (dataset.rank, dataset.world_size, dataset.features_dtype) == (0, 1, None)
        assert dataset.config.batch_size == 50 and dataset.serving.seed_configured
        reader = dataset.reader
        assert reader is not None
        served = [int(i) for features, _ in dataset for i in features[:, 0]]
    assert reader.stream.closed  # closing the dataset closed the reader it made
    expected = make_reader(**{**FRAMEWORK_SETTINGS, "batch_size": 50})
    assert served == [int(i) for b in expected.iter_epoch() for i in b["features"]["id"]]


def test_from_config_passes_every_setting_to_the_dataset(config_file: Path) -> None:
    with FaucetIterableDataset.from_config(
        config_file, "eval", 0, 2, "pad", torch.float64, dispatch=True, rows=True
    ) as dataset:
        assert (dataset.split, dataset.rank, dataset.world_size, dataset.remainder) == (
            "eval", 0, 2, "pad",
        )  # fmt: skip
        assert (dataset.features_dtype, dataset.dispatch, dataset.rows) == (
            torch.float64, True, True,
        )  # fmt: skip
        row = next(iter(dataset))
        assert row["features"].dtype == torch.float64 and row["features"].dim() == 1


def test_closing_a_dataset_leaves_a_given_reader_open(make_reader: MakeReader) -> None:
    reader = make_reader(**SETTINGS)
    with FaucetIterableDataset(reader):
        pass
    assert not reader.stream.closed
    assert len(list(reader.iter_epoch())) > 0


def test_ranks_come_from_the_arguments_or_the_launchers_environment(
    make_reader: MakeReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = make_reader(**SETTINGS)
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    dataset = FaucetIterableDataset(reader)
    assert (dataset.rank, dataset.world_size) == (2, 3)
    assert len(dataset) == dataset.partition(1).rank_batches(
        reader.rows("train"), SETTINGS["batch_size"], reader.config.drop_last
    )
    monkeypatch.delenv("WORLD_SIZE")  # a RANK alone is not a launch
    assert (FaucetIterableDataset(reader).rank, FaucetIterableDataset(reader).world_size) == (0, 1)
    assert FaucetIterableDataset(reader, rank=1, world_size=2).world_size == 2
    for rank, world_size in ((1, None), (None, 2)):
        with pytest.raises(ValueError, match=r"^give both rank and world_size, or neither$"):
            FaucetIterableDataset(reader, rank=rank, world_size=world_size)
    with pytest.raises(ValueError, match=r"rank 2 is not in 0..1"):
        FaucetIterableDataset(reader, rank=2, world_size=2)


def test_two_ranks_need_a_configured_seed(make_reader: MakeReader) -> None:
    reader = make_reader(**{**SETTINGS, "seed": None})
    refusal = r"^with several ranks, set `seed` \(or build the dataset with FaucetIterableDataset"
    with pytest.raises(ValueError, match=refusal):
        FaucetIterableDataset(reader, rank=0, world_size=2)


def test_the_loader_refuses_a_batch_size_and_counts_its_batches(make_reader: MakeReader) -> None:
    dataset = FaucetIterableDataset(make_reader(**SETTINGS, columns=["id", "label"]))
    refusal = r"^FaucetDataLoader passes Faucet's batches through: no batch_size$"
    with pytest.raises(ValueError, match=refusal):
        FaucetDataLoader(dataset, batch_size=8)
    loader = FaucetDataLoader(dataset)
    assert len(list(loader)) == len(dataset) == loader.metrics.batches


def test_a_new_loader_has_measured_nothing_yet(make_reader: MakeReader) -> None:
    loader = FaucetDataLoader(FaucetIterableDataset(make_reader(**SETTINGS)))
    assert loader.metrics == LoaderMetrics()
    assert loader.metrics.wait_fraction == 0.0


def test_loader_metrics_add_up_every_wait_within_the_epochs_time(make_reader: MakeReader) -> None:
    """Read after each batch: the time waited so far only grows, and stays within the time
    since the epoch started, which the loader's elapsed time never exceeds."""
    loader = FaucetDataLoader(
        FaucetIterableDataset(make_reader(**SETTINGS, columns=["x1", "label"]))
    )
    waits: list[float] = []
    started = time.perf_counter()
    for _ in loader:
        metrics = loader.metrics
        assert 0 < metrics.wait_seconds <= metrics.elapsed_seconds
        assert metrics.elapsed_seconds <= time.perf_counter() - started
        waits.append(metrics.wait_seconds)
    total = time.perf_counter() - started
    assert len(waits) == loader.metrics.batches > 2
    assert waits == sorted(waits)  # a sum of every wait, not the last one alone
    assert waits[-1] <= loader.metrics.wait_seconds <= loader.metrics.elapsed_seconds <= total


def test_a_loader_that_ran_an_epoch_to_its_end_selects_the_next_whole(
    make_reader: MakeReader,
) -> None:
    settings = {**SETTINGS, "columns": ["id", "label"], "epochs": 2}
    reader = make_reader(**settings)
    expected = [[b["features"]["id"].tolist() for b in reader.iter_epoch()] for _ in range(2)]
    dataset = FaucetIterableDataset(make_reader(**settings))
    assert _ids(list(FaucetDataLoader(dataset))) == expected[0]
    assert (dataset.epoch, dataset.skip_batches) == (2, 0)
    assert _ids(list(dataset)) == expected[1]  # served whole, also outside the loader


def test_a_dataset_of_rows_is_refused_by_the_batch_loader_with_the_reason(
    make_reader: MakeReader,
) -> None:
    dataset = FaucetIterableDataset(make_reader(**SETTINGS), rows=True)
    message = (
        "FaucetDataLoader passes Faucet's batches through: a dataset of rows (rows=True) goes "
        "to a loader that batches them (DataLoader with a batch_size)"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        FaucetDataLoader(dataset)


def test_dispatching_batches_without_labels_asks_for_rows(make_reader: MakeReader) -> None:
    reader = make_reader(**SETTINGS, label_columns=None)
    message = (
        "a dispatching loader cannot slice the batches (features, None) of a source without "
        "label columns: build the dataset with rows=True"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        FaucetIterableDataset(reader, dispatch=True)


def test_a_dispatching_datasets_other_rank_names_itself_when_read(make_reader: MakeReader) -> None:
    reader = make_reader(**SETTINGS)
    other = iter(FaucetIterableDataset(reader, rank=1, world_size=3, dispatch=True))
    with pytest.raises(RuntimeError, match=r"^rank 1 of a dataset built with dispatch=True"):
        next(other)


def test_lists_of_varying_size_cannot_become_tensors(
    make_reader: MakeReader, vector_table_path: Path
) -> None:
    reader = make_reader(
        database=str(vector_table_path), table_name="v", columns=["id", "tags", "label"]
    )
    with pytest.raises(
        ConfigError, match=r"tags \(list<.*\) holds lists whose size varies.*; a tensor needs"
    ):
        next(iter(FaucetIterableDataset(reader)))


def test_every_column_that_cannot_become_a_tensor_is_named(make_reader: MakeReader) -> None:
    reader = make_reader(**SETTINGS, columns=["id", "name", "ds", "label"])
    with pytest.raises(
        ConfigError, match=r"name \(string\), ds \(date32\[day\]\) cannot become tensors"
    ):
        next(iter(FaucetIterableDataset(reader)))


def test_every_integer_column_holding_nulls_is_named(make_reader: MakeReader) -> None:
    reader = make_reader(
        table_name=None,
        query="SELECT id, CASE WHEN id % 3 = 0 THEN NULL ELSE id END AS a, "
        "CASE WHEN id % 5 = 0 THEN NULL ELSE id % 2 = 0 END AS b, label FROM t",
        batch_size=1000,
    )
    with pytest.raises(
        ConfigError, match=r"a \(int64\), b \(bool\) hold NULLs, which an integer or boolean"
    ):
        next(iter(FaucetIterableDataset(reader)))


def test_several_label_columns_give_a_label_matrix(make_reader: MakeReader) -> None:
    reader = make_reader(**SETTINGS, columns=["id", "x2", "label"], label_columns=["label", "x2"])
    features, labels = next(iter(FaucetIterableDataset(reader)))
    assert isinstance(features, torch.Tensor) and labels is not None
    assert features.shape == (128, 1) and labels.shape == (128, 2)
    ids = features[:, 0].long()
    assert torch.equal(labels[:, 0].long(), (ids % 4 == 0).long())
    assert torch.equal(labels[:, 1], (ids % 13).double())


def test_an_input_group_column_that_gives_no_tensor_feature_is_named(
    make_reader: MakeReader, vector_table_path: Path
) -> None:
    reader = make_reader(
        database=str(vector_table_path), table_name="v", output="arrow",
        columns=["id", "x1", "tags", "label"], inputs={"user": ["x1"], "item": ["tags"]},
        preprocessing={"auto": True},
    )  # fmt: skip
    with pytest.raises(
        ConfigError, match=r"source\.inputs\.item.*tags gives no feature in torch batches"
    ):
        FaucetIterableDataset(reader)


def test_a_dataset_of_rows_counts_the_rows_its_rank_serves(make_reader: MakeReader) -> None:
    settings = {**SETTINGS, "batch_size": 100, "columns": ["id", "label"]}
    reader = make_reader(**settings)
    per_rank = reader.rows("train") // 2
    second = FaucetIterableDataset(reader, rank=1, world_size=2, rows=True)
    assert len(second) == len(list(second)) == per_rank
    # Dispatching with drop_last: the rows of both ranks, each rank's whole batches only.
    assert per_rank % 100
    reader = make_reader(**settings, drop_last=True)
    main = FaucetIterableDataset(reader, rank=0, world_size=2, dispatch=True, rows=True)
    assert len(main) == len(list(main)) == 2 * (per_rank - per_rank % 100)
    # Not dispatching, with drop_last: the rank's whole batches only.
    second = FaucetIterableDataset(reader, rank=1, world_size=2, rows=True)
    assert len(second) == len(list(second)) == per_rank - per_rank % 100


def test_with_drop_last_the_length_counts_whole_batches_only(make_reader: MakeReader) -> None:
    reader = make_reader(**SETTINGS, columns=["id", "label"], drop_last=True)
    assert reader.rows("train") % 128
    dataset = FaucetIterableDataset(reader)
    batches = list(FaucetDataLoader(dataset))
    assert len(dataset) == len(batches) == reader.rows("train") // 128
    assert {len(labels) for _, labels in batches if labels is not None} == {128}


class BilledDuckDB(ChunkByChunkDuckDB):
    """DuckDB read chunk by chunk, billing one query job per chunk read."""

    name = "billed-duckdb"

    def read_buckets(self, plan: Plan, chunk: ChunkSpec) -> pa.Table:
        self.costs.query_jobs += 1
        return super().read_buckets(plan, chunk)


class BilledWarehouses:
    @hookimpl
    def register_warehouses(self, register: Callable[[type[Warehouse]], None]) -> None:
        register(BilledDuckDB)


def test_without_workers_the_readers_warehouse_reads_and_bills_the_chunks(
    make_reader: MakeReader, register: Callable[[object], None]
) -> None:
    register(BilledWarehouses())
    reader = make_reader(
        **SETTINGS, datastore="billed-duckdb", use_cache=False, columns=["id", "label"]
    )
    dataset = FaucetIterableDataset(reader)
    before = reader.costs.query_jobs
    assert len(list(dataset)) == len(dataset)
    assert reader.costs.query_jobs - before == len(reader.plan.chunks["train"])


def test_a_rank_with_no_rows_left_serves_nothing_and_opens_no_pass(
    make_reader: MakeReader, caplog: pytest.LogCaptureFixture
) -> None:
    """A rank resumed after all of its batches of the epoch serves nothing, without
    opening a pass over the stream (none is logged); its next iteration, the next epoch
    whole, opens one."""
    dataset = FaucetIterableDataset(
        make_reader(**SETTINGS, columns=["id", "label"]), rank=1, world_size=2
    )
    dataset.select_epoch(1, skip_batches=len(dataset))
    with caplog.at_level("INFO", logger="faucet"):
        assert list(dataset) == []
        assert len(list(dataset)) == len(dataset)
    passes = [r.getMessage() for r in caplog.records if " pass of epoch " in r.getMessage()]
    assert [message.split(":")[0] for message in passes] == ["train pass of epoch 2 done"]


def test_a_dataset_serves_on_after_its_given_reader_is_closed(make_reader: MakeReader) -> None:
    reader = make_reader(**SETTINGS, columns=["id", "label"])
    expected = [b["features"]["id"].tolist() for b in make_reader(**SETTINGS).iter_epoch()]
    dataset = FaucetIterableDataset(reader)
    reader.close()
    assert _ids(list(dataset)) == expected


@pytest.fixture
def two_rank_group() -> Iterator[None]:
    """torch.distributed initialized in this process as rank 0 of two, on a process group
    whose collectives only return (rank 0 broadcasts what it holds)."""
    from torch.testing._internal.distributed.fake_pg import FakeStore

    dist.init_process_group("fake", rank=0, world_size=2, store=FakeStore())
    try:
        yield
    finally:
        dist.destroy_process_group()


def on_threaded_ranks(world: int, work: Callable[[], object]) -> list[object]:
    """Run ``work`` on each rank of a process group of ``world`` threads of this process
    (torch's threaded test backend, whose collectives pass objects between the threads);
    returns each rank's result, or the exception it raised."""
    from torch.testing._internal.distributed import multi_threaded_pg

    outcomes: list[object] = [None] * world
    store = dist.HashStore()

    def rank(number: int) -> None:
        dist.init_process_group("threaded", rank=number, world_size=world, store=store)
        try:
            outcomes[number] = work()
        except Exception as exc:
            outcomes[number] = exc
        finally:
            dist.destroy_process_group()

    torch._C._distributed_c10d._set_thread_isolation_mode(True)
    multi_threaded_pg._install_threaded_pg()
    try:
        threads = [threading.Thread(target=rank, args=(n,), daemon=True) for n in range(world)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads), "a rank is stuck"
    finally:
        multi_threaded_pg._uninstall_threaded_pg()
        torch._C._distributed_c10d._set_thread_isolation_mode(False)
    return outcomes


def test_from_config_on_ranks_uses_rank_zeros_plan_seed_and_fitted_preprocessing(
    config_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def read() -> dict[str, object]:
        preprocessing = {"auto": True, "exclude": ["id"]}
        cache = tmp_path / f"rank{dist.get_rank()}"  # as on hosts of their own
        with FaucetIterableDataset.from_config(
            config_file, seed=None, preprocessing=preprocessing, cache_dir=str(cache)
        ) as dataset:
            assert dataset.reader is not None and dataset.reader.preprocessor is not None
            return {
                "plan": dataset.reader.plan.to_json(), "seed": dataset.seed,
                "fitted": dataset.reader.preprocessor.to_json(),
                "ids": [i for ids in _ids(list(dataset)) for i in ids],
            }  # fmt: skip

    with caplog.at_level("INFO", logger="faucet"):
        first, second = on_threaded_ranks(2, read)
    assert isinstance(first, dict) and isinstance(second, dict), (first, second)
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if m.startswith("fitted preprocessing")]) == 1  # rank 0's
    assert len([m for m in messages if m.startswith("planned ")]) == 1  # by rank 0 alone
    for shared in ("plan", "seed", "fitted"):
        assert first[shared] == second[shared], shared
    assert first["seed"] is not None
    assert len(first["ids"]) == len(second["ids"]) > 0
    assert not set(first["ids"]) & set(second["ids"])


def test_from_config_on_ranks_without_preprocessing_shares_rank_zeros_plan(
    config_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Without preprocessing, the other ranks get rank 0's plan, and no preprocessor."""

    def read() -> tuple[str, bool, int]:
        cache = tmp_path / f"rank{dist.get_rank()}"
        with FaucetIterableDataset.from_config(config_file, cache_dir=str(cache)) as dataset:
            assert dataset.reader is not None
            preprocessed = dataset.reader.preprocessor is not None
            return dataset.reader.plan.to_json(), preprocessed, len(list(dataset))

    with caplog.at_level("INFO", logger="faucet"):
        first, second = on_threaded_ranks(2, read)
    assert isinstance(first, tuple) and isinstance(second, tuple), (first, second)
    assert first == second
    _, preprocessed, batches = first
    assert not preprocessed and batches > 0
    planned = [r for r in caplog.records if r.getMessage().startswith("planned ")]
    assert len(planned) == 1  # by rank 0 alone


def test_from_config_in_a_group_of_one_rank_reads_the_config_as_given(
    config_file: Path,
) -> None:
    """A process group of one rank is no collective: from_config makes the reader of the
    config as given, as without a group (no seed is drawn into it to share)."""

    def read() -> tuple[object, int]:
        with FaucetIterableDataset.from_config(config_file, seed=None) as dataset:
            return dataset.config, dataset.world_size

    (outcome,) = on_threaded_ranks(1, read)
    assert outcome == (load_config(config_file, seed=None), 1)


def test_when_rank_zero_cannot_plan_every_rank_says_why(config_file: Path) -> None:
    def read() -> None:
        FaucetIterableDataset.from_config(config_file, table_name="missing")

    first, second = on_threaded_ranks(2, read)
    assert isinstance(first, Exception) and "missing" in str(first)
    assert isinstance(second, PermanentWarehouseError)
    assert str(second) == f"rank 0 could not plan the source: {type(first).__name__}: {first}"


def test_from_config_in_a_process_group_draws_one_seed_that_a_resume_replaces(
    config_file: Path, two_rank_group: None
) -> None:
    """Rank 0 of two, from a config without a seed: it draws the seed the ranks share
    (no refusal for a missing seed), and a saved position's seed is adopted."""
    with FaucetIterableDataset.from_config(config_file, rank=0, world_size=2) as saved:
        batches = iter(saved_loader := FaucetDataLoader(saved))
        taken = [next(batches) for _ in range(3)]
        state = saved_loader.state_dict()
        rest = _ids(list(batches))
    assert len(taken) == 3 and rest
    with FaucetIterableDataset.from_config(config_file, seed=None) as dataset:
        assert (dataset.rank, dataset.world_size) == (0, 2)
        assert dataset.config.seed == dataset.seed
        loader = FaucetDataLoader(dataset)
        loader.load_state_dict(state)
        assert dataset.seed == 5
        assert _ids(list(loader)) == rest
