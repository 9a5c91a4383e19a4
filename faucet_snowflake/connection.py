"""Connection settings of the ``snowflake`` datastore, and the connector arguments they make.

:func:`connect_arguments` is a pure function of the settings: every way to authenticate
(password, key pair, browser, OAuth, a named entry of ``connections.toml``) becomes the
keyword arguments of ``snowflake.connector.connect``, with the session parameters Faucet
sets (``QUERY_TAG``, ``STATEMENT_TIMEOUT_IN_SECONDS``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

__all__ = ["AUTHENTICATORS", "SnowflakeConnection", "connect_arguments"]

#: The ``authenticator`` values the connector knows (besides an ``https://`` Okta URL).
AUTHENTICATORS = (
    "snowflake",
    "externalbrowser",
    "snowflake_jwt",
    "oauth",
    "oauth_authorization_code",
    "oauth_client_credentials",
    "username_password_mfa",
    "programmatic_access_token",
    "workload_identity",
)
_PASSED_AS_THEY_ARE = (
    "account", "user", "warehouse", "database", "schema", "role", "host", "port", "protocol",
)  # fmt: skip
_TOKEN_AUTHENTICATORS = ("oauth", "programmatic_access_token", "workload_identity")

with warnings.catch_warnings():
    # A field named `schema` shadows BaseModel.schema(), a deprecated method; the setting
    # keeps Snowflake's name.
    warnings.filterwarnings("ignore", message='Field name "schema"', category=UserWarning)

    class SnowflakeConnection(BaseModel):
        """Connection settings of the ``snowflake`` datastore."""

        model_config = ConfigDict(extra="forbid", frozen=True)

        account: str | None = Field(
            None,
            description="Account identifier, `<orgname>-<account_name>` (or the account "
            "locator with its region, `xy12345.eu-west-1`).",
        )
        user: str | None = Field(None, description="Login name of the user.")
        password: SecretStr | None = Field(
            None, description="Password (or a programmatic access token); best given as `${ENV}`."
        )
        private_key_path: Path | None = Field(
            None, description="PEM private key file for key-pair authentication (`snowflake_jwt`)."
        )
        private_key_passphrase: SecretStr | None = Field(
            None, description="Passphrase of an encrypted `private_key_path`."
        )
        authenticator: str | None = Field(
            None,
            description="How to log in when not with a password or a key pair: "
            "`externalbrowser` (single sign-on in a browser), `oauth` (with `token`), "
            "`programmatic_access_token`, `username_password_mfa`, an `https://` Okta URL, ...",
        )
        token: SecretStr | None = Field(
            None,
            description="OAuth access token (with `authenticator: oauth`) or programmatic "
            "access token; best given as `${ENV}`.",
        )
        connection_name: str | None = Field(
            None,
            description="A named connection of the connector's `connections.toml` "
            "(`~/.snowflake/`, or `$SNOWFLAKE_HOME`); settings given here override its values.",
        )
        warehouse: str | None = Field(
            None, description="Virtual warehouse that runs the queries (default: the user's)."
        )
        database: str | None = Field(
            None, description="Database of unqualified table names and of the scratch tables."
        )
        schema: str | None = Field(  # type: ignore[assignment]
            None, description="Schema of unqualified table names and of the scratch tables."
        )
        role: str | None = Field(None, description="Role to use (default: the user's).")
        scratch_expiration_hours: float = Field(
            24.0,
            gt=0,
            description="Hours a scratch copy is kept for every process and rerun of its "
            "plan; an expired copy is dropped by the next reader that makes a copy.",
        )
        query_tag: str = Field(
            "faucet",
            max_length=2000,
            description="`QUERY_TAG` of every statement Faucet runs, to find them in the query "
            "history.",
        )
        statement_timeout: int | None = Field(
            None,
            ge=0,
            description="Seconds a statement may run before Snowflake cancels it "
            "(`STATEMENT_TIMEOUT_IN_SECONDS`; default: the account's).",
        )
        network_timeout: int = Field(
            120,
            ge=1,
            description="Seconds the connector keeps retrying a login or request that failed "
            "with a network or server error; then the error is transient and Faucet retries "
            "the chunk.",
        )
        host: str | None = Field(
            None,
            description="Host to connect to instead of `<account>.snowflakecomputing.com` "
            "(a private link, a local server).",
        )
        port: int | None = Field(None, ge=1, le=65535, description="Port (default: 443).")
        protocol: Literal["https", "http"] | None = Field(
            None, description="`https` (the default), or `http` for a local server."
        )

        @field_validator("authenticator")
        @classmethod
        def _known_authenticator(cls, value: str | None) -> str | None:
            if value is None or value.startswith("https://"):
                return value
            if value.lower() not in AUTHENTICATORS:
                raise ValueError(
                    f"authenticator {value!r} is not one of {', '.join(AUTHENTICATORS)} "
                    "or an https:// Okta URL"
                )
            return value.lower()

        @field_validator("private_key_path")
        @classmethod
        def _key_file_exists(cls, value: Path | None) -> Path | None:
            if value is not None and not value.expanduser().is_file():
                raise ValueError(f"the private key file {value} does not exist")
            return value

        @model_validator(mode="after")
        def _one_way_to_log_in(self) -> SnowflakeConnection:
            if self.account is None and self.connection_name is None:
                raise ValueError("give account (with user and credentials) or connection_name")
            given = [
                name
                for name in ("password", "private_key_path", "token")
                if getattr(self, name) is not None
            ]
            if len(given) > 1:
                raise ValueError(f"give one of {' or '.join(given)}, not both")
            if self.private_key_passphrase is not None and self.private_key_path is None:
                raise ValueError("private_key_passphrase needs private_key_path")
            if self.private_key_path is not None and self.authenticator not in (
                None,
                "snowflake_jwt",
            ):
                raise ValueError(
                    f"private_key_path is for key-pair authentication, not {self.authenticator}"
                )
            if self.token is not None and self.authenticator not in _TOKEN_AUTHENTICATORS:
                raise ValueError(f"token needs authenticator: {' or '.join(_TOKEN_AUTHENTICATORS)}")
            if self.authenticator == "oauth" and self.token is None:
                raise ValueError("authenticator oauth needs token (an OAuth access token)")
            return self

        def secrets(self) -> list[str]:
            """The secret values, to keep out of error messages."""
            values = [self.password, self.private_key_passphrase, self.token]
            return [v.get_secret_value() for v in values if v is not None and v.get_secret_value()]


def connect_arguments(connection: SnowflakeConnection) -> dict[str, Any]:
    """The keyword arguments of ``snowflake.connector.connect`` for ``connection``.

    Holds the secrets: never log it. Settings left unset are left out, so that a named
    ``connections.toml`` entry (or the connector's defaults) provides them.
    """
    arguments: dict[str, Any] = {}
    if connection.connection_name is not None:
        arguments["connection_name"] = connection.connection_name
    for name in _PASSED_AS_THEY_ARE:
        value = getattr(connection, name)
        if value is not None:
            arguments[name] = value
    if connection.password is not None:
        arguments["password"] = connection.password.get_secret_value()
    if connection.private_key_path is not None:
        arguments["authenticator"] = "SNOWFLAKE_JWT"
        arguments["private_key_file"] = str(connection.private_key_path.expanduser())
        if connection.private_key_passphrase is not None:
            arguments["private_key_file_pwd"] = connection.private_key_passphrase.get_secret_value()
    elif connection.authenticator is not None:
        authenticator = connection.authenticator
        arguments["authenticator"] = (
            authenticator if authenticator.startswith("https://") else authenticator.upper()
        )
    if connection.token is not None:
        arguments["token"] = connection.token.get_secret_value()
    parameters: dict[str, Any] = {"QUERY_TAG": connection.query_tag}
    if connection.statement_timeout is not None:
        parameters["STATEMENT_TIMEOUT_IN_SECONDS"] = connection.statement_timeout
    arguments["session_parameters"] = parameters
    arguments["network_timeout"] = connection.network_timeout
    arguments["login_timeout"] = connection.network_timeout
    # Server-side binding (`?`): values travel apart from the SQL text.
    arguments["paramstyle"] = "qmark"
    # NUMBER(p, s) with a scale as decimal128(p, s), not float64.
    arguments["arrow_number_to_decimal"] = True
    return arguments
