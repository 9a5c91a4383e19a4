"""``faucet demo``: generate a DuckDB training table and train a small model from it.

No account and no network: the command writes a seeded table to a DuckDB file (with NULLs
and a text column, as real tables have), writes a reader config for it with automatic
preprocessing, then trains a logistic regression with plain numpy SGD for a few epochs,
with a train and an eval pass each, and reports loss, throughput and the cache.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
import numpy as np
import yaml

from faucet_core.cli import console, metrics_table, progress_bar
from faucet_core.reader import Reader
from faucet_core.stream import PassMetrics


def make_table(path: Path, rows: int, seed: int) -> None:
    """Write table ``train`` to ``path``: ``id``, ``x1..x4`` (``x3`` NULL on a tenth of the
    rows), a ``region`` text column and ``label``, sorted by label.

    The label is a noisy linear function of the features and of the region, so a linear
    model can learn it once the NULLs are imputed and the region one-hot encoded; sorting
    by label is the worst storage order for mixing, on purpose.
    """
    import duckdb

    path.unlink(missing_ok=True)
    with duckdb.connect(str(path)) as db:
        db.execute("SELECT setseed(?)", [(seed % 1000) / 1000])
        db.execute(
            f"""
            CREATE TABLE train AS
            SELECT i AS id, x1, x2, CASE WHEN i % 10 = 3 THEN NULL ELSE x3 END AS x3, x4,
                   region,
                   (x1 + 2 * x2 - 1.5 * x3 + 0.5 * x4 + 0.3 * (random() - 0.5)
                    + CASE region WHEN 'north' THEN 0.4 WHEN 'south' THEN -0.4 ELSE 0 END
                    > 1.0)::INT AS label
            FROM (SELECT i, random() AS x1, random() AS x2, random() AS x3, random() AS x4,
                         ['north', 'south', 'east', 'west'][1 + (i * 7) % 4] AS region
                  FROM range({int(rows)}) r(i))
            ORDER BY label
            """
        )


def write_config(folder: Path, database: Path, epochs: int, seed: int) -> Path:
    """Write the demo's reader config (YAML) and return its path."""
    config: dict[str, Any] = {
        "datastore": "duckdb",
        "connection": {"database": str(database)},
        "source": {
            "table": "train",
            "columns": ["x1", "x2", "x3", "x4", "region", "label"],
            "split_key": "id",
            "label_columns": ["label"],
        },
        "epochs": epochs,
        "batch_size": 1024,
        "chunk_size": 200_000,
        "test_split_percent": 20,
        "seed": seed,
        "output": "numpy",
        "cache": {"dir": str(folder / "cache")},
        # NULLs imputed (with an indicator), numbers standardized, the region one-hot.
        "preprocessing": {"auto": True},
    }
    path = folder / "faucet-demo.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class LogisticRegression:
    """A logistic regression trained by SGD on numpy arrays."""

    def __init__(self, features: int, learning_rate: float = 0.5) -> None:
        self.weights = np.zeros(features)
        self.bias = 0.0
        self.learning_rate = learning_rate

    def loss(self, x: np.ndarray[Any, Any], y: np.ndarray[Any, Any]) -> tuple[float, int]:
        """Summed log loss and number of correct predictions on one batch."""
        p = self._predict(x)
        eps = 1e-9
        loss = -np.sum(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps))
        return float(loss), int(np.sum((p > 0.5) == (y == 1)))

    def step(self, x: np.ndarray[Any, Any], y: np.ndarray[Any, Any]) -> float:
        """One SGD step on a batch; returns the batch's summed loss before the step."""
        p = self._predict(x)
        gradient = p - y
        self.weights -= self.learning_rate * (x.T @ gradient) / len(y)
        self.bias -= self.learning_rate * float(gradient.mean())
        eps = 1e-9
        return float(-np.sum(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps)))

    def _predict(self, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        return np.asarray(1.0 / (1.0 + np.exp(-(x @ self.weights + self.bias))))


def _train_epoch(reader: Reader, model: LogisticRegression, progress: Any) -> tuple[float, float]:
    reader.prep_for_epoch()
    task = progress.add_task(
        f"epoch {reader.epoch} train", total=reader.batches_per_epoch("train"), rate=""
    )
    started, first, loss = time.perf_counter(), 0.0, 0.0
    while (batch := reader.get_batch()) is not None:
        first = first or time.perf_counter() - started
        loss += model.step(batch["features"], batch["labels"].astype(float))
        rate = f"{reader.metrics[-1].rows_per_second:,.0f} rows/s"
        progress.update(task, advance=1, rate=rate)
    return loss / max(reader.metrics[-1].rows, 1), first


def _eval_pass(
    reader: Reader, model: LogisticRegression, progress: Any
) -> tuple[float, float, float]:
    reader.prep_for_eval()
    task = progress.add_task(
        f"epoch {reader.epoch} eval", total=reader.batches_per_epoch("eval"), rate=""
    )
    started, first, loss, correct = time.perf_counter(), 0.0, 0.0, 0
    while (batch := reader.get_batch(eval=True)) is not None:
        first = first or time.perf_counter() - started
        batch_loss, batch_correct = model.loss(batch["features"], batch["labels"])
        loss, correct = loss + batch_loss, correct + batch_correct
        progress.update(task, advance=1, rate="")
    rows = max(reader.metrics[-1].rows, 1)
    return loss / rows, correct / rows, first


@click.command()
@click.option("--rows", default=2_000_000, show_default=True, help="Rows to generate.")
@click.option("--epochs", default=2, show_default=True)
@click.option("--seed", default=7, show_default=True)
@click.option(
    "--dir",
    "folder",
    default="faucet-demo",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the table, the config and the cache go.",
)
def demo(rows: int, epochs: int, seed: int, folder: Path) -> None:
    """Generate a DuckDB training table and train a small model on it (no account needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    database = folder / "warehouse.duckdb"
    with console.status(f"generating {rows:,} rows in {database}"):
        started = time.perf_counter()
        make_table(database, rows, seed)
    console.print(
        f"generated {rows:,} rows (sorted by label) in {time.perf_counter() - started:.1f}s"
    )
    config = write_config(folder, database, epochs, seed)
    console.print(f"wrote the reader config {config}")
    passes: list[tuple[PassMetrics, float]] = []
    report = []
    with Reader.from_config(config) as reader:
        model = LogisticRegression(len(reader.feature_columns))
        console.print(
            f"train {reader.rows('train'):,} rows, eval {reader.rows('eval'):,} rows, "
            f"{len(reader.plan.chunks['train'])} train chunks; features after "
            f"preprocessing: {', '.join(reader.feature_columns)}"
        )
        with progress_bar() as progress:
            for _ in range(epochs):
                train_loss, first_train = _train_epoch(reader, model, progress)
                passes.append((reader.metrics[-1], first_train))
                eval_loss, accuracy, first_eval = _eval_pass(reader, model, progress)
                passes.append((reader.metrics[-1], first_eval))
                report.append((reader.epoch, train_loss, eval_loss, accuracy))
        console.print(metrics_table(passes))
        for epoch, train_loss, eval_loss, accuracy in report:
            console.print(
                f"epoch {epoch}: train loss {train_loss:.4f}, eval loss {eval_loss:.4f}, "
                f"eval accuracy {accuracy:.3f}"
            )
        if reader.cache is not None:
            stats = reader.cache.stats
            console.print(
                f"cache {reader.cache.directory}: {stats.hits} hits, {stats.misses} misses, "
                f"{stats.writes} writes, {reader.cache.total_bytes / 2**20:.1f} MiB"
            )
