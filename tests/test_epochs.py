"""Epochs that advance by themselves: every new iteration of a dataset or loader serves
the next epoch, in DataLoader workers and DDP ranks too, unless one was selected."""

from __future__ import annotations

import copy
import itertools
import json
import multiprocessing
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

import faucet_duckdb.plugin
from faucet_core import Reader
from faucet_core.epochs import MAX_WORKERS, EpochCounter
from faucet_core.plugins import pm
from faucet_core.torch import FaucetDataLoader, FaucetIterableDataset
from tests.test_torch import _free_port, ddp_reader, gather_to_file

MakeReader = Callable[..., Reader]
SETTINGS = {"batch_size": 128, "chunk_size": 700, "seed": 5, "test_split_percent": 10}
Batches = list[tuple[torch.Tensor, torch.Tensor | None]]


def _ids(batches: Iterator[tuple[torch.Tensor, torch.Tensor | None]] | Batches) -> list[int]:
    return [i for features, _ in batches for i in features[:, 0].long().tolist()]


@pytest.fixture
def epochs(make_reader: MakeReader) -> list[list[int]]:
    """The rows of the reader's epochs 1 to 3, in the order each serves them."""
    reader = make_reader(**SETTINGS, columns=["id", "label"], epochs=3)
    return [
        [i for batch in reader.iter_epoch() for i in batch["features"]["id"].tolist()]
        for _ in range(3)
    ]


@pytest.fixture
def dataset(make_reader: MakeReader) -> FaucetIterableDataset:
    # epochs=1: a dataset serves epochs past the config's, each a new order.
    return FaucetIterableDataset(make_reader(**SETTINGS, columns=["id", "label"], epochs=1))


def test_the_counter_serves_the_selection_then_the_epochs_after_it() -> None:
    counter = EpochCounter()
    assert [counter.start(None) for _ in range(3)] == [(1, 0), (2, 0), (3, 0)]
    counter.select(5, skip_batches=2)
    assert (counter.epoch, counter.skip_batches, counter.selections) == (5, 2, 1)
    # Every worker's first iteration after a selection serves it, then the next epochs.
    assert [counter.start(0), counter.start(1), counter.start(0)] == [(5, 2), (5, 2), (6, 0)]
    assert counter.start(None) == (5, 2)  # this process counts apart from its workers
    with pytest.raises(ValueError, match=f"at most {MAX_WORKERS} DataLoader workers"):
        counter.start(MAX_WORKERS)


def test_the_counter_counts_each_of_its_max_workers_apart() -> None:
    counter = EpochCounter()
    last = MAX_WORKERS - 1
    assert [counter.start(last), counter.start(0), counter.start(last)] == [(1, 0), (1, 0), (2, 0)]
    assert counter.start(None) == (1, 0)


def test_a_copy_outside_a_worker_counts_on_its_own() -> None:
    counter = EpochCounter()
    counter.select(3)
    for other in (pickle.loads(pickle.dumps(counter)), copy.deepcopy(counter)):
        assert other.start(None) == (3, 0)
        assert other.start(None) == (4, 0)
    assert counter.start(None) == (3, 0)


def test_a_process_started_by_spawn_counts_in_its_makers_memory() -> None:
    """A process started by the "spawn" method (as DataLoader workers can be) with the
    counter counts in the memory of the process that made it: the iteration it counts as
    worker 0 is seen here. (Its failures would show in this process, as it starts.)"""
    counter = EpochCounter()
    worker = multiprocessing.get_context("spawn").Process(target=counter.start, args=(0,))
    worker.start()
    worker.join(timeout=120)
    assert worker.exitcode == 0
    assert counter.start(0) == (2, 0)  # worker 0's second iteration
    assert counter.start(None) == (1, 0)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_plain_dataloader_reshuffles_every_epoch(
    dataset: FaucetIterableDataset, epochs: list[list[int]], workers: int
) -> None:
    loader = DataLoader(dataset, batch_size=None, num_workers=workers)
    served = [_ids(loader) for _ in range(3)]  # nothing calls set_epoch
    # Workers interleave their runs of batches: compare rows, and orders within a worker.
    assert [sorted(ids) for ids in served] == [sorted(ids) for ids in epochs]
    if workers == 0:
        assert served == epochs
    assert served[0] != served[1] != served[2]


