"""The BigQuery warehouse: a split materialized once, chunks read with the Storage Read API."""

from faucet_bigquery.connection import BigQueryConnection
from faucet_bigquery.warehouse import BigQueryWarehouse

__all__ = ["BigQueryConnection", "BigQueryWarehouse"]
