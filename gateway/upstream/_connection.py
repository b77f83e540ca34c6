"""
One backend connection: writes requests, parses responses with httptools
(llhttp) and feeds the current exchange's sink, one exchange at a time.

What happens to an exchange when its connection fails is not decided
here: a connection reports the facts (it was reused, no response byte came
back) and the pool decides whether to send again (:mod:`._pool`).
"""

from __future__ import annotations

import typing
from typing import IO, TYPE_CHECKING, Any

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from gateway.netio import direct_writer

from ._errors import (
    BackendConnectionLost,
    BackendError,
    BackendProtocolError,
    BackendResponseTimeout,
    RequestBodyError,
    backend_failure,
)
from ._exchange import DONE, RECEIVING, SENT, STREAMING, Exchange
from ._upload import StreamSender

if TYPE_CHECKING:
    from ._connect import ConnectAttempt
    from ._exchange import UpgradeSink
    from ._pool import BackendPool

__all__ = ["BODY_CHUNK", "BodySender", "Connection"]

#: Request bodies up to this size are written in the same ``write`` as the
#: request head (one segment for typical API calls); larger file bodies are
#: streamed in chunks of this size under the connection's backpressure.
BODY_CHUNK = 64 * 1024


class _StopParsing(Exception):
    """Raised from a parser callback to stop llhttp (bytes nobody asked for)."""


