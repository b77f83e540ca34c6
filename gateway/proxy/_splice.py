"""
The bytes of an upgraded connection (a WebSocket after the backend's 101),
passed both ways between the client and the backend, unread.

After ``101 Switching Protocols`` neither side speaks HTTP/1.1 any more:
the gateway does not parse the new protocol, it copies bytes. Each
transport's write buffer is the backpressure: when the client's is full,
the backend is not read (and the other way round), so a slow reader holds
at most the transports' buffers in the gateway, whatever the sender sends.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["IDLE_TIMEOUT", "Splice"]

#: Seconds without a byte either way before an upgraded connection is
#: closed (nginx's ``proxy_read_timeout`` is 60 s; WebSocket clients ping
#: far less often than that, so longer, as HAProxy's ``timeout tunnel``).
#: The default; the server's comes from ``net.server.upgrade-idle-timeout``
#: (``H1Limits.upgrade_idle_timeout``).
IDLE_TIMEOUT = 300.0

#: Linux only; elsewhere nothing is done.
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


def _socket_of(transport: Any) -> socket.socket | None:
    """The TCP socket under ``transport`` (TLS included), or ``None``."""
    for layer in (transport, getattr(transport, "transport", None)):
        handle = getattr(layer, "getHandle", None)
        if handle is not None:
            sock = handle()
            if isinstance(sock, socket.socket):
                return sock
    return None


@implementer(IPushProducer)
class _Reader:
    """
    Reading from one side, as the push producer of the other side's
    transport: that transport pauses it when its write buffer is full.
    """

    __slots__ = ("transport",)

    def __init__(self, transport: Any) -> None:
        self.transport = transport

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        """The consumer is closing: its ``connectionLost`` ends the splice."""


class Splice:
    """
    Copies bytes between ``client`` and ``backend`` (two connected
    transports) until either closes, then closes the other once what it
    was given is written; or until nothing moved either way for
    ``idle_timeout`` seconds, then closes both.

    The protocols of the two connections call :meth:`client_data`,
    :meth:`backend_data`, :meth:`client_lost` and :meth:`backend_lost`.

    :param on_closed: called once, when the splice ends.
    """

    def __init__(
        self,
        client: Any,
        backend: Any,
        clock: IReactorTime,
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        on_closed: Callable[[Splice], None] | None = None,
    ) -> None:
        self.client = client
        self.backend = backend
        self._clock = clock
        self.idle_timeout = idle_timeout
        self._on_closed = on_closed
        #: bytes copied from the client to the backend, and back
        self.sent_up = 0
        self.sent_down = 0
        self.closed = False
        #: why it ended: ``client``, ``backend``, ``idle`` or ``shutdown``
        self.ended_by = ""
        self._last = clock.seconds()
        self._timer: IDelayedCall | None = clock.callLater(idle_timeout, self._idle_check)
        # Acknowledge at once what each side sends (TCP_QUICKACK, re-armed
        # after every read: Linux clears it by itself). A sender with Nagle
        # on (no TCP_NODELAY) holds a message's last segment until its
        # earlier ones are acknowledged; our delayed ACK then stalls every
        # message by up to 40 ms (1 MiB echoes: 53 MiB/s through the
        # gateway instead of 363, see docs/http1.md).
        self._client_sock = _socket_of(client) if _QUICKACK is not None else None
        self._backend_sock = _socket_of(backend) if _QUICKACK is not None else None
        client.registerProducer(_Reader(backend), True)
        backend.registerProducer(_Reader(client), True)

    def client_data(self, data: bytes) -> None:
        if self.closed:
            return
        self._last = self._clock.seconds()
        self.sent_up += len(data)
        self.backend.write(data)
        sock = self._client_sock
        if sock is not None:
            _quick_ack(sock)

    def backend_data(self, data: bytes) -> None:
        if self.closed:
            return
        self._last = self._clock.seconds()
        self.sent_down += len(data)
        self.client.write(data)
        sock = self._backend_sock
        if sock is not None:
            _quick_ack(sock)

    def client_lost(self, reason: Failure) -> None:
        self._end("client")

    def backend_lost(self, reason: Failure) -> None:
        self._end("backend")

    def close(self) -> None:
        """
        End it now (the drain's grace is over): both sides are closed once
        what they were given is written, a FIN each (over TLS, after a
        close_notify), as when one side closes.
        """
        self._end("shutdown")

    def _idle_check(self) -> None:
        # One timer, moved lazily: every read would otherwise reset it.
        self._timer = None
        if self.closed:
            return
        left = self._last + self.idle_timeout - self._clock.seconds()
        if left > 0:
            self._timer = self._clock.callLater(left, self._idle_check)
            return
        self._end("idle")

    def _end(self, by: str) -> None:
        """
        Close both sides (the one already gone is closed already). A
        transport with a producer registered waits for it before closing
        (Twisted's TLS transport does not close at all): unregistered first.
        """
        if self.closed:
            return
        self.closed = True
        self.ended_by = by
        timer = self._timer
        if timer is not None:
            self._timer = None
            if timer.active():
                timer.cancel()
        for transport in (self.client, self.backend):
            transport.unregisterProducer()
            # A side paused for the other's sake must flush its writes.
            transport.resumeProducing()
            transport.loseConnection()
        on_closed = self._on_closed
        if on_closed is not None:
            self._on_closed = None
            on_closed(self)


def _quick_ack(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)  # type: ignore[arg-type]
    except OSError:
        pass  # closed meanwhile: its connectionLost follows
