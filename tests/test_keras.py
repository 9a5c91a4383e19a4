"""Keras 3 (the PyTorch backend): model.fit over Faucet's loaders, every train row once per
epoch in a new order, with validation over the eval split."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported

import keras
import torch
from torch.utils.data import DataLoader

from faucet_core import Reader
from faucet_core.torch import FaucetDataLoader, FaucetIterableDataset

MakeReader = Callable[..., Reader]
SETTINGS = {
    "batch_size": 100, "chunk_size": 700, "seed": 5, "test_split_percent": 10,
    "columns": ["id", "x1", "label"],
}  # fmt: skip


class Recorder(keras.layers.Layer):  # type: ignore[misc]
    """Passes its input on, and notes the ids (feature 0) of each batch, train or not."""

    def __init__(self) -> None:
        super().__init__()
        self.trained: list[list[int]] = []
        self.validated: list[list[int]] = []

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        # Not the calls that build the model (symbolic, or on a batch before any step).
        if isinstance(inputs, torch.Tensor) and (self.trained or self.validated):
            ids = inputs[:, 0].long().tolist()
            (self.trained if training else self.validated)[-1].extend(ids)
        return inputs

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape


class NewLists(keras.callbacks.Callback):  # type: ignore[misc]
    """Starts the recorder's lists of each epoch and of each validation."""

    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self.recorder = recorder

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.recorder.trained.append([])

    def on_test_begin(self, logs: Any = None) -> None:
        self.recorder.validated.append([])


@pytest.fixture
def epochs(make_reader: MakeReader) -> list[list[int]]:
    """The train rows of epochs 1 to 8, in the order the reader serves them."""
    reader = make_reader(**SETTINGS, epochs=8)
    return [
        [i for batch in reader.iter_epoch() for i in batch["features"]["id"].tolist()]
        for _ in range(8)
    ]


@pytest.mark.parametrize("kind", ["DataLoader", "FaucetDataLoader"])
def test_fit_trains_every_row_once_per_epoch_in_a_new_order(
    make_reader: MakeReader, epochs: list[list[int]], kind: str
) -> None:
    reader = make_reader(**SETTINGS)
    train = FaucetIterableDataset(reader, features_dtype=torch.float32)
    validation = FaucetIterableDataset(reader, split="eval", features_dtype=torch.float32)
    loaders = (
        (DataLoader(train, batch_size=None), DataLoader(validation, batch_size=None))
        if kind == "DataLoader"
        else (FaucetDataLoader(train), FaucetDataLoader(validation))
    )
    recorder = Recorder()
    model = keras.Sequential([keras.Input((2,)), recorder, keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse", jit_compile=False)
    model.fit(loaders[0], validation_data=loaders[1], epochs=3, verbose=0,
              callbacks=[NewLists(recorder)])  # fmt: skip
    # fit takes a batch of a first iteration to build what the model lacks, and starts
    # one more iteration than it reads each epoch: its epochs are Faucet's 2, 4 and 6,
    # each whole, each in a new order.
    assert recorder.trained == [epochs[1], epochs[3], epochs[5]]
    eval_rows = [i for b in reader.iter_eval() for i in b["features"]["id"].tolist()]
    assert recorder.validated == [eval_rows] * 3
