"""Training with PyTorch: a DataLoader over Faucet, a checkpoint mid-epoch, and the resume."""

import itertools
import os

import torch

from faucet_core import get_batch_reader
from faucet_core.torch import FaucetDataLoader, FaucetIterableDataset

settings = dict(
    datastore="duckdb",
    database=os.environ["FAUCET_EXAMPLE_DATABASE"],
    table_name="train",
    columns=["x1", "x2", "x3", "x4", "label"],
    split_key="id",
    label_columns=["label"],
    preprocessing={"auto": True},  # x3 has NULLs: imputed, with an indicator
    batch_size=1024,
    test_split_percent=20,
)
with get_batch_reader(seed=7, **settings) as reader:
    dataset = FaucetIterableDataset(reader, features_dtype=torch.float32)
    model = torch.nn.Linear(len(dataset.feature_columns), 1)  # x1..x4 and x3__missing
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    loader = FaucetDataLoader(dataset, num_workers=2)
    for features, labels in itertools.islice(loader, 10):  # train on 10 batches, then stop
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            model(features).squeeze(1), labels.float()
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    checkpoint = {"model": model.state_dict(), "data": loader.state_dict()}

with get_batch_reader(**settings) as reader:  # a new process would do the same
    loader = FaucetDataLoader(FaucetIterableDataset(reader, features_dtype=torch.float32),
                              num_workers=2)  # fmt: skip
    loader.load_state_dict(checkpoint["data"])  # the seed comes from the checkpoint
    rest = sum(1 for _ in loader)
    print(f"resumed: {rest} more batches; {loader.metrics.wait_fraction:.0%} of the time waiting")
