"""Starting bqemulator (BigQuery's REST and Storage Read APIs, locally) for tests and benchmarks.

The emulator pins its own DuckDB, so it runs from a virtualenv of its own, made once and
reused. It loads DuckDB's spatial extension when it starts; offline, that comes from a
wheel and is copied where DuckDB looks for it, under a HOME of the emulator's own.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REQUIREMENTS = ["bqemulator==1.4.0", "duckdb==1.5.5", "duckdb-extension-spatial==1.5.5", "numpy"]
PROJECT = "test-proj"


class EmulatorError(RuntimeError):
    """The emulator could not be installed or started."""


@dataclass(frozen=True)
class BigQueryEmulator:
    """Where the emulator listens, and the connection settings that reach it."""

    rest: str
    grpc: str
    project: str = PROJECT

    def settings(self) -> dict[str, Any]:
        """Connection keywords for ``get_batch_reader(datastore="bigquery", ...)``."""
        return {
            "project": self.project,
            "api_endpoint": self.rest,
            "read_api_endpoint": self.grpc,
            "anonymous": True,
        }

    def client(self) -> Any:
        """A real ``google.cloud.bigquery.Client`` talking to the emulator."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        return bigquery.Client(
            project=self.project,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.rest},
        )


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def emulator_venv() -> Path:
    """The emulator's virtualenv, made on first use."""
    cache = Path(os.environ.get("FAUCET_TEST_CACHE", Path.home() / ".cache" / "faucet-tests"))
    venv = cache / "bqemulator-1.4.0"
    done = venv / ".installed"
    if not done.exists():
        try:
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
            subprocess.run([*pip, *REQUIREMENTS], check=True, timeout=900)
        except (subprocess.SubprocessError, OSError) as exc:
            raise EmulatorError(f"could not install bqemulator into {venv}: {exc}") from exc
        done.touch()
    return venv


@contextmanager
def running_emulator(folder: Path, timeout: float = 90) -> Iterator[BigQueryEmulator]:
    """Run bqemulator on free loopback ports until the block ends."""
    venv = emulator_venv()
    home = folder / "home"
    extension = next(
        venv.glob("lib/python*/site-packages/duckdb_extension_spatial/**/*.duckdb_extension")
    )
    target = home / ".duckdb" / "extensions" / "v1.5.5" / "linux_amd64"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(extension, target)
    rest, grpc_port = free_port(), free_port()
    log = folder / "bqemulator.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [str(venv / "bin" / "bqemulator"), "start", "--rest-host", "127.0.0.1",
             "--rest-port", str(rest), "--grpc-host", "127.0.0.1", "--grpc-port", str(grpc_port),
             "--project", PROJECT, "--log-level", "warning"],
            env={**os.environ, "HOME": str(home)}, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait_until_ready(
            process,
            f"http://127.0.0.1:{rest}/bigquery/v2/projects/{PROJECT}/datasets",
            timeout,
            log,
        )
        yield BigQueryEmulator(f"http://127.0.0.1:{rest}", f"127.0.0.1:{grpc_port}")
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_until_ready(
    process: subprocess.Popen[bytes], url: str, timeout: float, log: Path
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise EmulatorError(f"bqemulator did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)  # polling a server until it answers
