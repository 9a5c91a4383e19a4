"""A PyTorch Lightning ``LightningDataModule`` over a Faucet config.

Install with ``pip install 'faucetml[lightning]'``. Each process (each DDP rank) builds
its datasets with :meth:`FaucetIterableDataset.from_config
<faucet_core.torch.FaucetIterableDataset.from_config>`, so rank 0 plans once for all, and
serves the train split with :class:`~faucet_core.torch.FaucetDataLoader`: every row once
per epoch across ranks, a new order each epoch, and a position that Lightning's
checkpoints save and restore.
"""

from __future__ import annotations

import os
from typing import Any

import pytorch_lightning as pl
import torch

from faucet_core.config import FaucetConfig
from faucet_core.torch import FaucetDataLoader, FaucetIterableDataset
from faucet_core.warehouse import SplitName

__all__ = ["FaucetDataModule"]


class FaucetDataModule(pl.LightningDataModule):
    """Train and eval loaders of a Faucet config, built in each process that trains.

    Args:
        config: A config, or a config file.
        features_dtype: Convert features to this dtype (default: as the columns give).
        loader_options: Keywords for each :class:`~faucet_core.torch.FaucetDataLoader`
            (``num_workers``, ``pin_memory``, ...).
        overrides: Keyword overrides of a config file's settings.
    """

    def __init__(
        self,
        config: FaucetConfig | str | os.PathLike[str],
        features_dtype: torch.dtype | None = torch.float32,
        loader_options: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        self.config = config
        self.features_dtype = features_dtype
        self.loader_options = dict(loader_options or {})
        self.overrides = overrides
        self._datasets: dict[SplitName, FaucetIterableDataset] = {}

    def _loader(self, split: SplitName) -> FaucetDataLoader:
        if split not in self._datasets:
            self._datasets[split] = FaucetIterableDataset.from_config(
                self.config, split, features_dtype=self.features_dtype, **self.overrides
            )
        return FaucetDataLoader(self._datasets[split], **self.loader_options)

    def train_dataloader(self) -> FaucetDataLoader:
        """The train split: shuffled, a new order each epoch."""
        return self._loader("train")

    def val_dataloader(self) -> FaucetDataLoader:
        """The eval split, in plan order."""
        return self._loader("eval")

    def teardown(self, stage: str) -> None:
        """Close the datasets' readers."""
        for dataset in self._datasets.values():
            dataset.close()
        self._datasets.clear()
