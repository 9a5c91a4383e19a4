"""Ray Train: two workers train on Faucet's chunks, read by Ray Data tasks; one plan."""

import os

import ray
import torch
from ray.train import RunConfig, ScalingConfig, get_dataset_shard, report
from ray.train.torch import TorchTrainer, prepare_model

from faucet_core import load_config
from faucet_core.ray import read_faucet

EPOCHS = 2
config = load_config(
    datastore="duckdb",
    database=os.environ["FAUCET_EXAMPLE_DATABASE"],
    table_name="train",
    columns=["x1", "x2", "x3", "x4", "region", "label"],
    split_key="id",
    label_columns=["label"],
    preprocessing={"auto": True},  # fitted once, on the driver; applied in the read tasks
    test_split_percent=20,
    chunk_size=10_000,
    seed=7,  # the same stream for every dataset below
)


def train(settings: dict[str, list[str]]) -> None:
    """What every Ray Train worker runs."""
    features = settings["features"]
    model = prepare_model(torch.nn.Linear(len(features), 1))  # DDP across the workers
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for epoch in range(1, EPOCHS + 1):
        shard = get_dataset_shard(f"epoch{epoch}")  # this worker's blocks of the epoch
        for batch in shard.iter_torch_batches(batch_size=1024, dtypes=torch.float32):
            inputs = torch.stack([batch[name] for name in features], dim=1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                model(inputs)[:, 0], batch["label"]
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        report({"epoch": epoch, "loss": loss.item()})


if __name__ == "__main__":
    ray.init(num_cpus=2, include_dashboard=False)  # ray.init(address="auto") on a cluster
    # One dataset per epoch, each laid out as Faucet lays out that epoch. The plan and
    # the fitted preprocessing are made by the first and reused by the others.
    datasets = {f"epoch{e}": read_faucet(config, epoch=e) for e in range(1, EPOCHS + 1)}
    columns = datasets["epoch1"].columns()  # from the plan: nothing is read yet
    trainer = TorchTrainer(
        train,
        train_loop_config={"features": [c for c in columns if c != "label"]},
        # Half a CPU per worker leaves CPUs to the read tasks on a two-CPU machine.
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        datasets=datasets,
        run_config=RunConfig(storage_path=os.path.abspath("ray-results")),
    )
    result = trainer.fit()
    assert result.error is None
    print(f"trained {EPOCHS} epochs on 2 workers, from one plan and one fit")
    ray.shutdown()
