"""
Tests for :mod:`gateway.proxy._client`, the pooled HTTP/1.1 backend client.

The backends are raw HTTP servers on loopback sockets, written here so each
test controls the framing byte for byte: what the backend sends, when, and
when it closes. Only the connect timeout uses a fake reactor, because no real
socket fails to connect deterministically.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import ipaddress
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from httptools import HttpParserError, HttpRequestParser
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import UserError
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, PrivateCertificate, trustRootFromCertificates
from twisted.internet.task import Clock, deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from gateway.proxy._client import (
    BODY_CHUNK,
    BackendConnectError,
    BackendConnectionLost,
    BackendConnectTimeout,
    BackendError,
    BackendPool,
    BackendProtocolError,
    BackendResponseTimeout,
    BackendTimeout,
    Exchange,
)
from gateway.translate import Backend

# -- a raw backend ------------------------------------------------------------


@dataclass
class _Request:
    """One request as the backend parsed it, with a handle to answer it."""

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    conn: _BackendProtocol

    def write(self, data: bytes) -> None:
        self.conn.transport.write(data)

    def close(self) -> None:
        self.conn.transport.loseConnection()

    def abort(self) -> None:
        self.conn.transport.abortConnection()


class _BackendProtocol(Protocol):
    """Parses requests with httptools and hands each to the factory's handler."""

    factory: _BackendFactory

    def connectionMade(self) -> None:
        self.factory.connections.append(self)
        if self.factory.pause_on_connect:
            self.transport.pauseProducing()
        self.lost: Deferred[None] = Deferred()
        self._parser = HttpRequestParser(self)
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        request = _Request(
            self._parser.get_method(), self._url, self._headers, b"".join(self._body), self
        )
        self._reset()
        self.factory.requests.append(request)
        self.factory.handler(request)

    def dataReceived(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except HttpParserError:
            self.transport.abortConnection()

    def connectionLost(self, reason: Failure) -> None:
        self.factory.lost += 1
        self.lost.callback(None)


class _BackendFactory(Factory):
    protocol = _BackendProtocol
    noisy = False

    def __init__(self, handler: Callable[[_Request], object]) -> None:
        self.handler = handler
        self.connections: list[_BackendProtocol] = []
        self.requests: list[_Request] = []
        self.lost = 0
        #: accept connections without reading from them (until resumed)
        self.pause_on_connect = False

    @property
    def accepted(self) -> int:
        return len(self.connections)


def _ok(body: bytes = b"hello", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def _answer(raw: bytes) -> Callable[[_Request], None]:
    """A handler that answers every request with ``raw``."""
    return lambda request: request.write(raw)


# -- a recording sink -----------------------------------------------------------


class _Sink:
    """Records every call; ``done`` fires after the last one."""

    def __init__(
        self,
        on_started: Callable[[_Sink], object] | None = None,
        on_body: Callable[[_Sink, bytes], object] | None = None,
        on_finished: Callable[[_Sink], object] | None = None,
    ) -> None:
        self.calls: list[str] = []
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.producer: IPushProducer | None = None
        self.failure: Failure | None = None
        self.done: Deferred[_Sink] = Deferred()
        self._on_started = on_started
        self._on_body = on_body
        self._on_finished = on_finished

    def response_started(
        self,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        producer: IPushProducer,
    ) -> None:
        self.calls.append("started")
        self.status, self.reason, self.headers = status, reason, headers
        self.producer = producer
        if self._on_started is not None:
            self._on_started(self)

    def body_received(self, data: bytes) -> None:
        self.calls.append("body")
        self.body += data
        if self._on_body is not None:
            self._on_body(self, data)

    def response_finished(self) -> None:
        self.calls.append("finished")
        if self._on_finished is not None:
            self._on_finished(self)
        self.done.callback(self)

    def response_failed(self, reason: Failure) -> None:
        self.calls.append("failed")
        self.failure = reason
        self.done.callback(self)


async def _wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` on the real reactor until it holds."""
    waited = 0.0
    while not predicate():
        if waited >= timeout:
            raise AssertionError("condition not reached in time")
        await deferLater(reactor, 0.01, lambda: None)
        waited += 0.01


class _ClientTestCase(TestCase):
    """Starts loopback backends and pools, and cleans both up."""

    def start_backend(
        self, handler: Callable[[_Request], object], tls: Any = None, receive_buffer: int = 0
    ) -> tuple[_BackendFactory, Backend]:
        """
        Listen on a loopback port; ``receive_buffer`` shrinks the accepted
        sockets' receive buffer so that a client's sending blocks early.
        """
        factory = _BackendFactory(handler)
        if tls is None:
            port = reactor.listenTCP(0, factory, interface="127.0.0.1")
            scheme = "http"
        else:
            port = reactor.listenSSL(0, factory, tls, interface="127.0.0.1")
            scheme = "https"
        if receive_buffer:
            port.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.addCleanup(self._stop_backend, port, factory)
        number = port.getHost().port
        return factory, Backend(scheme, "127.0.0.1", number, "", f"127.0.0.1:{number}")

    async def _stop_backend(self, port: Any, factory: _BackendFactory) -> None:
        await port.stopListening()
        for conn in factory.connections:
            if not conn.lost.called:
                conn.transport.abortConnection()
        await gatherResults([conn.lost for conn in factory.connections])

    def make_pool(self, **kwargs: Any) -> BackendPool:
        pool = BackendPool(reactor, **kwargs)
        self.addCleanup(pool.close)
        return pool

    def send(
        self,
        pool: BackendPool,
        backend: Backend,
        method: bytes = b"GET",
        target: bytes = b"/",
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes | io.BytesIO | None = None,
        body_length: int = 0,
        sink: _Sink | None = None,
    ) -> _Sink:
        sink = sink if sink is not None else _Sink()
        if headers is None:
            headers = [(b"Host", backend.authority.encode("ascii"))]
        pool.request(backend, method, target, headers, body, body_length, sink)
        return sink

    def assertFailedWith(self, sink: _Sink, kind: type[BackendError]) -> BackendError:
        self.assertEqual(sink.calls[-1], "failed", sink.calls)
        assert sink.failure is not None
        self.assertIsInstance(sink.failure.value, kind)
        return sink.failure.value


# -- framing ----------------------------------------------------------------------


class FramingTests(_ClientTestCase):
    """Response bodies are delimited as HTTP/1.1 says."""

    async def test_content_length(self) -> None:
        """A Content-Length body arrives whole and the connection is pooled."""
        server, backend = self.start_backend(_answer(_ok(b"hello")))
        pool = self.make_pool()
        sink = await self.send(pool, backend).done
        self.assertEqual(sink.calls[0], "started")
        self.assertEqual(sink.calls[-1], "finished")
        self.assertEqual((sink.status, sink.reason, sink.body), (200, b"OK", b"hello"))
        self.assertEqual(pool.idle_count(), 1)
        self.assertEqual(pool.idle_count(backend.key), 1)

    async def test_chunked(self) -> None:
        """A chunked body is decoded across several writes and the connection pooled."""

        def handler(request: _Request) -> None:
            request.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
            reactor.callLater(0.01, request.write, b"lo\r\n6\r\n world\r\n0\r\n\r\n")

        server, backend = self.start_backend(handler)
        pool = self.make_pool()
        sink = await self.send(pool, backend).done
        self.assertEqual(sink.calls[-1], "finished")
        self.assertEqual(sink.body, b"hello world")
        self.assertEqual(pool.idle_count(), 1)

    async def test_close_delimited(self) -> None:
        """A body without framing runs until the backend closes; the connection is not pooled."""

        def handler(request: _Request) -> None:
            request.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ")
            request.write(b"the end")
            request.close()

        server, backend = self.start_backend(handler)
        pool = self.make_pool()
        sink = await self.send(pool, backend).done
        self.assertEqual(sink.calls[-1], "finished")
        self.assertEqual(sink.body, b"until the end")
        self.assertEqual(pool.idle_count(), 0)

    async def test_close_delimited_reset(self) -> None:
        """A close-delimited body cut by a connection reset fails instead of finishing."""

        def reset(request: _Request) -> None:
            sock = request.conn.transport.getHandle()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            request.abort()

        def handler(request: _Request) -> None:
            request.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart")
            reactor.callLater(0.05, reset, request)

        server, backend = self.start_backend(handler)
        pool = self.make_pool()
        sink = await self.send(pool, backend).done
        self.assertEqual(sink.calls[0], "started")
        self.assertFailedWith(sink, BackendConnectionLost)
        self.assertEqual(sink.body, b"part")

    async def test_close_delimited_http10(self) -> None:
        """An HTTP/1.0 response without Content-Length ends at EOF."""

        def handler(request: _Request) -> None:
            request.write(b"HTTP/1.0 200 OK\r\n\r\nold style")
            request.close()

        server, backend = self.start_backend(handler)
        pool = self.make_pool()
        sink = await self.send(pool, backend).done
        self.assertEqual((sink.calls[-1], sink.body), ("finished", b"old style"))
        self.assertEqual(pool.idle_count(), 0)

    async def test_truncated_content_length(self) -> None:
        """A body cut short of its Content-Length fails after response_started."""

        def handler(request: _Request) -> None:
            request.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
            request.close()

        server, backend = self.start_backend(handler)
        pool = self.make_pool()
        sink = await self.send(pool, backend).done
        self.assertEqual(sink.calls[0], "started")
        error = self.assertFailedWith(sink, BackendConnectionLost)
        self.assertIn("closed before the response was complete", str(error))
        self.assertIn(backend.authority, str(error))

    async def test_head(self) -> None:
        """A HEAD response ends at its headers despite Content-Length; the next response parses."""
        answers = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
            _ok(b"after head"),
        ]
        server, backend = self.start_backend(lambda request: request.write(answers.pop(0)))
        pool = self.make_pool()
        head = await self.send(pool, backend, method=b"HEAD").done
        self.assertEqual(head.calls, ["started", "finished"])
        self.assertEqual(head.headers, [(b"Content-Length", b"1000")])
        get = await self.send(pool, backend).done
        self.assertEqual((get.calls[-1], get.body), ("finished", b"after head"))
        self.assertEqual(server.accepted, 1)

    async def test_head_chunked(self) -> None:
        """A HEAD response announcing chunked encoding has no body either."""
        answers = [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            _ok(b"next"),
        ]
        server, backend = self.start_backend(lambda request: request.write(answers.pop(0)))
        pool = self.make_pool()
        head = await self.send(pool, backend, method=b"HEAD").done
        self.assertEqual(head.calls, ["started", "finished"])
        get = await self.send(pool, backend).done
        self.assertEqual(get.body, b"next")
        self.assertEqual(server.accepted, 1)

    async def test_head_without_length_kept_alive(self) -> None:
        """A HEAD response without framing headers still keeps an HTTP/1.1 connection."""
        server, backend = self.start_backend(
            _answer(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        )
        pool = self.make_pool()
        head = await self.send(pool, backend, method=b"HEAD").done
        self.assertEqual(head.calls, ["started", "finished"])
        self.assertEqual(pool.idle_count(), 1)

    async def test_no_content(self) -> None:
        """A 204 response has no body and the connection is reused."""
        server, backend = self.start_backend(_answer(b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"))
        pool = self.make_pool()
        first = await self.send(pool, backend).done
        second = await self.send(pool, backend).done
        self.assertEqual((first.status, first.calls), (204, ["started", "finished"]))
        self.assertEqual((second.status, second.calls), (204, ["started", "finished"]))
        self.assertEqual(server.accepted, 1)

    async def test_not_modified(self) -> None:
        """A 304 response has no body even with Content-Length, and the connection is reused."""
        server, backend = self.start_backend(
            _answer(b'HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\nETag: "x"\r\n\r\n')
        )
        pool = self.make_pool()
        first = await self.send(pool, backend).done
        second = await self.send(pool, backend).done
        self.assertEqual((first.status, first.calls), (304, ["started", "finished"]))
        self.assertEqual(second.calls, ["started", "finished"])
        self.assertEqual(server.accepted, 1)

    async def test_continue_skipped(self) -> None:
        """100 Continue and 103 Early Hints are skipped; the sink sees only the final response."""
        server, backend = self.start_backend(
            _answer(
                b"HTTP/1.1 100 Continue\r\n\r\n"
                b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
                + _ok(b"final", b"X-Final: yes\r\n")
            )
        )
        pool = self.make_pool()
        sink = await self.send(pool, backend, method=b"POST", body=b"x", body_length=1).done
        self.assertEqual(sink.calls.count("started"), 1)
        self.assertEqual((sink.status, sink.body), (200, b"final"))
        self.assertEqual(sink.headers, [(b"Content-Length", b"5"), (b"X-Final", b"yes")])
        self.assertEqual(pool.idle_count(), 1)

    async def test_repeated_headers_kept_in_order(self) -> None:
        """Repeated response headers reach the sink in order, with their original spelling."""
        server, backend = self.start_backend(
            _answer(
                b"HTTP/1.1 201 Created\r\nSet-Cookie: a=1\r\nX-One: 1\r\n"
                b"set-cookie: b=2\r\nSET-COOKIE: c=3\r\nContent-Length: 0\r\n\r\n"
            )
        )
        pool = self.make_pool()
        sink = await self.send(pool, backend).done
        self.assertEqual((sink.status, sink.reason), (201, b"Created"))
        self.assertEqual(
            sink.headers,
            [
                (b"Set-Cookie", b"a=1"),
                (b"X-One", b"1"),
                (b"set-cookie", b"b=2"),
                (b"SET-COOKIE", b"c=3"),
                (b"Content-Length", b"0"),
            ],
        )

    async def test_malformed_response(self) -> None:
        """Bytes that are not an HTTP response fail with BackendProtocolError."""
        server, backend = self.start_backend(_answer(b"SMTP ready\r\n\r\n"))
        pool = self.make_pool()
        sink = await self.send(pool, backend).done
        self.assertEqual(sink.calls, ["failed"])
        error = self.assertFailedWith(sink, BackendProtocolError)
        self.assertIn("malformed response from " + backend.authority, str(error))
        self.assertEqual(pool.idle_count(), 0)
        await server.connections[0].lost

    async def test_sink_error(self) -> None:
        """A sink that raises gets response_failed with a BackendError, and the error is logged."""
        server, backend = self.start_backend(_answer(_ok(b"boom")))
        pool = self.make_pool()

        def explode(sink: _Sink, data: bytes) -> None:
            raise ValueError("sink bug")

        sink = await self.send(pool, backend, sink=_Sink(on_body=explode)).done
        error = self.assertFailedWith(sink, BackendError)
        self.assertNotIsInstance(error, BackendProtocolError)
        self.assertIn("sink bug", str(error))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(pool.idle_count(), 0)
        await server.connections[0].lost

    async def test_extra_bytes_after_response(self) -> None:
        """Bytes after a complete response finish it but keep the connection out of the pool."""
        server, backend = self.start_backend(_answer(_ok(b"hi") + b"HTTP/1.1 200 OK\r\n"))
        pool = self.make_pool()
        sink = await self.send(pool, backend).done
        self.assertEqual((sink.calls[-1], sink.body), ("finished", b"hi"))
        self.assertEqual(pool.idle_count(), 0)
        await server.connections[0].lost

    async def test_connection_close_not_reused(self) -> None:
        """A response with Connection: close is not pooled; the next request connects anew."""
        server, backend = self.start_backend(_answer(_ok(b"bye", b"Connection: close\r\n")))
        pool = self.make_pool()
        first = await self.send(pool, backend).done
        self.assertEqual(first.body, b"bye")
        self.assertEqual(pool.idle_count(), 0)
        await self.send(pool, backend).done
        self.assertEqual(server.accepted, 2)
        self.assertEqual(pool.connections_reused, 0)

    async def test_http10_without_keep_alive_not_reused(self) -> None:
        """An HTTP/1.0 response with Content-Length but no keep-alive is not pooled."""
        server, backend = self.start_backend(
            _answer(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        )
        pool = self.make_pool()
        sink = await self.send(pool, backend).done
        self.assertEqual(sink.body, b"ok")
        self.assertEqual(pool.idle_count(), 0)

    async def test_http10_keep_alive_reused(self) -> None:
        """An HTTP/1.0 response with Connection: keep-alive is pooled."""
        server, backend = self.start_backend(
            _answer(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok")
        )
        pool = self.make_pool()
        await self.send(pool, backend).done
        await self.send(pool, backend).done
        self.assertEqual(server.accepted, 1)


# -- the request --------------------------------------------------------------------


class RequestTests(_ClientTestCase):
    """What goes on the wire."""

    async def test_request_head(self) -> None:
        """The request line and headers go out as given, repeated headers in order."""
        server, backend = self.start_backend(_answer(_ok()))
        pool = self.make_pool()
        headers = [
            (b"Host", b"svc.ns:8080"),
            (b"Accept", b"a/b"),
            (b"X-Forwarded-For", b"10.0.0.1"),
            (b"Accept", b"c/d"),
        ]
        await self.send(pool, backend, target=b"/p/q?x=1&y", headers=headers).done
        [request] = server.requests
        self.assertEqual((request.method, request.target), (b"GET", b"/p/q?x=1&y"))
        self.assertEqual(request.headers, headers)

    async def test_bytes_body(self) -> None:
        """A bytes body is sent with its Content-Length."""
        server, backend = self.start_backend(_answer(_ok()))
        pool = self.make_pool()
        await self.send(pool, backend, method=b"POST", body=b"payload", body_length=7).done
        [request] = server.requests
        self.assertEqual(request.body, b"payload")
        self.assertIn((b"Content-Length", b"7"), request.headers)

    async def test_large_bytes_body(self) -> None:
        """A bytes body larger than one chunk is sent whole."""
        server, backend = self.start_backend(_answer(_ok()))
        pool = self.make_pool()
        body = bytes(range(256)) * 1000
        await self.send(pool, backend, method=b"PUT", body=body, body_length=len(body)).done
        self.assertEqual(server.requests[0].body, body)

    async def test_file_body(self) -> None:
        """A small file body is sent from its start with its Content-Length."""
        server, backend = self.start_backend(_answer(_ok()))
        pool = self.make_pool()
        body = io.BytesIO(b"from a file")
        await self.send(pool, backend, method=b"POST", body=body, body_length=11).done
        [request] = server.requests
        self.assertEqual(request.body, b"from a file")
        self.assertIn((b"Content-Length", b"11"), request.headers)

    async def test_large_file_body(self) -> None:
        """A 3 MB file body is streamed in chunks and arrives whole."""
        server, backend = self.start_backend(_answer(_ok()))
        pool = self.make_pool()
        data = hashlib.sha256(b"seed").digest() * (3 * 1024 * 1024 // 32 + 7)
        sink = await self.send(
            pool, backend, method=b"PUT", body=io.BytesIO(data), body_length=len(data)
        ).done
        self.assertEqual(sink.calls[-1], "finished")
        [request] = server.requests
        self.assertEqual(len(request.body), len(data))
        self.assertEqual(request.body, data)
        self.assertIn((b"Content-Length", b"%d" % len(data)), request.headers)
        self.assertEqual(pool.idle_count(), 1)

    async def test_post_without_body(self) -> None:
        """A bodiless POST carries Content-Length: 0."""
        server, backend = self.start_backend(_answer(_ok()))
        pool = self.make_pool()
        await self.send(pool, backend, method=b"POST").done
        self.assertIn((b"Content-Length", b"0"), server.requests[0].headers)

    async def test_get_without_body(self) -> None:
        """A GET without a body carries no Content-Length."""
        server, backend = self.start_backend(_answer(_ok()))
        pool = self.make_pool()
        await self.send(pool, backend).done
        names = [name.lower() for name, _ in server.requests[0].headers]
        self.assertNotIn(b"content-length", names)

    async def test_early_response_not_pooled(self) -> None:
        """A response that ends before the request body was sent closes the connection."""
        server, backend = self.start_backend(lambda request: None, receive_buffer=4096)
        pool = self.make_pool()
        # More than the client's socket buffer (at most 4 MB) can absorb.
        data = b"z" * (16 * 1024 * 1024)
        sink = self.send(
            pool, backend, method=b"POST", body=io.BytesIO(data), body_length=len(data)
        )
        await _wait_until(lambda: server.accepted == 1)
        # Answer at once and stop reading: the client is still sending.
        conn = server.connections[0]
        conn.transport.pauseProducing()
        conn.transport.write(b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
        await sink.done
        self.assertEqual((sink.status, sink.calls[-1]), (413, "finished"))
        self.assertEqual(pool.idle_count(), 0)
        conn.transport.resumeProducing()
        await conn.lost


# -- pooling ------------------------------------------------------------------------


class PoolTests(_ClientTestCase):
    """Keep-alive reuse, idle limits and idle expiry."""

    async def test_keep_alive_reuse(self) -> None:
        """Two sequential requests use one backend connection."""
        server, backend = self.start_backend(_answer(_ok()))
        pool = self.make_pool()
        await self.send(pool, backend).done
        await self.send(pool, backend).done
        self.assertEqual(server.accepted, 1)
        self.assertEqual(len(server.requests), 2)
        self.assertEqual((pool.connections_opened, pool.connections_reused), (1, 1))

    async def test_lifo(self) -> None:
        """The connection released last is the one reused first."""
        pending: list[_Request] = []
        server, backend = self.start_backend(pending.append)
        pool = self.make_pool()
        first, second = self.send(pool, backend), self.send(pool, backend)
        await _wait_until(lambda: len(pending) == 2)
        early, late = pending
        early.write(_ok())
        await (first if early.conn is server.connections[0] else second).done
        late.write(_ok())
        await gatherResults([first.done, second.done])
        server.handler = _answer(_ok())
        await self.send(pool, backend).done
        self.assertIs(server.requests[-1].conn, late.conn)

    async def test_idle_limit(self) -> None:
        """Of four connections released together, only max_idle_per_backend stay idle."""
        pending: list[_Request] = []

        def handler(request: _Request) -> None:
            pending.append(request)
            if len(pending) == 4:
                for each in pending:
                    each.write(_ok())

        server, backend = self.start_backend(handler)
        pool = self.make_pool(max_idle_per_backend=2)
        sinks = [self.send(pool, backend) for _ in range(4)]
        await gatherResults([sink.done for sink in sinks])
        self.assertEqual(server.accepted, 4)
        self.assertEqual(pool.idle_count(), 2)
        await _wait_until(lambda: server.lost == 2)

    async def test_idle_timeout(self) -> None:
        """An idle connection is closed after idle_timeout."""
        server, backend = self.start_backend(_answer(_ok()))
        pool = self.make_pool(idle_timeout=0.1)
        await self.send(pool, backend).done
        self.assertEqual(pool.idle_count(), 1)
        await server.connections[0].lost
        self.assertEqual(pool.idle_count(), 0)

    async def test_idle_timeout_keeps_recent(self) -> None:
        """The idle sweep closes only connections idle for idle_timeout."""
        pending: list[_Request] = []
        server, backend = self.start_backend(pending.append)
        pool = self.make_pool(idle_timeout=0.3)
        first, second = self.send(pool, backend), self.send(pool, backend)
        await _wait_until(lambda: len(pending) == 2)
        pending[0].write(_ok())
        await deferLater(reactor, 0.2, lambda: None)
        pending[1].write(_ok())
        await gatherResults([first.done, second.done])
        await pending[0].conn.lost
        self.assertFalse(pending[1].conn.lost.called)
        self.assertEqual(pool.idle_count(), 1)
        await pending[1].conn.lost
        self.assertEqual(pool.idle_count(), 0)

    async def test_backend_closes_idle_connection(self) -> None:
        """An idle connection the backend closes leaves the pool."""

        def handler(request: _Request) -> None:
            request.write(_ok())
            reactor.callLater(0.05, request.close)

        server, backend = self.start_backend(handler)
        pool = self.make_pool()
        await self.send(pool, backend).done
        self.assertEqual(pool.idle_count(), 1)
        await _wait_until(lambda: pool.idle_count() == 0)
        server.handler = _answer(_ok())
        sink = await self.send(pool, backend).done
        self.assertEqual(sink.calls[-1], "finished")
        self.assertEqual(pool.retries, 0)

    async def test_bytes_on_idle_connection(self) -> None:
        """Bytes arriving on an idle connection close it and drop it from the pool."""

        def handler(request: _Request) -> None:
            request.write(_ok())
            reactor.callLater(0.05, request.write, b"unsolicited")

        server, backend = self.start_backend(handler)
        pool = self.make_pool()
        await self.send(pool, backend).done
        await server.connections[0].lost
        self.assertEqual(pool.idle_count(), 0)

    async def test_close(self) -> None:
        """close() closes idle connections; a request finishing afterwards is not pooled."""
        pending: list[_Request] = []

        def handler(request: _Request) -> None:
            if request.target == b"/slow":
                pending.append(request)
            else:
                request.write(_ok())

        server, backend = self.start_backend(handler)
        pool = self.make_pool()
        slow = self.send(pool, backend, target=b"/slow")
        await _wait_until(lambda: len(pending) == 1)
        await self.send(pool, backend).done
        busy, idle = pending[0].conn, server.connections[1]
        self.assertEqual(pool.idle_count(), 1)
        await pool.close()
        self.assertEqual(pool.idle_count(), 0)
        await idle.lost
        self.assertFalse(busy.lost.called)
        pending[0].write(_ok(b"late"))
        self.assertEqual((await slow.done).body, b"late")
        await busy.lost
        self.assertEqual(pool.idle_count(), 0)


# -- retries --------------------------------------------------------------------


class RetryTests(_ClientTestCase):
    """One retry for an idempotent request on a stale pooled connection."""

    def stale_backend(self, then: Callable[[_Request], object]) -> tuple[_BackendFactory, Backend]:
        """
        A backend that answers the first request on a keep-alive connection
        and closes that connection at once; later connections use ``then``.
        """

        def handler(request: _Request) -> None:
            if request.conn is server.connections[0]:
                request.write(_ok(b"first"))
                request.close()
            else:
                then(request)

        server, backend = self.start_backend(handler)
        return server, backend

    def follow_up(self, pool: BackendPool, backend: Backend, method: bytes) -> tuple[_Sink, _Sink]:
        """
        Send a first request and, as soon as it finishes (before the client
        can notice the backend's close), a second one with ``method``: it
        goes out on the pooled, already closed connection.
        """
        second = _Sink()
        first = _Sink(
            on_finished=lambda _: pool.request(
                backend, method, b"/2", [(b"Host", b"x")], None, 0, second
            )
        )
        self.send(pool, backend, sink=first)
        return first, second

    async def test_get_retried(self) -> None:
        """A GET that meets a stale pooled connection succeeds on a fresh one."""
        server, backend = self.stale_backend(_answer(_ok(b"second")))
        pool = self.make_pool()
        first, second = self.follow_up(pool, backend, b"GET")
        await second.done
        self.assertEqual(first.body, b"first")
        self.assertEqual((second.calls[-1], second.body), ("finished", b"second"))
        self.assertEqual(pool.retries, 1)
        self.assertEqual(pool.connections_reused, 1)
        self.assertEqual(server.accepted, 2)

    async def test_post_not_retried(self) -> None:
        """A POST that meets a stale pooled connection fails and is not retried."""
        server, backend = self.stale_backend(_answer(_ok(b"second")))
        pool = self.make_pool()
        first, second = self.follow_up(pool, backend, b"POST")
        await second.done
        error = self.assertFailedWith(second, BackendConnectionLost)
        self.assertIn("closed before the response", str(error))
        self.assertEqual(second.calls, ["failed"])
        self.assertEqual(pool.retries, 0)
        self.assertEqual(server.accepted, 1)

    async def test_retried_once(self) -> None:
        """A retried GET whose fresh connection fails too is not retried again."""
        server, backend = self.stale_backend(lambda request: request.close())
        pool = self.make_pool()
        first, second = self.follow_up(pool, backend, b"GET")
        await second.done
        self.assertFailedWith(second, BackendConnectionLost)
        self.assertEqual(pool.retries, 1)
        self.assertEqual(server.accepted, 2)

    async def test_fresh_connection_not_retried(self) -> None:
        """A GET failing on a fresh connection is not retried."""
        server, backend = self.start_backend(lambda request: request.close())
        pool = self.make_pool()
        sink = await self.send(pool, backend).done
        self.assertFailedWith(sink, BackendConnectionLost)
        self.assertEqual(pool.retries, 0)
        self.assertEqual(server.accepted, 1)

    async def test_not_retried_after_response_bytes(self) -> None:
        """A GET is not retried once response bytes came back on the reused connection."""

        def handler(request: _Request) -> None:
            if len(server.requests) == 1:
                request.write(_ok())
            else:
                request.write(b"HTTP/1.1 200 OK\r\nContent-")
                request.close()

        server, backend = self.start_backend(handler)
        pool = self.make_pool()
        await self.send(pool, backend).done
        sink = await self.send(pool, backend).done
        self.assertFailedWith(sink, BackendConnectionLost)
        self.assertEqual(pool.retries, 0)
        self.assertEqual(server.accepted, 1)

    async def test_large_file_body_retried_from_start(self) -> None:
        """A PUT with a streamed file body is retried with the whole body again."""
        server, backend = self.stale_backend(_answer(_ok(b"stored")))
        pool = self.make_pool()
        data = b"0123456789abcdef" * 20000
        second = _Sink()
        first = _Sink(
            on_finished=lambda _: pool.request(
                backend, b"PUT", b"/2", [], io.BytesIO(data), len(data), second
            )
        )
        self.send(pool, backend, sink=first)
        await second.done
        self.assertEqual(second.body, b"stored")
        self.assertEqual(server.requests[-1].body, data)
        self.assertEqual(pool.retries, 1)


# -- failures and timeouts ------------------------------------------------------------


class _PendingConnector:
    """A connection attempt that never completes until stopped."""

    def __init__(self, factory: Any) -> None:
        self.factory = factory
        self.stopped = False

    def stopConnecting(self) -> None:
        self.stopped = True
        self.factory.clientConnectionFailed(self, Failure(UserError()))


class _NeverConnectingReactor:
    """A reactor whose TCP connections never complete; its time is a Clock."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.attempts: list[_PendingConnector] = []

    def callLater(self, delay: float, f: Callable[..., object], *a: object) -> Any:
        return self.clock.callLater(delay, f, *a)

    def seconds(self) -> float:
        return self.clock.seconds()

    def connectTCP(
        self, host: str, port: int, factory: Any, timeout: Any = 30, bindAddress: Any = None
    ) -> _PendingConnector:
        connector = _PendingConnector(factory)
        self.attempts.append(connector)
        return connector


class FailureTests(_ClientTestCase):
    """Errors reach the sink as BackendError subclasses with clear messages."""

    async def test_connect_refused(self) -> None:
        """A closed port fails with BackendConnectError naming host and port."""
        port = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        number = port.getHost().port
        await port.stopListening()
        pool = self.make_pool()
        backend = Backend("http", "127.0.0.1", number, "", f"127.0.0.1:{number}")
        sink = await self.send(pool, backend).done
        error = self.assertFailedWith(sink, BackendConnectError)
        self.assertEqual(str(error), f"connection refused to 127.0.0.1:{number}")
        self.assertEqual(sink.calls, ["failed"])

    def test_connect_timeout(self) -> None:
        """A connection not made within connect_timeout fails with a connect timeout."""
        fake = _NeverConnectingReactor()
        pool = BackendPool(fake, connect_timeout=5.0)
        sink = _Sink()
        backend = Backend("http", "10.0.0.1", 80, "", "10.0.0.1")
        pool.request(backend, b"GET", b"/", [], None, 0, sink)
        fake.clock.advance(4.9)
        self.assertEqual(sink.calls, [])
        fake.clock.advance(0.1)
        error = self.assertFailedWith(sink, BackendConnectTimeout)
        self.assertIsInstance(error, BackendTimeout)
        self.assertIn("connect timeout", str(error))
        self.assertIn("10.0.0.1:80", str(error))
        self.assertTrue(fake.attempts[0].stopped)
        self.assertEqual(sink.calls, ["failed"])
        self.assertEqual(fake.clock.getDelayedCalls(), [])

    def test_cancel_while_connecting(self) -> None:
        """Cancelling during the connect stops the attempt and its timer, with no sink call."""
        fake = _NeverConnectingReactor()
        pool = BackendPool(fake, connect_timeout=5.0)
        sink = _Sink()
        backend = Backend("http", "10.0.0.1", 80, "", "10.0.0.1")
        exchange = pool.request(backend, b"GET", b"/", [], None, 0, sink)
        exchange.cancel()
        self.assertTrue(fake.attempts[0].stopped)
        self.assertEqual(fake.clock.getDelayedCalls(), [])
        fake.clock.advance(10)
        self.assertEqual(sink.calls, [])

    async def test_response_timeout(self) -> None:
        """A backend that accepts but never answers fails with a response timeout."""
        server, backend = self.start_backend(lambda request: None)
        pool = self.make_pool(response_timeout=0.2)
        sink = await self.send(pool, backend).done
        error = self.assertFailedWith(sink, BackendResponseTimeout)
        self.assertIsInstance(error, BackendTimeout)
        self.assertIn("no response from " + backend.authority, str(error))
        await server.connections[0].lost
        self.assertEqual(pool.idle_count(), 0)

    async def test_response_timeout_covers_headers_only(self) -> None:
        """A slow body after complete headers does not time out."""

        def handler(request: _Request) -> None:
            request.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nsl")
            reactor.callLater(0.3, request.write, b"ow")

        server, backend = self.start_backend(handler)
        pool = self.make_pool(response_timeout=0.1)
        sink = await self.send(pool, backend).done
        self.assertEqual((sink.calls[-1], sink.body), ("finished", b"slow"))

    async def test_response_timeout_per_request(self) -> None:
        """Each request on a pooled connection gets the whole response timeout."""

        def handler(request: _Request) -> None:
            reactor.callLater(0.15, request.write, _ok())

        server, backend = self.start_backend(handler)
        pool = self.make_pool(response_timeout=0.25)
        for _ in range(3):
            sink = await self.send(pool, backend).done
            self.assertEqual(sink.calls[-1], "finished")
        self.assertEqual(server.accepted, 1)

    async def test_unknown_host(self) -> None:
        """A host name that does not resolve fails with BackendConnectError."""
        pool = self.make_pool()
        backend = Backend("http", "no-such-host.invalid", 80, "", "no-such-host.invalid")
        sink = await self.send(pool, backend).done
        error = self.assertFailedWith(sink, BackendConnectError)
        self.assertIn("no-such-host.invalid", str(error))

    async def test_host_name(self) -> None:
        """A backend named by host name is resolved, connected and pooled."""
        server, backend = self.start_backend(_answer(_ok(b"by name")))
        named = Backend("http", "localhost", backend.port, "", f"localhost:{backend.port}")
        pool = self.make_pool()
        first = await self.send(pool, named).done
        second = await self.send(pool, named).done
        self.assertEqual((first.body, second.body), (b"by name", b"by name"))
        self.assertEqual(server.accepted, 1)


# -- cancel and backpressure ------------------------------------------------------------


class CancelTests(_ClientTestCase):
    """The client went away."""

    async def test_cancel_aborts_connection(self) -> None:
        """cancel() aborts the backend connection and no sink call follows."""
        server, backend = self.start_backend(lambda request: None)
        pool = self.make_pool(response_timeout=0.2)
        sink = _Sink()
        exchange = pool.request(backend, b"GET", b"/", [], None, 0, sink)
        await _wait_until(lambda: len(server.requests) == 1)
        exchange.cancel()
        await server.connections[0].lost
        await deferLater(reactor, 0.3, lambda: None)  # past the response timeout
        self.assertEqual(sink.calls, [])
        self.assertEqual(pool.idle_count(), 0)

    async def test_cancel_during_body(self) -> None:
        """cancel() from body_received stops the response: no more body, no finish."""
        server, backend = self.start_backend(
            lambda request: request.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst")
        )
        pool = self.make_pool()
        holder: list[Exchange] = []
        sink = _Sink(on_body=lambda s, data: holder[0].cancel())
        holder.append(pool.request(backend, b"GET", b"/", [], None, 0, sink))
        await _wait_until(lambda: len(server.requests) == 1)
        server.requests[0].write(b"more")
        await server.connections[0].lost
        self.assertEqual(sink.calls, ["started", "body"])
        self.assertEqual(pool.idle_count(), 0)

    async def test_stop_producing_cancels(self) -> None:
        """stopProducing() on the producer is a cancel."""
        server, backend = self.start_backend(
            lambda request: request.write(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\npart")
        )
        pool = self.make_pool()
        sink = _Sink(on_started=lambda s: s.producer.stopProducing())
        self.send(pool, backend, sink=sink)
        await _wait_until(lambda: len(server.connections) == 1)
        await server.connections[0].lost
        self.assertEqual(sink.calls, ["started"])


class BackpressureTests(_ClientTestCase):
    """Pausing the producer stops reading the backend."""

    async def test_pause_and_resume(self) -> None:
        """No body arrives while paused; resuming delivers the rest; the connection is reused."""
        server, backend = self.start_backend(
            lambda request: request.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: 3000\r\n\r\n" + b"a" * 1000
            )
        )
        pool = self.make_pool()
        sink = _Sink(on_body=lambda s, data: s.producer.pauseProducing())
        self.send(pool, backend, sink=sink)
        await _wait_until(lambda: sink.body == b"a" * 1000)
        server.requests[0].write(b"b" * 1000)
        server.requests[0].write(b"c" * 1000)
        await deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(sink.body, b"a" * 1000)
        sink._on_body = None
        sink.producer.resumeProducing()
        await sink.done
        self.assertEqual(sink.body, b"a" * 1000 + b"b" * 1000 + b"c" * 1000)
        server.handler = _answer(_ok(b"again"))
        again = await self.send(pool, backend).done
        self.assertEqual(again.body, b"again")
        self.assertEqual(server.accepted, 1)

    async def test_paused_at_end_resumed_before_pooling(self) -> None:
        """A connection whose exchange ended paused is resumed before it is reused."""
        server, backend = self.start_backend(_answer(_ok(b"whole")))
        pool = self.make_pool(response_timeout=2.0)
        sink = _Sink(on_body=lambda s, data: s.producer.pauseProducing())
        await self.send(pool, backend, sink=sink).done
        self.assertEqual(pool.idle_count(), 1)
        again = await self.send(pool, backend).done
        self.assertEqual((again.calls[-1], again.body), ("finished", b"whole"))
        self.assertEqual(server.accepted, 1)

    async def test_stale_producer_harmless(self) -> None:
        """Pausing a finished exchange's producer does not pause its pooled connection."""
        server, backend = self.start_backend(_answer(_ok(b"x")))
        pool = self.make_pool(response_timeout=2.0)
        first = await self.send(pool, backend).done
        second = self.send(pool, backend)
        first.producer.pauseProducing()
        await second.done
        first.producer.resumeProducing()
        self.assertEqual((second.calls[-1], second.body), ("finished", b"x"))
        self.assertEqual(server.accepted, 1)

    async def test_large_streamed_response(self) -> None:
        """A 20 MB response arrives whole; the sink never holds more than its limit plus a read."""
        total = 20 * 1024 * 1024
        block = bytes(range(256)) * 256
        expected = hashlib.sha256()
        for _ in range(total // len(block)):
            expected.update(block)

        @implementer(IPushProducer)
        class Streamer:
            def __init__(self, request: _Request) -> None:
                self.request = request
                self.sent = 0
                self.paused = False
                transport = request.conn.transport
                transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
                transport.registerProducer(self, True)
                self.resumeProducing()

            def resumeProducing(self) -> None:
                self.paused = False
                transport = self.request.conn.transport
                while not self.paused and self.sent < total:
                    self.sent += len(block)
                    transport.write(block)
                if self.sent >= total and transport.producer is self:
                    transport.unregisterProducer()

            def pauseProducing(self) -> None:
                self.paused = True

            def stopProducing(self) -> None:
                self.paused = True

        limit = 256 * 1024
        state = {"held": 0, "max": 0, "received": 0, "paused": False}
        digest = hashlib.sha256()
        held: list[bytes] = []

        def consume(sink: _Sink) -> None:
            for data in held:
                digest.update(data)
            held.clear()
            state["held"] = 0
            state["paused"] = False
            sink.producer.resumeProducing()

        class Consumer(_Sink):
            def body_received(self, data: bytes) -> None:
                held.append(data)
                state["held"] += len(data)
                state["received"] += len(data)
                state["max"] = max(state["max"], state["held"])
                if state["held"] > limit and not state["paused"]:
                    state["paused"] = True
                    self.producer.pauseProducing()
                    reactor.callLater(0.001, consume, self)

            def response_finished(self) -> None:
                for data in held:
                    digest.update(data)
                held.clear()
                super().response_finished()

        server, backend = self.start_backend(Streamer)
        pool = self.make_pool()
        sink = await self.send(pool, backend, sink=Consumer()).done
        self.assertEqual(sink.calls[-1], "finished")
        self.assertEqual(state["received"], total)
        self.assertEqual(digest.hexdigest(), expected.hexdigest())
        # One transport read is at most 64 KiB (TCP) plus what TLS might add.
        self.assertLessEqual(state["max"], limit + 128 * 1024)
        self.assertEqual(pool.idle_count(), 1)


# -- TLS ----------------------------------------------------------------------------


def _self_signed() -> tuple[bytes, bytes]:
    """A certificate for 127.0.0.1 and localhost, and its key, in PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "apimgw test backend")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


class TLSTests(_ClientTestCase):
    """https backends."""

    def setUp(self) -> None:
        cert_pem, key_pem = _self_signed()
        self.server_options = PrivateCertificate.loadPEM(cert_pem + key_pem).options()
        self.trust_root = trustRootFromCertificates([Certificate.loadPEM(cert_pem)])

    async def test_https_backend(self) -> None:
        """An https backend with a trusted certificate answers over a pooled TLS connection."""
        server, backend = self.start_backend(_answer(_ok(b"secret")), tls=self.server_options)
        pool = self.make_pool(tls_trust_root=self.trust_root)
        first = await self.send(pool, backend).done
        second = await self.send(pool, backend).done
        self.assertEqual((first.body, second.body), (b"secret", b"secret"))
        self.assertEqual(server.accepted, 1)

    async def test_large_body_waits_for_handshake(self) -> None:
        """Before the TLS handshake at most one chunk of a streamed body is read; all arrives."""
        server, backend = self.start_backend(_answer(_ok()), tls=self.server_options)
        pool = self.make_pool(tls_trust_root=self.trust_root)
        data = b"0123456789abcdef" * (1024 * 1024)
        body = io.BytesIO(data)
        # The backend reads nothing, so the handshake cannot complete.
        server.pause_on_connect = True
        sink = self.send(pool, backend, method=b"PUT", body=body, body_length=len(data))
        await _wait_until(lambda: server.accepted == 1)
        await deferLater(reactor, 0.1, lambda: None)
        self.assertLessEqual(body.tell(), BODY_CHUNK)
        server.connections[0].transport.resumeProducing()
        await sink.done
        self.assertEqual(sink.calls[-1], "finished")
        self.assertEqual(server.requests[0].body, data)

    async def test_untrusted_certificate(self) -> None:
        """A backend certificate outside the trust root fails the exchange."""
        server, backend = self.start_backend(_answer(_ok()), tls=self.server_options)
        pool = self.make_pool()
        sink = await self.send(pool, backend).done
        error = self.assertFailedWith(sink, BackendConnectionLost)
        self.assertIn("certificate", str(error).lower())
        self.assertEqual(pool.retries, 0)
