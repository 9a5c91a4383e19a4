"""Mid-epoch resume: state_dict() / load_state_dict() continue the exact stream."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from faucet_core import Reader, ResumeError
from tests.conftest import write_table

MakeReader = Callable[..., Reader]


def _stream(reader: Reader, epochs: int) -> list[list[int]]:
    """Every batch's ids over ``epochs`` epochs (each prepared by this function)."""
    batches = []
    for _ in range(epochs):
        batches += [b["features"]["id"].tolist() for b in reader.iter_epoch()]
    return batches


@pytest.mark.parametrize("stop_after", [0, 1, 7, 12, 25, 26, 40])
def test_a_restored_reader_serves_exactly_the_rest(
    make_reader: MakeReader, stop_after: int
) -> None:
    settings = {
        "epochs": 2,
        "batch_size": 400,
        "chunk_size": 900,
        "seed": 11,
        "test_split_percent": 10,
    }
    full = _stream(make_reader(**settings), epochs=2)
    per_epoch = len(full) // 2

    interrupted = make_reader(**settings)
    served = []
    for _ in range(2):
        interrupted.prep_for_epoch()
        while len(served) < stop_after and (batch := interrupted.get_batch()) is not None:
            served.append(batch["features"]["id"].tolist())
        if len(served) == stop_after:
            break
    state = interrupted.state_dict()
    interrupted.close()

    restored = make_reader(**{**settings, "seed": None})  # the seed comes from the state
    restored.load_state_dict(state)
    rest = []
    while restored.epoch < 2:
        rest += [b["features"]["id"].tolist() for b in restored.iter_epoch()]
    assert served + rest == full
    assert len(full) == 2 * per_epoch


@pytest.mark.parametrize("stop_after", [0, 2, 5])
def test_an_unshuffled_pass_of_rows_stored_in_chunk_order_resumes_mid_chunk(
    make_reader: MakeReader, stop_after: int
) -> None:
    """Rows a warehouse returns in chunk order are served from a slice of the chunk, not a
    copy: the same batches as rows returned in any order, from the first row or any other."""
    settings = {"batch_size": 300, "chunk_size": 1_000, "shuffle": False}
    full = _stream(make_reader(**settings), epochs=1)

    ordered = make_reader(**settings, datastore="chunk-ordered-duckdb")
    ordered.prep_for_epoch()
    served = []
    for _ in range(stop_after):
        batch = ordered.get_batch()
        assert batch is not None
        served.append(batch["features"]["id"].tolist())
    restored = make_reader(**settings, datastore="chunk-ordered-duckdb")
    restored.load_state_dict(ordered.state_dict())
    rest = [b["features"]["id"].tolist() for b in restored.iter_epoch()]
    assert served + rest == full
    assert len(full) > stop_after


@pytest.mark.parametrize(("start", "stop"), [(250, 1_450), (100, 400)])
def test_a_range_of_rows_stored_in_chunk_order_ends_mid_chunk(
    make_reader: MakeReader, start: int, stop: int
) -> None:
    """A range's last chunk is sliced to the range's end, not to the chunk's."""
    settings = {"batch_size": 300, "chunk_size": 1_000, "shuffle": False}

    def served(reader: Reader) -> list[list[int]]:
        return [b["features"]["id"].tolist() for b in reader.iter_range("train", 1, start, stop)]

    ordered = served(make_reader(**settings, datastore="chunk-ordered-duckdb"))
    assert ordered == served(make_reader(**settings))
    assert sum(map(len, ordered)) == stop - start


def test_a_state_saved_after_a_resume_resumes_again(make_reader: MakeReader) -> None:
    settings = {"epochs": 2, "batch_size": 300, "chunk_size": 800, "seed": 4}
    full = _stream(make_reader(**settings), epochs=2)
    first = make_reader(**settings)
    first.prep_for_epoch()
    served = [first.get_batch()["features"]["id"].tolist() for _ in range(3)]
    second = make_reader(**settings)
    second.load_state_dict(first.state_dict())
    second.prep_for_epoch()
    served += [second.get_batch()["features"]["id"].tolist() for _ in range(4)]
    third = make_reader(**settings)  # resumed from a reader that itself resumed
    third.load_state_dict(second.state_dict())
    while third.epoch < 2:
        served += [b["features"]["id"].tolist() for b in third.iter_epoch()]
    assert served == full


