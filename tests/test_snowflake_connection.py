"""Snowflake settings without a server: the connector's arguments for every way to log
in, validation, table names, types, and how the connector's errors are classified.

Key pairs, browser single sign-on and OAuth cannot be tried on the local stand-in (it
accepts any login), so these check the arguments given to ``snowflake.connector.connect``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from snowflake.connector import errors

from faucet_core import ConfigError, load_config
from faucet_core.warehouse import PermanentWarehouseError, TransientWarehouseError
from faucet_snowflake import SnowflakeConnection, connect_arguments
from faucet_snowflake.errors import classify
from faucet_snowflake.names import parse_table
from faucet_snowflake.types import arrow_type, conform

BASE = {"query_tag": "faucet", "network_timeout": 120}


def arguments(**settings: Any) -> dict[str, Any]:
    """The connector's arguments for ``settings``, less the ones every connection has."""
    made = connect_arguments(SnowflakeConnection(**settings))
    assert made.pop("paramstyle") == "qmark"
    assert made.pop("arrow_number_to_decimal") is True
    assert made.pop("network_timeout") == made.pop("login_timeout")
    return made


def test_password() -> None:
    assert arguments(
        account="acme-prod", user="ana", password="pw", warehouse="WH", database="DB",
        schema="PUBLIC", role="ANALYST",
    ) == {
        "account": "acme-prod", "user": "ana", "password": "pw", "warehouse": "WH",
        "database": "DB", "schema": "PUBLIC", "role": "ANALYST",
        "session_parameters": {"QUERY_TAG": "faucet"},
    }  # fmt: skip


