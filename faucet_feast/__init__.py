"""The Feast warehouse: features of a Feast feature store, joined point in time to entity rows."""

from faucet_feast.connection import FeastConnection
from faucet_feast.warehouse import FeastWarehouse

__all__ = ["FeastConnection", "FeastWarehouse"]