def test_a_state_saved_at_the_end_of_an_epoch_starts_the_next(make_reader: MakeReader) -> None:
    settings = {"epochs": 2, "seed": 4}
    full = _stream(make_reader(**settings), epochs=2)
    first = make_reader(**settings)
    assert len(_stream(first, epochs=1)) == len(full) // 2
    second = make_reader(**settings)
    second.load_state_dict(first.state_dict())
    assert _stream(second, epochs=1) == full[len(full) // 2 :]
    with pytest.raises(ResumeError, match="past epoch 2"):
        make_reader(**{**settings, "epochs": 1}).load_state_dict(second.state_dict())


def test_a_state_saved_between_epochs_or_before_any_resumes_there(make_reader: MakeReader) -> None:
    settings = {"epochs": 2, "batch_size": 300, "seed": 4}
    full = _stream(make_reader(**settings), epochs=2)
    fresh = make_reader(**settings).state_dict()
    assert (fresh["epoch"], fresh["batches"]) == (1, 0)
    interrupted = make_reader(**settings)
    interrupted.prep_for_epoch()
    served = [interrupted.get_batch()["features"]["id"].tolist() for _ in range(2)]
    restored = make_reader(**settings)
    restored.load_state_dict(interrupted.state_dict())
    # Saved again before the resumed epoch started: the same position.
    assert restored.state_dict() == interrupted.state_dict()
    again = make_reader(**settings)
    again.load_state_dict(restored.state_dict())
    while again.epoch < 2:
        served += [b["features"]["id"].tolist() for b in again.iter_epoch()]
    assert served == full


def test_state_is_a_few_plain_values(make_reader: MakeReader) -> None:
    reader = make_reader(batch_size=100)
    reader.prep_for_epoch()
    reader.get_batch()
    state = reader.state_dict()
    assert (state["epoch"], state["batches"]) == (1, 1)
    assert all(isinstance(v, (int, str, bool)) for v in state.values())
    with pytest.raises(ResumeError, match="not a Faucet stream state"):
        reader.load_state_dict({"epoch": 1})


def test_the_state_format_is_stable(make_reader: MakeReader) -> None:
    # Checkpoints outlive the code that wrote them: these names are the saved format.
    reader = make_reader(batch_size=100, seed=3)
    reader.prep_for_epoch()
    reader.get_batch()
    assert reader.state_dict() == {
        "format": 3,
        "plan": reader.plan.fingerprint,
        "seed": 3,
        "epoch": 1,
        "batches": 1,
        "split": "train",
        "batch_size": 100,
        "drop_last": False,
        "shuffle": True,
        "rank": 0,
        "world_size": 1,
        "remainder": "drop",
        "workers": 1,
    }


def test_other_settings_are_refused(make_reader: MakeReader) -> None:
    reader = make_reader(batch_size=100, seed=3)
    reader.prep_for_epoch()
    reader.get_batch()
    state = reader.state_dict()
    with pytest.raises(ResumeError, match="batch_size was 100"):
        make_reader(batch_size=200).load_state_dict(state)
    with pytest.raises(ResumeError, match="seed was 3"):
        make_reader(batch_size=100, seed=4).load_state_dict(state)
    with pytest.raises(ResumeError, match="another plan"):
        make_reader(batch_size=100, chunk_size=700).load_state_dict(state)
    with pytest.raises(ResumeError, match="shuffle was True"):
        make_reader(batch_size=100, shuffle=False).load_state_dict(state)
    with pytest.raises(ResumeError, match="drop_last was False"):
        make_reader(batch_size=100, drop_last=True).load_state_dict(state)


def test_a_changed_table_is_refused(make_reader: MakeReader, tmp_path: Path) -> None:
    path = write_table(tmp_path / "changing.duckdb", 1_000)
    reader = make_reader(database=str(path), batch_size=100)
    reader.prep_for_epoch()
    reader.get_batch()
    state = reader.state_dict()
    reader.close()
    with duckdb.connect(str(path)) as db:
        db.execute("INSERT INTO t SELECT * FROM t LIMIT 1")
    with pytest.raises(ResumeError, match="another plan"):
        make_reader(database=str(path), batch_size=100).load_state_dict(state)
