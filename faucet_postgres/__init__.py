"""The PostgreSQL warehouse: a table or a query of a PostgreSQL database."""

from faucet_postgres.warehouse import PostgresConnection, PostgresWarehouse

__all__ = ["PostgresConnection", "PostgresWarehouse"]
