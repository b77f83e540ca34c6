"""Tests for the supervisor ⇄ worker channel."""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from gateway.model import ObjectRef
from gateway.workers import Changes, Channel, Scrape, encode, read_message


class ChannelTests(SynchronousTestCase):
    def test_blocking_read_of_an_encoded_message(self) -> None:
        """read_message reads exactly one length-prefixed message, however the bytes arrive; EOF raises."""
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        big = Changes(7, removed=(ObjectRef("file", "api", "x"),))
        data = encode(big) + encode(Scrape(1))
        a.sendall(data)
        self.assertEqual(read_message(b.fileno()), big)
        self.assertEqual(read_message(b.fileno()), Scrape(1))
        b.close()
        r, w = os.pipe()
        os.close(w)
        self.addCleanup(os.close, r)
        self.assertRaises(EOFError, read_message, r)

    def test_messages_both_ways_in_pieces(self) -> None:
        """A Channel delivers messages split across reads and writes what it sends with the same framing."""
        received: list[Any] = []
        closed: list[bool] = []
        channel = Channel(received.append, lambda: closed.append(True))
        transport = StringTransport()
        channel.makeConnection(transport)
        message = Changes(3)
        data = encode(message) + encode(Scrape(9))
        for i in range(len(data)):
            channel.dataReceived(data[i : i + 1])
        self.assertEqual(received, [message, Scrape(9)])
        channel.send(Scrape(4))
        self.assertEqual(transport.value(), encode(Scrape(4)))
        channel.connectionLost(None)
        self.assertEqual(closed, [True])
        channel.send(Scrape(5))  # dropped: closed
        self.assertEqual(transport.value(), encode(Scrape(4)))

    def test_large_snapshot(self) -> None:
        """A multi-megabyte message (a large configuration) passes (beyond Int32StringReceiver's default limit)."""
        received: list[Any] = []
        channel = Channel(received.append, lambda: None)
        channel.makeConnection(StringTransport())
        refs = tuple(ObjectRef("file", "api", f"api-{i:06d}" + "x" * 40) for i in range(60_000))
        payload = encode(refs)
        self.assertGreater(len(payload), 2_000_000)
        channel.dataReceived(payload)
        self.assertEqual(received, [refs])
