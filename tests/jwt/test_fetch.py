"""
:func:`gateway.jwt.http_fetch` over real loopback sockets: status, size
limit, deadline (on a fake clock) and certificate verification.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from twisted.internet import reactor, ssl
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from gateway.jwt import FetchError, http_fetch
from gateway.testing.certs import self_signed


class _Server(Resource):
    """``/ok``, ``/missing`` (404), ``/big`` (length known), ``/stream`` (chunked), ``/hang``."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.arrived: Deferred[Request] = Deferred()
        self.pending: list[Request] = []

    def render_GET(self, request: Request) -> bytes | int:
        path = request.path
        if path == b"/ok":
            return b'{"ok": true}'
        if path == b"/big":
            return b"x" * 2048
        if path == b"/stream":
            for _ in range(8):
                request.write(b"y" * 512)
            request.finish()
            return NOT_DONE_YET
        if path == b"/hang":
            self.pending.append(request)
            self.arrived.callback(request)
            return NOT_DONE_YET
        request.setResponseCode(404)
        return b"{}"


class FetchTests(TestCase):
    """The fetch the key cache uses in production."""

    def setUp(self) -> None:
        self.server = _Server()
        site = Site(self.server)
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(self.port.stopListening)
        self.base = f"http://127.0.0.1:{self.port.getHost().port}"

        def abort() -> None:
            for request in self.server.pending:
                request.channel.transport.abortConnection()  # type: ignore[union-attr]

        self.addCleanup(abort)

    @inlineCallbacks
    def test_ok(self) -> Generator[Deferred[Any], Any, None]:
        """A 200 gives its body."""
        body = yield http_fetch(reactor)(self.base + "/ok")
        self.assertEqual(body, b'{"ok": true}')

    @inlineCallbacks
    def test_status(self) -> Generator[Deferred[Any], Any, None]:
        """Any other status is a FetchError naming it."""
        error = yield self.assertFailure(http_fetch(reactor)(self.base + "/missing"), FetchError)
        self.assertEqual(str(error), "HTTP 404")

    @inlineCallbacks
    def test_size_limit(self) -> Generator[Deferred[Any], Any, None]:
        """A body over the limit fails, whether its length is announced or streamed."""
        fetch = http_fetch(reactor, max_bytes=1024)
        for path in ("/big", "/stream"):
            error = yield self.assertFailure(fetch(self.base + path), FetchError)
            self.assertIn("exceeds 1024 bytes", str(error))

    @inlineCallbacks
    def test_deadline(self) -> Generator[Deferred[Any], Any, None]:
        """A provider that never answers fails the fetch when the deadline passes on the clock."""
        clock = Clock()
        fetching = http_fetch(reactor, timeout=7.0, clock=clock)(self.base + "/hang")
        yield self.server.arrived
        clock.advance(7.0)
        error = yield self.assertFailure(fetching, FetchError)
        self.assertEqual(str(error), "timed out after 7 s")

    @inlineCallbacks
    def test_https_verified(self) -> Generator[Deferred[Any], Any, None]:
        """An HTTPS provider whose certificate is not trusted is refused (no key is ever read)."""
        issued = self_signed("localhost")
        cert = ssl.PrivateCertificate.loadPEM(issued.cert_pem + issued.key_pem)
        port = reactor.listenSSL(  # type: ignore[attr-defined]
            0, Site(self.server), cert.options(), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        url = f"https://localhost:{port.getHost().port}/ok"
        failure = yield self.assertFailure(http_fetch(reactor)(url), Exception)
        self.assertIn("certificate", repr(failure).lower())
