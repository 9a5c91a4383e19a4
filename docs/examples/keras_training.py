"""Keras 3 on the PyTorch backend: model.fit over Faucet's loaders, with validation."""

import os

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported

import keras
import torch

from faucet_core import get_batch_reader
from faucet_core.torch import FaucetDataLoader, FaucetIterableDataset

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
    model = keras.Sequential([
        keras.Input((len(train.feature_columns),)),
        keras.layers.Dense(1, activation="sigmoid"),
    ])  # fmt: skip
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="binary_crossentropy",
                  metrics=["accuracy"])  # fmt: skip
    # Keras iterates the loader anew each epoch: each is a whole, reshuffled epoch.
    history = model.fit(
        FaucetDataLoader(train, num_workers=2),
        validation_data=FaucetDataLoader(validation),
        epochs=2,
        verbose=0,
    )
    print(f"eval accuracy by epoch: {history.history['val_accuracy']}")
