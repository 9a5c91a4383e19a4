"""Secrets and permissions: what Faucet writes to disk is its owner's alone, whatever the
umask, and no password, token, private key (or its passphrase) or credential file content
ever appears in logs (at DEBUG), errors (with their chained causes), reprs of configs, or
the output of ``faucet validate``, on success or on a failed login.

Each secret is a distinct planted string, searched for in everything captured.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from click.testing import CliRunner

from faucet_core import get_batch_reader
from faucet_core.cli import cli
from faucet_core.settings import load_config
from tests.bqemulator import BigQueryEmulator, free_port
from tests.pgserver import READER, READER_PASSWORD, PostgresServer
from tests.reliability.figures import record
from tests.snowserver import SnowServer

# --- Permissions: the cache, the saved plans and preprocessors, the scratch folders.


def modes(root: Path) -> dict[Path, tuple[int, bool]]:
    """The permission bits of ``root`` and everything under it, and whether each is a folder."""
    found = {root: (stat.S_IMODE(root.stat().st_mode), True)}
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            info = (Path(folder) / name).lstat()
            found[Path(folder) / name] = (stat.S_IMODE(info.st_mode), stat.S_ISDIR(info.st_mode))
    return found


def open_to_others(found: dict[Path, tuple[int, bool]]) -> dict[str, str]:
    """Folders not 0700 and files not 0600, by path."""
    return {
        str(path): oct(mode)
        for path, (mode, folder) in found.items()
        if mode != (0o700 if folder else 0o600)
    }


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    """Set the process umask for one test; the previous one comes back after it."""
    previous = os.umask(0o022)
    os.umask(previous)

    def set_umask(value: int) -> None:
        os.umask(value)

    yield set_umask
    os.umask(previous)


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077], ids=["000", "022", "077"])
def test_everything_faucet_writes_is_its_owners_alone(
    mask: int, umask: Callable[[int], None], table_path: Path, tmp_path: Path
) -> None:
    umask(mask)
    cache, scratch = tmp_path / "cache", tmp_path / "scratch"
    scratch.mkdir(mode=0o700)
    settings: dict[str, Any] = {
        "datastore": "duckdb", "database": str(table_path), "table_name": "t",
        "split_key": "id", "label_columns": ["label"], "test_split_percent": 20,
        "chunk_size": 1_000, "seed": 1, "output": "arrow", "cache_dir": str(cache),
        "scratch_dir": str(scratch), "columns": ["id", "x1", "x2", "label"],
        "preprocessing": {"auto": True},
    }  # fmt: skip
    with get_batch_reader(**settings) as filled:  # the cache filled from one scan
        rows = sum(b["features"].num_rows for b in filled.iter_epoch())
        rows += sum(b["features"].num_rows for b in filled.iter_eval())
    # A reader of another chunking, chunk by chunk: the split copied into the scratch folder.
    with get_batch_reader(**{**settings, "chunk_size": 700, "use_cache": False}) as chunked:
        chunked.prepare()
        rows += sum(b["features"].num_rows for b in chunked.iter_epoch())
        written = {**modes(cache), **modes(scratch)}
        del written[scratch]  # the user's folder: left as it is
        assert any(p.name.startswith("faucet-duckdb-") for p in written), "no scratch copy"
    assert any(p.suffix == ".arrow" for p in written) and any(
        p.parent.name == "plans" for p in written
    )
    assert open_to_others(written) == {}
    record(
        f"permissions umask {mask:03o}", paths_checked=len(written), rows_read=rows,
        open_to_others=0,
    )  # fmt: skip


# --- Secrets: planted strings, searched for in everything captured.

PG_WRONG = "pg-wr0ng-Pl4nted-pw"
SF_WRONG = "sf-wr0ng-Pl4nted-pw"
SF_TOKEN = "sf-T0ken-Pl4nted-0auth"
SF_PASSPHRASE = "sf-Passphr4se-Pl4nted"


def everything(exc: BaseException | None) -> str:
    """An exception's text, its traceback and every chained cause or context."""
    if exc is None:
        return ""
    return "".join(traceback.format_exception(exc)) + repr(exc)


def files_text(root: Path) -> list[str]:
    """The bytes of every file under ``root`` (cache entries, saved plans), as text."""
    found = []
    for folder, _, files in os.walk(root):
        for name in files:
            found.append((Path(folder) / name).read_bytes().decode("utf-8", errors="replace"))
    return found


def leaked(secrets: list[str], *texts: str) -> list[str]:
    """The secrets found in ``texts``, as they are or percent-encoded (as in a URL)."""
    return [
        secret
        for secret in secrets
        if any(form in text for form in {secret, quote(secret, safe="")} for text in texts)
    ]


