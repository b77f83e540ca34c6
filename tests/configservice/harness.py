"""
The configuration service in-process on real loopback ports, with a real
SQLite file in a temporary directory, and a blocking HTTP client run in
threads (independent of the reactor the service runs on).

The service's clock is a :class:`task.Clock` set to the current time:
tokens, modification times, heartbeats and long-poll timeouts follow it,
so tests move time forward by advancing it; the network runs on the real
reactor.
"""

from __future__ import annotations

import http.client
import json
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from configservice.tap import ConfigService, Options, build_service
from gateway.testing.waiting import wait_for

ADMIN_KEY = "test-admin-key-0123456789abcdef"


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def request_sync(port: int, method: str, path: str, body: Any = None,
                 headers: dict[str, str] | None = None, timeout: float = 30) -> Response:
    """One request with http.client; ``body`` is JSON-encoded unless it is bytes."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn.request(method, path, body=data, headers=headers or {})
        response = conn.getresponse()
        payload = response.read()
        return Response(response.status, {k.lower(): v for k, v in response.getheaders()}, payload)
    finally:
        conn.close()


def self_signed(hostname: str = "www.example.com", days: int = 30) -> tuple[str, str]:
    """A self-signed certificate and its key, PEM (for certificate entities)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return (
        cert.public_bytes(serialization.Encoding.PEM).decode(),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ).decode(),
    )


class ServiceTestCase(TestCase):
    """Starts a service per test; ``options`` adds command-line options."""

    timeout = 60
    options: list[str] = []

    @inlineCallbacks
    def setUp(self) -> Any:
        self.log_events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.log_events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.log_events.append)
        self.directory = tempfile.mkdtemp()
        self.db_path = os.path.join(self.directory, "config.db")
        self.clock = Clock()
        self.clock.advance(time.time())
        yield self.start_service()

    @inlineCallbacks
    def start_service(self) -> Any:
        options = Options(environ={})
        options.parseOptions([
            "--db", self.db_path,
            "--listen", "tcp:0:interface=127.0.0.1",
            "--management", "tcp:0:interface=127.0.0.1",
            "--admin-key", ADMIN_KEY,
            *self.options,
        ])
        self.service: ConfigService = build_service(options, reactor, clock=self.clock)
        self.service.startService()
        self.addCleanup(self.stop_service)
        gateway_port = yield self.service.listeners["gateway"].when_listening()
        management_port = yield self.service.listeners["management"].when_listening()
        self.gateway_port = gateway_port.getHost().port
        self.management_port = management_port.getHost().port

    def stop_service(self) -> Deferred[Any] | None:
        if self.service.running:
            return self.service.stopService()
        return None

    def manage(self, method: str, path: str, body: Any = None, key: str | None = ADMIN_KEY,
               headers: dict[str, str] | None = None) -> Deferred[Response]:
        """A management API call (authenticated with the admin key unless ``key`` is None)."""
        all_headers = dict(headers or {})
        if key is not None:
            all_headers["Authorization"] = f"Bearer {key}"
        return deferToThread(request_sync, self.management_port, method, path, body, all_headers)

    def call(self, method: str, path: str, token: str | None, body: Any = None) -> Deferred[Response]:
        """A gateway API call with ``token`` as its Authorization value."""
        headers = {"Authorization": token} if token is not None else {}
        return deferToThread(request_sync, self.gateway_port, method, path, body, headers)

    @inlineCallbacks
    def ok(self, method: str, path: str, body: Any = None) -> Any:
        """A management call that must succeed; its JSON."""
        response = yield self.manage(method, path, body)
        if response.status >= 300:
            self.fail(f"{method} {path}: {response.status} {response.body!r}")
        return response.json()

    @inlineCallbacks
    def token(self, gateway_id: str, key_type: str = "primary", expiry: str = "P29D") -> Any:
        answer = yield self.ok("POST", f"/gateways/{gateway_id}/generateToken",
                               {"keyType": key_type, "expiry": expiry})
        return answer["value"]

    @inlineCallbacks
    def api(self, api_id: str, path: str | None = None, **fields: Any) -> Any:
        body = {"path": path or api_id, "serviceUrl": f"http://127.0.0.1:9/{api_id}", **fields}
        return (yield self.ok("PUT", f"/apis/{api_id}", body))

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> Any:
        """Poll ``predicate()`` every 10 ms until true; fail after ``timeout`` seconds."""
        return wait_for(predicate, timeout, interval=0.01)

    def logged(self, text: str) -> list[str]:
        """The formatted log messages containing ``text``."""
        from twisted.logger import formatEvent

        return [m for m in (formatEvent(e) for e in self.log_events) if text in m]
