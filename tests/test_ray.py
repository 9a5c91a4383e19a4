"""Ray Data: a plan's chunks as read tasks, on a local Ray cluster (two CPUs, loopback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import ray
import ray.data
import torch

from faucet_core import (
    ChunkReadError,
    ChunkSpec,
    FaucetConfig,
    PermanentWarehouseError,
    Plan,
    Reader,
    Warehouse,
    hookimpl,
    load_config,
)
from faucet_core.ray import FaucetDatasource, read_faucet
from tests.conftest import ROWS, ChunkByChunkDuckDB

pytestmark = pytest.mark.usefixtures("ray_cluster")

MakeConfig = Callable[..., FaucetConfig]


class ReadLoggingDuckDB(ChunkByChunkDuckDB):
    """Reads chunk by chunk, noting each chunk read in ``<scratch_dir>/reads.log`` (the read
    tasks run in other processes)."""

    name = "read-logging-duckdb"

    def read_buckets(self, plan: Plan, chunk: ChunkSpec) -> pa.Table:
        assert self.connection.scratch_dir is not None
        with open(self.connection.scratch_dir / "reads.log", "a") as log:
            log.write(f"{chunk.split} {chunk.index}\n")
        return super().read_buckets(plan, chunk)


class BrokenChunkDuckDB(ChunkByChunkDuckDB):
    """Reads fine, except train chunk 2, which fails permanently."""

    name = "broken-on-ray"

    def read_buckets(self, plan: Plan, chunk: ChunkSpec) -> pa.Table:
        if chunk.split == "train" and chunk.index == 2:
            raise PermanentWarehouseError("permission denied on table t")
        return super().read_buckets(plan, chunk)


class _RayTestWarehouses:
    @hookimpl
    def register_warehouses(self, register: Callable[[type[Warehouse]], None]) -> None:
        register(ReadLoggingDuckDB)
        register(BrokenChunkDuckDB)


@pytest.fixture(autouse=True)
def ray_test_warehouses(register: Callable[[object], None]) -> None:
    register(_RayTestWarehouses())


@pytest.fixture
def make_config(table_path: Path, tmp_path: Path) -> MakeConfig:
    """Configs of the 5,000-row table, with a cache and a scratch folder of the test's own;
    keywords override."""

    def build(**settings: Any) -> FaucetConfig:
        (tmp_path / "scratch").mkdir(exist_ok=True)
        defaults: dict[str, Any] = {
            "datastore": "duckdb",
            "database": str(table_path),
            "scratch_dir": str(tmp_path / "scratch"),
            "table_name": "t",
            "chunk_size": 700,
            "split_key": "id",
            "label_columns": ["label"],
            "test_split_percent": 20,
            "seed": 3,
            "cache_dir": str(tmp_path / "cache"),
        }
        return load_config(**{**defaults, **settings})

    return build


@pytest.fixture
def preserve_order() -> Iterator[None]:
    """Blocks come out in read-task order (Ray's default is the order tasks finish)."""
    context = ray.data.DataContext.get_current()
    before = context.execution_options.preserve_order
    context.execution_options.preserve_order = True
    yield
    context.execution_options.preserve_order = before


def ids(dataset: ray.data.Dataset) -> list[int]:
    return [row["id"] for row in dataset.select_columns(["id"]).iter_rows()]


def faucet_stream(config: FaucetConfig, split: str = "train", epoch: int = 1) -> pa.Table:
    """The rows of ``split`` in ``epoch``, as Faucet's own reader serves them."""
    with Reader(config.model_copy(update={"output": "arrow"})) as reader:
        batches = reader.iter_range(split, epoch, 0, reader.rows(split))  # type: ignore[arg-type]
        tables = []
        for batch in batches:
            table = batch["features"]
            for name in batch["labels"].column_names:
                table = table.append_column(name, batch["labels"].column(name))
            tables.append(table)
        stream = pa.concat_tables(tables)
        return stream if reader.preprocessor else stream.select(list(reader.plan.columns))


def test_the_cluster_of_the_tests_uses_loopback_addresses_only() -> None:
    assert [node["NodeManagerAddress"] for node in ray.nodes()] == ["127.0.0.1"]


def test_every_row_once_per_epoch_and_eval_disjoint_from_train(make_config: MakeConfig) -> None:
    config = make_config()
    train = ids(read_faucet(config))
    evals = ids(read_faucet(config, split="eval"))
    assert len(train) == len(set(train)) and len(evals) == len(set(evals))
    assert not set(train) & set(evals)
    assert sorted(train + evals) == list(range(ROWS))
    with Reader(config) as reader:
        assert len(train) == reader.rows("train") and len(evals) == reader.rows("eval")
    assert sorted(ids(read_faucet(config, epoch=2))) == sorted(train)


def test_input_groups_leave_the_rows_whole(make_config: MakeConfig) -> None:
    # Groups shape the batches of readers and datasets; a Ray dataset's rows keep every column.
    config = make_config(inputs={"a": ["x1", "x2"], "b": ["id"]})
    train = ids(read_faucet(config))
    with Reader(config) as reader:
        assert sorted(train) == sorted(
            i for b in reader.iter_epoch() for i in b["features"]["b"]["id"]
        )


def test_read_tasks_are_the_chunks_in_the_epochs_order(make_config: MakeConfig) -> None:
    config = make_config()
    dataset = read_faucet(config, epoch=2)
    assert dataset.schema(fetch_if_missing=False).names == ["id", "x1", "x2", "name", "label", "ds"]
    with Reader(config) as reader:
        source = FaucetDatasource(reader, "train", epoch=2)
        tasks = source.get_read_tasks(parallelism=1)
        assert len(tasks) == len(reader.plan.chunks["train"])
        assert sorted(read.chunk.index for read in source.chunk_reads()) == list(range(len(tasks)))
    assert sum(task.metadata.num_rows for task in tasks) == dataset.count()


def test_blocks_in_task_order_are_faucets_stream_of_the_epoch(
    make_config: MakeConfig, preserve_order: None
) -> None:
    config = make_config()
    for epoch in (1, 2):
        rows = read_faucet(config, epoch=epoch).to_arrow_refs()
        table = pa.concat_tables(ray.get(rows))
        assert table.equals(faucet_stream(config, epoch=epoch))
    eval_rows = pa.concat_tables(ray.get(read_faucet(config, split="eval").to_arrow_refs()))
    assert eval_rows.equals(faucet_stream(config, split="eval"))


def test_a_datasource_built_by_hand_takes_rays_read_options(make_config: MakeConfig) -> None:
    config = make_config()
    with Reader(config) as reader:
        reader.prepare()
        source = FaucetDatasource(reader, "eval")
        dataset = ray.data.read_datasource(source, concurrency=1, num_cpus=0.5)
        assert sorted(ids(dataset)) == sorted(
            faucet_stream(config, "eval").column("id").to_pylist()
        )


def test_tasks_get_the_cache_folder_as_an_absolute_path(
    make_config: MakeConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the driver's folder; a worker's may be another
    with Reader(make_config(cache_dir="relative")) as reader:
        layout = FaucetDatasource(reader).layout
    assert layout.serving.config.cache.dir == tmp_path / "relative"
    assert layout.serving.config.batch_size == max(c.rows for c in reader.plan.chunks["train"])


@ray.remote
def _run_read_task(read: Callable[[], Iterator[pa.Table]]) -> list[int]:
    return [i for table in read() for i in table.column("id").to_pylist()]


def _rows_per_task(config: FaucetConfig) -> list[list[int]]:
    with Reader(config) as reader:
        reads = FaucetDatasource(reader, "train").chunk_reads()
        return ray.get([_run_read_task.remote(read) for read in reads])


def test_the_same_seed_gives_the_same_rows_per_task(make_config: MakeConfig) -> None:
    first = _rows_per_task(make_config(seed=11))
    again = _rows_per_task(make_config(seed=11))
    other = _rows_per_task(make_config(seed=13))
    assert first == again
    assert other != first
    assert sorted(map(sorted, other)) == sorted(map(sorted, first))  # the same chunks,
    assert list(map(sorted, other)) != list(map(sorted, first))  # in another order


def test_a_dataset_without_a_seed_shares_one_drawn_on_the_driver(
    make_config: MakeConfig, preserve_order: None
) -> None:
    dataset = read_faucet(make_config(seed=None))
    first = ids(dataset)
    assert ids(dataset) == first  # executed again: the same layout
    assert sorted(first) == sorted(ids(read_faucet(make_config())))


def test_chunks_are_read_once_then_served_from_the_nodes_cache(make_config: MakeConfig) -> None:
    config = make_config(datastore="read-logging-duckdb")
    log = config.connection.scratch_dir / "reads.log"  # type: ignore[attr-defined]
    dataset = read_faucet(config)
    with Reader(config) as reader:
        chunks = len(reader.plan.chunks["train"])
    assert not log.exists()  # the driver planned and made the scratch copy, read nothing
    first = sorted(ids(dataset))
    reads = log.read_text().splitlines()
    assert sorted(reads) == sorted(f"train {i}" for i in range(chunks))
    assert sorted(ids(dataset)) == first
    assert sorted(ids(read_faucet(config, epoch=2))) == first
    assert log.read_text().splitlines() == reads  # epochs after the first: from the cache


def test_preprocessing_is_applied_in_the_read_tasks(
    make_config: MakeConfig, preserve_order: None
) -> None:
    config = make_config(columns=["x1", "x2", "name", "label"], preprocessing={"auto": True})
    dataset = read_faucet(config)
    table = pa.concat_tables(ray.get(dataset.to_arrow_refs()))
    with Reader(config) as reader:
        assert reader.preprocessor is not None
        names = reader.preprocessor.feature_names
        assert any(name.startswith("name") and name != "name" for name in names)  # one-hot
    assert table.equals(faucet_stream(config))
    assert set(names) <= set(table.column_names)
    assert dataset.schema(fetch_if_missing=False).base_schema == table.schema


def test_iter_torch_batches(make_config: MakeConfig) -> None:
    config = make_config(columns=["id", "x1", "x2", "label"])
    seen = []
    for batch in read_faucet(config).iter_torch_batches(batch_size=256):
        assert set(batch) == {"id", "x1", "x2", "label"}
        assert batch["x1"].dtype == torch.float64 and len(batch["id"]) <= 256
        seen += batch["id"].tolist()
    with Reader(config) as reader:
        assert sorted(seen) == sorted(faucet_stream(config).column("id").to_pylist())
        assert len(seen) == reader.rows("train")


@ray.remote(num_cpus=0)
def _consume(shard: ray.data.DataIterator) -> list[int]:
    return [i for batch in shard.iter_batches(batch_format="pyarrow") for i in batch["id"]]


@pytest.mark.parametrize("equal", [False, True])
def test_split_across_consumers_every_row_once(make_config: MakeConfig, equal: bool) -> None:
    config = make_config()
    shards = read_faucet(config).streaming_split(2, equal=equal)
    one, two = ray.get([_consume.remote(shard) for shard in shards])
    with Reader(config) as reader:
        rows = reader.rows("train")
    assert not set(one) & set(two) and len(set(one)) == len(one)
    if equal:  # what Ray Train does: equal shards, at most n - 1 rows left out
        assert len(one) == len(two) == rows // 2
    else:
        assert len(one) + len(two) == rows


def test_a_failing_chunk_read_names_the_chunk(make_config: MakeConfig) -> None:
    dataset = read_faucet(make_config(datastore="broken-on-ray"))
    with pytest.raises(ChunkReadError, match=r"train chunk 2 \(\d+ rows\).*permission denied"):
        dataset.materialize()


def test_ray_train_workers_read_their_shards(make_config: MakeConfig, tmp_path: Path) -> None:
    from ray.train import RunConfig, ScalingConfig, get_context, get_dataset_shard
    from ray.train.torch import TorchTrainer

    config = make_config(columns=["id", "x1", "label"])
    out = tmp_path / "seen"
    out.mkdir()

    def loop() -> None:
        shard = get_dataset_shard("train")
        seen = [i for b in shard.iter_torch_batches(batch_size=128) for i in b["id"].tolist()]
        (out / str(get_context().get_world_rank())).write_text(json.dumps(seen))

    trainer = TorchTrainer(
        loop,
        # Half a CPU each, so that the read tasks find CPUs too on a two-CPU cluster.
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        datasets={"train": read_faucet(config)},
        run_config=RunConfig(storage_path=str(tmp_path / "train")),
    )
    assert trainer.fit().error is None
    one, two = (json.loads((out / rank).read_text()) for rank in ("0", "1"))
    with Reader(config) as reader:
        rows = reader.rows("train")
    # Ray Train splits with equal=True: equal shards, the remainder left out.
    assert len(one) == len(two) == rows // 2
    assert len(set(one) | set(two)) == 2 * (rows // 2)


def test_the_core_imports_without_ray(tmp_path: Path) -> None:
    script = (
        "import sys; sys.modules['ray'] = None\n"  # as if Ray were not installed
        "import faucet_core, faucet_core.cli, faucet_core.torch, faucet_duckdb.plugin\n"
        "try:\n"
        "    import faucet_core.ray\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAUCET_")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.strip() == "faucet_core.ray needs Ray Data: pip install 'faucetml[ray]'"
