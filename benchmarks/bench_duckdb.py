"""Two epochs of 1024-row batches from a DuckDB file: Faucet against DuckDB's own streams.

Run from the repository root: ``python benchmarks/bench_duckdb.py [--rows 2000000 10000000]
[--columns 24] [--output arrow|pandas|numpy]``. For each table size, on one table sorted by
label (the worst storage order for mixing), each contender runs in a process of its own
(so each has its own peak memory):

- ``raw stream``: DuckDB's Arrow record batches of the table, unshuffled: the local limit;
- ``ORDER BY random()``: the same stream of a global shuffle, sorted anew each epoch;
- ``faucet``: a reader with default settings and an empty cache (epoch 1 includes planning,
  the one scan that fills the cache, and serving; epoch 2 is served from the cache).

Every contender gives its batches as a training loop takes them: features and labels apart,
in the ``--output`` format. DuckDB's streams are split by Faucet's formatter (by column
position, its fastest way); Faucet's reader gives its batches so already. What the
consumer loads on its first batch (pandas, which pyarrow loads on a first conversion) is
loaded before any contender's clock starts.

Before each contender, the previous one's writes are flushed, the page cache is emptied
where the machine allows it (as root on Linux: a full page cache slows down the writes of
whoever comes next), and the table file is read once, so that every contender starts with
the table cached and the machine's memory free.

Every contender runs ``--rounds`` times, in turn (so that a slower spell of a shared
machine falls on all alike); the figures are the medians of its runs.

Printed per contender: time to the first batch (from opening the database), rows/s of
epochs 1 and 2, the process's peak RSS, and the mixing of epoch 1's batches against the
global shuffle's (1.0: as mixed; the spread of a batch is the distance of its label mean
from the table's). Then, per table size, Faucet's ratios to the others, and the floor of
its first epoch on this machine: planning, one scan of the table and a cached epoch, each
timed in Faucet's process (a shuffle as global as ``ORDER BY random()``'s cannot serve
more than a first chunk before the scan of the whole table ends).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from processes import compile_project, peak_memory

from faucet_core import get_batch_reader
from faucet_core.output import Batch, BatchFormatter

CONTENDERS = ("raw stream", "ORDER BY random()", "faucet")


def make_table(path: Path, rows: int, columns: int) -> None:
    """Table ``train``: ``id``, ``columns - 2`` float features, a 0/1 ``label``, sorted by label."""
    features = ", ".join(f"random() AS x{i}" for i in range(1, columns - 1))
    with duckdb.connect(str(path)) as db:
        db.execute("SET enable_progress_bar = false")
        db.execute("SELECT setseed(0.5)")
        db.execute(
            f"CREATE TABLE train AS SELECT i AS id, {features}, (hash(i) % 4 = 0)::INT AS label "
            f"FROM range({int(rows)}) r(i) ORDER BY label, id"
        )


def _epochs_of_stream(
    database: str, sql: str, batch_size: int, output: str
) -> Callable[[], Iterator[Batch]]:
    """Epochs of DuckDB's stream of ``sql``, each batch split into features and labels in
    ``output`` (as a training loop must have them)."""

    def epoch() -> Iterator[Batch]:
        with duckdb.connect(database, read_only=True) as db:
            db.execute("SET enable_progress_bar = false")
            reader = db.sql(sql).to_arrow_reader(batch_size)
            features = [c for c in reader.schema.names if c != "label"]
            formatter = BatchFormatter(features, ["label"], output)  # type: ignore[arg-type]
            for batch in reader:
                yield formatter(pa.Table.from_batches([batch]))

    return epoch


def _faucet(
    database: str, cache: str, batch_size: int, output: str, state: dict[str, Any]
) -> Callable[[], Iterator[Batch]]:
    """Epochs of one reader (its batches are in ``output`` already); ``state`` gets the
    reader and the seconds it took to open."""

    def epoch() -> Iterator[Batch]:
        if "reader" not in state:
            started = time.perf_counter()
            state["reader"] = get_batch_reader(
                datastore="duckdb", database=database, table_name="train", epochs=2,
                batch_size=batch_size, split_key="id", label_columns=["label"], seed=1,
                output=output, cache_dir=cache,
            )  # fmt: skip
            state["open"] = time.perf_counter() - started
        yield from state["reader"].iter_epoch()

    return epoch


def _label_mean(labels: Any) -> float:
    """The mean of a batch's labels: an Arrow table, a DataFrame or an array."""
    if isinstance(labels, pa.Table):
        return float(np.mean(labels.column(0).to_numpy()))
    return float(np.mean(np.asarray(labels)))


