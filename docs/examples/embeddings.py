"""An embedding column (DuckDB FLOAT[8]) as eight feature columns of numpy batches."""

import duckdb
import numpy as np

from faucet_core import get_batch_reader

with duckdb.connect("items.duckdb") as db:  # a table with an embedding per row
    embedding = "[" + ", ".join(["random()"] * 8) + "]::FLOAT[8]"
    db.execute(f"""
        CREATE OR REPLACE TABLE items AS
        SELECT i AS id, random() AS price, {embedding} AS emb,
               (random() < 0.3)::INT AS clicked
        FROM range(20000) r(i)
    """)

with get_batch_reader(
    datastore="duckdb",
    database="items.duckdb",
    table_name="items",
    columns=["price", "emb", "clicked"],
    split_key="id",
    label_columns=["clicked"],
    output="numpy",
    batch_size=512,
    test_split_percent=10,
    seed=3,
) as reader:
    print(reader.feature_names)  # ['price', 'emb[0]', ..., 'emb[7]']
    rows = 0
    for batch in reader.iter_epoch():
        features = batch["features"]  # (512, 9): price, then the 8 elements
        assert features.shape[1] == 9 and not np.isnan(features).any()
        rows += len(features)
    assert rows == reader.rows("train")
