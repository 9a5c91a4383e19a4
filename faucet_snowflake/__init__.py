"""The Snowflake warehouse: a table or a query of a Snowflake account."""

from faucet_snowflake.connection import SnowflakeConnection, connect_arguments
from faucet_snowflake.warehouse import SnowflakeWarehouse

__all__ = ["SnowflakeConnection", "SnowflakeWarehouse", "connect_arguments"]
