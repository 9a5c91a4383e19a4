"""Plan once per source version on BigQuery: warm reruns that query nothing, one plan and
one scratch copy for processes and DDP ranks (saved plans on DuckDB: test_saved_plans.py).
BigQuery's jobs are counted by the emulator and its reads by a proxy, not by Faucet's own
counters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch.multiprocessing as mp

import faucet_bigquery.plugin
from faucet_core import Reader
from faucet_core.plugins import pm
from tests.bqemulator import BigQueryEmulator, free_port
from tests.conftest import BQ_ROWS_PER_DAY, epoch_ids
from tests.proxies import TcpProxy

MakeReader = Callable[..., Reader]


# BigQuery, on the emulator.


def _jobs(emulator: BigQueryEmulator) -> dict[str, list[str]]:
    """The emulator's query jobs by kind: counting (planning), copying (materializing)."""
    kinds: dict[str, list[str]] = {"counting": [], "copying": [], "other": []}
    for job in emulator.client().list_jobs(all_users=True):
        if getattr(job, "dry_run", False):  # estimates, which BigQuery does not bill or list
            continue
        query = getattr(job, "query", "") or ""
        kind = "copying" if query.startswith("CREATE TABLE") else "other"
        if "COUNT(*) AS row_count" in query:
            kind = "counting"
        kinds[kind].append(job.job_id)
    return kinds


def _new_jobs(before: dict[str, list[str]], after: dict[str, list[str]]) -> dict[str, int]:
    return {kind: len(set(after[kind]) - set(before[kind])) for kind in after}


READ_EVERYTHING = """
import json, sys
from faucet_core import get_batch_reader
with get_batch_reader(**json.loads(sys.argv[1])) as reader:
    train = [i for _ in range(reader.config.epochs) for b in reader.iter_epoch()
             for i in b["features"]["id"].tolist()]
    evaluation = [i for b in reader.iter_eval() for i in b["features"]["id"].tolist()]
    print(json.dumps({"train": train, "eval": evaluation, "origin": reader.plan_origin}))
"""


