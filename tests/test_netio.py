"""
Tests for gateway.netio's direct writer, on real loopback TCP connections
of the real reactor (streamlined, as the whole suite's: tests/__init__.py):
what the peer receives, when, in what order, and what it never receives.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import main, reactor, tcp
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.test.proto_helpers import StringTransport
from twisted.trial.unittest import TestCase

from gateway.netio import HOLD_LIMIT, direct_writer, release


class _Server(Protocol):
    """Hands its transport over once connected."""

    def __init__(self, on_connected: Deferred[Any]) -> None:
        self.on_connected = on_connected

    def connectionMade(self) -> None:
        self.on_connected.callback(self.transport)


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


class DirectWriterTests(TestCase):
    timeout = 20

    @inlineCallbacks
    def connect(self) -> Any:
        """A server transport of the real reactor and the client socket talking to it."""
        connected: Deferred[Any] = Deferred()
        factory = Factory.forProtocol(lambda: _Server(connected))
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", port.getHost().port))
        self.addCleanup(client.close)
        transport = yield connected
        return transport, client

    def test_other_transports_get_their_own_write(self) -> None:
        """A transport that is not plain TCP (TLS, a test's) is written through its own write."""
        transport = StringTransport()
        self.assertEqual(direct_writer(transport), transport.write)

    @inlineCallbacks
    def test_more_than_the_socket_takes_arrives_whole_and_in_order(self) -> Any:
        """
        What the socket does not take goes to Twisted's buffer, and later
        (held) writes join it behind, before the close starts.
        """
        transport, client = yield self.connect()
        write = direct_writer(transport)
        big = bytes(range(256)) * 16384  # 4 MiB: far more than the socket buffers hold
        write(big)
        self.assertGreater(len(transport.dataBuffer) + transport._tempDataLen, 0)
        write(b"TAIL")
        transport.loseConnection()
        received = yield deferToThread(_read_all, client)
        self.assertEqual(received, big + b"TAIL")

    @inlineCallbacks
    def test_nothing_sent_after_an_abort(self) -> Any:
        """
        Bytes written after abortConnection() are dropped, as Twisted's
        write drops them (the socket is reset only when the reactor next
        runs: a direct send in between would still reach the peer).
        """
        transport, client = yield self.connect()
        client.setblocking(False)
        write = direct_writer(transport)
        write(b"before")
        transport.abortConnection()
        write(b"AFTER-ABORT")
        # Read at once, before the reactor resets the connection (a reset
        # discards what the peer has not read).
        received = b""
        for _ in range(1000):
            try:
                received += client.recv(65536)
            except BlockingIOError:
                if received:
                    break
        self.assertEqual(received, b"before")


def _pending(sock: socket.socket) -> bytes:
    """What ``sock`` can read right now, without waiting."""
    sock.setblocking(False)
    try:
        return sock.recv(65536)
    except BlockingIOError:
        return b""
    finally:
        sock.setblocking(True)


def _writable_event(transport: Any) -> None:
    """What the reactor does for ``transport``'s writable event: write, maybe disconnect."""
    why = transport.doWrite()
    if why:
        reactor._disconnectSelectable(transport, why, False)  # type: ignore[attr-defined]


def _next_iteration() -> Deferred[None]:
    return deferLater(reactor, 0, lambda: None)


class HeldWriteTests(TestCase):
    """Writes held until the end of the reactor iteration, then sent together."""

    timeout = 20
    connect = DirectWriterTests.connect

    @inlineCallbacks
    def test_held_until_the_end_of_the_iteration(self) -> Any:
        """Nothing leaves while the iteration runs; at its end, every piece, in order, at once."""
        transport, client = yield self.connect()
        write = direct_writer(transport)
        self.assertIs(transport.write, write)
        write(b"HTTP/1.1 200 OK\r\n")
        transport.write(b"Content-Length: 2\r\n\r\n")  # another writer: same queue
        transport.writeSequence([b"o", b"k"])
        self.assertEqual(_pending(client), b"")
        yield _next_iteration()
        self.assertEqual(
            _pending(client), b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        )

    @inlineCallbacks
    def test_past_the_bound_sent_at_once(self) -> Any:
        """More than HOLD_LIMIT held goes out without waiting, and later writes follow it."""
        transport, client = yield self.connect()
        write = direct_writer(transport)
        big = b"x" * (HOLD_LIMIT + 1)
        write(big)
        first = _pending(client)
        self.assertNotEqual(first, b"")
        write(b"TAIL")
        transport.loseConnection()
        rest = yield deferToThread(_read_all, client)
        self.assertEqual(first + rest, big + b"TAIL")

    @inlineCallbacks
    def test_close_sends_what_is_held_first(self) -> Any:
        """loseConnection and loseWriteConnection send what is held, then close (or half-close)."""
        for close in ("loseConnection", "loseWriteConnection"):
            transport, client = yield self.connect()
            write = direct_writer(transport)
            write(b"answer")
            getattr(transport, close)()
            received = yield deferToThread(_read_all, client)
            self.assertEqual(received, b"answer", close)

    @inlineCallbacks
    def test_held_not_lost_when_twisted_closes_in_the_same_iteration(self) -> Any:
        """
        The socket is writable and Twisted's buffer has bytes: once a
        close starts, Twisted's write event (in the same iteration, when the
        poll reported it) sends its buffer and closes the socket. What was
        held joined the buffer when the close started, so it went out first.
        """
        transport, client = yield self.connect()
        write = direct_writer(transport)
        tcp.Connection.write(transport, b"buffered ")  # in Twisted's buffer, not sent yet
        write(b"held")
        transport.loseConnection()
        _writable_event(transport)  # later in this iteration
        received = yield deferToThread(_read_all, client)
        self.assertEqual(received, b"buffered held")

    @inlineCallbacks
    def test_written_after_a_close_began_sent_before_it(self) -> Any:
        """
        A write after loseConnection, with Twisted's buffer not empty: it
        joins the buffer at once, so the close that follows the buffer (in
        this very iteration, when the socket is writable) sends it too.
        """
        transport, client = yield self.connect()
        direct_writer(transport)
        tcp.Connection.write(transport, b"buffered ")
        transport.loseConnection()
        transport.write(b"after")
        _writable_event(transport)
        received = yield deferToThread(_read_all, client)
        self.assertEqual(received, b"buffered after")

    @inlineCallbacks
    def test_answer_to_a_half_closed_client_sent_when_its_fin_is_read(self) -> Any:
        """
        The client sent its request and shut its sending side; the FIN is
        read in the iteration whose events produced the answer (held): the
        connection is lost for Twisted, but the answer goes out before the
        socket closes, and the client, still reading, gets it.
        """
        transport, client = yield self.connect()
        direct_writer(transport)
        client.shutdown(socket.SHUT_WR)
        transport.write(b"answer")
        # What the reactor does when this iteration's read finds the FIN.
        reactor._disconnectSelectable(transport, main.CONNECTION_DONE, True)  # type: ignore[attr-defined]
        received = yield deferToThread(_read_all, client)
        self.assertEqual(received, b"answer")

    @inlineCallbacks
    def test_not_bytes_refused_at_the_write(self) -> Any:
        """A write of text raises at once (as Twisted's does); the connection's other writes and its close go on."""
        transport, client = yield self.connect()
        write = direct_writer(transport)
        write(b"one ")
        self.assertRaises(TypeError, write, "text")
        write(b"two")
        transport.loseConnection()
        received = yield deferToThread(_read_all, client)
        self.assertEqual(received, b"one two")

    @inlineCallbacks
    def test_other_reactor_sends_at_once(self) -> Any:
        """On a reactor without the end-of-iteration queue, a write goes out at once."""
        transport, client = yield self.connect()
        own = transport.reactor
        transport.reactor = object()
        try:
            write = direct_writer(transport)
        finally:
            transport.reactor = own
        self.assertNotIn("write", vars(transport))
        write(b"now")
        for _ in range(1000):
            received = _pending(client)
            if received:
                break
        self.assertEqual(received, b"now")

    @inlineCallbacks
    def test_release_takes_the_writer_off(self) -> Any:
        """A lost connection's transport gets its own methods back, and nothing held leaves."""
        transport, client = yield self.connect()
        write = direct_writer(transport)
        write(b"never")
        release(transport)
        for name in ("write", "writeSequence", "loseConnection", "loseWriteConnection",
                     "abortConnection", "connectionLost"):
            self.assertNotIn(name, vars(transport))
        yield _next_iteration()
        self.assertEqual(_pending(client), b"")

    @inlineCallbacks
    def test_released_when_the_connection_is_lost(self) -> Any:
        """The peer closes: the transport's own methods are back (no cycle through the writer)."""
        transport, client = yield self.connect()
        direct_writer(transport)
        self.assertIn("write", vars(transport))
        lost: Deferred[None] = Deferred()
        transport.protocol.connectionLost = lambda reason: lost.callback(None)
        client.close()
        yield lost
        self.assertEqual(
            [name for name in ("write", "connectionLost", "loseConnection") if name in vars(transport)],
            [],
        )
