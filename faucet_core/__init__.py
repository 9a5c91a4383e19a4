"""Faucet: shuffled mini-batches streamed out of data warehouses into training loops."""

from faucet_core.cache import ChunkCache
from faucet_core.config import FaucetConfig, load_config
from faucet_core.errors import (
    ChunkReadError,
    ConfigError,
    FaucetError,
    ReaderStateError,
    ResumeError,
    UnknownDatastore,
)
from faucet_core.hookspecs import hookimpl
from faucet_core.plugins import installed_plugins, warehouses
from faucet_core.reader import PassMetrics, Reader, get_batch_reader
from faucet_core.warehouse import (
    ChunkSpec,
    PermanentWarehouseError,
    Plan,
    PlanRequest,
    SourceSpec,
    SplitSpec,
    TransientWarehouseError,
    Warehouse,
    WarehouseError,
)

__all__ = [
    "ChunkCache",
    "ChunkReadError",
    "ChunkSpec",
    "ConfigError",
    "FaucetConfig",
    "FaucetError",
    "PassMetrics",
    "PermanentWarehouseError",
    "Plan",
    "PlanRequest",
    "Reader",
    "ReaderStateError",
    "ResumeError",
    "SourceSpec",
    "SplitSpec",
    "TransientWarehouseError",
    "UnknownDatastore",
    "Warehouse",
    "WarehouseError",
    "get_batch_reader",
    "hookimpl",
    "installed_plugins",
    "load_config",
    "warehouses",
]
