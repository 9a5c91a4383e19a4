"""A local Redshift API that hands out temporary logins of a PostgreSQL role, as Redshift's
``GetClusterCredentials`` (the Query protocol, XML) and Redshift Serverless's
``GetCredentials`` (JSON) answer: a database user ``IAM:<db user>``, a new password, and
its expiry. Reached by boto3 through ``endpoint_url``."""

from __future__ import annotations

import contextlib
import datetime
import http.server
import json
import secrets
import threading
import time
from collections.abc import Iterator
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

import psycopg

from tests.pgserver import IAM_USER

_XML = """<GetClusterCredentialsResponse xmlns="http://redshift.amazonaws.com/doc/2012-12-01/">
  <GetClusterCredentialsResult>
    <DbUser>{user}</DbUser>
    <DbPassword>{password}</DbPassword>
    <Expiration>{expiration}</Expiration>
  </GetClusterCredentialsResult>
  <ResponseMetadata><RequestId>{request}</RequestId></ResponseMetadata>
</GetClusterCredentialsResponse>"""


class IamEndpoint:
    """Hands out logins of :data:`~tests.pgserver.IAM_USER` on the server at ``admin_url``
    (a superuser's URL), each valid ``lifetime`` seconds.

    A login request hands out the role's current password, made at the first request and
    by :meth:`rotate`. ``requests`` records each request's parameters.
    """

    def __init__(self, admin_url: str, lifetime: float) -> None:
        self.admin_url = admin_url
        self.lifetime = lifetime
        self.requests: list[dict[str, object]] = []
        self.password: str | None = None
        self._lock = threading.Lock()

    def rotate(self) -> str:
        """Give the role a new password (the old one stops working); it is handed out next."""
        with self._lock:
            self.password = f"tmp-{secrets.token_hex(8)}"
            with psycopg.connect(self.admin_url, autocommit=True) as db:
                db.execute(f"""ALTER ROLE "{IAM_USER}" PASSWORD '{self.password}'""")
            return self.password

    def login(self, parameters: dict[str, object]) -> tuple[str, float]:
        """The password to hand out for a request, and its expiry (seconds since the epoch)."""
        with self._lock:
            self.requests.append(parameters)
            current = self.password
        return current or self.rotate(), time.time() + self.lifetime


@contextlib.contextmanager
def running_iam_endpoint(
    admin_url: str, lifetime: float = 3600.0
) -> Iterator[tuple[str, IamEndpoint]]:
    """Serve an :class:`IamEndpoint` on a loopback port; yields its URL and itself."""
    endpoint = IamEndpoint(admin_url, lifetime)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            target = self.headers.get("X-Amz-Target", "")
            if target.endswith("GetCredentials"):  # Serverless: JSON 1.1
                request = json.loads(body or "{}")
                password, expires = endpoint.login(request)
                self._answer("application/x-amz-json-1.1", json.dumps({
                    "dbUser": IAM_USER, "dbPassword": password, "expiration": expires,
                    "nextRefreshTime": expires,
                }))  # fmt: skip
                return
            form = {key: values[0] for key, values in parse_qs(body).items()}
            if form.get("Action") != "GetClusterCredentials":
                self.send_error(400, f"unexpected request {form.get('Action')!r}")
                return
            password, expires = endpoint.login(dict(form))
            moment = datetime.datetime.fromtimestamp(expires, datetime.timezone.utc)
            self._answer("text/xml", _XML.format(
                user=escape(f"IAM:{form['DbUser']}"), password=escape(password),
                expiration=moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                request=secrets.token_hex(8),
            ))  # fmt: skip

        def _answer(self, kind: str, text: str) -> None:
            data = text.encode()
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", endpoint
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
