"""The transformers Trainer: Faucet's datasets as train and eval datasets, two epochs, on
every process it is launched on (`accelerate launch` or `torchrun`; run alone, one)."""

import math
import os

import torch
from transformers import Trainer, TrainingArguments

from faucet_core import load_config
from faucet_core.torch import FaucetIterableDataset


class Classifier(torch.nn.Module):
    """A logistic regression as the Trainer calls a model: a batch's items by name in, the
    loss out."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(features, 1)

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.layer(features).squeeze(1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.float())
        return {"loss": loss, "logits": logits}


args = TrainingArguments(  # first: the processes then plan the source once, on rank 0
    output_dir="trainer",
    num_train_epochs=2,
    per_device_train_batch_size=256,
    per_device_eval_batch_size=256,
    learning_rate=0.1,
    save_strategy="no",
    report_to=[],
    disable_tqdm=True,
)
config = load_config(
    datastore="duckdb",
    database=os.environ["FAUCET_EXAMPLE_DATABASE"],
    table_name="train",
    columns=["x1", "x2", "x3", "x4", "label"],
    split_key="id",
    label_columns=["label"],
    preprocessing={"auto": True},
    batch_size=1024,  # a multiple of the per-device batch, for DataLoader workers
    test_split_percent=20,
    seed=7,
)
# The Trainer batches rows ({"features", "labels"}) and, through Accelerate, reads them on
# the main process and gives every process a slice of each batch.
train, evaluation = (
    FaucetIterableDataset.from_config(
        config, split=split, features_dtype=torch.float32, dispatch=True, rows=True
    )
    for split in ("train", "eval")
)
trainer = Trainer(
    model=Classifier(len(train.feature_columns)),
    args=args,
    train_dataset=train,
    eval_dataset=evaluation,
)
trainer.train()
# Each epoch, every process took the steps of its share of the rows.
per_process = train.plan.rows("train") // args.world_size
assert trainer.state.global_step == 2 * math.ceil(per_process / 256)
metrics = trainer.evaluate()
if args.process_index == 0:
    print(f"{trainer.state.global_step} steps on each of {args.world_size} processes; {metrics}")
train.close()
evaluation.close()
