"""Which Faucet warehouse can run a Feast offline store's retrieval SQL, and how to connect.

A Feast offline store that runs in a warehouse gives its point-in-time join as SQL
(``RetrievalJob.to_sql()``); when the warehouse plugin named here is installed, that SQL
becomes its query source, so the join runs in the warehouse and only chunks leave it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from faucet_core.sql import table_reference

__all__ = ["TARGETS", "PushDownTarget"]


@dataclass(frozen=True)
class PushDownTarget:
    """A Faucet warehouse for one kind of Feast offline store.

    Attributes:
        datastore: The Faucet datastore that runs the SQL.
        connection: The settings of its ``connection:`` section, from the offline store's
            settings in ``feature_store.yaml``.
        quote_table: A table name of ``source.table`` quoted in the warehouse's SQL.
        unusable: Why the retrieval SQL cannot be run elsewhere (given the offline store's
            settings and whether the entity rows are SQL), or ``None``.
    """

    datastore: str
    connection: Callable[[Any], dict[str, Any]]
    quote_table: Callable[[str], str]
    unusable: Callable[[Any, bool], str | None]


def _postgres_connection(store: Any) -> dict[str, Any]:
    return {
        "host": store.host,
        "port": store.port,
        "user": store.user,
        "password": store.password,
        "dbname": store.database,
        "sslmode": store.sslmode,
    }


def _postgres_unusable(store: Any, entity_sql: bool) -> str | None:
    if not entity_sql:
        return (
            "Feast's PostgreSQL store joins entity rows from files in a table it drops "
            "right after; give the entity rows as source.table or source.query"
        )
    mode = getattr(store.entity_select_mode, "value", store.entity_select_mode)
    if mode != "embed_query":
        return (
            "with entity_select_mode temp_table, Feast's SQL reads a table it drops right "
            "after; set offline_store.entity_select_mode: embed_query in feature_store.yaml"
        )
    return None


def _bigquery_connection(store: Any) -> dict[str, Any]:
    settings = {"project": store.billing_project_id or store.project_id}
    if store.location:
        settings["location"] = store.location
    return settings


def _bigquery_table(table: str) -> str:
    table_reference(table, "[project.]dataset.table")  # plain identifiers only
    return f"`{table}`"


def _snowflake_connection(store: Any) -> dict[str, Any]:
    names = ("connection_name", "account", "user", "password", "role", "warehouse",
             "authenticator", "private_key_passphrase", "database")  # fmt: skip
    settings = {name: getattr(store, name) for name in names if getattr(store, name, None)}
    if getattr(store, "schema_", None):
        settings["schema"] = store.schema_
    if getattr(store, "private_key", None):  # Feast's setting is the key file's path
        settings["private_key_path"] = store.private_key
    return settings


def _snowflake_table(table: str) -> str:
    from faucet_snowflake.names import parse_table

    return parse_table(table).sql  # plain parts unquoted: Snowflake upper-cases them


def _snowflake_unusable(store: Any, entity_sql: bool) -> str | None:
    if not entity_sql:
        return (
            "Feast's Snowflake store uploads entity rows from files to a temporary table of "
            "its own session; give the entity rows as source.table or source.query"
        )
    if getattr(store, "private_key_content", None):
        return "a private key given as content cannot be passed on; give its file (private_key)"
    return None


#: Feast's ``offline_store.type`` -> the Faucet warehouse that runs its SQL. Redshift is not
#: here: Feast's Redshift store reaches the cluster through AWS's Data API (cluster id and
#: region), which names no host for the ``redshift`` warehouse to connect to.
TARGETS: dict[str, PushDownTarget] = {
    "postgres": PushDownTarget(
        "postgres",
        _postgres_connection,
        lambda table: table_reference(table, "[database.][schema.]table"),
        _postgres_unusable,
    ),
    "bigquery": PushDownTarget(
        "bigquery",
        _bigquery_connection,
        _bigquery_table,
        lambda store, entity_sql: None,
    ),
    "snowflake.offline": PushDownTarget(
        "snowflake",
        _snowflake_connection,
        _snowflake_table,
        _snowflake_unusable,
    ),
}