def test_key_pair(tmp_path: Path) -> None:
    key = tmp_path / "rsa_key.p8"
    key.write_text("-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
    made = arguments(
        account="acme-prod", user="svc", private_key_path=key, private_key_passphrase="phrase"
    )
    assert made["authenticator"] == "SNOWFLAKE_JWT"
    assert made["private_key_file"] == str(key)
    assert made["private_key_file_pwd"] == "phrase"
    assert "password" not in made
    plain = arguments(account="acme-prod", user="svc", private_key_path=key)
    assert "private_key_file_pwd" not in plain


def test_browser_oauth_and_access_tokens() -> None:
    browser = arguments(account="acme-prod", user="ana@acme.com", authenticator="externalbrowser")
    assert browser["authenticator"] == "EXTERNALBROWSER" and "password" not in browser
    oauth = arguments(account="acme-prod", authenticator="oauth", token="tok")
    assert (oauth["authenticator"], oauth["token"]) == ("OAUTH", "tok")
    pat = arguments(account="acme-prod", user="svc", authenticator="PROGRAMMATIC_ACCESS_TOKEN",
                    token="pat")  # fmt: skip
    assert (pat["authenticator"], pat["token"]) == ("PROGRAMMATIC_ACCESS_TOKEN", "pat")
    okta = arguments(account="acme-prod", user="ana", password="pw",
                     authenticator="https://acme.okta.com")  # fmt: skip
    assert okta["authenticator"] == "https://acme.okta.com"


def test_a_named_connection_leaves_the_rest_to_connections_toml() -> None:
    assert arguments(connection_name="prod") == {
        "connection_name": "prod",
        "session_parameters": {"QUERY_TAG": "faucet"},
    }
    assert arguments(connection_name="prod", role="READER")["role"] == "READER"


def test_session_parameters_and_endpoint() -> None:
    made = arguments(
        account="acme-prod", user="ana", password="pw", query_tag="train-v2",
        statement_timeout=600, host="acme.privatelink.snowflakecomputing.com", port=8443,
        protocol="https",
    )  # fmt: skip
    assert made["session_parameters"] == {
        "QUERY_TAG": "train-v2",
        "STATEMENT_TIMEOUT_IN_SECONDS": 600,
    }
    assert (made["host"], made["port"], made["protocol"]) == (
        "acme.privatelink.snowflakecomputing.com",
        8443,
        "https",
    )


def test_secrets_are_hidden() -> None:
    settings = SnowflakeConnection(
        account="acme-prod", user="ana", authenticator="oauth", token="tok-123"
    )
    assert "tok-123" not in repr(settings) and "tok-123" not in str(settings.model_dump())
    assert settings.secrets() == ["tok-123"]


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"user": "ana"}, "give account (with user and credentials) or connection_name"),
        (
            {"account": "a", "password": "p", "authenticator": "oauth", "token": "t"},
            "give one of password or token",
        ),
        ({"account": "a", "token": "t"}, "token needs authenticator"),
        ({"account": "a", "authenticator": "oauth"}, "authenticator oauth needs token"),
        ({"account": "a", "authenticator": "kerberos"}, "authenticator 'kerberos' is not one"),
        ({"account": "a", "private_key_passphrase": "p"}, "private_key_passphrase needs"),
        ({"account": "a", "private_key_path": "/nonexistent/key.p8"}, "does not exist"),
        ({"account": "a", "port": 0}, "greater than or equal to 1"),
        ({"account": "a", "protocol": "ftp"}, "'https' or 'http'"),
        ({"account": "a", "warehous": "WH"}, "unknown setting"),
    ],
)
def test_bad_settings_name_the_field(settings: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(datastore="snowflake", table_name="T", **settings)
    assert problem in str(raised.value)
    # Named by the connection's field, or by the keyword as written when it names none.
    (path,) = {path for path, _ in raised.value.problems}
    assert path in {"connection", *(f"connection.{name}" for name in settings), "warehous"}


# Table names


@pytest.mark.parametrize(
    ("written", "sql", "stored"),
    [
        ("events", "events", ("EVENTS",)),
        ("analytics.public.events", "analytics.public.events", ("ANALYTICS", "PUBLIC", "EVENTS")),
        (
            'db."My Schema"."Events.v2"',
            'db."My Schema"."Events.v2"',
            ("DB", "My Schema", "Events.v2"),
        ),
        ('"say ""hi"""', '"say ""hi"""', ('say "hi"',)),
        ("s.$weird_1", "s.$weird_1", None),
    ],
)
def test_table_names(written: str, sql: str, stored: tuple[str, ...] | None) -> None:
    if stored is None:
        with pytest.raises(PermanentWarehouseError):
            parse_table(written)
        return
    table = parse_table(written)
    assert (table.sql, table.stored) == (sql, stored)


@pytest.mark.parametrize(
    "written", ["", "a.b.c.d", "t; drop table t", "a..b", "a.", '"unclosed', "1t", 't"x"']
)
def test_bad_table_names(written: str) -> None:
    with pytest.raises(PermanentWarehouseError, match="is not a table name"):
        parse_table(written)


def test_config_column_names_resolve_as_snowflake_sql_does() -> None:
    config = load_config(
        datastore="snowflake", account="acme", user="u", password="p", table_name="t",
        columns=["id", '"Mixed"', '"say ""hi"""', "with space", "tags", "$x"],
        label_columns=["Id"], split_key=['"Mixed"'], partition_column="day",
        inputs={"g": ["tags", '"say ""hi"""']}, pad={"tags": 3},
        preprocessing={"columns": {"with space": {"scale": "standard"}}, "exclude": ["$x"]},
    )  # fmt: skip
    source = config.source
    assert source.columns == ["ID", "Mixed", 'say "hi"', "with space", "TAGS", "$x"]
    assert (source.label_columns, source.split_key) == (["ID"], ["Mixed"])
    assert (source.partition_column, source.pad) == ("DAY", {"TAGS": 3})
    assert source.inputs == {"g": ["TAGS", 'say "hi"']}
    assert list(config.preprocessing.columns) == ["with space"]
    assert config.preprocessing.exclude == ["$x"]
    with pytest.raises(ConfigError, match="source: pad names the column X twice"):
        load_config(datastore="snowflake", account="a", table_name="t", pad={"x": 3, "X": 4})
    with pytest.raises(ConfigError, match="lists a column twice"):
        load_config(datastore="snowflake", account="a", table_name="t", columns=["x", "X"])


# Types


def test_arrays_of_numbers_are_lists_and_a_stray_value_is_refused_by_column() -> None:
    from faucet_snowflake.types import ARRAY, number_arrays

    marked = {ARRAY: b"1"}
    schema = pa.schema([pa.field(n, pa.string(), metadata=marked) for n in ("A", "B", "C", "D")])
    typed = number_arrays(schema, {
        "A": (3, 3, "[\n  1,\n  2.5,\n  -3\n]"),  # as Snowflake formats an ARRAY
        "B": (1, 4, "[1, 2, 3, 4]"),
        "C": (2, 2, '["x", "y"]'),
        "D": (None, None, None),  # no array at all
    })  # fmt: skip
    assert typed.types == [
        pa.list_(pa.float64(), 3),
        pa.list_(pa.float64()),
        pa.string(),
        pa.string(),
    ]
    sent = pa.table({"A": ["[1, 2, 3]", None], "B": ["[1]", "[2, 3]"], "C": ["[]", None],
                     "D": [None, None]})  # fmt: skip
    got = conform(sent, typed, "reading")
    assert got.column("A").to_pylist() == [[1.0, 2.0, 3.0], None]
    assert got.column("B").to_pylist() == [[1.0], [2.0, 3.0]]
    stray = pa.table({"A": ['[1, "two", 3]'], "B": ["[1]"], "C": ["[]"], "D": [None]})
    with pytest.raises(PermanentWarehouseError, match=r"reading: column 'A' does not fit"):
        conform(stray, typed, "reading")


def test_number_types() -> None:
    assert arrow_type("FIXED", 38, 0) == pa.int64()
    assert arrow_type("FIXED", 12, 2) == pa.decimal128(12, 2)
    assert arrow_type("VECTOR", None, None) is None
    schema = pa.schema([("N", pa.int64())])
    assert conform(pa.table({"N": pa.array([1], pa.int8())}), schema, "x").schema == schema
    too_wide = pa.table({"N": pa.array([2**70], pa.decimal128(38, 0))})
    with pytest.raises(PermanentWarehouseError, match="column 'N' does not fit int64"):
        conform(too_wide, schema, "x")


# Errors


@pytest.mark.parametrize(
    ("error", "kind", "hint"),
    [
        (
            errors.ProgrammingError(
                msg="No active warehouse selected in the current session.",
                errno=606,
                sqlstate="57P03",
            ),
            PermanentWarehouseError,
            "set connection.warehouse",
        ),
        (
            errors.ProgrammingError(
                msg="Statement reached its statement or warehouse timeout of 60 second(s) and was "
                "canceled.",
                errno=630,
                sqlstate="57014",
            ),
            PermanentWarehouseError,
            "raise connection.statement_timeout",
        ),
        (
            errors.DatabaseError(
                msg="Failed to connect to DB: acme.snowflakecomputing.com:443. Incorrect username "
                "or password was specified.",
                errno=390100,
                sqlstate="28000",
            ),
            PermanentWarehouseError,
            "check connection.user and connection.password",
        ),
        (
            errors.ProgrammingError(
                msg="SQL compilation error:\nObject 'NOPE' does not exist or not authorized.",
                errno=2003,
                sqlstate="42S02",
            ),
            PermanentWarehouseError,
            "SQL compilation error: Object 'NOPE' does not exist",
        ),
        (errors.ServiceUnavailableError(), TransientWarehouseError, ""),
        (errors.TooManyRequests(), TransientWarehouseError, ""),
        (
            errors.OperationalError(msg="Failed to execute request", errno=250003),
            TransientWarehouseError,
            "Failed to execute request",
        ),
        (
            errors.ProgrammingError(msg="Authentication token has expired.", errno=390114),
            TransientWarehouseError,
            "expired",
        ),
        (ConnectionResetError("reset by peer"), TransientWarehouseError, "reset by peer"),
    ],
)
def test_connector_errors_are_classified(error: Exception, kind: type, hint: str) -> None:
    classified = classify(error, "cannot read T")
    assert type(classified) is kind
    assert str(classified).startswith("cannot read T: ")
    assert hint in str(classified) and "\n" not in str(classified)


def test_secrets_are_masked_in_errors() -> None:
    error = errors.DatabaseError(msg="bad token tok-123 for user", errno=390303)
    assert "tok-123" not in str(classify(error, "cannot connect", ["tok-123"]))


def test_the_example_config_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "rsa_key.p8"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    monkeypatch.setenv("SNOWFLAKE_PRIVATE_KEY_PATH", str(key))
    config = load_config(Path(__file__).parents[1] / "examples" / "snowflake.yaml")
    assert isinstance(config.connection, SnowflakeConnection)
    made = connect_arguments(config.connection)
    assert made["authenticator"] == "SNOWFLAKE_JWT"
    assert made["session_parameters"]["STATEMENT_TIMEOUT_IN_SECONDS"] == 3600
