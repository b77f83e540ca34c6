"""
The splice of an upgraded connection (:mod:`gateway.proxy._splice`) and the
strict server's switch to it (:meth:`H1Channel.switch_protocols`), over
``StringTransport`` with a fake clock.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import NOT_DONE_YET

from gateway.proxy._h1 import H1Server
from gateway.proxy._splice import IDLE_TIMEOUT, Splice

DONE = Failure(ConnectionDone())


class SpliceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.client = StringTransport()
        self.backend = StringTransport()
        self.ended: list[Splice] = []
        self.splice = Splice(self.client, self.backend, self.clock, on_closed=self.ended.append)

    def test_copies_both_ways(self) -> None:
        """Bytes from each side are written to the other, unchanged."""
        self.splice.client_data(b"\x81\x85up")
        self.splice.backend_data(b"\x81\x04down")
        self.assertEqual(
            (self.backend.value(), self.client.value()), (b"\x81\x85up", b"\x81\x04down")
        )
        self.assertEqual((self.splice.sent_up, self.splice.sent_down), (4, 6))

    def test_backpressure(self) -> None:
        """A side whose write buffer is full stops the reading of the other side, until it drains."""
        # The client's transport pauses its producer: the backend is not read.
        self.client.producer.pauseProducing()
        self.assertEqual(self.backend.producerState, "paused")
        self.client.producer.resumeProducing()
        self.assertEqual(self.backend.producerState, "producing")
        # And the other way round.
        self.backend.producer.pauseProducing()
        self.assertEqual(self.client.producerState, "paused")

    def test_either_close_closes_the_other(self) -> None:
        """The client's close closes the backend (after its writes), and the other way round; once."""
        self.splice.client_lost(DONE)
        self.assertTrue(self.backend.disconnecting)
        self.assertIsNone(self.backend.producer)
        self.splice.backend_lost(DONE)
        self.assertEqual((self.ended, self.splice.ended_by), ([self.splice], "client"))
        other = Splice(StringTransport(), StringTransport(), self.clock)
        other.backend_lost(DONE)
        self.assertTrue(other.client.disconnecting)
        self.assertEqual(other.ended_by, "backend")
        # Nothing is copied after the end.
        other.client_data(b"late")
        self.assertEqual(other.backend.value(), b"")

    def test_idle_timeout(self) -> None:
        """Nothing either way for the idle timeout closes both; each byte moves the deadline."""
        self.clock.advance(IDLE_TIMEOUT - 1)
        self.splice.backend_data(b"x")
        self.clock.advance(IDLE_TIMEOUT - 1)
        self.assertFalse(self.client.disconnecting)
        self.clock.advance(1)
        self.assertTrue(self.client.disconnecting and self.backend.disconnecting)
        self.assertEqual(self.splice.ended_by, "idle")
        self.assertEqual(self.clock.getDelayedCalls(), [])


class _Switching:
    """A resource that answers every request by switching to a Splice over ``backend``."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.backend = StringTransport()
        self.splices: list[Splice] = []
        self.requests: list[Any] = []

    def render(self, request: Any) -> Any:
        self.requests.append(request)
        if request.upgrade is None:
            return b"plain"

        def make(transport: Any) -> Splice:
            splice = Splice(transport, self.backend, self.clock)
            self.splices.append(splice)
            return splice

        tunnel = request.switch_protocols(
            b"Switching Protocols", [(b"Upgrade", b"websocket")], make
        )
        assert tunnel is not None
        return NOT_DONE_YET


UPGRADE = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"


class SwitchTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.resource = _Switching(self.clock)
        self.server = H1Server(self.resource, self.clock)  # type: ignore[arg-type]
        self.channel = self.server.buildProtocol(None)
        self.transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
            peerAddress=IPv4Address("TCP", "192.0.2.7", 40000),
        )
        self.channel.makeConnection(self.transport)

    def test_switch(self) -> None:
        """
        The 101 goes out, then what the client sent after the request (in
        the same read, and later) reaches the tunnel; the channel's timers
        are gone, the drain leaves the connection alone, its close ends the splice.
        """
        self.channel.dataReceived(UPGRADE + b"\x81\x85early")
        [request] = self.resource.requests
        self.assertEqual(request.upgrade, b"websocket")
        self.assertEqual(
            self.transport.value(),
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        )
        self.channel.dataReceived(b"GET / HTTP/1.1\r\n\r\n")  # not HTTP any more
        self.assertEqual(self.resource.backend.value(), b"\x81\x85earlyGET / HTTP/1.1\r\n\r\n")
        self.assertEqual(len(self.resource.requests), 1)
        [splice] = self.resource.splices
        self.assertEqual([c.func for c in self.clock.getDelayedCalls()], [splice._idle_check])
        self.assertEqual(self.server.close_idle_connections(), 0)
        self.assertIs(self.transport.producer, splice.client.producer)
        self.channel.connectionLost(DONE)
        self.assertTrue(self.resource.backend.disconnecting)

    def test_held_until_the_answer(self) -> None:
        """Bytes after an upgrade request are held (not parsed) until it is answered."""
        resource = self.resource
        calls: list[Any] = []

        def later(request: Any) -> Any:
            calls.append(request)
            return NOT_DONE_YET

        resource.render = later  # type: ignore[method-assign]
        self.channel.dataReceived(UPGRADE)
        self.channel.dataReceived(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(len(calls), 1)
        # Answered without switching: the held request is parsed and served.
        resource.render = _Switching.render.__get__(resource)  # type: ignore[method-assign]
        calls[0].setHeader(b"content-length", b"0")
        calls[0].finish()
        self.assertEqual([r.uri for r in resource.requests], [b"/next"])
        self.assertIn(b"plain", self.transport.value())