class Capture:
    """Everything a test produced: log records at DEBUG, stdout and stderr, errors,
    config reprs and dumps."""

    def __init__(self, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]):
        self.caplog = caplog
        self.capfd = capfd
        self.texts: list[str] = []
        self.errors = 0
        caplog.set_level(logging.DEBUG)

    def error(self, action: Callable[..., Any], **arguments: Any) -> BaseException:
        """Run ``action(**arguments)``, which must fail, keeping its error's whole text."""
        try:
            action(**arguments)
        except Exception as exc:
            self.texts.append(everything(exc))
            self.errors += 1
            return exc
        raise AssertionError("expected an error")

    def config(self, config: Any) -> None:
        self.texts += [repr(config), str(config), config.model_dump_json()]
        self.texts.append(json.dumps(config.model_dump(mode="json"), default=str))

    def all(self) -> list[str]:
        out, err = self.capfd.readouterr()
        self.texts += [out, err]
        return [*self.texts, self.caplog.text] + [
            str(record.__dict__) for record in self.caplog.records
        ]


@pytest.fixture
def capture(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> Capture:
    return Capture(caplog, capfd)


def validate(config: Path, *options: str) -> str:
    """``faucet [options] validate config``: its output and, if it failed, its error."""
    result = CliRunner().invoke(cli, [*options, "validate", str(config)])
    return result.output + everything(result.exception if result.exit_code else None)


def test_postgres_and_redshift_secrets_stay_hidden(
    postgres_server: PostgresServer,
    capture: Capture,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secrets = [READER_PASSWORD, PG_WRONG]
    base = {"host": "127.0.0.1", "port": postgres_server.port, "user": READER, "dbname": "postgres"}
    cache = str(tmp_path / "cache")
    for datastore in ("postgres", "redshift"):
        extra = {"scratch_attributes": ""} if datastore == "redshift" else {}
        # A good login, as parts and as a dsn: a whole epoch, logged at DEBUG (PostgreSQL:
        # the role reads table t there).
        dsn = postgres_server.database_url("postgres", READER, READER_PASSWORD)
        for login in ({**base, "password": READER_PASSWORD}, {"dsn": dsn}):
            if datastore == "redshift":
                break
            with get_batch_reader(
                datastore=datastore, **login, **extra, table_name="t", split_key="id",
                cache_dir=cache, batch_size=1_000,
            ) as reader:  # fmt: skip
                capture.config(reader.config)
                capture.texts.append(repr(reader.config.connection))
                assert sum(len(b["features"]) for b in reader.iter_epoch()) > 0
        # A refused login, as parts and as a dsn.
        wrong_dsn = postgres_server.database_url("postgres", READER, PG_WRONG)
        for login in ({**base, "password": PG_WRONG}, {"dsn": wrong_dsn}):
            capture.error(
                get_batch_reader, datastore=datastore, **login, **extra, table_name="t",
                cache_dir=cache,
            )  # fmt: skip
    # ${ENV} substitution in a config file, through `faucet validate`, right and wrong.
    config = tmp_path / "pg.yaml"
    config.write_text(
        "datastore: postgres\n"
        f"connection: {{host: 127.0.0.1, port: {postgres_server.port}, user: {READER}, "
        "dbname: postgres, password: '${PG_SECRET}'}\n"
        f"source: {{table: t, split_key: id}}\ncache: {{dir: {cache}}}\n"
    )
    for password in (READER_PASSWORD, PG_WRONG):
        monkeypatch.setenv("PG_SECRET", password)
        capture.config(load_config(config))
        for options in ((), ("--debug",)):
            capture.texts.append(validate(config, *options))
    texts = capture.all() + files_text(tmp_path / "cache")
    assert any(name.endswith(".arrow") for name in os.listdir(cache))  # the cache was written
    assert sum("password authentication failed" in text for text in texts) >= 4 + 2
    assert any("valid (postgres, source t)" in text for text in texts)
    assert capture.caplog.records  # DEBUG logging was on and captured
    assert leaked(secrets, *texts) == []
    record(
        "secrets postgres+redshift", planted=len(secrets), failed_logins=capture.errors,
        texts_searched=len(texts), leaked=0,
    )  # fmt: skip


def private_key_pem(passphrase: str | None = None) -> bytes:
    """A new RSA private key, as PEM (encrypted with ``passphrase`` if given)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    encryption = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def pem_secrets(pem: bytes) -> list[str]:
    """The lines of a PEM key's body: each one is secret."""
    return [line for line in pem.decode().splitlines() if line and not line.startswith("-----")]


def test_snowflake_secrets_stay_hidden(
    snowflake_server: SnowServer, capture: Capture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pem = private_key_pem(SF_PASSPHRASE)
    key = tmp_path / "rsa_key.p8"
    key.write_bytes(pem)
    key.chmod(0o600)
    secrets = [snowflake_server.password, SF_WRONG, SF_TOKEN, SF_PASSPHRASE, *pem_secrets(pem)]
    settings = snowflake_server.settings(database="FAUCET_TEST", schema="PUBLIC")
    common = {"datastore": "snowflake", "table_name": "T", "split_key": "ID",
              "cache_dir": str(tmp_path / "cache"), "batch_size": 1_000}  # fmt: skip
    with get_batch_reader(**common, **settings) as reader:  # a good login: one epoch
        capture.config(reader.config)
        assert sum(len(b["features"]) for b in reader.iter_epoch()) > 0
    logins: list[dict[str, Any]] = [
        {"password": SF_WRONG},
        {"password": None, "authenticator": "oauth", "token": SF_TOKEN},
        {"password": None, "private_key_path": str(key), "private_key_passphrase": SF_PASSPHRASE},
        {"password": None, "private_key_path": str(key), "private_key_passphrase": SF_WRONG},
    ]
    for login in logins:
        refused = {**settings, **login}
        given = {k: v for k, v in refused.items() if v is not None}
        capture.error(get_batch_reader, **common, **given)
    connection = {k: v for k, v in settings.items() if k != "password"}
    settings_file = {
        "datastore": "snowflake",
        "connection": {**connection, "password": "${SF_SECRET}"},
        "source": {"table": "T", "split_key": "ID"},
        "cache": {"dir": str(tmp_path)},
    }
    config = tmp_path / "sf.json"
    config.write_text(json.dumps(settings_file))
    for password in (snowflake_server.password, SF_WRONG):
        monkeypatch.setenv("SF_SECRET", password)
        capture.config(load_config(config))
        for options in ((), ("--debug",)):
            capture.texts.append(validate(config, *options))
    texts = capture.all() + files_text(tmp_path / "cache")
    assert sum("Incorrect username or password" in text for text in texts) >= 2
    assert any("valid (snowflake, source T)" in text for text in texts)
    assert leaked(secrets, *texts) == []
    record(
        "secrets snowflake", planted=len(secrets), failed_logins=capture.errors,
        texts_searched=len(texts), leaked=0,
    )  # fmt: skip


def test_bigquery_credential_file_content_stays_hidden(
    bigquery_emulator: BigQueryEmulator, capture: Capture, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    pem = private_key_pem()
    secrets = [*pem_secrets(pem), "pkid-Pl4nted-0123456789abcdef"]
    key = {
        "type": "service_account", "project_id": bigquery_emulator.project,
        "private_key_id": secrets[-1], "private_key": pem.decode(),
        "client_email": "faucet@test-proj.iam.gserviceaccount.com", "client_id": "1",
        # Nothing listens there: getting a token fails, as with revoked credentials.
        "token_uri": f"http://127.0.0.1:{free_port()}/token",
    }  # fmt: skip
    good = tmp_path / "key.json"
    good.write_text(json.dumps(key))
    broken = tmp_path / "broken.json"  # a key the credentials library cannot load
    broken.write_text(json.dumps({**key, "private_key": key["private_key"][:-200]}))
    garbled = tmp_path / "garbled.json"  # not JSON at all
    garbled.write_text(key["private_key"])
    endpoints = {k: v for k, v in bigquery_emulator.settings().items() if k != "anonymous"}
    common = {"datastore": "bigquery", "table_name": "faucet_hostile.canary", "split_key": "v",
              "cache_dir": str(tmp_path / "cache"), "timeout": 1, "retry_attempts": 1}  # fmt: skip
    for path in (good, broken, garbled):
        capture.error(get_batch_reader, **common, **endpoints, credential_path=str(path))
    config = tmp_path / "bq.yaml"
    config.write_text(
        "datastore: bigquery\n"
        f"connection: {json.dumps({**endpoints, 'credential_path': '${BQ_KEY}', 'timeout': 1})}\n"
        "source: {table: faucet_hostile.canary, split_key: v}\n"
        f"cache: {{dir: {tmp_path / 'cache'}}}\n"
    )
    for path in (good, broken, garbled):
        monkeypatch.setenv("BQ_KEY", str(path))
        for options in ((), ("--debug",)):
            capture.texts.append(validate(config, *options))
    texts = capture.all()
    assert leaked(secrets, *texts) == []
    record(
        "secrets bigquery", planted=len(secrets), failed_logins=capture.errors,
        texts_searched=len(texts), leaked=0,
    )  # fmt: skip
