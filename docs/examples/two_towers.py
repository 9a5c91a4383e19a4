"""A two-tower model trained from grouped inputs: a user tower and an item tower, each
fed its own tensor of a batch's features (a scalar and an 8-wide embedding)."""

import duckdb
import torch

from faucet_core import get_batch_reader
from faucet_core.torch import FaucetDataLoader, FaucetIterableDataset

with duckdb.connect("clicks.duckdb") as db:  # one row per (user, item) impression
    embedding = "[" + ", ".join(["random()"] * 8) + "]::FLOAT[8]"
    db.execute(f"""
        CREATE OR REPLACE TABLE clicks AS
        SELECT i AS id, random() * 80 AS age, {embedding} AS user_emb,
               random() * 100 AS price, {embedding} AS item_emb,
               (random() < 0.2)::INT AS clicked
        FROM range(20000) r(i)
    """)


class Tower(torch.nn.Module):
    """Features in, a 16-wide representation out."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(features, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


with get_batch_reader(
    datastore="duckdb",
    database="clicks.duckdb",
    table_name="clicks",
    split_key="id",
    label_columns=["clicked"],
    inputs={"user": ["age", "user_emb"], "item": ["price", "item_emb"]},
    preprocessing={"auto": True},  # age and price standardized; embeddings as they are
    batch_size=256,
    test_split_percent=10,
    seed=11,
) as reader:
    dataset = FaucetIterableDataset(reader, features_dtype=torch.float32)
    print(dataset.inputs)  # {'user': ['age', 'user_emb[0]', ...], 'item': ['price', ...]}
    towers = torch.nn.ModuleDict(
        {group: Tower(len(names)) for group, names in dataset.inputs.items()}
    )
    optimizer = torch.optim.Adam(towers.parameters(), lr=1e-3)
    for epoch in range(2):  # each iteration is the next epoch, reshuffled
        rows = 0
        for features, clicked in FaucetDataLoader(dataset):
            user, item = towers["user"](features["user"]), towers["item"](features["item"])
            logits = (user * item).sum(dim=1)  # the towers meet in a dot product
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, clicked.float())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            rows += len(clicked)
        assert rows == reader.rows("train")
        print(f"epoch {epoch + 1}: {rows:,} rows, last loss {loss.item():.3f}")
