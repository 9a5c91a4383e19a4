"""DDP: two ranks (gloo, on this machine), one plan made by rank 0 and broadcast."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from faucet_core import load_config
from faucet_core.torch import FaucetDataLoader, FaucetIterableDataset


def train(rank: int, world_size: int, port: int) -> None:
    """What every rank runs (under torchrun: from `dist.init_process_group` on)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    config = load_config(
        datastore="duckdb",
        database=os.environ["FAUCET_EXAMPLE_DATABASE"],
        table_name="train",
        columns=["x1", "x2", "x3", "x4", "label"],
        split_key="id",
        label_columns=["label"],
        preprocessing={"auto": True},  # x3 has NULLs: imputed, with an indicator
        test_split_percent=20,
        batch_size=1024,
        chunk_size=10_000,
    )
    # Rank 0 plans (and makes any scratch copy); the others receive its plan and seed.
    with FaucetIterableDataset.from_config(config, features_dtype=torch.float32) as dataset:
        model = torch.nn.Linear(len(dataset.feature_columns), 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        loader = FaucetDataLoader(dataset, num_workers=1)
        for _ in range(2):  # each iteration is the next epoch
            for features, labels in loader:
                loss = torch.nn.functional.binary_cross_entropy_with_logits(
                    model(features)[:, 0], labels.float()
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        steps = torch.tensor([loader.metrics.batches])
        dist.all_reduce(steps, op=dist.ReduceOp.MIN)  # every rank took the same steps
        assert steps.item() == loader.metrics.batches == len(dataset)
        if rank == 0:
            print(f"{world_size} ranks, {len(dataset)} steps an epoch each, from one plan")
    dist.barrier()  # no rank tears down its process group while another still uses it
    dist.destroy_process_group()


if __name__ == "__main__":
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    mp.spawn(train, args=(2, free), nprocs=2, join=True)
