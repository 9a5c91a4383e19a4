"""Hugging Face Accelerate and the transformers Trainer over Faucet's datasets, launched on
two CPU processes: every train row once per epoch across the processes, in equal steps,
a new order each epoch, an evaluation over the eval split, and the loaders that would lose
or split rows refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

from faucet_core import Reader
from faucet_core.torch import FaucetDataLoader, FaucetIterableDataset
from tests.conftest import FRAMEWORK_SETTINGS

MakeReader = Callable[..., Reader]
LAUNCHED = Path(__file__).with_name("hf_launched.py")


def run_on_two_processes(script: Path, *args: str, cwd: Path, **env: str) -> str:
    """Run ``script`` with ``args`` on two CPU processes, as ``torchrun`` launches them;
    its output."""
    environment = {k: v for k, v in os.environ.items() if k != "FAUCET_DISABLE_PLUGIN_AUTOLOAD"}
    environment.update(ACCELERATE_USE_CPU="yes", PYTHONPATH=str(LAUNCHED.parents[1]), **env)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", str(script), *args]  # fmt: skip
    run = subprocess.run(
        command, env=environment, cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-4000:]
    return run.stdout


def launch(scenario: str, config: Path, workers: int) -> list[dict[str, Any]]:
    """Run ``scenario`` of ``hf_launched.py`` on two CPU processes; what each saw."""
    out = config.parent / "seen"
    run_on_two_processes(LAUNCHED, scenario, str(config), str(out), str(workers), cwd=config.parent)
    return [json.loads(Path(f"{out}.{index}").read_text()) for index in range(2)]


@pytest.fixture
def eval_rows(make_reader: MakeReader) -> list[int]:
    reader = make_reader(**FRAMEWORK_SETTINGS)
    return [i for batch in reader.iter_eval() for i in batch["features"]["id"].tolist()]


def check_epochs(seen: list[dict[str, Any]], epochs: list[list[int]]) -> None:
    """Each epoch: the two processes trained on disjoint rows, as many each, together the
    epoch's order less its last row when the rows are odd (``remainder: drop``)."""
    for epoch, order in enumerate(epochs):
        first, second = seen[0]["epochs"][epoch], seen[1]["epochs"][epoch]
        assert len(first) == len(second) == len(order) // 2
        assert sorted(first + second) == sorted(order[: len(order) // 2 * 2])
    assert seen[0]["epochs"][0] != seen[0]["epochs"][1]  # a new order in epoch 2
    assert seen[0]["steps"] == seen[1]["steps"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("workers", [0, 2])
def test_launched_accelerate_dispatches_every_row_once_per_epoch(
    config_file: Path, epochs: list[list[int]], eval_rows: list[int], workers: int
) -> None:
    seen = launch("accelerate", config_file, workers)
    check_epochs(seen, epochs)
    half = len(epochs[0]) // 2
    assert seen[0]["steps"] == [seen[0]["length"]] * 2 == [-(-half // 100)] * 2
    first, second = seen[0]["eval"], seen[1]["eval"]
    assert len(first) == len(second) and sorted(first + second) == sorted(
        eval_rows[: len(eval_rows) // 2 * 2]
    )
    for process in seen:
        assert "build the dataset with dispatch=True" in process["errors"]["not dispatch"]
        assert "splits Faucet's ranks again" in process["errors"]["dispatch_batches=False"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("workers", [0, 2])
def test_launched_trainer_trains_every_row_once_per_epoch(
    config_file: Path, epochs: list[list[int]], eval_rows: list[int], workers: int
) -> None:
    seen = launch("trainer", config_file, workers)
    check_epochs(seen, epochs)
    assert seen[0]["steps"] == [2 * -(-(len(epochs[0]) // 2) // 25)]  # 25 rows a device step
    first, second = seen[0]["eval"], seen[1]["eval"]
    assert len(first) == len(second) and sorted(first + second) == sorted(
        eval_rows[: len(eval_rows) // 2 * 2]
    )


def test_a_dataset_of_rows_serves_each_row_once_to_a_batching_loader(
    make_reader: MakeReader, epochs: list[list[int]]
) -> None:
    dataset = FaucetIterableDataset(make_reader(**FRAMEWORK_SETTINGS), rows=True)
    assert len(dataset) == len(epochs[0])
    batches = list(DataLoader(dataset, batch_size=32))
    assert set(batches[0]) == {"features", "labels"}
    assert batches[0]["features"].shape == (32, 2) and batches[0]["labels"].shape == (32,)
    assert [int(i) for b in batches for i in b["features"][:, 0]] == epochs[0]
    with pytest.raises(ValueError, match="batches them"):
        FaucetDataLoader(dataset)


def test_without_labels_rows_have_features_only(make_reader: MakeReader) -> None:
    reader = make_reader(**FRAMEWORK_SETTINGS, label_columns=None)
    row = next(iter(FaucetIterableDataset(reader, rows=True)))
    assert set(row) == {"features"}
    with pytest.raises(ValueError, match="rows=True"):
        FaucetIterableDataset(reader, dispatch=True)


def test_with_dispatch_rank_zero_serves_all_ranks_and_the_others_nothing(
    make_reader: MakeReader, epochs: list[list[int]]
) -> None:
    reader = make_reader(**FRAMEWORK_SETTINGS)
    main = FaucetIterableDataset(reader, rank=0, world_size=2, dispatch=True)
    served = [int(i) for features, _ in main for i in features[:, 0]]
    assert served == epochs[0][: len(epochs[0]) // 2 * 2]
    assert len(main) == -(-len(served) // 100)
    other = iter(FaucetIterableDataset(reader, rank=1, world_size=2, dispatch=True))
    with pytest.raises(RuntimeError, match="rank 0 serves every rank's rows"):
        next(other)


def test_rows_features_take_the_dtype_asked(make_reader: MakeReader) -> None:
    reader = make_reader(**FRAMEWORK_SETTINGS)
    row = next(iter(FaucetIterableDataset(reader, rows=True, features_dtype=torch.float16)))
    assert row["features"].dtype == torch.float16 and row["features"].shape == (2,)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("example", ["accelerate_training.py", "transformers_trainer.py"])
def test_launched_docs_examples_run_on_two_processes(
    example: str, example_database: Path, tmp_path: Path
) -> None:
    script = Path(__file__).parents[1] / "docs" / "examples" / example
    output = run_on_two_processes(
        LAUNCHED, "example", str(script), cwd=tmp_path,
        FAUCET_EXAMPLE_DATABASE=str(example_database), XDG_CACHE_HOME=str(tmp_path),
    )  # fmt: skip
    assert "on each of 2 processes" in output


@pytest.fixture
def accelerator() -> Iterator[Any]:
    """An Accelerator in this process (one process, on the CPU); its state reset after."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    yield Accelerator(cpu=True)
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


@pytest.mark.parametrize(
    ("dataset_options", "loader_options", "message"),
    [({"world_size": 2, "rank": 0}, {"batch_size": None},
      "the dataset serves 2 ranks, and Accelerate dispatches to 1 processes"),
     ({"rows": True}, {"batch_size": None},
      r"^a dataset of rows \(rows=True\) needs a loader with a batch_size$"),
     ({"rows": True}, {"batch_size": 30, "num_workers": 2},
      r"make Faucet's batch_size \(100\) a multiple of the loader's \(30\)")],
)  # fmt: skip
def test_dispatching_loaders_that_would_slice_unevenly_are_refused(
    make_reader: MakeReader, accelerator: Any, dataset_options: dict[str, Any],
    loader_options: dict[str, Any], message: str,
) -> None:  # fmt: skip
    reader = make_reader(**FRAMEWORK_SETTINGS)
    dataset = FaucetIterableDataset(reader, dispatch=True, **dataset_options)
    loader = accelerator.prepare(DataLoader(dataset, **loader_options))
    with pytest.raises(ValueError, match=message):
        next(iter(loader))


@pytest.mark.parametrize(("batch_size", "workers"), [(25, 2), (30, 1)])
def test_a_dispatching_loader_of_rows_in_whole_batches_serves_every_row(
    make_reader: MakeReader, accelerator: Any, epochs: list[list[int]], batch_size: int,
    workers: int,
) -> None:  # fmt: skip
    # One worker's run is the whole epoch: its short batch is the last, whatever the size.
    dataset = FaucetIterableDataset(make_reader(**FRAMEWORK_SETTINGS), dispatch=True, rows=True)
    loader = accelerator.prepare(DataLoader(dataset, batch_size=batch_size, num_workers=workers))
    ids = [int(i) for batch in loader for i in batch["features"][:, 0]]
    assert sorted(ids) == sorted(epochs[0])


def test_one_process_that_iterates_the_whole_dataset_serves_every_row(
    make_reader: MakeReader, accelerator: Any, epochs: list[list[int]]
) -> None:
    """On one process, a loader that does not dispatch iterates the dataset itself, as a
    plain DataLoader: a dataset built without dispatch=True serves it every row."""
    from accelerate.data_loader import DataLoaderShard, prepare_data_loader

    dataset = FaucetIterableDataset(make_reader(**FRAMEWORK_SETTINGS))
    loader = prepare_data_loader(DataLoader(dataset, batch_size=None), dispatch_batches=False)
    assert isinstance(loader, DataLoaderShard) and loader.dataset is dataset
    assert [int(i) for features, _ in loader for i in features[:, 0]] == epochs[0]


def test_a_loader_that_shards_the_dataset_again_is_refused(
    make_reader: MakeReader, accelerator: Any
) -> None:
    """A loader that does not dispatch, on two processes, keeps every other slice of what
    the dataset serves: a second split of Faucet's ranks, refused."""
    from accelerate.data_loader import prepare_data_loader

    dataset = FaucetIterableDataset(make_reader(**FRAMEWORK_SETTINGS))
    loader = prepare_data_loader(
        DataLoader(dataset, batch_size=None), num_processes=2, process_index=0,
        dispatch_batches=False,
    )  # fmt: skip
    with pytest.raises(ValueError) as raised:
        next(iter(loader))
    assert str(raised.value).startswith(
        "Accelerate with dispatch_batches=False iterates the whole dataset on every process "
        "and keeps every n-th slice of it, which splits Faucet's ranks again: "
    )
