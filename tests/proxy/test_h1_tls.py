"""
The HTTPS listener with the strict HTTP/1.1 server (:mod:`gateway.proxy._alpn`)
over real TLS on loopback: the integration harness's gateway (its
certificates, SNI map and proxy resource, a real backend) and a second HTTPS
listener built here as the gateway builds it with ``gateway.http1.server:
strict`` (:func:`~gateway.proxy.listener_factory` wrapped in
:class:`~gateway.tls.TLSServerFactory`). Clients are blocking OpenSSL
clients in threads (``tests.integration.tlsclient``).
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
from types import SimpleNamespace
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from gateway.model import Api
from gateway.proxy import (
    ALPNServer,
    GatewaySite,
    H1Limits,
    H1Server,
    TrafficListener,
    listener_factory,
)
from gateway.tls import SNIConnectionCreator, TLSServerFactory
from tests.integration.test_tls import TLSTestCase
from tests.integration.tlsclient import (
    TLSSession,
    client_context,
    h2_request,
    h2_request_then_wait_for_close,
    tls_connect,
)

from .test_h1 import parse_responses

#: Accepted by twisted.web, refused by the strict server (RFC 9112 §5.2, §3.2).
OBS_FOLD = b"GET /app/x HTTP/1.1\r\nHost: www.example.com\r\nX-A: a\r\n b\r\n\r\n"
NO_HOST = b"GET /app/x HTTP/1.1\r\n\r\n"

#: The request body limit of the listener under test.
MAX_BODY = 64 * 1024

#: The client offers http/1.1 only, or no ALPN at all.
HTTP11_CLIENTS: tuple[tuple[str, ...] | None, ...] = (("http/1.1",), None)


def read_to_end(sock: ssl.SSLSocket) -> bytes:
    """
    Read until the server's close_notify. A close without it (a TCP close
    under TLS: a truncation attack to the client) raises ``SSLEOFError``.
    """
    sock.suppress_ragged_eofs = False
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ssl.SSLZeroReturnError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def tls_exchange(
    port: int, data: bytes, alpn: tuple[str, ...] | None = ("http/1.1",),
    server_name: str = "www.example.com",
) -> tuple[str | None, bytes]:
    """Send ``data`` over a new TLS connection; read until the server closes."""
    session = tls_connect(port, server_name, client_context(alpn=alpn))
    try:
        session.sock.sendall(data)
        return session.alpn, read_to_end(session.sock)
    finally:
        session.close()


class StrictHTTPSTestCase(TLSTestCase):
    """Adds an HTTPS listener on the gateway's resource, built by :func:`listener_factory`."""

    strict = True

    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        self.refused: list[int] = []
        https = self.gateway.listeners["https"]
        server: Any = listener_factory(
            https.resource,
            reactor,
            strict=self.strict,
            tls=True,
            limits=H1Limits(header_timeout=1, linger=1, max_body=MAX_BODY),
            on_refused=lambda request, status, message, sent: self.refused.append(status),
        )
        self.server = server
        live: Any = self.gateway.reconciler.current
        creator = SNIConnectionCreator(self.gateway.reconciler, live.sni)
        # A health object of its own: stopping this listener must not make
        # the gateway's readiness fail.
        self.listener = TrafficListener(
            reactor,
            "tcp:0:interface=127.0.0.1",
            self.server,
            https.resource,
            SimpleNamespace(draining=False),
            name="https-strict",
            grace=5,
            factory=TLSServerFactory(creator, server, clock=reactor),
        )
        self.listener.startService()
        self.addCleanup(self._stop_listener)
        yield self.wait_for(lambda: self.listener.port is not None)
        self.tls_port = self.listener.port.getHost().port

    def _stop_listener(self) -> Any:
        if self.listener.running:
            return self.listener.stopService()
        return None

    def connect(
        self, server_name: str | None = "www.example.com", alpn: tuple[str, ...] | None = ("http/1.1",)
    ) -> Any:
        d = deferToThread(tls_connect, self.tls_port, server_name, client_context(alpn=alpn))

        def opened(session: TLSSession) -> TLSSession:
            self.addCleanup(session.close)
            return session

        return d.addCallback(opened)


