"""PyTorch Lightning: Trainer.fit over Faucet's loaders, two epochs, with validation."""

import os

import pytorch_lightning as pl
import torch

from faucet_core import get_batch_reader
from faucet_core.torch import FaucetDataLoader, FaucetIterableDataset


class Model(pl.LightningModule):
    """A logistic regression; it also notes which rows each epoch trained on."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(features, 1)
        self.rows_per_epoch: dict[int, int] = {}

    def training_step(self, batch, index):
        features, labels = batch
        epoch = self.current_epoch
        self.rows_per_epoch[epoch] = self.rows_per_epoch.get(epoch, 0) + len(labels)
        logits = self.layer(features).squeeze(1)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.float())

    def validation_step(self, batch, index):
        features, labels = batch
        logits = self.layer(features).squeeze(1)
        self.log("val_loss", torch.nn.functional.binary_cross_entropy_with_logits(
            logits, labels.float()))  # fmt: skip

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


with get_batch_reader(
    datastore="duckdb",
    database=os.environ["FAUCET_EXAMPLE_DATABASE"],
    table_name="train",
    columns=["x1", "x2", "x3", "x4", "label"],
    split_key="id",
    label_columns=["label"],
    preprocessing={"auto": True},
    batch_size=1024,
    test_split_percent=20,
    seed=7,
) as reader:
    train = FaucetIterableDataset(reader, features_dtype=torch.float32)
    validation = FaucetIterableDataset(reader, split="eval", features_dtype=torch.float32)
    model = Model(len(train.feature_columns))
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False)  # fmt: skip
    # Nothing calls set_epoch: each epoch of the Trainer is a new, reshuffled epoch.
    trainer.fit(model, FaucetDataLoader(train, num_workers=2), FaucetDataLoader(validation))
    assert model.rows_per_epoch == {0: reader.rows("train"), 1: reader.rows("train")}
    print(f"trained 2 epochs of {reader.rows('train'):,} rows; {trainer.callback_metrics}")
