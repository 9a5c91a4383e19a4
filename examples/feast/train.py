"""Feast: a logistic regression trained on orders joined to their drivers' features."""

from pathlib import Path

import numpy as np

from faucet_core import Reader

config = Path(__file__).with_name("faucet.yaml")  # its repo_path: ${FAUCET_FEAST_REPO}
with Reader.from_config(config) as reader:
    print(f"train {reader.rows('train')} orders, eval {reader.rows('eval')} orders")
    weights = np.zeros(len(reader.feature_columns) + 1)
    for epoch in range(reader.config.epochs):
        for batch in reader.iter_epoch():
            x = np.nan_to_num(batch["features"].astype(float))  # no stats yet: null features
            x = np.column_stack([x, np.ones(len(x))])
            y = batch["labels"].ravel()
            predicted = 1 / (1 + np.exp(-x @ weights))
            weights -= 0.1 * x.T @ (predicted - y) / len(y)
        print(f"epoch {epoch + 1}: {reader.metrics[-1].rows} rows")
    correct = rows = 0
    for batch in reader.iter_eval():
        x = np.column_stack(
            [np.nan_to_num(batch["features"].astype(float)), np.ones(len(batch["labels"]))]
        )
        correct += int(((x @ weights > 0) == batch["labels"].ravel()).sum())
        rows += len(batch["labels"])
    assert rows == reader.rows("eval")  # every eval order, once
    print(f"eval accuracy {correct / rows:.2f} on {rows} orders")
