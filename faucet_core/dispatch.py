"""Hugging Face Accelerate's data loaders, as Faucet's PyTorch dataset meets them.

``Accelerator.prepare`` (and so the transformers ``Trainer``) turns a loader over an
iterable dataset into one that iterates it on the main process only: it takes one batch
per process, concatenates them, broadcasts the result and gives each process an even
slice (``dispatch_batches``, the default for iterable datasets; with ``split_batches``,
one batch is sliced). A dataset serving one DDP rank's rows would lose the other ranks'
there, so such a loader needs a dataset built with ``dispatch=True``, which serves every
rank's rows from rank 0, as many as the ranks would serve between them (so that no slice
is uneven, which would drop or repeat rows). With ``dispatch_batches=False``, Accelerate
iterates the whole dataset on every process and keeps every n-th slice of it: that would
split Faucet's ranks again, so it is refused.

Accelerate's loaders call the dataset's ``set_epoch`` as an iteration starts, while the
loader is the active one of Accelerate's ``GradientState``: :func:`check_loader` looks
then, and raises a ``ValueError`` before a row is served.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from faucet_core.torch import FaucetIterableDataset

__all__ = ["check_loader"]


def _active_loader() -> Any:
    """The loader Accelerate is iterating in this process, if Accelerate is in use."""
    state = sys.modules.get("accelerate.state")
    if state is None:
        return None
    gradient_state = state.GradientState
    if not gradient_state._shared_state:  # no Accelerator was made: nothing to ask
        return None
    return gradient_state().active_dataloader


def check_loader(dataset: FaucetIterableDataset) -> None:
    """Raise if the Accelerate loader starting to iterate ``dataset`` would lose or repeat
    rows; nothing for any other loader or loop.

    Raises:
        ValueError: A dispatching loader over a dataset built without ``dispatch=True``,
            or for another number of processes, or of rows it does not batch evenly; or a
            loader that shards the dataset again on every process.
    """
    loader = _active_loader()
    if loader is None:
        return
    data_loader = sys.modules["accelerate.data_loader"]  # imported by accelerate's package
    iterated = loader.dataset
    if isinstance(loader, data_loader.DataLoaderDispatcher) and iterated is dataset:
        _check_dispatcher(dataset, loader)
    elif isinstance(iterated, data_loader.IterableDatasetShard) and iterated.dataset is dataset:
        raise ValueError(
            "Accelerate with dispatch_batches=False iterates the whole dataset on every "
            "process and keeps every n-th slice of it, which splits Faucet's ranks again: "
            "leave dispatch_batches at its default, and build the dataset with dispatch=True"
        )


def _check_dispatcher(dataset: FaucetIterableDataset, loader: Any) -> None:
    """The checks of a loader that dispatches ``dataset``'s batches from the main process."""
    processes = loader.state.num_processes
    if not dataset.dispatch:
        raise ValueError(
            f"Accelerate reads this dataset on the main process only and dispatches its "
            f"batches to {processes} processes, so it would serve rank 0's rows alone: "
            "build the dataset with dispatch=True"
        )
    if processes != dataset.world_size:
        raise ValueError(
            f"the dataset serves {dataset.world_size} ranks, and Accelerate dispatches to "
            f"{processes} processes"
        )
    if not dataset.rows:
        return
    rows_per_batch, batch_size = loader.batch_size, dataset.config.batch_size
    if rows_per_batch is None:
        raise ValueError("a dataset of rows (rows=True) needs a loader with a batch_size")
    if loader.num_workers > 1 and batch_size % rows_per_batch:
        # Each worker batches its own rows: a run that is not whole batches would end in
        # a short batch mid-epoch, which the dispatcher cannot slice evenly.
        raise ValueError(
            f"with DataLoader workers, each worker's rows must be whole batches: make "
            f"Faucet's batch_size ({batch_size}) a multiple of the loader's ({rows_per_batch})"
        )
