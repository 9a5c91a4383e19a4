"""The Pythonic API: a config file, a context manager and iterators."""

import tempfile
from pathlib import Path

from faucet_core import Reader

config = Path(tempfile.mkdtemp()) / "faucet.yaml"
config.write_text(
    """
datastore: duckdb
connection:
  database: ${FAUCET_EXAMPLE_DATABASE}
source:
  table: train
  split_key: id
  label_columns: [label]
epochs: 2
batch_size: 1024
test_split_percent: 20
output: numpy
preprocessing:          # fitted on the train split: NULLs imputed, numbers scaled,
  auto: true            # the region one-hot encoded
  exclude: [id]
"""
)

with Reader.from_config(config, seed=7) as reader:  # keywords override the file
    for _ in range(reader.config.epochs):
        for batch in reader.iter_epoch():
            x, y = batch["features"], batch["labels"]  # float32 (rows, features), (rows,)
        eval_rows = sum(len(batch["labels"]) for batch in reader.iter_eval())
        assert x.shape[1] == len(reader.preprocessor.feature_names)
        train = reader.metrics[-2]
        print(
            f"epoch {train.epoch}: {train.rows} train rows ({train.chunks_cached} chunks "
            f"from the cache), {eval_rows} eval rows"
        )
