"""Several machines under torchrun: plan once, share the plan as a file, each rank reads
its range of every epoch.

`python plan_file.py plan` plans the source, fits the preprocessing and prepares the
chunks, once, and writes the plan and the fit to a folder every node can read. Each
node then runs `torchrun ... plan_file.py train`; each rank builds its reader from the
files (no planning query, no fit) and serves its own rows. Run with no argument, it does
both on this machine, with two ranks.
"""

import os
import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp

from faucet_core import Plan, Preprocessor, Reader, load_config
from faucet_core.torch import FaucetDataLoader, FaucetIterableDataset

SHARED = Path(os.environ.get("SHARED_DIR", "shared"))  # e.g. a network file system
config = load_config(
    datastore="duckdb",
    database=os.environ["FAUCET_EXAMPLE_DATABASE"],
    table_name="train",
    columns=["x1", "x2", "x3", "x4", "label"],
    split_key="id",
    label_columns=["label"],
    preprocessing={"auto": True},
    test_split_percent=20,
    batch_size=1024,
    chunk_size=10_000,
    seed=7,  # every rank must shuffle alike
)


def plan() -> None:
    """Once, before the job: one counting query, one fit, the chunks prepared."""
    with Reader(config) as reader:
        reader.prepare()
        SHARED.mkdir(exist_ok=True)
        (SHARED / "plan.json").write_text(reader.plan.to_json())
        assert reader.preprocessor is not None
        reader.preprocessor.save(SHARED / "preprocessor.json")


def train() -> None:
    """Every rank (torchrun sets RANK and WORLD_SIZE). A DDP job also joins its process
    group and wraps the model, as in ddp_training.py; the data side is this."""
    shared_plan = Plan.from_json((SHARED / "plan.json").read_text())
    fitted = Preprocessor.load(SHARED / "preprocessor.json")
    with Reader(config, plan=shared_plan, preprocessor=fitted) as reader:
        dataset = FaucetIterableDataset(reader, features_dtype=torch.float32)
        model = torch.nn.Linear(len(dataset.feature_columns), 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        loader = FaucetDataLoader(dataset)
        for _ in range(2):  # each iteration is the next epoch
            for features, labels in loader:
                loss = torch.nn.functional.binary_cross_entropy_with_logits(
                    model(features)[:, 0], labels.float()
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        assert reader.plan_origin == "given" and loader.metrics.batches == len(dataset)
        print(f"rank {dataset.rank} of {dataset.world_size}: {len(dataset)} steps an epoch")


def _rank(rank: int, world_size: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size))  # what torchrun sets
    train()


if __name__ == "__main__":
    step = sys.argv[1] if len(sys.argv) > 1 else "both"
    if step in ("plan", "both"):
        plan()
    if step == "train":
        train()
    elif step == "both":
        mp.spawn(_rank, args=(2,), nprocs=2, join=True)
