"""Hugging Face Accelerate: a prepared loader over Faucet's dataset, two epochs, on every
process Accelerate launches (`accelerate launch` or `torchrun`; run alone, one process)."""

import os

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from faucet_core import load_config
from faucet_core.torch import FaucetIterableDataset

accelerator = Accelerator()  # first: the processes then plan the source once, on rank 0
config = load_config(
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
)
# Accelerate reads an iterable dataset on the main process and gives every process a slice
# of its batches: dispatch=True makes that process serve the rows of every rank.
train = FaucetIterableDataset.from_config(config, features_dtype=torch.float32, dispatch=True)
with train:
    model = torch.nn.Linear(len(train.feature_columns), 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model, optimizer, loader = accelerator.prepare(
        model, optimizer, DataLoader(train, batch_size=None)
    )
    firsts = []  # each epoch's first batch, to see the order change
    for epoch in range(2):  # each iteration is the next epoch, reshuffled
        rows = steps = 0
        for features, labels in loader:
            if steps == 0:
                firsts.append(features.clone())
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                model(features)[:, 0], labels.float()
            )
            optimizer.zero_grad()
            accelerator.backward(loss)
            optimizer.step()
            rows, steps = rows + len(labels), steps + 1
        # Every process took as many steps; together they trained on each row once (less
        # the rows the processes do not divide evenly).
        counts = accelerator.gather(torch.tensor([[rows, steps]]))
        processes = accelerator.num_processes
        assert counts[:, 0].sum() == train.plan.rows("train") // processes * processes
        assert (counts[:, 1] == steps).all()
        accelerator.print(f"epoch {epoch + 1}: {steps} steps on each of {processes} processes")
    assert not torch.equal(firsts[0], firsts[1])  # a new order in epoch 2
