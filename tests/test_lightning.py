"""PyTorch Lightning's Trainer over Faucet's datasets: every train row once per epoch, a
new order each epoch, validation over the eval split, and exact mid-epoch resume."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

import faucet_duckdb.plugin
from faucet_core import Reader
from faucet_core.lightning import FaucetDataModule
from faucet_core.plugins import pm
from faucet_core.torch import FaucetDataLoader, FaucetIterableDataset
from tests.conftest import FRAMEWORK_SETTINGS

MakeReader = Callable[..., Reader]
SETTINGS = FRAMEWORK_SETTINGS


class Recorder(pl.LightningModule):
    """A linear model that records the ids (feature 0) of every batch it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.epochs: dict[int, list[int]] = {}  # by Lightning's epoch, which resumes count
        self.validated: list[list[int]] = []

    @property
    def trained(self) -> list[list[int]]:
        """The ids trained on, per epoch this module saw."""
        return [self.epochs[epoch] for epoch in sorted(self.epochs)]

    def training_step(self, batch: Any, index: int) -> torch.Tensor:
        features, labels = batch
        self.epochs.setdefault(self.current_epoch, []).extend(features[:, 0].long().tolist())
        return torch.nn.functional.mse_loss(self.layer(features).squeeze(1), labels.float())

    def on_validation_epoch_start(self) -> None:
        self.validated.append([])

    def validation_step(self, batch: Any, index: int) -> None:
        self.validated[-1].extend(batch[0][:, 0].long().tolist())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=1e-6)


def _trainer(root: Path, **settings: Any) -> pl.Trainer:
    return pl.Trainer(
        default_root_dir=root, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, **{"devices": 1, **settings},
    )  # fmt: skip


@pytest.fixture(autouse=True)
def quiet() -> None:
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


@pytest.mark.parametrize("kind", ["DataLoader", "FaucetDataLoader"])
def test_fit_trains_every_row_once_per_epoch_in_a_new_order(
    make_reader: MakeReader, epochs: list[list[int]], kind: str, tmp_path: Path
) -> None:
    reader = make_reader(**SETTINGS)
    train = FaucetIterableDataset(reader, features_dtype=torch.float32)
    loader = DataLoader(train, batch_size=None) if kind == "DataLoader" else FaucetDataLoader(train)
    validation = DataLoader(
        FaucetIterableDataset(reader, split="eval", features_dtype=torch.float32), batch_size=None
    )
    module = Recorder()
    _trainer(tmp_path, max_epochs=2, enable_checkpointing=False).fit(module, loader, validation)
    assert module.trained == epochs
    eval_rows = [i for b in reader.iter_eval() for i in b["features"]["id"].tolist()]
    assert module.validated == [eval_rows, eval_rows]


class _Crash(Exception):
    pass


class _CheckpointThenCrash(pl.Callback):
    def __init__(self, path: Path, after: int) -> None:
        self.path, self.after = path, after

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: Any, outputs: Any, batch: Any, index: int
    ) -> None:
        if trainer.current_epoch == 0 and index + 1 == self.after:
            trainer.save_checkpoint(self.path)
            raise _Crash


def test_a_checkpoint_taken_mid_epoch_resumes_exactly(
    make_reader: MakeReader, epochs: list[list[int]], tmp_path: Path
) -> None:
    checkpoint = tmp_path / "mid.ckpt"
    first = Recorder()
    loader = FaucetDataLoader(
        FaucetIterableDataset(make_reader(**SETTINGS), features_dtype=torch.float32)
    )
    with pytest.raises(_Crash):
        _trainer(tmp_path, max_epochs=2, callbacks=[_CheckpointThenCrash(checkpoint, 5)]).fit(
            first, loader
        )
    assert first.trained == [epochs[0][:500]]
    resumed = Recorder()
    loader = FaucetDataLoader(
        FaucetIterableDataset(make_reader(**SETTINGS), features_dtype=torch.float32)
    )
    _trainer(tmp_path, max_epochs=2).fit(resumed, loader, ckpt_path=checkpoint)
    assert first.trained[0] + resumed.trained[0] == epochs[0]  # none repeated, none skipped
    assert resumed.trained[1] == epochs[1]