class StrictHTTP11Tests(StrictHTTPSTestCase):
    def test_factory(self) -> None:
        """gateway.http1.server: strict serves the HTTPS listener with the ALPN switch."""
        self.assertIsInstance(self.server, ALPNServer)

    @inlineCallbacks
    def test_http11_and_no_alpn_served(self) -> Any:
        """
        Clients offering http/1.1, and clients offering no ALPN, are served
        by the strict server, keep-alive, through the proxy with
        X-Forwarded-Proto https.
        """
        for alpn in HTTP11_CLIENTS:
            session = yield self.connect(alpn=alpn)
            self.assertEqual(session.alpn, alpn[0] if alpn else None)
            for query in ("a=1", "a=2"):
                r = yield deferToThread(
                    session.request, "GET", f"/echo/resource?{query}", "www.example.com"
                )
                self.assertEqual(r.status, 200)
                echo = r.json()
                self.assertEqual((echo["path"], echo["query"]), ("/api/resource", query))
                headers = {k.lower(): v for k, v in echo["headers"]}
                self.assertEqual(headers["x-forwarded-proto"], "https")
        assert isinstance(self.server, ALPNServer)
        self.assertEqual(self.server.h1.accepted, 2)
        self.assertEqual(len(self.server.site.channels), 0)

    @inlineCallbacks
    def test_tls_records_held_for_the_end_of_the_iteration(self) -> Any:
        """
        Under TLS the held write (gateway.netio) is on the TCP connection
        under the TLS protocol: the encrypted records of one iteration go
        out together, and keep-alive requests are answered whole.
        """
        from gateway.netio import _Writer

        session = yield self.connect()
        for query in ("a=1", "a=2", "a=3"):
            r = yield deferToThread(session.request, "GET", f"/echo/resource?{query}", "www.example.com")
            self.assertEqual((r.status, r.json()["query"]), (200, query))
        assert isinstance(self.server, ALPNServer)
        [channel] = self.server.h1.channels
        tcp = channel.transport.transport
        self.assertIsInstance(vars(tcp)["write"].__self__, _Writer)

    @inlineCallbacks
    def test_refusals(self) -> Any:
        """
        An obs-folded header and a request without Host (both accepted by
        twisted.web) are answered 400 with the envelope and the connection
        closed, with ALPN http/1.1 and without ALPN; the backend never sees
        them, on_refused counts them, and the listener serves afterwards.
        """
        before = self.backend_site.connections
        for alpn in HTTP11_CLIENTS:
            for data in (OBS_FOLD, NO_HOST):
                _, raw = yield deferToThread(tls_exchange, self.tls_port, data, alpn)
                [(status, headers, body)] = parse_responses(raw)
                self.assertEqual(status, 400, (alpn, data))
                self.assertEqual(headers[b"connection"], b"close")
                self.assertEqual(json.loads(body)["statusCode"], 400)
        self.assertEqual(self.backend_site.connections, before)
        self.assertEqual(self.refused, [400] * 4)
        session = yield self.connect()
        r = yield deferToThread(session.request, "GET", "/app/after", "www.example.com")
        self.assertEqual(r.status, 200)

    @inlineCallbacks
    def test_bodies_both_ways(self) -> Any:
        """A POST body reaches the backend and a 5 MB answer streams back, on one TLS connection."""
        session = yield self.connect()

        def run() -> tuple[Any, int, int]:
            conn = http.client.HTTPConnection("www.example.com", timeout=30)
            conn.sock = session.sock
            conn.request("POST", "/echo/resource", body=b"hello over tls")
            posted = conn.getresponse()
            echo = json.loads(posted.read())
            conn.request("GET", "/app/big?size=5000000")
            big = conn.getresponse()
            return echo, big.status, len(big.read())

        echo, status, size = yield deferToThread(run)
        self.assertEqual((echo["method"], echo["body"]), ("POST", "hello over tls"))
        self.assertEqual((status, size), (200, 5000000))
        self.assertEqual(self.server.h1.accepted, 1)

    @inlineCallbacks
    def test_upload_over_the_limit_reads_413(self) -> Any:
        """
        A client declaring a body over the limit gets 413 at once and, while
        it keeps sending the body, the server keeps reading (TLS half-close:
        close_notify, no reset), so the client reads the whole answer.
        """
        body = b"x" * (4 * 1024 * 1024)

        def run() -> bytes:
            session = tls_connect(self.tls_port, "www.example.com", client_context())
            try:
                session.sock.sendall(
                    b"POST /echo/resource HTTP/1.1\r\nHost: www.example.com\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body)
                )
                session.sock.sendall(body)
                return read_to_end(session.sock)
            finally:
                session.close()

        raw = yield deferToThread(run)
        [(status, headers, answer)] = parse_responses(raw)
        self.assertEqual((status, headers[b"connection"]), (413, b"close"))
        self.assertEqual(json.loads(answer)["statusCode"], 413)
        self.assertEqual(self.backend_site.connections, 0)
        # The server is still reading (and dropping) the body when the
        # client closes; the connection ends once it sees the close.
        yield self.wait_for(lambda: not list(self.server.h1.channels))

    @inlineCallbacks
    def test_pipelined(self) -> Any:
        """Five requests in one TLS write are answered in order, then the connection closes."""
        data = b"".join(
            b"GET /echo/users/%d HTTP/1.1\r\nHost: www.example.com\r\n%s\r\n"
            % (i, b"Connection: close\r\n" if i == 4 else b"")
            for i in range(5)
        )
        _, raw = yield deferToThread(tls_exchange, self.tls_port, data)
        responses = parse_responses(raw)
        self.assertEqual([status for status, _, _ in responses], [200] * 5)
        self.assertEqual(
            [json.loads(body)["path"] for _, _, body in responses],
            [f"/api/users/{i}" for i in range(5)],
        )

    @inlineCallbacks
    def test_http2_stays_on_h2(self) -> Any:
        """
        A client that negotiates h2 is served by Twisted's HTTP/2 (three
        concurrent streams and a POST) through the same proxy resource; the
        HTTP/1.1 server lets go of the connection.
        """
        responses = yield deferToThread(
            h2_request, self.tls_port, "www.example.com", "GET", "/echo/users/7", streams=3
        )
        self.assertEqual([(r.status, r.alpn) for r in responses], [(200, "h2")] * 3)
        for response in responses:
            headers = {k.lower(): v for k, v in json.loads(response.body)["headers"]}
            self.assertEqual(headers["x-forwarded-proto"], "https")
        [posted] = yield deferToThread(
            h2_request, self.tls_port, "www.example.com", "POST", "/echo/resource",
            body=b"hello over h2",
        )
        self.assertEqual(json.loads(posted.body)["body"], "hello over h2")
        assert isinstance(self.server, ALPNServer)
        self.assertEqual(list(self.server.h1.channels), [])
        self.assertEqual(self.refused, [])

    @inlineCallbacks
    def test_sni_chooses_certificate(self) -> Any:
        """SNI still picks the certificate (exact, wildcard, default), and the connection is served."""
        expected = {
            "www.example.com": self.www.fingerprint,
            "api.example.com": self.wild.fingerprint,
            None: self.fallback.fingerprint,
        }
        for name, fingerprint in expected.items():
            session = yield self.connect(server_name=name)
            self.assertEqual(session.fingerprint, fingerprint, name)
            r = yield deferToThread(session.request, "GET", "/app/x", name or "fallback.test")
            self.assertEqual(r.status, 200)

    @inlineCallbacks
    def test_api_protocols(self) -> Any:
        """An API served on https only is served here; one on http only is 404."""
        self.memory.put(
            "tls-only", Api("tls-only", "tls-only", self.backend_url, protocols=("https",)), 20.0
        )
        self.memory.put(
            "plain-only", Api("plain-only", "plain-only", self.backend_url, protocols=("http",)),
            20.0,
        )
        yield self.swapped()
        session = yield self.connect()
        r = yield deferToThread(session.request, "GET", "/tls-only/x", "www.example.com")
        self.assertEqual((r.status, r.json()["path"]), (200, "/x"))
        r = yield deferToThread(session.request, "GET", "/plain-only/x", "www.example.com")
        self.assertEqual((r.status, r.json()["statusCode"]), (404, 404))

    @inlineCallbacks
    def test_drain_closes_idle_connections(self) -> Any:
        """
        Stopping the listener closes an idle HTTP/1.1 connection (a clean
        TLS close: close_notify) and tells an idle HTTP/2 connection GOAWAY.
        """
        session = yield self.connect()
        r = yield deferToThread(session.request, "GET", "/echo/resource", "www.example.com")
        self.assertEqual(r.status, 200)
        answered = threading.Event()
        h2_client = deferToThread(
            h2_request_then_wait_for_close, self.tls_port, "www.example.com",
            "/echo/resource", answered,
        )
        while not answered.is_set():
            yield deferLater(reactor, 0.01, lambda: None)
        yield self.listener.stopService()
        data = yield deferToThread(read_to_end, session.sock)
        self.assertEqual(data, b"")
        events = yield h2_client
        self.assertIn("ConnectionTerminated", events)
        self.assertTrue(self.logged("https-strict listener drained; closed 2 idle connections"))

    @inlineCallbacks
    def test_silent_clients_closed(self) -> Any:
        """
        A connection that never starts its handshake, and one that completes
        it and sends nothing, are closed at the header timeout (1 s here).
        """

        def silent_tcp() -> bytes:
            with socket.create_connection(("127.0.0.1", self.tls_port), timeout=10) as s:
                try:
                    return s.recv(100)
                except ConnectionResetError:
                    # Twisted's TLS aborts a connection closed before its
                    # handshake (no close_notify is possible yet).
                    return b""

        self.assertEqual((yield deferToThread(silent_tcp)), b"")
        session = yield self.connect()
        self.assertEqual((yield deferToThread(read_to_end, session.sock)), b"")
        self.assertEqual(self.refused, [])

    @inlineCallbacks
    def test_client_ignoring_close_notify_aborted(self) -> Any:
        """
        After a refusal the server sends close_notify and keeps reading; a
        client that neither answers nor closes is aborted after the linger
        (1 s here), so the connection does not stay open.
        """
        session = yield self.connect()
        session.sock.sendall(NO_HOST)
        assert isinstance(self.server, ALPNServer)
        yield self.wait_for(lambda: self.refused == [400])
        yield self.wait_for(lambda: not list(self.server.h1.channels))


