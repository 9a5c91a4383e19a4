"""The PostgreSQL and Redshift warehouses: a table or a query of either, one dialect each."""

from faucet_postgres.connection import PostgresConnection, RedshiftConnection
from faucet_postgres.redshift import RedshiftWarehouse
from faucet_postgres.warehouse import PostgresWarehouse

__all__ = ["PostgresConnection", "PostgresWarehouse", "RedshiftConnection", "RedshiftWarehouse"]