def test_this_process_and_its_forked_workers_count_their_epochs_apart(
    dataset: FaucetIterableDataset, epoch_batches: list[list[tuple[int, ...]]]
) -> None:
    """Iterated here, the dataset counts its own epochs; a DataLoader's workers, made
    anew each epoch, count theirs, in memory they share with this process."""
    assert _batches(iter(dataset)) == epoch_batches[0]
    loader = DataLoader(dataset, batch_size=None, num_workers=2, multiprocessing_context="fork")
    assert [_batches(iter(loader)), _batches(iter(loader))] == epoch_batches[:2]
    assert _batches(iter(dataset)) == epoch_batches[1]


def test_persistent_workers_advance_and_see_set_epoch(
    dataset: FaucetIterableDataset, epochs: list[list[int]]
) -> None:
    loader = DataLoader(dataset, batch_size=None, num_workers=2, persistent_workers=True)
    first, second = _ids(loader), _ids(loader)
    assert sorted(first) == sorted(epochs[0]) and first != second
    dataset.set_epoch(0)  # back to epoch 1, seen by the workers already running
    assert _ids(loader) == first


def test_spawned_workers_share_the_epoch_count(
    dataset: FaucetIterableDataset, epochs: list[list[int]]
) -> None:
    loader = DataLoader(dataset, batch_size=None, num_workers=2, multiprocessing_context="spawn")
    served = [_ids(loader) for _ in range(2)]
    assert [sorted(ids) for ids in served] == [sorted(ids) for ids in epochs[:2]]
    assert served[0] != served[1]


def test_a_loader_stopped_after_its_length_serves_the_next_epoch_whole(
    dataset: FaucetIterableDataset, epochs: list[list[int]]
) -> None:
    # What Lightning does: take len(loader) batches, never ask for the end.
    loader = FaucetDataLoader(dataset)
    iterator = iter(loader)
    first = _ids(next(iterator) for _ in range(len(loader)))
    assert first == epochs[0]
    assert _ids(loader) == epochs[1]
    # A checkpoint taken there resumes into the next epoch, not an empty rest.
    iterator = iter(loader)
    assert _ids(next(iterator) for _ in range(len(loader))) == epochs[2]
    state = loader.state_dict()
    restored = FaucetDataLoader(copy.deepcopy(dataset))
    restored.load_state_dict(state)
    fourth = _ids(restored)
    assert len(fourth) == len(epochs[0]) and fourth not in epochs


def test_a_state_saved_as_an_epoch_ended_resumes_at_the_next_epoch(
    dataset: FaucetIterableDataset, epochs: list[list[int]]
) -> None:
    loader = FaucetDataLoader(dataset)
    iterator = iter(loader)
    assert _ids(next(iterator) for _ in range(len(loader))) == epochs[0]
    state = loader.state_dict()  # every batch of epoch 1 consumed, its end not asked for
    restored = FaucetDataLoader(copy.deepcopy(dataset))
    restored.load_state_dict(state)
    assert _ids(restored) == epochs[1]


def test_a_loader_broken_off_mid_epoch_starts_the_next_one(
    dataset: FaucetIterableDataset, epochs: list[list[int]]
) -> None:
    loader = FaucetDataLoader(dataset, num_workers=2)
    list(itertools.islice(loader, 3))
    assert sorted(_ids(loader)) == sorted(epochs[1])


def test_set_epoch_wins_over_the_count(
    dataset: FaucetIterableDataset, epochs: list[list[int]]
) -> None:
    loader = FaucetDataLoader(dataset)
    assert [_ids(loader), _ids(loader)] == epochs[:2]
    dataset.set_epoch(0)
    assert _ids(loader) == epochs[0]
    assert _ids(loader) == epochs[1]  # and counts on from there