def _warm_consumer() -> None:
    """Make the consumer's first label mean now: it loads pandas (pyarrow does, on a first
    conversion of a chunked column), which no contender's epoch 1 should count."""
    labels = pa.chunked_array([pa.array([0, 1]), pa.array([1])])
    _label_mean(pa.Table.from_arrays([labels], names=["label"]))


def _scan_seconds(reader: Any) -> float:
    """Seconds of one scan of the source as the cache fill reads it (its batches dropped)."""
    started = time.perf_counter()
    for _ in reader.stream.warehouse().scan(reader.plan):
        pass
    return time.perf_counter() - started


def child(contender: str, database: str, cache: str, batch_size: int, output: str) -> None:
    """Run two epochs of ``contender`` and print their figures as JSON."""
    figures: dict[str, Any] = {"rates": [], "spread": None, "first": None}
    state: dict[str, Any] = {}
    _warm_consumer()
    if contender == "faucet":
        epoch = _faucet(database, cache, batch_size, output, state)
    else:
        order = " ORDER BY random()" if contender == "ORDER BY random()" else ""
        epoch = _epochs_of_stream(database, f"SELECT * FROM train{order}", batch_size, output)
    for number in (1, 2):
        rows, started, spread = 0, time.perf_counter(), []
        for batch in epoch():
            if figures["first"] is None:
                figures["first"] = time.perf_counter() - started
            rows += len(batch["labels"])
            spread.append(_label_mean(batch["labels"]))
        figures["rates"].append(rows / (time.perf_counter() - started))
        if number == 1:
            figures["label_means"] = spread
    figures["rss"] = peak_memory()
    if "reader" in state:  # after the peak RSS: the scan adds nothing the fill did not hold
        figures["open"], figures["scan"] = state["open"], _scan_seconds(state["reader"])
        state["reader"].close()
    print(json.dumps(figures))


def settle(database: Path) -> bool:
    """Start every contender from the same memory: the previous one's writes flushed, the
    page cache emptied where the machine allows (root on Linux), then the table file read
    once, so it is cached for all alike. Returns whether the page cache was emptied."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1")
        dropped = True
    except OSError:
        dropped = False
    with open(database, "rb") as table:
        while table.read(2**24):
            pass
    return dropped


def run(contender: str, database: Path, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run ``contender`` in a process of its own; its figures and peak RSS."""
    cache = folder / f"cache-{contender.split()[0]}"
    command = [sys.executable, __file__, "--child", contender, "--database", str(database),
               "--cache", str(cache), "--batch-size", str(args.batch_size),
               "--output", args.output]  # fmt: skip
    settle(database)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    out = process.stdout.read()
    if process.wait():
        raise SystemExit(f"{contender} failed")
    figures: dict[str, Any] = json.loads(out)
    return figures


