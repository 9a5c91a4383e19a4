"""The connector's errors as Faucet's: transient (retried) or permanent, in one line.

Transient: network failures and server errors the connector gave up retrying
(``network_timeout``), throttling (HTTP 429), and a session that expired or was dropped.
Permanent: everything else (wrong credentials, a missing table or column, no warehouse
selected, a statement timeout, bad SQL, no privilege), with a hint naming the setting
where one helps. Secret values are never part of a message.
"""

from __future__ import annotations

from collections.abc import Sequence

from faucet_core.warehouse import (
    PermanentWarehouseError,
    TransientWarehouseError,
    WarehouseError,
)

__all__ = ["classify", "one_line"]

#: Snowflake error codes worth a retry: a canceled statement (a dropped session), an
#: expired session or token (the next try logs in again).
_TRANSIENT_CODES = frozenset({604, 390112, 390114})
#: The connector's own codes for a request that did not get through.
_NETWORK_CODES = frozenset({250001, 250002, 250003, 250005, 251011, 251012, 252007, 252010, 252013})
_HINTS = {
    390100: "check connection.user and connection.password",
    390144: "check connection.private_key_path and the user's public key",
    390303: "connection.token is not a valid OAuth token",
    390318: "connection.token has expired",
    606: "set connection.warehouse (or a default warehouse for the user)",
    630: "raise connection.statement_timeout, or use a larger warehouse",
}


def one_line(message: str, secrets: Sequence[str] = ()) -> str:
    """``message`` on one line (Snowflake's messages often say what is wrong on their
    second: ``SQL compilation error:\nObject 'T' does not exist``), every secret value
    masked."""
    for secret in secrets:
        message = message.replace(secret, "***")
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def classify(exc: BaseException, what: str, secrets: Sequence[str] = ()) -> WarehouseError:
    """``exc`` (raised by the connector) as a transient or permanent warehouse error, whose
    message starts with ``what``."""
    from snowflake.connector import errors

    retryable_http = (
        errors.InternalServerError,
        errors.ServiceUnavailableError,
        errors.GatewayTimeoutError,
        errors.BadGatewayError,
        errors.RequestTimeoutError,
        errors.TooManyRequests,
        errors.OtherHTTPRetryableError,
        errors.RequestExceedMaxRetryError,
    )
    code = getattr(exc, "errno", None)
    text = one_line(f"{what}: {exc}", secrets)
    if code in _HINTS:
        text += f" ({_HINTS[code]})"
    transient = (
        isinstance(exc, (*retryable_http, ConnectionError, TimeoutError, errors.InterfaceError))
        or code in _TRANSIENT_CODES
        or (
            isinstance(exc, errors.OperationalError)
            and code in _NETWORK_CODES
            and getattr(exc, "sqlstate", None) != "28000"  # credentials refused
        )
    )
    if transient:
        return TransientWarehouseError(text)
    return PermanentWarehouseError(text)
