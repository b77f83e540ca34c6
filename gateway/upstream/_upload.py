"""
Sending a request body to the backend as it arrives from the client.

The proxy hands :meth:`BackendPool.request <gateway.upstream.BackendPool.request>`
a :class:`BodySource` (the strict HTTP/1.1 server's
:class:`~gateway.proxy._body.StreamedBody`). Once the request head is
written, a :class:`StreamSender` consumes it: each piece is written as it
comes (chunked framing when the length is unknown), and the backend
transport's write buffer pauses the source, which stops reading the client:
memory stays at a few socket reads per upload whatever its size.

Retries (:mod:`._pool`) ask the source to :meth:`~BodySource.rewind`: it can
while what it delivered is still held (a bounded replay buffer).
"""

from __future__ import annotations

import typing
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = ["BodySource", "StreamSender"]


class BodySource(typing.Protocol):
    """What a streamed request body offers the backend client."""

    def start(self, consumer: Any) -> None:
        """
        Deliver to ``consumer``: ``body_received(data)`` per piece, then
        ``body_finished()`` or ``body_failed(error)`` (an error with
        ``status`` and ``message``).
        """

    def pauseProducing(self) -> None: ...

    def resumeProducing(self) -> None: ...

    def detach(self, consumer: Any = None) -> None:
        """Stop delivering to ``consumer`` (if it is still the current one)."""

    def discard(self) -> None:
        """The rest is not wanted (the backend answered before reading it)."""

    def rewind(self) -> bool:
        """Start over for a new consumer; ``False`` if what was sent is no longer held."""


@implementer(IPushProducer)
class StreamSender:
    """
    One streamed body on one backend connection: the source's consumer,
    and the push producer registered on the backend transport (paused when
    its write buffer is full, so the source, and the client, are paused).
    """

    __slots__ = ("_chunked", "_conn", "_done", "_source", "held", "progressed", "sent")

    def __init__(self, conn: Connection, source: BodySource, chunked: bool) -> None:
        self._conn = conn
        self._source = source
        self._chunked = chunked
        self._done = False
        #: body bytes written so far (before framing)
        self.sent = 0
        #: a piece was written since the connection's timer last looked
        self.progressed = False
        #: the backend transport paused us: its buffer is full (the backend
        #: is not reading), as opposed to waiting for the client
        self.held = False

    def start(self) -> None:
        self._conn.transport.registerProducer(self, True)
        self._source.start(self)

    # -- BodyConsumer (the source) ---------------------------------------------

    def body_received(self, data: bytes) -> None:
        if self._done:
            return
        self.sent += len(data)
        self.progressed = True
        conn = self._conn
        conn._moved_at = conn._seconds()
        if self._chunked:
            conn.transport.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            conn.transport.write(data)

    def body_finished(self) -> None:
        if self._done:
            return
        if self._chunked:
            self._conn.transport.write(b"0\r\n\r\n")
        self._release()
        self._conn.body_sent()

    def body_failed(self, error: Any) -> None:
        if self._done:
            return
        self._release()
        self._conn.body_failed(error)

    # -- IPushProducer (the backend transport) -----------------------------------

    def pauseProducing(self) -> None:
        self.held = True
        if not self._done:
            self._source.pauseProducing()

    def resumeProducing(self) -> None:
        self.held = False
        if not self._done:
            self._source.resumeProducing()

    def stopProducing(self) -> None:
        # The transport is going away and drops its reference itself.
        if not self._done:
            self._done = True
            self._source.detach(self)

    # -- the connection's side ------------------------------------------------------

    def stop(self) -> None:
        """The connection is aborted (a retry may rewind the source)."""
        if not self._done:
            self._source.detach(self)
            self._release()

    def abandon(self) -> None:
        """The backend answered before the whole body: the rest is dropped."""
        if not self._done:
            self._source.discard()
            self._release()

    def _release(self) -> None:
        self._done = True
        # The source points back at this sender (its consumer): let go, so
        # both are freed by reference counting when the request ends.
        self._source = None  # type: ignore[assignment]
        conn = self._conn
        if conn._sender is self:
            conn._sender = None
        if not conn._dead:
            conn.transport.unregisterProducer()
