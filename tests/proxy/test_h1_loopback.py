"""
Our HTTP/1.1 server (:mod:`gateway.proxy._h1`) on real loopback sockets: a
small resource answered to blocking clients run in threads (so the client
is independent of the reactor), malformed input answered and closed without
a hang, a large streamed response under backpressure, and the real proxy
resource with a real backend (the integration harness's gateway, its
resource also served by our protocol on a second port).
"""

from __future__ import annotations

import http.client
import socket
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IPushProducer
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from gateway.proxy._h1 import H1Server
from gateway.proxy._h1limits import H1Limits
from tests.integration.harness import GatewayTestCase, raw_exchange, request_sync

from .test_h1 import MALFORMED, parse_responses


@implementer(IPushProducer)
class _Streamer:
    """Writes ``size`` bytes as fast as the client's connection allows (push producer)."""

    def __init__(self, request: Any, size: int) -> None:
        self.request = request
        self.left = size
        self.paused = False
        self.pauses = 0
        request.registerProducer(self, True)
        reactor.callLater(0, self.resumeProducing)

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.paused = False
        chunk = b"x" * 65536
        while not self.paused and self.left > 0 and self.request.channel is not None:
            piece = chunk[: min(self.left, len(chunk))]
            self.left -= len(piece)
            self.request.write(piece)
        if self.left == 0 and self.request.channel is not None and not self.request.finished:
            self.request.unregisterProducer()
            self.request.finish()

    def stopProducing(self) -> None:
        self.left = 0


class Small(Resource):
    """Echoes the method, target and body; ``/big?<n>`` streams n bytes with a producer."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.rendered = 0
        self.streamers: list[_Streamer] = []

    def render(self, request: Any) -> Any:
        self.rendered += 1
        if request.uri.startswith(b"/big?"):
            size = int(request.uri[5:])
            request.setHeader(b"content-length", b"%d" % size)
            self.streamers.append(_Streamer(request, size))
            return NOT_DONE_YET
        body = request.content.file.read() if request.content is not None else b""
        return request.method + b" " + request.uri + b" " + body


class LoopbackTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self) -> Any:
        self.resource = Small()
        self.server = H1Server(
            self.resource, reactor, H1Limits(header_timeout=2, body_timeout=2, linger=1)
        )
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(self.server)
        self.addCleanup(port.stopListening)
        self.addCleanup(self._close_all)
        self.port = port.getHost().port

    def _close_all(self) -> None:
        for channel in list(self.server.channels):
            if channel.transport is not None:
                channel.transport.abortConnection()

    @inlineCallbacks
    def test_keep_alive_requests(self) -> Any:
        """http.client's keep-alive requests (GET, POST, HEAD) are answered on one connection."""

        def run() -> list[Any]:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                out = [request_sync(self.port, "GET", "/a", conn=conn)]
                out.append(request_sync(self.port, "POST", "/p", body=b"payload", conn=conn))
                out.append(request_sync(self.port, "HEAD", "/h", conn=conn))
                out.append(request_sync(self.port, "GET", "/b", conn=conn))
                return out
            finally:
                conn.close()

        responses = yield deferToThread(run)
        self.assertEqual([r.status for r in responses], [200] * 4)
        self.assertEqual(
            [r.body for r in responses], [b"GET /a ", b"POST /p payload", b"", b"GET /b "]
        )
        self.assertEqual(responses[2].header("content-length"), "8")
        self.assertEqual(self.server.accepted, 1)

    @inlineCallbacks
    def test_pipelined(self) -> Any:
        """Ten requests in one segment are answered in order."""
        data = b"".join(
            b"GET /%d HTTP/1.1\r\nHost: a\r\n%s\r\n"
            % (i, b"Connection: close\r\n" if i == 9 else b"")
            for i in range(10)
        )
        raw = yield deferToThread(raw_exchange, self.port, data)
        bodies = [body for _, _, body in parse_responses(raw)]
        self.assertEqual(bodies, [b"GET /%d " % i for i in range(10)])

    @inlineCallbacks
    def test_continue(self) -> Any:
        """A client that waits for 100 Continue gets it, sends its body, and gets the answer."""

        def run() -> tuple[bytes, bytes]:
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
                s.sendall(
                    b"PUT /u HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                    b"Content-Length: 4\r\nConnection: close\r\n\r\n"
                )
                interim = s.recv(100)
                s.sendall(b"data")
                rest = b""
                while chunk := s.recv(65536):
                    rest += chunk
                return interim, rest

        interim, rest = yield deferToThread(run)
        self.assertEqual(interim, b"HTTP/1.1 100 Continue\r\n\r\n")
        self.assertEqual(parse_responses(rest)[0][2], b"PUT /u data")

    @inlineCallbacks
    def test_malformed_never_hang(self) -> Any:
        """Every malformed request of the table is answered and closed by the server, then the server still serves."""
        for name, data, status in MALFORMED:
            raw = yield deferToThread(raw_exchange, self.port, data, 5.0)
            self.assertTrue(raw.startswith(b"HTTP/1.1 %d " % status), (name, raw[:40]))
        self.assertEqual(self.resource.rendered, 0)
        r = yield deferToThread(request_sync, self.port, "GET", "/after")
        self.assertEqual((r.status, r.body), (200, b"GET /after "))

    @inlineCallbacks
    def test_slow_clients(self) -> Any:
        """
        Over real sockets, a slow header and a stalled body are answered 408
        and closed (the header and body timeouts, 2 s here; when they fire
        is tested on a fake clock in test_h1), never reaching the resource.
        """

        def run(first: bytes) -> bytes:
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
                s.sendall(first)
                raw = b""
                while chunk := s.recv(65536):
                    raw += chunk
            return raw

        for first in (
            b"GET / HTTP/1.1\r\nHost: a\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc",
        ):
            raw = yield deferToThread(run, first)
            self.assertTrue(raw.startswith(b"HTTP/1.1 408 "), raw)
        self.assertEqual(self.resource.rendered, 0)

    @inlineCallbacks
    def test_backpressure(self) -> Any:
        """A 32 MB response to a client that reads slowly pauses the producer, and arrives whole."""
        size = 32 * 1024 * 1024

        def run() -> int:
            with socket.create_connection(("127.0.0.1", self.port), timeout=20) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
                s.sendall(b"GET /big?%d HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" % size)
                time.sleep(0.5)  # the server fills the socket buffers meanwhile
                total = 0
                while chunk := s.recv(1 << 20):
                    total += len(chunk)
                return total

        total = yield deferToThread(run)
        head = total - size
        self.assertTrue(0 < head < 200, total)
        self.assertGreater(self.resource.streamers[0].pauses, 0)


