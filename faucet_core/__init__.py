"""Faucet: shuffled mini-batches streamed out of data warehouses into training loops."""

from faucet_core.cache import ChunkCache
from faucet_core.config import FaucetConfig
from faucet_core.errors import (
    ChunkReadError,
    ConfigError,
    FaucetError,
    ReaderStateError,
    ResumeError,
    UnknownDatastore,
)
from faucet_core.hookspecs import hookimpl
from faucet_core.plan import ChunkSpec, Plan
from faucet_core.plugins import installed_plugins, warehouses
from faucet_core.position import StreamPosition
from faucet_core.preprocessing import Preprocessor
from faucet_core.reader import Reader, get_batch_reader
from faucet_core.scratch import ScratchWarehouse
from faucet_core.settings import load_config
from faucet_core.sql import SqlWarehouse
from faucet_core.stream import PassMetrics
from faucet_core.warehouse import (
    BucketCounts,
    PermanentWarehouseError,
    PlanRequest,
    ScratchDataMissing,
    SourceSpec,
    SplitSpec,
    TransientWarehouseError,
    Warehouse,
    WarehouseError,
)

__all__ = [
    "BucketCounts",
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
    "Preprocessor",
    "Reader",
    "ReaderStateError",
    "ResumeError",
    "ScratchDataMissing",
    "ScratchWarehouse",
    "SourceSpec",
    "SplitSpec",
    "SqlWarehouse",
    "StreamPosition",
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
