"""
Loopback backends and a recording sink for the tests of
:mod:`gateway.upstream`.

The backends are raw HTTP servers on loopback sockets, written here so each
test controls the framing byte for byte: what the backend sends, when, and
when it closes.
"""

from __future__ import annotations

import io
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from httptools import HttpParserError, HttpRequestParser
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from gateway.translate import Backend
from gateway.upstream import BackendError, BackendPool, Balancer

# -- a raw backend ------------------------------------------------------------


@dataclass
class RawRequest:
    """One request as the backend parsed it, with a handle to answer it."""

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    conn: RawBackendProtocol

    def write(self, data: bytes) -> None:
        self.conn.transport.write(data)

    def close(self) -> None:
        self.conn.transport.loseConnection()

    def abort(self) -> None:
        self.conn.transport.abortConnection()


class RawBackendProtocol(Protocol):
    """Parses requests with httptools and hands each to the factory's handler."""

    factory: RawBackend

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
        request = RawRequest(
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


class RawBackend(Factory):
    protocol = RawBackendProtocol
    noisy = False

    def __init__(self, handler: Callable[[RawRequest], object]) -> None:
        self.handler = handler
        self.connections: list[RawBackendProtocol] = []
        self.requests: list[RawRequest] = []
        self.lost = 0
        #: accept connections without reading from them (until resumed)
        self.pause_on_connect = False

    @property
    def accepted(self) -> int:
        return len(self.connections)


def ok(body: bytes = b"hello", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def answer(raw: bytes) -> Callable[[RawRequest], None]:
    """A handler that answers every request with ``raw``."""
    return lambda request: request.write(raw)


# -- a recording sink -----------------------------------------------------------


class RecordingSink:
    """Records every call; ``done`` fires after the last one."""

    def __init__(
        self,
        on_started: Callable[[RecordingSink], object] | None = None,
        on_body: Callable[[RecordingSink, bytes], object] | None = None,
        on_finished: Callable[[RecordingSink], object] | None = None,
        on_moved: Callable[[RecordingSink], object] | None = None,
    ) -> None:
        self.calls: list[str] = []
        #: ``endpoint_failed`` calls: (failed, retry_on, reason)
        self.moves: list[tuple[Backend, Backend, Failure]] = []
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.producer: IPushProducer | None = None
        self.failure: Failure | None = None
        self.done: Deferred[RecordingSink] = Deferred()
        self._on_started = on_started
        self._on_body = on_body
        self._on_finished = on_finished
        self._on_moved = on_moved

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

    def endpoint_failed(self, failed: Backend, retry_on: Backend, reason: Failure) -> None:
        self.calls.append("moved")
        self.moves.append((failed, retry_on, reason))
        if self._on_moved is not None:
            self._on_moved(self)


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` on the real reactor until it holds."""
    waited = 0.0
    while not predicate():
        if waited >= timeout:
            raise AssertionError("condition not reached in time")
        await deferLater(reactor, 0.01, lambda: None)
        waited += 0.01


class ClientTestCase(TestCase):
    """Starts loopback backends and pools, and cleans both up."""

    def start_backend(
        self, handler: Callable[[RawRequest], object], tls: Any = None, receive_buffer: int = 0
    ) -> tuple[RawBackend, Backend]:
        """
        Listen on a loopback port; ``receive_buffer`` shrinks the accepted
        sockets' receive buffer so that a client's sending blocks early.
        """
        factory = RawBackend(handler)
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

    async def _stop_backend(self, port: Any, factory: RawBackend) -> None:
        await port.stopListening()
        for conn in factory.connections:
            if not conn.lost.called:
                conn.transport.abortConnection()
        await gatherResults([conn.lost for conn in factory.connections])

    async def dead_backend(self) -> Backend:
        """A loopback port nobody listens on any more: connecting is refused."""
        port = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        number = port.getHost().port
        await port.stopListening()
        return Backend("http", "127.0.0.1", number, "", f"127.0.0.1:{number}")

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
        sink: RecordingSink | None = None,
        balancer: Balancer | None = None,
    ) -> RecordingSink:
        sink = sink if sink is not None else RecordingSink()
        if headers is None:
            headers = [(b"Host", backend.authority.encode("ascii"))]
        pool.request(backend, method, target, headers, body, body_length, sink, balancer)
        return sink

    def assertFailedWith(self, sink: RecordingSink, kind: type[BackendError]) -> BackendError:
        self.assertEqual(sink.calls[-1], "failed", sink.calls)
        assert sink.failure is not None
        self.assertIsInstance(sink.failure.value, kind)
        return sink.failure.value
