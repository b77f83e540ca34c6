"""
Writing to a plain TCP connection straight to its socket.

Twisted's ``transport.write`` always buffers: it appends the bytes to the
transport's buffer and asks the reactor for a writable event, which costs
two ``epoll_ctl`` calls and a loop iteration for every response (strace:
40% of the gateway's system call time under wrk), and its
``writeSomeData`` wraps each ``send`` in a memoryview slice and a retry
loop Python already does for ``EINTR`` (PEP 475). A proxied request
writes twice (the request to the backend, the response to the client),
both usually small enough for the socket to take whole.

:func:`direct_writer` gives the client side (``H1Channel``) and the backend
side (``upstream.Connection``) one write function per connection that
sends at once when nothing is waiting in Twisted's buffer, and hands
anything else to ``transport.write``, so ordering, backpressure
(``pauseProducing`` when the buffer fills) and the discovery of a lost
connection stay Twisted's. It reads Twisted's private buffer state
(``dataBuffer``, ``_tempDataLen``); a transport without it (TLS, a test's
string transport) gets ``transport.write`` itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import tcp

__all__ = ["direct_writer"]


def direct_writer(transport: Any) -> Callable[[bytes], None]:
    """
    The write function for ``transport``: straight to the socket for a
    plain ``tcp.Connection`` with nothing buffered, else (and for what the
    socket did not take) ``transport.write``: while closing
    (``loseConnection``) it sends what is written after what it buffered,
    once aborted or lost it drops it, as for any other write.
    """
    write: Callable[[bytes], None] = transport.write
    if not (
        isinstance(transport, tcp.Connection)
        and hasattr(transport, "_tempDataLen")
        and hasattr(transport, "dataBuffer")
        and hasattr(transport, "socket")
        and hasattr(transport, "_aborting")
    ):
        return write
    send = transport.socket.send

    def write_now(data: bytes) -> None:
        if (
            transport._tempDataLen
            or transport.dataBuffer
            or transport.disconnecting
            or transport._aborting
        ):
            write(data)
            return
        try:
            sent = send(data)
        except OSError:
            # EAGAIN (the socket buffer is full): buffered, sent when
            # writable. A reset or a closed socket: Twisted's own write
            # path finds the loss (or drops the bytes if it knows already).
            write(data)
            return
        if sent < len(data):
            write(data[sent:])

    return write_now