def _process(settings: dict[str, Any]) -> subprocess.Popen[str]:
    """Another process reading every chunk of ``settings``, with the installed plugins."""
    env = {k: v for k, v in os.environ.items() if k != "FAUCET_DISABLE_PLUGIN_AUTOLOAD"}
    return subprocess.Popen(
        [sys.executable, "-c", READ_EVERYTHING, json.dumps(settings)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _result(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    return json.loads(out)  # type: ignore[no-any-return]


@pytest.fixture
def bq_settings(
    bigquery_emulator: BigQueryEmulator, bq_events: str, tmp_path: Path
) -> Callable[..., dict[str, Any]]:
    """Plain settings of a reader of the events table; each test picks its own split, so
    no test finds another's scratch table."""

    def build(**settings: Any) -> dict[str, Any]:
        return {
            "datastore": "bigquery",
            "table_name": bq_events,
            "split_key": "id",
            "label_columns": ["label"],
            "batch_size": 500,
            "chunk_size": 1_000,
            "seed": 3,
            "cache_dir": str(tmp_path / "cache"),
            **bigquery_emulator.settings(),
            **settings,
        }

    return build


@pytest.fixture
def read_proxy(bigquery_emulator: BigQueryEmulator) -> Iterator[TcpProxy]:
    """Counts the connections to the Storage Read API."""
    proxy = TcpProxy(bigquery_emulator.grpc)
    yield proxy
    proxy.close()


def test_a_warm_rerun_runs_no_query_and_reads_nothing(
    bigquery_emulator: BigQueryEmulator,
    bq_settings: Callable[..., dict[str, Any]],
    read_proxy: TcpProxy,
) -> None:
    settings = bq_settings(test_split_percent=11, read_api_endpoint=read_proxy.address)
    before = _jobs(bigquery_emulator)
    first = _result(_process(settings))
    assert first["origin"] == "warehouse"
    assert _new_jobs(before, _jobs(bigquery_emulator)) == {"counting": 1, "copying": 1, "other": 0}
    reads = read_proxy.connections
    assert reads > 0

    warm = _jobs(bigquery_emulator)
    second = _result(_process(settings))  # a restarted job, a re-run notebook
    assert second["origin"] == "cache"
    assert _new_jobs(warm, _jobs(bigquery_emulator)) == {"counting": 0, "copying": 0, "other": 0}
    assert read_proxy.connections == reads  # not one Storage Read API connection
    assert sorted(second["train"]) == sorted(first["train"])
    assert len(first["train"]) + len(first["eval"]) == 3 * BQ_ROWS_PER_DAY


def test_processes_sharing_a_cache_folder_plan_and_copy_once(
    bigquery_emulator: BigQueryEmulator, bq_settings: Callable[..., dict[str, Any]]
) -> None:
    settings = bq_settings(test_split_percent=13, ds="2024-01-02")
    before = _jobs(bigquery_emulator)
    processes = [_process(settings), _process(settings)]  # started together
    results = [_result(p) for p in processes]
    assert _new_jobs(before, _jobs(bigquery_emulator)) == {"counting": 1, "copying": 1, "other": 0}
    assert sorted(r["origin"] for r in results) == ["cache", "warehouse"]
    assert sorted(results[0]["train"]) == sorted(results[1]["train"])


def _ddp_rank(rank: int, world: int, port: int, settings: dict[str, Any], out: str) -> None:
    import torch.distributed as dist

    from faucet_core.settings import load_config
    from faucet_core.torch import FaucetDataLoader, FaucetIterableDataset

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    pm.register(faucet_bigquery.plugin)  # a spawned process: the tests' plugins are not there
    try:
        # Each rank has a cache folder of its own: the plan reaches rank 1 by broadcast.
        config = load_config(**{**settings, "cache_dir": f"{settings['cache_dir']}-{rank}"})
        with FaucetIterableDataset.from_config(config) as dataset:
            origin = dataset.reader.plan_origin
            ids = [int(i) for f, _ in FaucetDataLoader(dataset) for i in f[:, 0].tolist()]
        gathered: list[object] = [None] * world
        dist.all_gather_object(gathered, {"ids": ids, "origin": origin})
        if rank == 0:
            Path(out).write_text(json.dumps(gathered))
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(300)
def test_two_ddp_ranks_plan_and_copy_once(
    bigquery_emulator: BigQueryEmulator,
    bq_settings: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    settings = bq_settings(test_split_percent=17, columns=["id", "x", "label"])
    out = tmp_path / "ranks.json"
    before = _jobs(bigquery_emulator)
    mp.spawn(_ddp_rank, args=(2, free_port(), settings, str(out)), nprocs=2, join=True)
    assert _new_jobs(before, _jobs(bigquery_emulator)) == {"counting": 1, "copying": 1, "other": 0}
    ranks = json.loads(out.read_text())
    assert [r["origin"] for r in ranks] == ["warehouse", "given"]
    first, second = (set(r["ids"]) for r in ranks)
    assert len(ranks[0]["ids"]) == len(ranks[1]["ids"]) > 0
    assert not first & second


def test_an_expired_scratch_table_is_made_again(
    make_bq_reader: MakeReader,
    bigquery_emulator: BigQueryEmulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    reader = make_bq_reader(
        test_split_percent=19, prefetch_chunks=0, fetch_threads=1, use_cache=False, epochs=1
    )
    reader.prep_for_epoch()
    ids = reader.get_batch()["features"]["id"].tolist()  # chunk 0 read: the copy exists
    client = bigquery_emulator.client()
    scratch = f"faucet_scratch.{reader.stream.warehouse().scratch_name(reader.plan)}"
    client.delete_table(scratch)  # as if it expired
    with caplog.at_level("INFO"):
        while (batch := reader.get_batch()) is not None:
            ids += batch["features"]["id"].tolist()
    assert len(ids) == len(set(ids)) == reader.rows("train")
    assert "materializing bigquery again" in caplog.text
    assert client.get_table(scratch)


def test_costs_are_counted_per_reader(make_bq_reader: MakeReader) -> None:
    reader = make_bq_reader(test_split_percent=23, use_cache=False)
    assert reader.costs.query_jobs == 2  # the scratch copy, and counting it
    epoch_ids(reader)
    assert reader.costs.query_jobs == 2
    assert reader.metrics[-1].query_jobs == 0  # nothing more during the epoch
    assert reader.costs.bytes_read > 0  # through the Storage Read API
    rest = make_bq_reader(test_split_percent=23, use_cache=False, use_storage_api=False)
    epoch_ids(rest)
    # The copy found while planning is counted; then a query per chunk.
    assert rest.costs.query_jobs == 1 + len(rest.plan.chunks["train"])
    assert rest.costs.bytes_read == 0


def test_validate_says_what_planning_costs_before_and_after_a_run(
    bigquery_emulator: BigQueryEmulator,
    bq_settings: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    from click.testing import CliRunner

    from faucet_core.cli import cli
    from faucet_core.settings import config_from_kwargs

    settings = bq_settings(test_split_percent=29, ds="2024-01-03")
    config = tmp_path / "bq.json"
    config.write_text(json.dumps(config_from_kwargs(settings)))
    before = _jobs(bigquery_emulator)
    cold = CliRunner().invoke(cli, ["validate", str(config)])
    assert cold.exit_code == 0, cold.output
    assert "plan: none saved for this data" in cold.stdout
    assert "for the scratch copy, made while planning" in cold.stdout
    assert _new_jobs(before, _jobs(bigquery_emulator)) == {"counting": 0, "copying": 0, "other": 0}

    _result(_process(settings))
    warm = CliRunner().invoke(cli, ["validate", str(config)])
    assert "plan: a saved plan fits this data" in warm.stdout
    assert "scratch copy: test-proj.faucet_scratch.faucet_" in warm.stdout
