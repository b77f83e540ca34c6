"""
An in-process gateway on real loopback sockets, with a real backend, a
configuration file and an in-memory second source, plus a blocking HTTP
client run in threads (so the client is independent of the reactor the
gateway runs on).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import tempfile
from dataclasses import dataclass
from typing import Any, ClassVar

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from gateway.model import Store
from gateway.tap import Options, build_gateway
from gateway.testing.backends import scenario_site
from gateway.testing.memory import MemorySource
from gateway.testing.waiting import wait_for


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def json(self) -> Any:
        return json.loads(self.body)


def request_sync(
    port: int,
    method: str,
    path: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    conn: http.client.HTTPConnection | None = None,
) -> Response:
    """One request with http.client (repeated headers allowed)."""
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host="host" in {k.lower() for k, _ in headers or []},
                        skip_accept_encoding=True)
        for name, value in headers or []:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        data = response.read()
        return Response(response.status, response.getheaders(), data)
    finally:
        if own:
            conn.close()


def raw_exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes, read until the server closes (use Connection: close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


CONFIG = """\
apis:
  - name: echo
    path: echo
    serviceUrl: {backend}/api
    operations:
      - {{name: get-resource, method: GET, urlTemplate: /resource}}
      - {{name: post-resource, method: POST, urlTemplate: /resource}}
      - {{name: get-user, method: GET, urlTemplate: "/users/{{id}}"}}
  - name: open
    path: open
    serviceUrl: {backend}/base
routes:
  - path: /app
    pathType: Prefix
    backend: {backend}
  - host: preserved.example.com
    path: /keep
    backend: {backend}
    preserveHost: true
  - path: /dead
    backend: http://127.0.0.1:{dead_port}
"""


def dead_port() -> int:
    """A loopback port with nothing listening (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GatewayTestCase(TestCase):
    """Starts a backend and a gateway (file source + memory source) per test."""

    timeout = 60
    extra_args: list[str] = []
    #: settings given in the environment (``net.server.*`` have no option)
    environ: ClassVar[dict[str, str]] = {}

    @inlineCallbacks
    def setUp(self) -> Any:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

        self.backend_site = scenario_site(reactor)
        backend_port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            self.backend_site
        )
        self.addCleanup(backend_port.stopListening)
        self.backend_url = f"http://127.0.0.1:{backend_port.getHost().port}"
        self.dead_port = dead_port()

        tmp = tempfile.mkdtemp()
        self.config_path = os.path.join(tmp, "gateway.yaml")
        self.write_config(CONFIG.format(backend=self.backend_url, dead_port=self.dead_port))

        self.store = Store()
        self.memory = MemorySource(self.store)
        options = Options(environ={"TELEMETRY_LOGS_STD": "text", **self.environ})
        options.parseOptions(
            [
                "--http", "tcp:0:interface=127.0.0.1",
                "--https", "tcp:0:interface=127.0.0.1",
                "--admin", "tcp:0:interface=127.0.0.1",
                "--config", self.config_path,
                "--poll-interval", "0.05",
                "--grace", "5",
                *self.extra_args,
            ]
        )
        self.gateway = build_gateway(
            options, reactor, store=self.store, extra_sources=[self.memory]
        )
        self.gateway.startService()
        self.addCleanup(self._stop_gateway)
        yield self.gateway.reconciler.when_live()
        self.port = self.gateway.listeners["http"].port.getHost().port
        https = self.gateway.listeners.get("https")
        self.https_port = https.port.getHost().port if https is not None else None
        self.admin_port = self.gateway.listeners["admin"].port.getHost().port

    def _stop_gateway(self) -> Deferred[Any] | None:
        if self.gateway.running:
            return self.gateway.stopService()
        return None

    def write_config(self, text: str) -> None:
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.config_path)

    def get(self, path: str, **kw: Any) -> Deferred[Response]:
        return deferToThread(request_sync, self.port, "GET", path, **kw)

    def request(self, method: str, path: str, **kw: Any) -> Deferred[Response]:
        return deferToThread(request_sync, self.port, method, path, **kw)

    def admin(self, path: str) -> Deferred[Response]:
        return deferToThread(request_sync, self.admin_port, "GET", path)

    def install_routes(self, *entries: Any, keep: bool = True) -> None:
        """
        Make ``entries`` live as a reconciler swap would (a new generation
        with the same certificates), beside the current routes or, with
        ``keep=False``, instead of them: for route entries no source
        builds by hand (Gateway API variants, for instance).
        """
        from dataclasses import replace

        from gateway.routing import Generation, RouteTable

        reconciler = self.gateway.reconciler
        current = reconciler.current
        assert current is not None
        routes = (*current.config.routes, *entries) if keep else tuple(entries)
        reconciler.current = Generation(
            current.number + 1,
            replace(current.config, routes=routes),
            RouteTable.build(list(routes)),
            current.created,
            current.sni,
        )

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> Deferred[Any]:
        """Poll ``predicate()`` (may return a Deferred) until true; fail after ``timeout`` s."""
        return wait_for(predicate, timeout, f"condition {predicate!r}", interval=0.05)

    def logged(self, text: str) -> list[dict[str, Any]]:
        """Log events whose formatted text contains ``text``."""
        from twisted.logger import formatEvent

        return [e for e in self.events if text in formatEvent(e)]
