"""The classic API: prep_for_epoch() / get_batch() until None, then the eval pass."""

import os

from faucet_core import get_batch_reader

reader = get_batch_reader(
    datastore="duckdb",
    database=os.environ["FAUCET_EXAMPLE_DATABASE"],
    table_name="train",
    epochs=2,
    batch_size=1024,
    chunk_size=100_000,
    test_split_percent=20,
    split_key="id",
    label_columns=["label"],
    seed=7,
)
for epoch in range(2):
    reader.prep_for_epoch()
    batch = reader.get_batch()
    while batch is not None:
        features, labels = batch["features"], batch["labels"]  # pandas DataFrames
        batch = reader.get_batch()
    reader.prep_for_eval()
    batch = reader.get_batch(eval=True)
    while batch is not None:
        batch = reader.get_batch(eval=True)
    print(f"epoch {epoch}:", reader.metrics[-2].as_dict())
reader.close()
