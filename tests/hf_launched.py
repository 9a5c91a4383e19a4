"""What each process runs in the Hugging Face tests, launched by ``torchrun`` on the CPU
(``ACCELERATE_USE_CPU=yes``) as ``hf_launched.py SCENARIO CONFIG OUT WORKERS``, where each
process writes what it trained and evaluated on (feature 0 of each row is its id) to
``OUT.<process index>`` as JSON; or as ``hf_launched.py example SCRIPT``, which runs a
docs example.

A process ends without finalizing the interpreter: gloo's threads release the work of a
collective after it completed, and one doing so as the interpreter finalizes aborts the
process (``terminate called without an active exception``), by chance.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.data_loader import prepare_data_loader
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback, TrainingArguments

from faucet_core.torch import FaucetIterableDataset


def _ids(batch: Any) -> list[int]:
    features = batch["features"] if isinstance(batch, dict) else batch[0]
    return [int(i) for i in features[:, 0].tolist()]


def _error(run: Any) -> str:
    """The message of the ValueError ``run()`` raises."""
    try:
        run()
    except ValueError as exc:
        return str(exc)
    raise AssertionError("no ValueError")


def accelerate(config: str, workers: int) -> tuple[int, dict[str, Any]]:
    """Prepared loaders: two epochs of train batches, one of eval, and the loaders that
    would lose or split rows."""
    accelerator = Accelerator()
    ranked = FaucetIterableDataset.from_config(config, features_dtype=torch.float32)
    wrong = accelerator.prepare(DataLoader(ranked, batch_size=None))
    train = FaucetIterableDataset.from_config(config, features_dtype=torch.float32, dispatch=True)
    sharded = prepare_data_loader(
        DataLoader(train, batch_size=None), accelerator.device, put_on_device=True,
        dispatch_batches=False,
    )  # fmt: skip
    errors = {"not dispatch": _error(lambda: next(iter(wrong))),
              "dispatch_batches=False": _error(lambda: next(iter(sharded)))}  # fmt: skip
    evals = FaucetIterableDataset.from_config(
        config, split="eval", features_dtype=torch.float32, dispatch=True
    )
    loader = accelerator.prepare(DataLoader(train, batch_size=None, num_workers=workers))
    epochs, steps = [], []
    for _ in range(2):
        batches = list(loader)
        epochs.append([i for batch in batches for i in _ids(batch)])
        steps.append(len(batches))
    evaluation = accelerator.prepare(DataLoader(evals, batch_size=None))
    evaluated = [i for batch in evaluation for i in _ids(batch)]
    return accelerator.process_index, {
        "epochs": epochs, "steps": steps, "length": len(loader), "eval": evaluated,
        "errors": errors,
    }  # fmt: skip


class Recorder(torch.nn.Module):
    """A linear model that records the ids of the rows it trains and evaluates on."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.trained: list[int] = []
        self.evaluated: list[int] = []

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        (self.trained if self.training else self.evaluated).extend(_ids({"features": features}))
        predicted = self.layer(features).squeeze(1)
        return {"loss": torch.nn.functional.mse_loss(predicted, labels.float())}


class EpochEnds(TrainerCallback):
    """Takes the rows trained on at each epoch's end."""

    def __init__(self, model: Recorder) -> None:
        self.model, self.epochs = model, []  # type: ignore[var-annotated]

    def on_epoch_end(self, *args: Any, **kwargs: Any) -> None:
        self.epochs.append(self.model.trained)
        self.model.trained = []


def trainer(config: str, workers: int) -> tuple[int, dict[str, Any]]:
    """The transformers Trainer: two epochs over the train rows, then an evaluation."""
    args = TrainingArguments(
        output_dir=str(Path(config).parent / "trainer"), use_cpu=True, num_train_epochs=2,
        per_device_train_batch_size=25, per_device_eval_batch_size=25, report_to=[],
        save_strategy="no", logging_strategy="no", disable_tqdm=True,
        dataloader_num_workers=workers,
    )  # fmt: skip
    train, evals = (
        FaucetIterableDataset.from_config(
            config, split=split, features_dtype=torch.float32, dispatch=True, rows=True
        )
        for split in ("train", "eval")
    )
    model = Recorder()
    ends = EpochEnds(model)
    run = Trainer(model=model, args=args, train_dataset=train, eval_dataset=evals, callbacks=[ends])
    run.train()
    run.evaluate()
    return args.process_index, {
        "epochs": ends.epochs, "steps": [run.state.global_step], "eval": model.evaluated,
    }  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1] == "example":
        runpy.run_path(sys.argv[2], run_name="__main__")
    else:
        scenario, config, out, workers = sys.argv[1:]
        run = {"accelerate": accelerate, "trainer": trainer}[scenario]
        index, seen = run(config, int(workers))
        Path(f"{out}.{index}").write_text(json.dumps(seen))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