class Connection(Protocol):
    """
    One backend connection: writes requests, parses responses with
    ``httptools.HttpResponseParser`` and feeds the current exchange's sink.

    The parser is kept across keep-alive responses (llhttp resets itself
    between messages), except after a HEAD response, whose body llhttp would
    otherwise expect.
    """

    #: a TCP transport, or TLS over one (which forwards what it lacks)
    transport: Any

    def __init__(self, pool: BackendPool, key: tuple[str, str, int]) -> None:
        self._pool = pool
        self.key = key
        self._parser = HttpResponseParser(self)
        self._exchange: Exchange | None = None
        self._attempt: ConnectAttempt | None = None
        self._requests = 0
        self._dead = False
        self._gone = False
        self._timer: IDelayedCall | None = None
        self._seconds = pool._reactor.seconds
        #: when the backend last sent bytes or took request body (or we
        #: resumed reading it): the idle timer's reference once the
        #: response started
        self._moved_at = 0.0
        self._sender: BodySender | StreamSender | None = None
        self._lost: Deferred[None] | None = None
        #: in the pool's idle deque, since ``idle_since``
        self.idle = False
        self.idle_since = 0.0
        # Per response.
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._final = False
        self._done = False
        self._keep_alive = False
        self._eof_ends = False
        self._renew_parser = False
        #: a 101 to an upgrade exchange: ``(reason, headers)``, handed over
        #: once the parser stops at the end of the 101's head
        self._switch: tuple[bytes, list[tuple[bytes, bytes]]] | None = None
        #: after a 101: receives the bytes (``backend_data``) and the close
        #: (``backend_lost``), see :meth:`hand_over`
        self._tunnel: Any = None

    # -- Twisted protocol ----------------------------------------------------

    def connectionMade(self) -> None:
        # Requests are small and answered at once: do not let Nagle hold back
        # the last segment of a request. A TLS transport forwards the call to
        # its TCP transport.
        self.transport.setTcpNoDelay(True)
        # Straight to the socket on plain TCP (see gateway.netio).
        self._write = direct_writer(self.transport)  # type: ignore[method-assign,assignment]
        attempt = self._attempt
        self._attempt = None
        if attempt is None or not attempt.connected(self):
            # The attempt was given up already (timeout, cancel, or a second
            # address that connected too): nobody needs this connection.
            self._dead = True
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        tunnel = self._tunnel
        if tunnel is not None:
            tunnel.backend_data(data)
            return
        # One clock read per socket read, so the idle timer need not be
        # re-armed per chunk (see _timed_out).
        self._moved_at = self._seconds()
        ex = self._exchange
        if ex is None:
            # Bytes on an idle connection: nothing was asked, so whatever the
            # backend says is an error (or a response to come is corrupt).
            if not self._dead:
                self._pool._forget(self)
                self._abort()
            return
        if ex._state == SENT:
            ex._state = RECEIVING
        try:
            self._parser.feed_data(data)
        except (HttpParserError, HttpParserUpgrade) as e:
            if self._switch is not None and self._exchange is ex:
                offset = e.args[0] if isinstance(e, HttpParserUpgrade) else len(data)
                self._switched(ex, data[offset:])
                return
            if self._exchange is not ex:
                # The sink cancelled, or the exchange failed, during the feed.
                return
            # httptools chains what a callback raised as the context.
            cause = e.__context__
            if cause is not None and not isinstance(cause, _StopParsing):
                # The sink raised: a bug on the caller's side. Do not leave
                # the exchange hanging, and do not blame the backend.
                self._pool._log.failure(
                    "Response sink raised for {where}", Failure(cause), where=ex._where()
                )
                self._fail(
                    backend_failure(BackendError(f"response handling failed: {cause!r}"), cause)
                )
                return
            if not self._done:
                self._fail(
                    backend_failure(
                        BackendProtocolError(f"malformed response from {ex._where()}: {e}"), e
                    )
                )
                return
            # The response is complete and more bytes followed (or a 101
            # switched protocols): this connection cannot be reused.
            self._keep_alive = False
        if self._done and self._exchange is ex:
            self._complete()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        tunnel = self._tunnel
        if tunnel is not None:
            self._tunnel = None
            self._dead = self._gone = True
            tunnel.backend_lost(reason)
            return
        self._dead = self._gone = True
        self._cancel_timer()
        # The parser calls back into this connection (they point at each
        # other): dropped, both are freed by reference counting. A dead
        # connection parses nothing more (dataReceived checks _exchange).
        self._parser = None  # type: ignore[assignment]
        sender = self._sender
        if sender is not None:
            # A streamed body lets go of this connection (a retry may
            # rewind it for another one).
            sender.stop()
            self._sender = None
        if self.idle:
            self._pool._forget(self)
        lost = self._lost
        if lost is not None:
            self._lost = None
            lost.callback(None)
        ex = self._exchange
        if ex is None:
            return
        self._exchange = None
        ex._conn = None
        if self._final and self._eof_ends and reason.check(ConnectionDone):
            # A close-delimited body ends with a clean close.
            ex._finish()
            return
        if ex._state == SENT and self._requests > 1 and self._pool._retry_stale(ex):
            # The backend closed this keep-alive connection as we reused it,
            # and the pool sent the request again on another connection.
            return
        if ex._state < STREAMING:
            message = f"connection to {ex._where()} closed before the response"
        else:
            message = f"connection to {ex._where()} closed before the response was complete"
        if not reason.check(ConnectionDone):
            message = f"{message}: {reason.getErrorMessage()}"
        ex._fail(backend_failure(BackendConnectionLost(message), reason.value))

    # -- httptools callbacks ---------------------------------------------------

    def on_message_begin(self) -> None:
        if self._done or self._exchange is None:
            raise _StopParsing()
        self._reason = b""
        self._headers = []

    def on_status(self, reason: bytes) -> None:
        # llhttp may deliver the status line in pieces across reads.
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        ex = self._exchange
        if ex is None:
            raise _StopParsing()
        parser = self._parser
        status = parser.get_status_code()
        if status < 200 and status != 101:
            # 100 Continue, 103 Early Hints: skipped; llhttp parses the final
            # response next, and on_message_complete ignores this one.
            return
        self._final = True
        # Must be read here: after on_message_complete it is always False.
        keep_alive = parser.should_keep_alive()
        headers = self._headers
        if ex._method == b"HEAD":
            # llhttp does not know the request was HEAD and would wait for the
            # body that Content-Length announces: end the message here and
            # give the next response a fresh parser.
            self._done = True
            self._renew_parser = True
            if not keep_alive:
                keep_alive = _head_keep_alive(parser.get_http_version(), headers)
        elif status == 101:
            self._done = True
            keep_alive = False
            if ex._upgrade:
                # The sink takes the connection once llhttp stops at the
                # end of this head (what follows is the new protocol).
                self._switch = (self._reason, headers)
                return
            # We did not ask for an upgrade: whatever follows is not HTTP/1.1.
        elif not keep_alive:
            self._eof_ends = _close_delimited(headers)
        if ex._upgrade:
            # Refused (not 101): the answer is forwarded as usual, and this
            # connection, opened for the upgrade alone, is not pooled.
            keep_alive = False
        self._keep_alive = keep_alive
        ex._state = STREAMING
        ex._sink.response_started(status, self._reason, headers, ex)

    def on_body(self, data: bytes) -> None:
        ex = self._exchange
        if ex is None or self._done:
            raise _StopParsing()
        ex._sink.body_received(data)

    def on_message_complete(self) -> None:
        if self._final:
            self._done = True

    # -- switching protocols ---------------------------------------------------------

    def _switched(self, ex: Exchange, rest: bytes) -> None:
        """
        The backend answered 101 to an upgrade exchange: the exchange is
        done, and the connection is the sink's (no timer, never pooled).
        """
        reason, headers = self._switch  # type: ignore[misc]
        self._switch = None
        self._exchange = None
        ex._conn = None
        ex._state = DONE
        self._dead = True
        self._cancel_timer()
        if ex._paused:
            ex._paused = False
            self.transport.resumeProducing()
        sink = typing.cast("UpgradeSink", ex._sink)
        sink.switched(reason, headers, self, rest)

    def hand_over(self, receiver: Any) -> None:
        """
        After a 101: ``receiver.backend_data(bytes)`` gets what the backend
        sends from now on, and ``receiver.backend_lost(reason)`` the close.
        """
        self._tunnel = receiver

    # -- requests ----------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        """Write to the backend (a TLS transport, or before connectionMade)."""
        self.transport.write(data)

    def send(self, ex: Exchange) -> None:
        """Write ``ex``'s request and make it the connection's exchange."""
        self._exchange = ex
        ex._conn = self
        ex._state = SENT
        self._requests += 1
        self._final = self._done = self._eof_ends = False
        # Re-arm lazily: pushing a pending DelayedCall later costs no heap
        # operation (the reactor re-files it when it comes due), so
        # keep-alive requests share one timer per connection.
        timer = self._timer
        if timer is None:
            self._timer = self._pool._reactor.callLater(ex._timeout, self._timed_out)
        else:
            timer.reset(ex._timeout)
        body = ex._body
        if body.__class__ is bytes:
            # The head and a body already in memory in one write: one
            # segment for a typical API call.
            self._write(ex._head + body)  # type: ignore[operator]
            return
        self._write(ex._head)
        source = ex._source
        if source is not None:
            # Streamed as it arrives from the client; the response timer
            # runs from the end of the body (see _timed_out).
            self._sender = sender = StreamSender(self, source, ex._body_length < 0)
            sender.start()
            return
        if body is not None:
            if isinstance(body, bytes):
                self._write(body)
            else:
                # Over TLS, writes before the handshake completes are
                # buffered and pause the registered producer too.
                self._sender = BodySender(self, body, ex._body_length)
                self._sender.start()

    def _timed_out(self) -> None:
        """
        The exchange's one timer. Before the response headers it is the
        response timeout; after them, the backend idle timeout (same value):
        the exchange fails when neither a response byte came nor the
        streamed request body moved for that long, so a backend that stops
        mid-response cannot hold both connections forever. Progress is
        recorded, not re-armed per chunk: the timer re-checks when it fires
        and reschedules itself for what remains.
        """
        self._timer = None
        ex = self._exchange
        if ex is None:
            return
        timeout = ex._timeout
        later = self._pool._reactor.callLater
        sender = self._sender
        streamed = sender is not None and sender.__class__ is StreamSender
        if ex._state < STREAMING:
            if streamed and (sender.progressed or not sender.held):  # type: ignore[union-attr]
                # The backend is still taking the body, or the body waits
                # for the client (whose own body timeout applies): not a
                # stalled backend. Only a backend that takes nothing for
                # the whole timeout is one.
                sender.progressed = False  # type: ignore[union-attr]
                self._timer = later(timeout, self._timed_out)
                return
            self._fail(
                backend_failure(
                    BackendResponseTimeout(f"no response from {ex._where()} within {timeout:g} s")
                )
            )
            return
        if ex._paused or (streamed and not sender.held):  # type: ignore[union-attr]
            # We stopped reading for a slow client (whose send timeout
            # applies), or the body waits for the client (its body
            # timeout): the silence is not the backend's.
            self._timer = later(timeout, self._timed_out)
            return
        idle = self._seconds() - self._moved_at
        if idle < timeout:
            self._timer = later(timeout - idle, self._timed_out)
            return
        self._fail(
            backend_failure(
                BackendResponseTimeout(
                    f"{ex._where()} sent nothing for {timeout:g} s in the middle of the response"
                )
            )
        )

    def resumed(self) -> None:
        """The exchange reads the backend again: its idle time counts from now."""
        self._moved_at = self._seconds()
        self.transport.resumeProducing()

    def _complete(self) -> None:
        """The response is whole: pool or close, then tell the sink."""
        ex = self._exchange
        assert ex is not None
        self._exchange = None
        ex._conn = None
        sender = self._sender
        if sender is not None:
            # The backend answered before reading the whole request body:
            # the rest of a streamed one is dropped as the client sends it.
            if sender.__class__ is StreamSender:
                sender.abandon()  # type: ignore[union-attr]
            else:
                sender.stop()
            self._keep_alive = False
        if self._keep_alive:
            if self._renew_parser:
                self._renew_parser = False
                self._parser = HttpResponseParser(self)
            if ex._paused:
                self.transport.resumeProducing()
            self._pool._release(self)
        else:
            self.close()
        ex._finish()

    def _fail(self, reason: Failure) -> None:
        """Abort the connection and fail its exchange."""
        ex = self._exchange
        self._abort()
        if ex is not None:
            ex._fail(reason)

    def body_sent(self) -> None:
        """A streamed body was written whole: the response timeout counts from now."""
        ex = self._exchange
        timer = self._timer
        if ex is not None and timer is not None and timer.active():
            timer.reset(ex._timeout)

    def body_failed(self, error: Any) -> None:
        """
        The client's side of a streamed body failed (over the limit, gone,
        too slow, bad framing): the backend request is aborted; the caller
        answers the client from the source's error.
        """
        ex = self._exchange
        if ex is not None:
            message = getattr(error, "message", None) or str(error)
            self._fail(backend_failure(RequestBodyError(f"request body failed: {message}"), error))

    def body_short(self, sent: int) -> None:
        """The request body file ended before ``body_length`` bytes."""
        ex = self._exchange
        if ex is not None:
            self._fail(
                backend_failure(
                    BackendError(f"request body ended after {sent} of {ex._body_length} bytes")
                )
            )

    # -- closing -------------------------------------------------------------------

    def close(self) -> None:
        """Close gracefully (idle, or after a complete response)."""
        self._dead = True
        self._cancel_timer()
        self.transport.loseConnection()

    def _abort(self) -> None:
        """Close at once, detaching the exchange: no sink call follows."""
        ex = self._exchange
        if ex is not None:
            self._exchange = None
            ex._conn = None
        if self._sender is not None:
            self._sender.stop()
        self._dead = True
        self._cancel_timer()
        self.transport.abortConnection()

    def when_lost(self) -> Deferred[None]:
        """A Deferred that fires once the connection is closed."""
        d: Deferred[None] = Deferred()
        if self._gone:
            d.callback(None)
        else:
            self._lost = d
        return d

    def _cancel_timer(self) -> None:
        timer = self._timer
        if timer is not None:
            self._timer = None
            timer.cancel()


