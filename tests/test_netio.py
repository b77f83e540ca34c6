"""
Tests for gateway.netio's direct writer, on real loopback TCP connections
of the real reactor: what the peer receives, in what order, and what it
never receives.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.test.proto_helpers import StringTransport
from twisted.trial.unittest import TestCase

from gateway.netio import direct_writer


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
        """What the socket does not take goes to Twisted's buffer, and later writes queue behind it."""
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