def _ddp_rank(rank: int, world: int, port: int, database: str, cache: str, out: str) -> None:
    with ddp_reader(rank, world, port, database, cache) as reader:
        loader = DataLoader(FaucetIterableDataset(reader), batch_size=None, num_workers=2)
        served = [[_ids(loader)] for _ in range(2)]  # no set_epoch, as most loops
        gather_to_file(rank, world, served, out)


@pytest.mark.timeout(240)
def test_ddp_ranks_reshuffle_every_epoch_without_set_epoch(
    table_path: Path, tmp_path: Path, make_reader: MakeReader
) -> None:
    out = tmp_path / "ranks.json"
    mp.spawn(
        _ddp_rank,
        args=(2, _free_port(), str(table_path), str(tmp_path / "cache"), str(out)),
        nprocs=2,
        join=True,
    )
    ranks = json.loads(out.read_text())
    train = make_reader(batch_size=100, chunk_size=800, seed=9).rows("train")
    for epoch in range(2):
        first, second = (ranks[rank][epoch][0] for rank in range(2))
        assert len(first) == len(second) == train // 2
        assert not set(first) & set(second)
    assert ranks[0][0][0] != ranks[0][1][0]  # a new order in epoch 2


def _iterate_a_copy(rank: int, dataset: FaucetIterableDataset, out: str) -> None:
    pm.register(faucet_duckdb.plugin)  # a spawned process: the tests' plugins are not there
    loader = DataLoader(dataset, batch_size=None, num_workers=2)
    Path(f"{out}.{rank}").write_text(json.dumps([sorted(_ids(loader)) for _ in range(2)]))


def test_processes_spawned_with_a_copy_count_their_own_epochs(
    dataset: FaucetIterableDataset, epochs: list[list[int]], tmp_path: Path
) -> None:
    dataset.set_epoch(1)  # copied as selected: epoch 2, then 3, in each process
    out = str(tmp_path / "served")
    mp.spawn(_iterate_a_copy, args=(dataset, out), nprocs=2, join=True)
    for rank in range(2):
        served = json.loads(Path(f"{out}.{rank}").read_text())
        assert served == [sorted(epochs[1]), sorted(epochs[2])]
    assert sorted(_ids(DataLoader(dataset, batch_size=None))) == sorted(epochs[1])  # its own


@pytest.fixture
def epoch_batches(make_reader: MakeReader) -> list[list[tuple[int, ...]]]:
    """The batches (as id tuples) of the reader's epochs 1 to 3, each epoch's sorted."""
    reader = make_reader(**SETTINGS, columns=["id", "label"], epochs=3)
    return [
        sorted(tuple(batch["features"]["id"].tolist()) for batch in reader.iter_epoch())
        for _ in range(3)
    ]


def _batches(loader: Iterator[tuple[torch.Tensor, torch.Tensor | None]]) -> list[tuple[int, ...]]:
    return sorted(tuple(features[:, 0].long().tolist()) for features, _ in loader)


def test_a_loader_with_persistent_workers_serves_each_epoch_and_resumes(
    dataset: FaucetIterableDataset, epoch_batches: list[list[tuple[int, ...]]]
) -> None:
    loader = FaucetDataLoader(dataset, num_workers=2, persistent_workers=True)
    # The same batches as one process serves, each epoch its own.
    assert [_batches(iter(loader)), _batches(iter(loader))] == epoch_batches[:2]
    taken = list(itertools.islice(loader, 4))  # epoch 3, broken off after 4 batches
    state = loader.state_dict()
    assert _batches(iter(loader)) != epoch_batches[2]  # epoch 4: another order
    loader.load_state_dict(state)
    assert sorted(_batches(iter(taken)) + _batches(iter(loader))) == epoch_batches[2]