def _close_delimited(headers: list[tuple[bytes, bytes]]) -> bool:
    """
    Whether a response body runs until the connection closes (RFC 9112,
    6.3): no ``Content-Length``, or a ``Transfer-Encoding`` whose last coding
    is not ``chunked``. Only asked when llhttp says the connection cannot be
    kept alive, so the keep-alive path never scans headers.
    """
    transfer_encoding = None
    content_length = False
    for name, value in headers:
        lname = name.lower()
        if lname == b"transfer-encoding":
            transfer_encoding = value
        elif lname == b"content-length":
            content_length = True
    if transfer_encoding is not None:
        return not transfer_encoding.rstrip().lower().endswith(b"chunked")
    return not content_length


def _head_keep_alive(version: str, headers: list[tuple[bytes, bytes]]) -> bool:
    """
    Whether the connection of a HEAD response stays open. llhttp answers
    "no" for a response without framing headers, since it would read that
    body until EOF; a HEAD response has no body, so apply RFC 9112, 9.3.
    """
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip() for t in value.lower().split(b","))
    if version == "1.1":
        return b"close" not in tokens
    return version == "1.0" and b"keep-alive" in tokens


@implementer(IPushProducer)
class BodySender:
    """
    Streams a large request body from a file under the backend connection's
    backpressure: the transport pauses us when its buffer fills, so memory
    stays at about one chunk whatever the body's size.
    """

    def __init__(self, conn: Connection, file: IO[bytes], length: int) -> None:
        self._conn = conn
        self._file = file
        self._length = length
        self._remaining = length
        self._paused = False
        self._done = False

    def start(self) -> None:
        self._conn.transport.registerProducer(self, True)
        self.resumeProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        self._conn._moved_at = self._conn._seconds()
        read = self._file.read
        write = self._conn.transport.write
        while not self._paused and not self._done and self._remaining > 0:
            data = read(min(BODY_CHUNK, self._remaining))
            if not data:
                self.stop()
                self._conn.body_short(self._length - self._remaining)
                return
            self._remaining -= len(data)
            write(data)
        if self._remaining == 0:
            self.stop()

    def pauseProducing(self) -> None:
        self._paused = True

    def stopProducing(self) -> None:
        # The transport is going away and drops its reference itself.
        self._done = True

    def stop(self) -> None:
        """Sent or abandoned: give the transport's producer slot back."""
        if self._done:
            return
        self._done = True
        conn = self._conn
        if conn._sender is self:
            conn._sender = None
        if not conn._dead:
            conn.transport.unregisterProducer()
