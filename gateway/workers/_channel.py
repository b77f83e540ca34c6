"""
The supervisor ⇄ worker channel: length-prefixed pickled messages over one
Unix socket pair per worker.

A socket pair rather than pipes: one bidirectional descriptor per worker,
adopted by each side's reactor, with EOF telling a worker that its
supervisor is gone (it then drains and exits rather than serving a
configuration nobody updates any more).
"""

from __future__ import annotations

import os
import pickle
import struct
from collections.abc import Callable
from typing import Any

from twisted.internet.protocol import Factory
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure

__all__ = ["Channel", "ChannelFactory", "encode", "read_message"]

#: Large enough for any configuration snapshot (tens of MB for thousands of APIs).
MAX_MESSAGE = 1 << 30

_LENGTH = struct.Struct("!I")


def encode(message: Any) -> bytes:
    """One message as it goes on the wire (length prefix included)."""
    data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


def read_message(fd: int) -> Any:
    """
    Read one message from ``fd``, blocking: how a worker reads its
    :class:`~gateway.workers.WorkerStart` before its reactor runs.

    :raises EOFError: the other side closed first.
    """

    def exactly(n: int) -> bytes:
        chunks = []
        while n:
            chunk = os.read(fd, min(n, 1 << 20))
            if not chunk:
                raise EOFError("channel closed")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    (length,) = _LENGTH.unpack(exactly(_LENGTH.size))
    return pickle.loads(exactly(length))


class Channel(Int32StringReceiver):
    """
    One end of the channel: ``on_message(message)`` for each message,
    ``on_closed()`` once when the connection ends.
    """

    MAX_LENGTH = MAX_MESSAGE

    def __init__(self, on_message: Callable[[Any], None], on_closed: Callable[[], None]) -> None:
        self._on_message = on_message
        self._on_closed = on_closed
        self.connected_ = False

    def connectionMade(self) -> None:
        self.connected_ = True

    def stringReceived(self, string: bytes) -> None:
        self._on_message(pickle.loads(string))

    def send(self, message: Any) -> None:
        """Send one message (dropped if the channel is closed)."""
        self.send_encoded(encode(message))

    def send_encoded(self, data: bytes) -> None:
        """Send a message already :func:`encode`\\ d (a snapshot sent to several workers)."""
        transport: Any = self.transport
        if self.connected_ and transport is not None:
            transport.write(data)

    def close(self) -> None:
        transport: Any = self.transport
        if transport is not None:
            transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        was = self.connected_
        self.connected_ = False
        if was:
            self._on_closed()


class ChannelFactory(Factory):
    """Builds the one :class:`Channel` of an adopted socket."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    def buildProtocol(self, addr: Any) -> Channel:
        return self.channel