class FileRecorder(Recorder):
    """Writes what its process trained on when training ends (a rank's, under DDP)."""

    def __init__(self, out: Path) -> None:
        super().__init__()
        self.out = out

    def on_train_end(self) -> None:
        Path(f"{self.out}.{self.global_rank}").write_text(json.dumps(self.trained))


class RankRecorder(FileRecorder):
    """Builds its loader in each rank, as DDP needs."""

    def __init__(self, config: Path, out: Path, faucet_loader: bool) -> None:
        super().__init__(out)
        self.config, self.faucet_loader = config, faucet_loader

    def train_dataloader(self) -> DataLoader[Any]:
        dataset = FaucetIterableDataset.from_config(self.config, features_dtype=torch.float32)
        if self.faucet_loader:
            return FaucetDataLoader(dataset, num_workers=1)
        return DataLoader(dataset, batch_size=None, num_workers=1)


class _DuckDBInRanks(pl.Callback):
    """Registers the DuckDB plugin in spawned ranks, which lack the tests' plugins."""

    def setup(self, trainer: pl.Trainer, module: pl.LightningModule, stage: str) -> None:
        pm.register(faucet_duckdb.plugin)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("loader", ["DataLoader", "FaucetDataLoader", "FaucetDataModule"])
def test_ddp_ranks_train_disjoint_rows_in_equal_steps_each_epoch(
    config_file: Path, tmp_path: Path, make_reader: MakeReader, loader: str
) -> None:
    out = tmp_path / "trained"
    trainer = _trainer(
        tmp_path, max_epochs=2, devices=2, strategy="ddp_spawn", enable_checkpointing=False,
        callbacks=[_DuckDBInRanks()], limit_val_batches=0,
    )  # fmt: skip
    if loader == "FaucetDataModule":
        trainer.fit(FileRecorder(out), datamodule=FaucetDataModule(config_file))
    else:
        trainer.fit(RankRecorder(config_file, out, loader == "FaucetDataLoader"))
    ranks = [json.loads(Path(f"{out}.{rank}").read_text()) for rank in range(2)]
    train = make_reader(**SETTINGS).rows("train")
    for epoch in range(2):
        first, second = ranks[0][epoch], ranks[1][epoch]
        assert len(first) == len(second) == train // 2  # equal steps, the remainder dropped
        assert not set(first) & set(second)
    assert ranks[0][0] != ranks[0][1]  # a new order in epoch 2


def test_a_data_module_trains_and_validates_a_config(
    config_file: Path, tmp_path: Path, make_reader: MakeReader, epochs: list[list[int]]
) -> None:
    module = Recorder()
    data = FaucetDataModule(config_file, loader_options={"num_workers": 2})
    _trainer(tmp_path, max_epochs=2, enable_checkpointing=False).fit(module, datamodule=data)
    assert [sorted(ids) for ids in module.trained] == [sorted(ids) for ids in epochs]
    assert module.trained[0] != module.trained[1]
    eval_rows = [
        i for b in make_reader(**SETTINGS).iter_eval() for i in b["features"]["id"].tolist()
    ]
    # Two workers each serve a run of the eval batches: every row once, interleaved.
    assert [sorted(ids) for ids in module.validated] == [sorted(eval_rows)] * 2
    assert data._datasets == {}  # closed when training ended


def test_the_data_module_passes_overrides_and_loader_options(config_file: Path) -> None:
    data = FaucetDataModule(config_file, features_dtype=torch.float64,
                            loader_options={"num_workers": 1}, batch_size=40)  # fmt: skip
    try:
        train = data.train_dataloader()
        assert isinstance(train, FaucetDataLoader) and train.num_workers == 1
        features, _ = next(iter(train))
        assert len(features) == 40 and features.dtype == torch.float64
        assert data.val_dataloader().dataset.split == "eval"
    finally:
        data.teardown("fit")
