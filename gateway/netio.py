"""
Writing to a plain TCP connection: straight to its socket, once per reactor
iteration.

Twisted's ``transport.write`` always buffers: it appends the bytes to the
transport's buffer and asks the reactor for a writable event, which costs
two ``epoll_ctl`` calls and a loop iteration for every response (strace:
40% of the gateway's system call time under wrk), and its
``writeSomeData`` wraps each ``send`` in a memoryview slice and a retry
loop Python already does for ``EINTR`` (PEP 475). A proxied request
writes twice (the request to the backend, the response to the client),
both usually small enough for the socket to take whole.

:func:`direct_writer` installs, on each connection of the client side
(``H1Channel``) and of the backend side (``upstream.Connection``), a
``write`` that holds what is written until the end of the reactor
iteration under way (:func:`gateway.dispatch.after_io`), then sends it
with one ``send`` when nothing is waiting in Twisted's buffer, and hands
anything else to Twisted's own ``write``, so ordering, backpressure
(``pauseProducing`` when the buffer fills) and the discovery of a lost
connection stay Twisted's.

Why hold until the end of the iteration: a ``send`` on loopback or a
LAN wakes the process that reads it (the client, the backend). Sent one by
one while the gateway works through an iteration's events, every send
found its reader asleep, and the wake-ups were most of the gateway's
system time. Sent together at the end, one wake-up serves many: measured
under wrk (alternating runs), 67.7 → 53.8 µs of CPU per request and 14.7k
→ 18.4k requests per second, medians (docs/benchmarks.md). A response
waits at most for the rest of its iteration's events.

What is held is bounded (:data:`HOLD_LIMIT`: beyond it, it is sent at
once), so a producer writing in a loop is still paused by Twisted's
buffer, not by our memory. The ``write`` is the transport's own
attribute, so every writer (the request body senders, the tunnels after a
101) goes through it in order; :func:`release` takes it off when the
connection is lost (it points back at the transport).

It reads Twisted's private buffer state (``dataBuffer``,
``_tempDataLen``); a transport without it (TLS, a test's string
transport) keeps its own ``write``. On a reactor
:func:`gateway.dispatch.streamline` did not install on (no end of
iteration to wait for), writes go out at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import ISSLTransport

from gateway.dispatch import after_io_queue

__all__ = ["HOLD_LIMIT", "direct_writer", "release"]

#: Bytes held for one connection before they are sent without waiting for
#: the end of the iteration (Twisted's own write buffer size).
HOLD_LIMIT = 64 * 1024


class _Writer:
    """One connection's writes: held for the end of the iteration, then sent."""

    __slots__ = ("_held", "_queue", "_queued", "_send", "_size", "_transport", "_write")

    def __init__(self, transport: Any, queue: list[Any] | None) -> None:
        self._transport = transport
        #: Twisted's own write (buffered): for whatever the socket does not take
        self._write: Callable[[bytes], None] = transport.write
        self._send = transport.socket.send
        #: the reactor's end-of-iteration callbacks (None: send at once)
        self._queue = queue
        self._held: list[bytes] = []
        self._size = 0
        self._queued = False

    def hold(self, data: bytes) -> None:
        """The connection's ``write``: send ``data`` at the end of the iteration."""
        if not data:
            return
        if not isinstance(data, bytes | bytearray | memoryview):
            # Refused here, as Twisted's own write does, not at the flush
            # (where it would fail the connection's later writes too).
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        self._held.append(data)
        self._size += len(data)
        if self._size > HOLD_LIMIT or self._transport.disconnecting:
            # (Closing: Twisted may close the socket in this very iteration,
            # once its buffer is empty: joined to it now.)
            self.flush()
        elif not self._queued:
            self._queued = True
            self._queue.append(self.flush)  # type: ignore[union-attr]

    def flush(self) -> None:
        """Send what is held (the end of the iteration, or past the bound)."""
        self._queued = False
        held = self._held
        if not held:
            return
        self._held = []
        self._size = 0
        self.send_now(held[0] if len(held) == 1 else b"".join(held))

    def last_send(self) -> None:
        """
        The connection is being lost (its socket not closed yet): one
        ``send`` of what is held, if it was not aborted. A client that
        half-closed (its FIN read in the iteration that produced its
        answer) still reads.
        """
        held = self._held
        if not held or self._transport._aborting:
            return
        self._held = []
        self._size = 0
        try:
            self._send(b"".join(held))
        except OSError:
            pass  # reset, or not writable: the connection is gone anyway

    def send_now(self, data: bytes) -> None:
        """One ``send`` if nothing is waiting before ``data``, else Twisted's ``write``."""
        transport = self._transport
        if (
            transport._tempDataLen
            or transport.dataBuffer
            or transport.disconnecting
            or transport._aborting
        ):
            # Behind what is buffered; or closing (loseConnection: sent
            # before the close) or aborted (dropped), as Twisted decides.
            self._write(data)
            return
        try:
            sent = self._send(data)
        except OSError:
            # EAGAIN (the socket buffer is full): buffered, sent when
            # writable. A reset or a closed socket: Twisted's own write
            # path finds the loss (or drops the bytes if it knows already).
            self._write(data)
            return
        if sent < len(data):
            self._write(data[sent:])