def main() -> None:
    """Run the contenders for each table size and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[2_000_000])
    parser.add_argument("--columns", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--output", choices=["arrow", "pandas", "numpy"], default="arrow")
    parser.add_argument("--dir", type=Path, help="Where the tables and caches go (default: temp).")
    parser.add_argument(
        "--rounds", type=int, default=3, help="Runs of each contender, in turn (medians)."
    )
    parser.add_argument("--child", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.database, args.cache, args.batch_size, args.output)
        return
    compile_project()
    print(f"{args.columns} columns, {args.batch_size}-row batches, output {args.output}, "
          f"{os.cpu_count()} cores; before each contender: writes flushed, "
          f"page cache {'emptied' if os.access('/proc/sys/vm/drop_caches', os.W_OK) else 'kept'}"
          ", the table file read once")  # fmt: skip
    header = ("rows", "contender", "first batch", "epoch 1 rows/s", "epoch 2 rows/s",
              "peak RSS", "mixing")  # fmt: skip
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    ratios: list[str] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as temp:
        folder = Path(temp)
        for rows in args.rows:
            database = folder / f"train-{rows}.duckdb"
            make_table(database, rows, args.columns)
            rounds = []
            for _ in range(args.rounds):
                rounds.append({c: run(c, database, folder, args) for c in CONTENDERS})
                for cache in folder.glob("cache-*"):  # each round's Faucet starts empty
                    shutil.rmtree(cache)
            results = _medians(rounds)
            mean = float(np.mean(results["raw stream"]["label_means"]))
            spreads = {
                name: float(np.mean([abs(m - mean) for m in figures["label_means"]]))
                for name, figures in results.items()
            }
            for name, figures in results.items():
                rates = figures["rates"]
                mixing = spreads["ORDER BY random()"] / spreads[name]
                print(f"| {rows / 1e6:g}M | {name} | {figures['first']:.2f} s | "
                      f"{rates[0] / 1e6:.2f}M | {rates[1] / 1e6:.2f}M | "
                      f"{figures['rss'] / 2**20:,.0f} MiB | {mixing:.2f} |")  # fmt: skip
            ratios.append(_ratios(rows, results, rounds))
            database.unlink()
    print()
    print("\n".join(ratios))


def _medians(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each contender's figures over the rounds: the median of each number (of each epoch's
    rate), and the first round's label means."""
    medians: dict[str, dict[str, Any]] = {}
    for name, first in rounds[0].items():
        runs = [results[name] for results in rounds]
        figures = dict(first)
        for key in ("first", "rss", "open", "scan"):
            if key in first:
                figures[key] = float(np.median([run[key] for run in runs]))
        epochs = zip(*(run["rates"] for run in runs), strict=True)
        figures["rates"] = [float(np.median(rates)) for rates in epochs]
        medians[name] = figures
    return medians


def _ratios(
    rows: int, results: dict[str, dict[str, Any]], rounds: list[dict[str, dict[str, Any]]]
) -> str:
    """Faucet's epochs as ratios to the two others at one table size, and the floor of its
    first epoch: planning, one scan of the table (nothing but the first chunk can be served
    before the scan ends: every chunk holds rows from all over the table) and serving every
    row as fast as a cached epoch does, one after the other."""
    faucet, raw, shuffled = (results[c]["rates"] for c in ("faucet", "raw stream",
                                                           "ORDER BY random()"))  # fmt: skip
    figures = results["faucet"]
    each = [f"{r['faucet']['rates'][0] / r['raw stream']['rates'][0]:.2f}" for r in rounds]
    floor = rows / (figures["open"] + figures["scan"] + rows / faucet[1])
    return (f"{rows / 1e6:g}M rows: Faucet epoch 1 = {faucet[0] / shuffled[0]:.2f}x ORDER BY "
            f"random(), {faucet[0] / raw[0]:.2f}x the raw stream; cached epoch = "
            f"{faucet[1] / raw[1]:.2f}x the raw stream; floor of epoch 1 (planning "
            f"{figures['open']:.2f} s + one scan {figures['scan']:.2f} s + a cached epoch "
            f"{rows / faucet[1]:.2f} s) = {floor / 1e6:.2f}M rows/s = "
            f"{floor / shuffled[0]:.2f}x ORDER BY random(), {floor / raw[0]:.2f}x the raw "
            f"stream; epoch 1 / raw stream in each round: {', '.join(each)}")  # fmt: skip


if __name__ == "__main__":
    main()
