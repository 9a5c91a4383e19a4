"""A local Snowflake stand-in for tests and benchmarks: fakesnow's HTTP server, in a process
of its own, that the real ``snowflake-connector-python`` talks to.

fakesnow accepts any user and password; the server here answers a login with other
credentials as Snowflake does (code 390100), so that wrong credentials can be tested
through the connector. It also writes the text of every query it receives to a log, one
JSON string a line (:meth:`SnowServer.queries`): what the connector sent, at the HTTP
boundary. Statements fakesnow cannot answer (``EXPLAIN``, ``CURRENT_WAREHOUSE()``) are
answered as Snowflake documents them while a test sets rules for them
(:meth:`SnowServer.answering`): a statement a rule matches runs as the rule's query
instead, or fails with the rule's Snowflake error. Everything else is fakesnow's (a
DuckDB database in memory, shared by every session).

Run as a script: ``python -m tests.snowserver PORT USER PASSWORD QUERY_LOG``.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bqemulator import free_port

USER = "faucet"
PASSWORD = "fake-snow-password"
ACCOUNT = "fakesnow"


class SnowServerError(RuntimeError):
    """The stand-in could not be started."""


@dataclass(frozen=True)
class SnowError:
    """An error as Snowflake answers a statement with it: code, SQL state, message."""

    code: int
    sql_state: str
    message: str

    def response(self) -> dict[str, Any]:
        """The body of Snowflake's answer."""
        code = f"{self.code:06d}"
        return {
            "data": {"errorCode": code, "sqlState": self.sql_state},
            "code": code, "message": self.message, "success": False,
        }  # fmt: skip


