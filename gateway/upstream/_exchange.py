"""
One request to a backend and its response: the caller's side of the
backend client.

The caller (the proxy resource) hands :meth:`BackendPool.request` a
:class:`ResponseSink` and gets an :class:`Exchange` back, to cancel it if
the client goes away and to pause the backend socket while the client is
slow. The exchange outlives the connections it uses: a stale pooled
connection, or a refused endpoint, moves it to another connection without
the caller noticing (see :mod:`gateway.upstream._pool`).
"""

from __future__ import annotations

import typing
from typing import IO, TYPE_CHECKING

from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

if TYPE_CHECKING:
    from gateway.translate import Backend

    from ._balancer import Balancer
    from ._connect import ConnectAttempt
    from ._connection import Connection
    from ._pool import BackendPool
    from ._upload import BodySource

__all__ = [
    "CONNECTING",
    "DONE",
    "RECEIVING",
    "SENT",
    "STREAMING",
    "Exchange",
    "ResponseSink",
    "UpgradeSink",
]

# Exchange states, in order: comparisons such as ``state < STREAMING`` rely
# on it.
CONNECTING = 0  # waiting for a new connection
SENT = 1  # request written, no response byte yet: a retry is still possible
RECEIVING = 2  # response bytes arrived, headers not complete
STREAMING = 3  # response_started was called
DONE = 4  # finished, failed or cancelled: no more sink calls


class ResponseSink(typing.Protocol):
    """
    Receives one backend response; implemented by the proxy resource, one per
    request.

    Calls come in this order: :meth:`response_started`, any number of
    :meth:`body_received`, then exactly one of :meth:`response_finished` or
    :meth:`response_failed`; or :meth:`response_failed` alone. Nothing is
    called after :meth:`Exchange.cancel`. A failure detected synchronously
    (an invalid host name) may call :meth:`response_failed` before
    :meth:`BackendPool.request` returns. For a balanced request,
    :meth:`endpoint_failed` may come first, once.
    """

    def response_started(
        self,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        producer: IPushProducer,
    ) -> None:
        """
        The final response's headers are complete.

        :param headers: the raw header list as received: repeated headers
            kept, original order and spelling; the sink may modify it.
        :param producer: pausing it stops reading from the backend socket;
            it stays harmless after the exchange ends.
        """

    def body_received(self, data: bytes) -> None:
        """One piece of the response body (after decoding chunked framing)."""

    def response_finished(self) -> None:
        """The body is complete; the connection is already pooled or closed."""

    def response_failed(self, reason: Failure) -> None:
        """The exchange failed; ``reason.value`` is a :class:`BackendError`."""

    def endpoint_failed(self, failed: Backend, retry_on: Backend, reason: Failure) -> None:
        """
        Only for a request given a balancer: no connection to the endpoint
        ``failed`` could be made (``reason``), so it is on hold and the
        request goes to ``retry_on`` instead. The sink reports it (log and
        metric) and credits the response to ``retry_on``; the decision and
        the re-sending are the pool's.
        """


class UpgradeSink(ResponseSink, typing.Protocol):
    """
    The sink of an exchange that asks to switch protocols
    (``BackendPool.request(..., upgrade=True)``): a final response other
    than 101 comes as for any exchange; a 101 comes here instead, and
    nothing else follows.
    """

    def switched(
        self,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        connection: Connection,
        rest: bytes,
    ) -> None:
        """
        The backend answered 101 Switching Protocols: ``connection`` is the
        sink's from now on (:meth:`Connection.hand_over` says who receives
        its bytes; closing it is the sink's job). ``rest``: the bytes that
        followed the 101 in the same read, already of the new protocol.
        """


@implementer(IPushProducer)
class Exchange:
    """
    One request to a backend and its response.

    Returned by :meth:`BackendPool.request` so the caller can
    :meth:`cancel` it, and handed to :meth:`ResponseSink.response_started`
    as the response's push producer. It only ever controls the connection
    while that connection serves this exchange, so a stale reference cannot
    pause a connection that went back to the pool.
    """

    __slots__ = (
        "_attempt",
        "_backend",
        "_balancer",
        "_body",
        "_body_length",
        "_conn",
        "_head",
        "_method",
        "_paused",
        "_pool",
        "_retried",
        "_sink",
        "_source",
        "_state",
        "_timeout",
        "_upgrade",
    )

    def __init__(
        self,
        pool: BackendPool,
        backend: Backend,
        method: bytes,
        head: bytes,
        body: bytes | IO[bytes] | None,
        body_length: int,
        sink: ResponseSink,
        balancer: Balancer | None,
        timeout: float,
        source: BodySource | None = None,
    ) -> None:
        self._pool = pool
        self._backend = backend
        #: where ``backend`` came from, until it was used for a retry on
        #: another endpoint (once per request)
        self._balancer = balancer
        self._method = method
        #: the request head, followed by the whole body when it is small
        self._head = head
        #: a body too large to join with the head, else ``None``
        self._body = body
        #: the body's length; ``-1``: chunked (a streamed body of unknown length)
        self._body_length = body_length
        #: a body streamed as it arrives from the client, else ``None``
        self._source = source
        self._sink = sink
        self._conn: Connection | None = None
        self._attempt: ConnectAttempt | None = None
        self._state = CONNECTING
        self._retried = False
        self._paused = False
        #: seconds from writing the request to the end of the response
        #: headers (the pool's, or a ``forward-request`` policy's); after
        #: them, the longest the backend may stay silent mid-response
        self._timeout = timeout
        #: the request asks to switch protocols (``Upgrade``): sent on a
        #: new connection that is never pooled, and a 101 hands that
        #: connection over to the sink (:meth:`UpgradeSink.switched`)
        self._upgrade = False

    @property
    def done(self) -> bool:
        """
        The exchange is over: the sink was told (or it was cancelled).
        ``BackendPool.request`` may return an exchange that is over already
        (a host name refused at once fails synchronously).
        """
        return self._state == DONE

    def cancel(self) -> None:
        """
        The client went away: abort the backend connection (it is never
        pooled, since the backend may still be sending) and stop every timer.
        No sink method is called afterwards.
        """
        if self._state == DONE:
            return
        self._state = DONE
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn._abort()
        attempt = self._attempt
        if attempt is not None:
            self._attempt = None
            attempt.cancel()

    # IPushProducer: the caller's consumer (the client connection) drives
    # these; they act on the backend socket only while the exchange owns it.

    def pauseProducing(self) -> None:
        """Stop reading the backend socket until :meth:`resumeProducing`."""
        conn = self._conn
        if conn is not None and not self._paused:
            self._paused = True
            conn.transport.pauseProducing()

    def resumeProducing(self) -> None:
        """Read the backend socket again."""
        if self._paused:
            self._paused = False
            conn = self._conn
            if conn is not None:
                conn.resumed()

    def stopProducing(self) -> None:
        """The consumer is gone: same as :meth:`cancel`."""
        self.cancel()

    # Called by the connection and the pool.

    def _finish(self) -> None:
        if self._state != DONE:
            self._state = DONE
            self._sink.response_finished()

    def _fail(self, reason: Failure) -> None:
        if self._state != DONE:
            self._state = DONE
            self._sink.response_failed(reason)

    def _where(self) -> str:
        backend = self._backend
        return f"{backend.host}:{backend.port}"