def direct_writer(transport: Any) -> Callable[[bytes], None]:
    """
    The write function for ``transport``. On a plain ``tcp.Connection``:
    the held write, installed as the transport's own ``write``. On a TLS
    connection (Twisted's TLS protocol over TCP): its own ``write``, and the
    held write installed on the TCP connection under it (the encrypted
    records are held and sent together). Any other transport: its own
    ``write``.

    While closing (``loseConnection``) what is held is still sent before
    the close; once aborted or lost it is dropped, as for any other write.
    The held write takes itself off when the connection is lost
    (:func:`release`).
    """
    write: Callable[[bytes], None] = transport.write
    if _plain_tcp(transport):
        return _install(transport)
    inner = getattr(transport, "transport", None)
    if inner is not None and ISSLTransport.providedBy(transport) and _plain_tcp(inner):
        _install(inner)
    return write


def _plain_tcp(transport: Any) -> bool:
    """A Twisted TCP connection with the buffer state the writer reads."""
    return (
        isinstance(transport, tcp.Connection)
        and hasattr(transport, "_tempDataLen")
        and hasattr(transport, "dataBuffer")
        and hasattr(transport, "socket")
        and hasattr(transport, "_aborting")
    )


def _install(transport: Any) -> Callable[[bytes], None]:
    installed = vars(transport).get("write")
    if getattr(installed, "__self__", None).__class__ is _Writer:
        return installed  # type: ignore[no-any-return]
    queue = after_io_queue(getattr(transport, "reactor", None))
    writer = _Writer(transport, queue)
    if queue is None:
        return writer.send_now
    held = writer.hold
    # Every write on this connection, ours or another writer's, in order.
    transport.write = held
    transport.writeSequence = lambda parts: held(b"".join(parts))
    # Held bytes go out before a close or an abort begins: Twisted's write
    # loop may close the socket in this very iteration, once its own
    # buffer is empty (what was held is then in it); an abort drops what
    # is written after it, not before (as when writes went out at once).
    for name in _CLOSING:
        setattr(transport, name, _flushed_first(writer, getattr(transport, name)))
    lost = transport.connectionLost

    def released_then_lost(reason: Any) -> None:
        writer.last_send()
        release(transport)
        lost(reason)

    transport.connectionLost = released_then_lost
    return held


#: The transport's methods that end the connection (or its sending side).
_CLOSING = ("loseConnection", "loseWriteConnection", "abortConnection")

#: Everything :func:`_install` sets on a transport.
_INSTALLED = ("write", "writeSequence", *_CLOSING, "connectionLost")


def _flushed_first(writer: _Writer, method: Callable[..., Any]) -> Callable[..., Any]:
    def flush_then(*args: Any, **kwargs: Any) -> Any:
        try:
            writer.flush()
        finally:
            # The close or the abort happens whatever the flush met.
            result = method(*args, **kwargs)
        return result

    return flush_then


def release(transport: Any) -> None:
    """
    Take the held write off ``transport`` (it points back at it), dropping
    what it holds: done when the connection is lost.
    """
    attributes = getattr(transport, "__dict__", None)
    if attributes is None:
        return
    held = attributes.get("write")
    for name in _INSTALLED:
        attributes.pop(name, None)
    writer = getattr(held, "__self__", None)
    if writer.__class__ is _Writer:
        # Nothing more goes out on a lost connection (its queued flush finds nothing).
        writer._held = []
        writer._size = 0