class RealProxyTests(GatewayTestCase):
    """The real proxy resource and a real backend, served by our protocol."""

    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        resource = self.gateway.listeners["http"].resource
        self.h1 = H1Server(resource, reactor)
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(self.h1)
        self.addCleanup(port.stopListening)
        self.addCleanup(self.h1.close_idle_connections)
        self.h1_port = port.getHost().port

    @inlineCallbacks
    def test_proxied(self) -> Any:
        """An API call, a plain route, a POST body, HEAD, 204, a 404 envelope and a large body go through the proxy."""

        def run() -> list[Any]:
            conn = http.client.HTTPConnection("127.0.0.1", self.h1_port, timeout=20)
            try:
                out = [request_sync(self.h1_port, "GET", "/echo/resource?p=1", conn=conn)]
                out.append(
                    request_sync(self.h1_port, "POST", "/echo/resource", body=b"hello", conn=conn)
                )
                out.append(request_sync(self.h1_port, "HEAD", "/app/x", conn=conn))
                out.append(request_sync(self.h1_port, "GET", "/app/x?status=204", conn=conn))
                out.append(request_sync(self.h1_port, "GET", "/nowhere", conn=conn))
                out.append(request_sync(self.h1_port, "GET", "/app/big?size=5000000", conn=conn))
                return out
            finally:
                conn.close()

        get, post, head, empty, missing, big = yield deferToThread(run)
        self.assertEqual(
            (get.status, get.json()["path"], get.json()["query"]), (200, "/api/resource", "p=1")
        )
        self.assertEqual(post.json()["body"], "hello")
        self.assertEqual((head.status, head.body), (200, b""))
        self.assertEqual((empty.status, empty.body), (204, b""))
        self.assertEqual((missing.status, missing.json()["statusCode"]), (404, 404))
        self.assertEqual(len(big.body), 5000000)
        self.assertEqual(self.h1.accepted, 1)

    @inlineCallbacks
    def test_malformed_does_not_reach_the_backend(self) -> Any:
        """Malformed requests to the proxy are refused before the backend; the next request is served."""
        before = self.backend_site.connections
        raw = yield deferToThread(
            raw_exchange, self.h1_port, b"GET /app/x HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n"
        )
        self.assertTrue(raw.startswith(b"HTTP/1.1 400 "), raw)
        raw = yield deferToThread(raw_exchange, self.h1_port, b"GET /app/x HTTP/1.1\r\n\r\n")
        self.assertTrue(raw.startswith(b"HTTP/1.1 400 "), raw)
        self.assertEqual(self.backend_site.connections, before)
        r = yield deferToThread(request_sync, self.h1_port, "GET", "/app/after")
        self.assertEqual(r.status, 200)