@dataclass(frozen=True)
class SnowServer:
    """Where the stand-in listens, and the credentials it accepts."""

    port: int
    user: str = USER
    password: str = PASSWORD
    query_log: Path | None = None

    def queries(self) -> list[str]:
        """The text of every query the stand-in received so far, in order."""
        if self.query_log is None or not self.query_log.exists():
            return []
        return [json.loads(line) for line in self.query_log.read_text().splitlines()]

    @contextmanager
    def answering(self, rules: list[tuple[str, str | SnowError]]) -> Iterator[None]:
        """While the block runs, a statement that a rule's regular expression matches
        (``re.search``; the first rule that does) runs as that rule's query instead, or
        fails with its error."""
        assert self.query_log is not None
        answers = _answers_file(self.query_log)
        answers.write_text(json.dumps([
            (pattern, answer if isinstance(answer, str) else answer.response())
            for pattern, answer in rules
        ]))  # fmt: skip
        try:
            yield
        finally:
            answers.unlink()

    @contextmanager
    def typing(self, types: dict[str, str]) -> Iterator[None]:
        """While the block runs, result columns of these names are typed as Snowflake
        types them (``{"EMB": "array"}``): fakesnow types an ``ARRAY`` column as
        ``variant``. Their values, JSON text, are as Snowflake sends them."""
        assert self.query_log is not None
        typed = _types_file(self.query_log)
        typed.write_text(json.dumps(types))
        try:
            yield
        finally:
            typed.unlink()

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """Connection keywords for ``get_batch_reader(datastore="snowflake", ...)``."""
        return {
            "account": ACCOUNT,
            "user": self.user,
            "password": self.password,
            "host": "127.0.0.1",
            "port": self.port,
            "protocol": "http",
            # The connector retries a failed request until this many seconds have passed.
            "network_timeout": 60,
            **overrides,
        }

    def connect(self, **overrides: Any) -> Any:
        """A connection of the real connector, for setting up test data."""
        import snowflake.connector

        settings = self.settings(**overrides)
        return snowflake.connector.connect(
            **settings,
            session_parameters={"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False},
        )


@contextmanager
def running_snowflake(folder: Path, timeout: float = 60) -> Iterator[SnowServer]:
    """Run the stand-in on a free loopback port until the block ends."""
    port = free_port()
    log = folder / "fakesnow.log"
    queries = folder / "queries.jsonl"
    root = Path(__file__).resolve().parents[1]
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.snowserver", str(port), USER, PASSWORD, str(queries)],
            cwd=root, env={**os.environ, "HOME": str(folder)},
            stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait_until_ready(process, port, timeout, log)
        yield SnowServer(port, query_log=queries)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_ready(
    process: subprocess.Popen[bytes], port: int, timeout: float, log: Path
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            # Any HTTP answer (fakesnow has no route for GET /) means the server is up.
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SnowServerError(f"the fakesnow server did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)  # polling a server until it answers


def _answers_file(query_log: Path) -> Path:
    return query_log.with_name("answers.json")


def _types_file(query_log: Path) -> Path:
    return query_log.with_name("types.json")


def _retyped(response: Any, types: Path) -> Any:
    """fakesnow's ``response`` with its result columns typed as :meth:`SnowServer.typing`
    says, if it says anything."""
    from starlette.responses import JSONResponse

    if not types.exists():
        return response
    wanted = json.loads(types.read_text())
    body = json.loads(response.body)
    for column in (body.get("data") or {}).get("rowtype") or []:
        if column.get("name") in wanted:
            column["type"] = wanted[column["name"]]
    return JSONResponse(body)


def _answer(body: dict[str, Any], answers: Path) -> dict[str, Any] | None:
    """For the first rule matching ``body``'s statement: ``body`` with the rule's query
    instead (``{"body": ...}``), or the error response (``{"error": ...}``); ``None``
    when no rule does."""
    if not answers.exists():
        return None
    for pattern, answer in json.loads(answers.read_text()):
        if re.search(pattern, body.get("sqlText", ""), re.DOTALL):
            if isinstance(answer, dict):
                return {"error": answer}
            rest = {k: v for k, v in body.items() if k != "bindings"}
            return {"body": {**rest, "sqlText": answer}}
    return None


def _app(user: str, password: str, query_log: Path) -> Any:
    """fakesnow's app, behind a login that checks the credentials, logging each query."""
    import importlib

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Mount, Route

    async def login(request: Request) -> Response:
        body = await request.body()  # kept by the request for fakesnow's handler
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        data = json.loads(body)["data"]
        if data.get("LOGIN_NAME") != user or data.get("PASSWORD") != password:
            return JSONResponse(
                {
                    "data": {"nextAction": "RETRY_LOGIN", "authnMethod": "USERNAME_PASSWORD"},
                    "code": "390100",
                    "message": "Incorrect username or password was specified.",
                    "success": False,
                    "headers": None,
                }
            )
        return await server.login_request(request)

    async def query(request: Request) -> Response:
        body = await request.body()  # kept by the request for fakesnow's handler
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        data = json.loads(body)
        with query_log.open("a") as log:
            log.write(json.dumps(data.get("sqlText", "")) + "\n")
        answer = _answer(data, _answers_file(query_log)) or {}
        if "error" in answer:
            return JSONResponse(answer["error"])
        if "body" in answer:  # read again by fakesnow's handler, as the client sent it
            text = json.dumps(answer["body"]).encode()
            gzipped = request.headers.get("Content-Encoding") == "gzip"
            request._body = gzip.compress(text) if gzipped else text
        return _retyped(await server.query_request(request), _types_file(query_log))

    server = importlib.import_module("fakesnow.server")  # not fakesnow.server(), a function
    return Starlette(
        routes=[
            Route("/session/v1/login-request", login, methods=["POST"]),
            Route("/queries/v1/query-request", query, methods=["POST"]),
            Mount("/", app=server.app),
        ]
    )


def main() -> None:
    """Serve on ``127.0.0.1:PORT`` until terminated."""
    import uvicorn

    port, user, password, query_log = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    uvicorn.run(
        _app(user, password, Path(query_log)), host="127.0.0.1", port=port, log_level="warning"
    )


if __name__ == "__main__":
    main()
