"""What preprocessing costs: cached epochs with and without it, and scikit-learn per batch.

Run from the repository root: ``python benchmarks/bench_preprocessing.py [--rows 1000000]``.
On the 24-column benchmark table of ``bench_duckdb.py`` (an id, 22 numbers, a label), in
one process: a cached epoch of numpy batches without preprocessing, the same with
``auto`` preprocessing (the id excluded), and, on the same batches, scikit-learn's fitted
``ColumnTransformer`` (impute and standardize the numbers) against Faucet's
``Preprocessor.transform``. Printed: rows/s and their ratio, and the time per batch.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_duckdb import make_table
from faucet_core import Reader, get_batch_reader


def cached_epoch(settings: dict[str, Any]) -> tuple[float, Reader]:
    """Rows/s of a second epoch (the first fills the cache), and the reader."""
    reader = get_batch_reader(epochs=2, **settings)
    rate = 0.0
    for _ in range(2):
        started, rows = time.perf_counter(), 0
        for batch in reader.iter_epoch():
            rows += len(batch["features"])
        rate = rows / (time.perf_counter() - started)
    return rate, reader


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batches", type=int, default=300, help="Batches timed per side.")
    args = parser.parse_args()
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    with tempfile.TemporaryDirectory() as folder:
        database = Path(folder) / "p.duckdb"
        make_table(database, args.rows, 24)
        settings: dict[str, Any] = {
            "datastore": "duckdb", "database": str(database), "table_name": "train",
            "split_key": "id", "label_columns": ["label"], "test_split_percent": 10,
            "batch_size": 1024, "seed": 1, "output": "numpy",
            "cache_dir": str(Path(folder) / "cache"),
        }  # fmt: skip
        raw_rate, raw = cached_epoch(settings)
        preprocessing = {"auto": True, "exclude": ["id"]}
        auto_rate, reader = cached_epoch({**settings, "preprocessing": preprocessing})
        preprocessor = reader.preprocessor
        assert preprocessor is not None
        numbers = [name for name in raw.feature_columns if name != "id"]
        arrow = get_batch_reader(**{**settings, "output": "arrow"})
        batches = [
            b["features"] for _, b in zip(range(args.batches), arrow.iter_epoch(), strict=False)
        ]
        frames = [batch.to_pandas() for batch in batches]
        transformer = ColumnTransformer(
            [("numbers", make_pipeline(SimpleImputer(), StandardScaler()), numbers)]
        ).fit(frames[0])
        started = time.perf_counter()
        for frame in frames:
            transformer.transform(frame)
        sklearn_seconds = (time.perf_counter() - started) / len(frames)
        started = time.perf_counter()
        for batch in batches:
            matrix = preprocessor.transform(batch)
        faucet_seconds = (time.perf_counter() - started) / len(batches)
        assert np.isfinite(matrix).all()
        for each in (raw, reader, arrow):
            each.close()
    print(f"{args.rows:,} rows, 24 columns, 1024-row batches, numpy output, "
          f"{len(preprocessor.feature_names)} features after preprocessing")  # fmt: skip
    print(f"cached epoch without preprocessing {raw_rate:13,.0f} rows/s")
    print(f"cached epoch with auto             {auto_rate:13,.0f} rows/s "
          f"({auto_rate / raw_rate:.2f}x)")  # fmt: skip
    print(f"per batch: scikit-learn ColumnTransformer.transform {sklearn_seconds * 1e3:6.2f} ms, "
          f"Preprocessor.transform {faucet_seconds * 1e3:6.2f} ms "
          f"({sklearn_seconds / faucet_seconds:.1f}x faster)")  # fmt: skip


if __name__ == "__main__":
    main()
