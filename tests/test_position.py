"""Stream positions, and how an epoch divides among ranks and workers."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from faucet_core import ResumeError, StreamPosition
from faucet_core.batches import batch_count
from faucet_core.position import Partition, resume_point, worker_rows


@given(
    total=st.integers(0, 500),
    batch_size=st.integers(1, 40),
    drop_last=st.booleans(),
    world=st.integers(1, 4),
    workers=st.integers(1, 4),
    remainder=st.sampled_from(["drop", "pad"]),
)
def test_workers_of_all_ranks_cover_the_epoch_once(
    total: int, batch_size: int, drop_last: bool, world: int, workers: int, remainder: str
) -> None:
    served: list[int] = []
    for rank in range(world):
        partition = Partition(rank, world, remainder, workers)  # type: ignore[arg-type]
        rank_rows: list[int] = []
        for worker in range(workers):
            start, stop = worker_rows(total, batch_size, drop_last, partition, worker, 0)
            rank_rows += list(range(start, stop))
        assert len(rank_rows) == len(set(rank_rows))
        batches = partition.rank_batches(total, batch_size, drop_last)
        assert batch_count(len(rank_rows), batch_size, False) >= batches
        served += rank_rows
    if remainder == "drop" and not drop_last:
        assert sorted(served) == list(range(total - total % world))
    if remainder == "pad" and not drop_last:  # the last ranks again serve the first rows
        assert sorted(served) == list(range(world * -(-total // world)))


def _dispatched_groups(
    total: int, batch_size: int, drop_last: bool, world: int, workers: int, remainder: str,
    loader_batch: int,
) -> list[list[int]]:  # fmt: skip
    """The rows a dispatching loader gathers at each step: its DataLoader batches each
    worker's rows by ``loader_batch`` and takes one batch from each worker in turn; one
    batch per process makes a step."""
    partition = Partition(0, world, remainder, workers, dispatch=True)  # type: ignore[arg-type]
    runs = []
    for worker in range(workers):
        start, stop = worker_rows(total, batch_size, drop_last, partition, worker, 0)
        rows = list(range(start, stop))
        runs.append([rows[i : i + loader_batch] for i in range(0, len(rows), loader_batch)])
    order: list[list[int]] = []
    while any(runs):
        order += [run.pop(0) for run in runs if run]
    return [list(itertools.chain(*order[i : i + world])) for i in range(0, len(order), world)]


@given(
    total=st.integers(0, 500),
    loader_batch=st.integers(1, 15),
    loader_batches=st.integers(1, 3),
    drop_last=st.booleans(),
    world=st.integers(1, 4),
    workers=st.integers(1, 4),
    remainder=st.sampled_from(["drop", "pad"]),
)
def test_a_dispatching_process_serves_what_the_ranks_would_in_even_slices(
    total: int, loader_batch: int, loader_batches: int, drop_last: bool, world: int,
    workers: int, remainder: str,
) -> None:  # fmt: skip
    # Faucet's batches pass through (one loader batch each), or a loader batches rows.
    batch_size = loader_batch * loader_batches
    groups = _dispatched_groups(
        total, batch_size, drop_last, world, workers, remainder, loader_batch
    )
    assert all(len(group) % world == 0 for group in groups)  # sliced evenly: none padded
    ranks = [Partition(r, world, remainder) for r in range(world)]  # type: ignore[arg-type]
    if loader_batches == 1:  # as many steps as each rank would take
        assert len(groups) == ranks[0].rank_batches(total, batch_size, drop_last)
    served = [row for group in groups for row in group]
    assert len(served) == len(set(served))
    would = 0
    for rank in ranks:
        start, stop = worker_rows(total, batch_size, drop_last, rank, 0, 0)
        would += stop - start
    assert len(served) == would
    if remainder == "drop":
        assert set(served) <= set(range(total))


def test_a_resumed_worker_takes_over_the_run_whose_turn_was_next() -> None:
    three = Partition(workers=3)
    # 15 batches of 2 rows, runs of 5; 4 served, one from each run in turn, then run 0's:
    # the resumed worker 0 goes on with run 1, worker 1 with run 2, worker 2 with run 0.
    assert [worker_rows(30, 2, False, three, w, 4) for w in range(3)] == [
        (12, 20), (22, 30), (4, 10),
    ]  # fmt: skip
    # 13 batches in runs of 4, 4 and 5, all served: nothing is left for any worker.
    left = [worker_rows(26, 2, False, three, w, 13) for w in range(3)]
    assert all(start == stop for start, stop in left)


@pytest.mark.parametrize(
    ("total", "runs"),
    [
        (15, [(0, 1), (1, 3), (3, 5)]),  # five whole batches: split evenly
        (13, [(0, 1), (1, 2), (2, 5)]),  # four whole and a short one, which goes last
    ],
)
def test_a_dispatching_rank_gives_its_short_batch_to_its_last_worker(
    total: int, runs: list[tuple[int, int]]
) -> None:
    dispatching = Partition(0, 1, "drop", workers=3, dispatch=True)
    assert [dispatching.worker_run(total, 3, False, w) for w in range(3)] == runs
    plain = Partition(0, 1, "drop", workers=3)
    assert [plain.worker_run(total, 3, False, w) for w in range(3)] == [(0, 1), (1, 3), (3, 5)]


@given(sizes=st.lists(st.integers(0, 6), min_size=1, max_size=4), data=st.data())
def test_resume_points_follow_the_dataloader_turns(sizes: list[int], data: st.DataObject) -> None:
    consumed = data.draw(st.integers(0, sum(sizes)))
    turns: list[int] = []
    left = list(sizes)
    worker = 0
    while len(turns) < consumed:  # what a DataLoader does: round robin over live workers
        if left[worker]:
            left[worker] -= 1
            turns.append(worker)
        worker = (worker + 1) % len(sizes)
    taken, _ = resume_point(sizes, consumed)
    assert taken == [turns.count(w) for w in range(len(sizes))]


def test_a_position_is_plain_values_and_checks_what_it_needs() -> None:
    position = StreamPosition("plan", 7, 2, 10, {"batch_size": 64, "shuffle": True})
    state = position.as_dict()
    assert StreamPosition.from_dict(state) == position
    position.check("plan", {"batch_size": 64, "shuffle": True, "seed": 7})
    with pytest.raises(ResumeError) as raised:
        position.check("other", {})
    assert str(raised.value) == (
        "the saved state is from another plan: the data, source, split or chunk_size changed "
        "since it was saved"
    )
    with pytest.raises(ResumeError, match="shuffle was True when the state was saved, now False"):
        position.check("plan", {"shuffle": False})
    with pytest.raises(ResumeError, match="seed was 7"):
        position.check("plan", {"seed": 8})
    with pytest.raises(ResumeError, match="not a Faucet stream state"):
        StreamPosition.from_dict({**state, "format": 1})
    with pytest.raises(ResumeError, match="lacks or garbles"):
        StreamPosition.from_dict({k: v for k, v in state.items() if k != "epoch"})


@pytest.mark.parametrize("worker", [-1, 3])
def test_a_worker_that_is_not_one_of_them_is_refused(worker: int) -> None:
    partition = Partition(workers=3)
    with pytest.raises(ValueError, match=f"worker {worker} is not one of 3 "):
        worker_rows(100, 10, False, partition, worker, 0)
    assert worker_rows(100, 10, False, partition, 2, 0) == (60, 100)
    assert worker_rows(100, 10, False, partition, 0, 0) == (0, 30)
