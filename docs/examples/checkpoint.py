"""Checkpoints: save the position in the training stream mid-epoch, resume it elsewhere."""

import os

from faucet_core import get_batch_reader

settings = dict(
    datastore="duckdb",
    database=os.environ["FAUCET_EXAMPLE_DATABASE"],
    table_name="train",
    split_key="id",
    label_columns=["label"],
    epochs=2,
    batch_size=1024,
    chunk_size=10_000,
    test_split_percent=20,
    seed=7,
    output="arrow",
)

with get_batch_reader(**settings) as reader:
    reader.prep_for_epoch()
    for _ in range(10):  # train on 10 batches of epoch 1, then checkpoint
        reader.get_batch()
    state = reader.state_dict()  # a few plain values: store them with the model
    rest = [batch["features"]["id"] for batch in iter(reader.get_batch, None)]

with get_batch_reader(**settings) as reader:  # e.g. after a restart
    reader.load_state_dict(state)
    reader.prep_for_epoch()  # resumes epoch 1 after its 10th batch
    resumed = [batch["features"]["id"] for batch in iter(reader.get_batch, None)]
    assert resumed == rest  # the same batches: none repeated, none skipped
    reader.prep_for_epoch()  # epoch 2 follows as usual
    print(f"resumed {len(resumed)} batches of epoch 1, then epoch {reader.epoch}")
