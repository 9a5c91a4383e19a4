"""Training rows from a Feast repo: Faucet against ``get_historical_features(...).to_df()``.

Run from the repository root with the Feast virtualenv (``./scripts/test`` makes it):
``.venv-feast/bin/python benchmarks/bench_feast.py [--rows 1000000] [--features 20]``.
It writes a Feast repo (DuckDB offline store, SQLite registry) with one feature view of
``--features`` float features, hourly for ``--drivers`` drivers, and ``--rows`` entity rows
(a driver, a time, a label); ``feast apply`` registers it. Each contender then runs in a
process of its own, from the entity file to batches of 1024 rows:

- ``to_df``: ``get_historical_features(entity_df, features).to_df()``, then the frame's
  rows shuffled and sliced into batches: the whole training set in memory;
- ``faucet``: a reader of the same features and entity file, default settings, an empty
  cache: the join is written by DuckDB to a local file, then planned and streamed.

Printed per contender: time to the first batch (from reading the entity file), the time to
the end of one epoch, the process's peak RSS (``VmHWM``), and the ratios of Faucet's
figures to ``to_df``'s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from processes import peak_memory

CONTENDERS = ("to_df", "faucet")
BATCH = 1024
HOURS = 48
START = np.datetime64("2024-06-01T00:00:00", "us")
UTC = pa.timestamp("us", tz="UTC")


def write_repo(folder: Path, rows: int, features: int, drivers: int) -> Path:
    """A Feast repo in ``folder`` with its data; returns the entity file."""
    rng = np.random.default_rng(0)
    data = folder / "data"
    data.mkdir(parents=True)
    driver, hour = (
        a.ravel() for a in np.meshgrid(np.arange(drivers), np.arange(HOURS), indexing="ij")
    )
    stats: dict[str, Any] = {
        "driver_id": driver.astype(np.int64),
        "event_timestamp": pa.array(START + hour.astype("timedelta64[h]"), UTC),
    }
    for i in range(features):
        stats[f"f{i}"] = pa.array(rng.random(driver.size), pa.float32())
    pq.write_table(pa.table(stats), data / "stats.parquet")
    seconds = rng.integers(0, HOURS * 3600, rows).astype("timedelta64[s]")
    entity = pa.table(
        {
            "driver_id": rng.integers(0, drivers, rows),
            "event_timestamp": pa.array(START + seconds, UTC),
            "label": rng.integers(0, 2, rows),
        }
    )
    pq.write_table(entity, data / "entities.parquet")
    (folder / "feature_store.yaml").write_text(
        "project: bench\nprovider: local\n"
        "registry:\n  registry_type: sql\n  path: sqlite:///data/registry.db\n"
        "offline_store:\n  type: duckdb\n"
        "online_store:\n  type: sqlite\n  path: data/online.db\n"
        "entity_key_serialization_version: 3\n"
    )
    schema = ", ".join(f'Field(name="f{i}", dtype=Float32)' for i in range(features))
    (folder / "definitions.py").write_text(
        textwrap.dedent(
            f"""\
            from datetime import timedelta
            from feast import Entity, FeatureView, Field, FileSource, ValueType
            from feast.types import Float32

            driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
            stats = FeatureView(
                name="stats", entities=[driver], ttl=timedelta(hours=6),
                schema=[{schema}],
                source=FileSource(
                    path="{data / "stats.parquet"}", timestamp_field="event_timestamp"
                ),
            )
            """
        )
    )
    feast = Path(sys.executable).parent / "feast"
    env = {**os.environ, "FEAST_USAGE": "False"}
    subprocess.run([str(feast), "apply"], cwd=folder, env=env, check=True, capture_output=True)
    return data / "entities.parquet"


def child(
    contender: str, repo: Path, features: int, scratch: Path, memory_limit: str | None
) -> None:
    """Run one contender and print its figures as JSON."""
    refs = [f"stats:f{i}" for i in range(features)]
    started = time.perf_counter()
    rows = 0
    first = None
    if contender == "to_df":
        import feast

        os.chdir(repo)  # Feast takes the relative registry path from the current folder
        store = feast.FeatureStore(repo_path=str(repo))
        entity_df = pq.read_table(repo / "data" / "entities.parquet").to_pandas()
        frame = store.get_historical_features(entity_df=entity_df, features=refs).to_df()
        order = np.random.default_rng(1).permutation(len(frame))
        for start in range(0, len(frame), BATCH):
            batch = frame.iloc[order[start : start + BATCH]]
            first = first or time.perf_counter() - started
            rows += len(batch)
    else:
        from faucet_core import get_batch_reader

        with get_batch_reader(
            datastore="feast",
            repo_path=str(repo),
            features=refs,
            files=[str(repo / "data" / "entities.parquet")],
            columns=[f"f{i}" for i in range(features)] + ["label"],
            label_columns=["label"],
            batch_size=BATCH,
            seed=1,
            scratch_dir=str(scratch),
            **({"memory_limit": memory_limit} if memory_limit else {}),
            cache_dir=str(scratch / "cache"),
        ) as reader:
            for batch in reader.iter_epoch():
                first = first or time.perf_counter() - started
                rows += len(batch["labels"])
    elapsed = time.perf_counter() - started
    print(json.dumps({"first_batch_s": first, "epoch_s": elapsed, "rows": rows,
                      "peak_rss": peak_memory()}))  # fmt: skip


def run(contender: str, repo: Path, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Run ``contender`` in a process of its own; its printed figures."""
    scratch = folder / contender
    scratch.mkdir()
    command = [sys.executable, __file__, "--child", contender, "--repo", str(repo),
               "--features", str(args.features), "--scratch", str(scratch),
               *(["--memory-limit", args.memory_limit] if args.memory_limit else [])]  # fmt: skip
    os.sync()  # the data's writes are not flushed on the contender's time
    env = {**os.environ, "FEAST_USAGE": "False"}
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True, env=env)
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    """Write the repo, run each contender, print the figures and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="entity rows")
    parser.add_argument("--features", type=int, default=20, help="features per row")
    parser.add_argument("--drivers", type=int, default=10_000, help="entities")
    parser.add_argument(
        "--memory-limit", help="Faucet's connection.memory_limit (default: the setting's default)"
    )
    parser.add_argument("--child", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--repo", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, Path(args.repo), args.features, Path(args.scratch), args.memory_limit)
        return
    with tempfile.TemporaryDirectory(prefix="faucet-bench-feast-") as tmp:
        folder = Path(tmp)
        repo = folder / "repo"
        write_repo(repo, args.rows, args.features, args.drivers)
        print(f"{args.rows:,} entity rows x {args.features} features, {args.drivers:,} "
              f"drivers x {HOURS} hours of stats; batches of {BATCH}")  # fmt: skip
        results = {name: run(name, repo, args, folder) for name in CONTENDERS}
    print(f"{'contender':<10} {'first batch':>12} {'epoch':>9} {'rows':>10} {'peak RSS':>10}")
    for name, r in results.items():
        print(f"{name:<10} {r['first_batch_s']:>11.2f}s {r['epoch_s']:>8.2f}s {r['rows']:>10,} "
              f"{r['peak_rss'] / 2**20:>7.0f} MiB")  # fmt: skip
    base, faucet = results["to_df"], results["faucet"]
    print(
        f"faucet / to_df: first batch {faucet['first_batch_s'] / base['first_batch_s']:.2f}x, "
        f"epoch {faucet['epoch_s'] / base['epoch_s']:.2f}x, "
        f"peak RSS {faucet['peak_rss'] / base['peak_rss']:.2f}x"
    )


if __name__ == "__main__":
    main()
