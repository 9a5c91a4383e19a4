"""The DuckDB warehouse: a table in a DuckDB file, a SQL query, or Parquet/CSV files."""

from faucet_duckdb.warehouse import DuckDBConnection, DuckDBWarehouse

__all__ = ["DuckDBConnection", "DuckDBWarehouse"]
