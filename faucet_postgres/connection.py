"""Connection settings of the ``postgres`` and ``redshift`` datastores: a ``dsn``, or its
parts, turned into the connection string libpq takes (:meth:`ServerConnection.conninfo`)
and, for Redshift's connectorx reads, a URL (:meth:`ServerConnection.url`)."""

from __future__ import annotations

import re
from typing import ClassVar
from urllib.parse import quote, unquote, urlencode, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from faucet_postgres.iam import IamSettings

__all__ = ["PostgresConnection", "RedshiftConnection", "ServerConnection"]

_PLAIN_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


class ServerConnection(BaseModel):
    """What the PostgreSQL-protocol datastores share: a ``dsn``, or host, port, user,
    password, database and ``sslmode``, and the schema of the scratch tables."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: URL schemes accepted in ``dsn``.
    schemes: ClassVar[tuple[str, ...]] = ("postgresql://", "postgres://")
    #: ``dsn`` must be a URL, and a ``dsn`` or ``host`` must be given (Redshift: its rows
    #: are read by connectorx, which takes URLs only and no libpq environment).
    needs_url: ClassVar[bool] = True

    dsn: SecretStr | None = Field(
        None,
        description="A connection URL, `postgresql://user:password@host:port/dbname`; "
        "secrets are best given as `${ENV}`.",
    )
    host: str | None = Field(None, description="Server host name or address.")
    port: int = Field(5432, ge=1, le=65535, description="Server port.")
    user: str | None = Field(None, description="User name.")
    password: SecretStr | None = Field(None, description="Password.")
    dbname: str | None = Field(None, description="Database name.")
    sslmode: str | None = Field(None, description="libpq `sslmode`, e.g. `require`.")
    scratch_schema: str = Field(
        "public", description="Schema of the scratch tables (the split source, per plan)."
    )
    copy_when_planning: bool = Field(
        True,
        description="Copy the source while planning, count the copy, and read every chunk "
        "from it: the rows planned are the rows read, whatever the source does after. "
        "`false`: count the source and fill the cache straight from it (a faster first "
        "epoch; a change of its rows before they are read fails the read).",
    )
    read_streams: int = Field(
        2,
        ge=1,
        description="Connections the cache fill reads with at once: each a run of a "
        "scratch copy's chunks, or, reading a table straight (PostgreSQL 14 and later), a "
        "range of its blocks (a query is read over one); planning counts a table's ranges "
        "of blocks over as many.",
    )
    data_version: bool = Field(
        True,
        description="Give tables a data version from the server's metadata, so a saved "
        "plan and the cached chunks are reused while the table is unchanged; `false`: "
        "plan again in every reader (unless `cache.plan_ttl`).",
    )

    @model_validator(mode="after")
    def _dsn_or_host(self) -> ServerConnection:
        dsn = self.dsn.get_secret_value() if self.dsn is not None else None
        if self.needs_url:
            if dsn is None and self.host is None:
                raise ValueError("give either dsn or host (with user, password, dbname)")
            if dsn is not None and not dsn.startswith(self.schemes):
                raise ValueError(
                    f"dsn must be a URL: {self.schemes[0]}user:password@host:port/dbname"
                )
        elif dsn is not None:
            _parsed(dsn)
        if not _PLAIN_IDENTIFIER.fullmatch(self.scratch_schema):
            raise ValueError(f"scratch_schema {self.scratch_schema!r} is not a plain identifier")
        return self

    def conninfo(self) -> str:
        """The libpq connection string: ``dsn`` as given (a URL or ``key=value`` words),
        else the parts given; empty when none is (libpq then reads ``PGHOST``, ``PGUSER``,
        ``PGSERVICE``... and ``.pgpass``). Holds the password: never log it."""
        if self.dsn is not None:
            dsn = self.dsn.get_secret_value()
            if dsn.startswith(self.schemes):
                return "postgresql://" + dsn.split("://", 1)[1]
            return dsn
        from psycopg.conninfo import make_conninfo

        parts = {
            "host": self.host,
            "port": self.port if self.host is not None or "port" in self.model_fields_set else None,
            "user": self.user,
            "password": self.password.get_secret_value() if self.password is not None else None,
            "dbname": self.dbname,
            "sslmode": self.sslmode,
        }
        given = {key: value for key, value in parts.items() if value is not None}
        return make_conninfo("", **given)

    def url(self, login: tuple[str, str] | None = None) -> str:
        """The connection URL, ``postgresql://...``, for a connection that :attr:`needs_url`;
        with ``login`` (a user and password), logging in as that user instead (holds the
        password: never log it)."""
        if self.dsn is not None:
            parts = urlsplit("postgresql://" + self.dsn.get_secret_value().split("://", 1)[1])
            if login is None:
                return parts.geturl()
            place = parts.netloc.rsplit("@", 1)[-1]
            credentials = f"{quote(login[0], safe='')}:{quote(login[1], safe='')}"
            return parts._replace(netloc=f"{credentials}@{place}").geturl()
        user, password = login or (
            self.user or "",
            self.password.get_secret_value() if self.password else None,
        )
        credentials = quote(user, safe="")
        if password is not None:
            credentials += ":" + quote(password, safe="")
        query = urlencode({"sslmode": self.sslmode}) if self.sslmode else ""
        return f"postgresql://{credentials}@{self.host}:{self.port}/{quote(self.dbname or '')}" + (
            f"?{query}" if query else ""
        )

    def database(self) -> str:
        """The database name, from ``dbname`` or the ``dsn``."""
        if self.dbname is not None:
            return self.dbname
        return _parsed(self.conninfo()).get("dbname", "")

    def secrets(self) -> list[str]:
        """The secret values (the password, also as found in the URL), to keep out of
        error messages; longest first."""
        values = {self.conninfo()}
        if self.needs_url:
            values.add(self.url())
        if self.password is not None:
            values.add(self.password.get_secret_value())
        if self.dsn is not None:
            dsn = self.dsn.get_secret_value()
            values.add(dsn)
            if dsn.startswith(self.schemes):
                values.add(unquote(urlsplit(dsn).password or ""))
            else:
                values.add(_parsed(dsn).get("password") or "")
        values |= {quote(value, safe="") for value in values}
        return sorted((v for v in values if v), key=len, reverse=True)


class PostgresConnection(ServerConnection):
    """Connection settings of the ``postgres`` datastore: a ``dsn`` (any libpq connection
    string), or its parts, or neither (libpq's environment, ``.pgpass``, service files)."""

    needs_url: ClassVar[bool] = False

    dsn: SecretStr | None = Field(
        None,
        description="A libpq connection string: a URL, `postgresql://user:password@host:port/"
        "dbname` (a Unix socket: `postgresql:///dbname?host=/var/run/postgresql`), or "
        "`host=... dbname=...` words; secrets are best given as `${ENV}`. Without `dsn` "
        "or `host`, libpq's environment (`PGHOST`, `PGSERVICE`, ...) and `.pgpass` apply.",
    )
    copy_when_planning: bool = Field(
        False,
        description="Copy the source while planning, count the copy, and read every chunk "
        "from it: the rows planned are the rows read, whatever the source does after. "
        "`false` (the default): count the source, as a snapshot sees it "
        "(`pin_snapshot`), and fill the cache straight from it, a faster first epoch; a "
        "copy is made, under that snapshot, at the first read that needs one (`ds`, a "
        "cache too small for the plan).",
    )
    pin_snapshot: bool = Field(
        True,
        description="Where planning counts the source without copying it "
        "(`copy_when_planning: false`, or a user who may not copy), count it in a "
        "transaction whose snapshot every read of the plan imports, held until the cache "
        "fill has read every row, a copy is made under it, or the reader closes: the rows "
        "read are the rows planned. Meanwhile VACUUM keeps the rows it sees. `false`: read "
        "the source as it is then (a change of its rows fails the read).",
    )


def _parsed(dsn: str) -> dict[str, str]:
    """The parts of a libpq connection string.

    Raises:
        ValueError: libpq cannot parse it (not quoting libpq, whose message may hold a
            part of the password).
    """
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        return {key: str(value) for key, value in conninfo_to_dict(dsn).items()}
    except ProgrammingError:
        raise ValueError(
            "dsn is not a libpq connection string: give a URL (postgresql://...) or "
            "key=value words (host=... dbname=...)"
        ) from None


class RedshiftConnection(ServerConnection):
    """Connection settings of the ``redshift`` datastore: a ``dsn``, or its parts; with
    ``iam``, the user and password come from IAM (:mod:`faucet_postgres.iam`)."""

    schemes: ClassVar[tuple[str, ...]] = ("redshift://", "postgresql://", "postgres://")

    dsn: SecretStr | None = Field(
        None,
        description="A connection URL, `redshift://user:password@host:5439/dbname` "
        "(`postgresql://` works too); secrets are best given as `${ENV}`.",
    )
    port: int = Field(5439, ge=1, le=65535, description="Server port (Redshift's is 5439).")
    password: SecretStr | None = Field(None, description="Password (not with `iam`).")
    sslmode: str | None = Field(
        None, description="libpq `sslmode`, e.g. `require` (Redshift accepts SSL)."
    )
    scratch_attributes: str = Field(
        "BACKUP NO DISTSTYLE EVEN COMPOUND SORTKEY(__faucet_eval, __faucet_bucket)",
        description="What follows the scratch table's name in its `CREATE TABLE ... AS`: "
        'Redshift\'s table attributes. `""` for a server that is not Redshift.',
    )
    iam: IamSettings | None = Field(
        None,
        description="Log in with temporary credentials from IAM (GetClusterCredentials, or "
        "GetCredentials for Serverless), renewed before they expire, instead of a password.",
    )

    @model_validator(mode="after")
    def _attributes_are_plain(self) -> RedshiftConnection:
        if ";" in self.scratch_attributes or "--" in self.scratch_attributes:
            raise ValueError("scratch_attributes must be table attributes, not statements")
        if self.iam is not None and self.password is not None:
            raise ValueError("give either password or iam: IAM hands out the password")
        return self