class TwistedHTTPSTests(StrictHTTPSTestCase):
    """``gateway.http1.server: twisted``: both listeners keep twisted.web."""

    strict = False

    def test_factory(self) -> None:
        """The HTTPS and the plain listener get twisted.web's site."""
        self.assertIsInstance(self.server, GatewaySite)
        plain = listener_factory(self.gateway.listeners["http"].resource, reactor, strict=False, tls=False)
        self.assertIsInstance(plain, GatewaySite)
        strict_plain = listener_factory(
            self.gateway.listeners["http"].resource, reactor, strict=True, tls=False
        )
        self.assertIsInstance(strict_plain, H1Server)

    @inlineCallbacks
    def test_obs_fold_accepted(self) -> Any:
        """twisted.web serves the obs-folded request the strict server refuses (the contrast above)."""
        _, raw = yield deferToThread(
            tls_exchange, self.tls_port, OBS_FOLD.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
        )
        [(status, _, _)] = parse_responses(raw)
        self.assertEqual(status, 200)

    @inlineCallbacks
    def test_http2(self) -> Any:
        """HTTP/2 is served as before."""
        [response] = yield deferToThread(
            h2_request, self.tls_port, "www.example.com", "GET", "/echo/users/7"
        )
        self.assertEqual((response.status, response.alpn), (200, "h2"))
