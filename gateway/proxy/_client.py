"""
The backend side of the proxy: a pooled HTTP/1.1 client on httptools.

Why not ``twisted.web.client.Agent``: on the hot path it costs a Deferred
chain, an ``IResponse``, a body protocol and several wrappers per request, and
it tops out near 6,000 requests/s on our reference machine, where a lean
client on httptools (llhttp, the parser of Node.js) reaches 16,800 (see
"Hot path budget" in DESIGN.md). This module is that lean client.

Per request, the steady state (a pooled keep-alive connection) costs one
:class:`Exchange`, one ``bytes`` join for the request head, one header list
for the response and direct method calls into the caller's
:class:`ResponseSink`: no Deferred, no ``callLater`` (the response timer of a
connection is re-armed lazily, idle connections are expired by one sweep per
pool) and no log formatting unless something fails.

Connections are kept per :attr:`Backend.key` in a LIFO deque: the most
recently used connection is the one least likely to have been closed by the
backend, and the oldest ones age out at the other end.
"""

from __future__ import annotations

import typing
from collections import deque
from typing import IO, TYPE_CHECKING, Any

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import (
    ConnectionDone,
    ConnectionRefusedError,
    DNSLookupError,
    NotConnectingError,
)
from twisted.internet.interfaces import IConnector, IDelayedCall, IPushProducer
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

if TYPE_CHECKING:
    from gateway.translate import Backend

__all__ = [
    "BackendConnectError",
    "BackendConnectTimeout",
    "BackendConnectionLost",
    "BackendError",
    "BackendPool",
    "BackendProtocolError",
    "BackendResponseTimeout",
    "BackendTimeout",
    "Exchange",
    "ResponseSink",
]

#: Methods whose request may be sent twice (RFC 9110, 9.2.2): only these are
#: retried after a stale pooled connection.
IDEMPOTENT_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})

#: Methods that always carry ``Content-Length``, even ``0``: some servers
#: answer 411 to a bodiless POST without it.
_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})

#: Request bodies up to this size are written in the same ``write`` as the
#: request head (one segment for typical API calls); larger file bodies are
#: streamed in chunks of this size under the connection's backpressure.
BODY_CHUNK = 64 * 1024

# Exchange states, in order.
_CONNECTING = 0  # waiting for a new connection
_SENT = 1  # request written, no response byte yet: a retry is still possible
_RECEIVING = 2  # response bytes arrived, headers not complete
_STREAMING = 3  # response_started was called
_DONE = 4  # finished, failed or cancelled: no more sink calls


# -- errors -----------------------------------------------------------------


class BackendError(Exception):
    """
    The backend could not be reached or did not answer correctly.

    Every failure handed to :meth:`ResponseSink.response_failed` carries a
    subclass of this; the underlying connection error, if any, is its
    ``__cause__``.
    """


class BackendTimeout(BackendError):
    """The backend did not connect or answer in time."""


class BackendConnectTimeout(BackendTimeout):
    """No TCP connection within ``connect_timeout``."""


class BackendResponseTimeout(BackendTimeout):
    """The response headers were not complete within ``response_timeout``."""


class BackendConnectError(BackendError):
    """The connection could not be made: refused, unreachable, unknown name."""


class BackendProtocolError(BackendError):
    """The backend sent something that is not an HTTP/1.x response."""


class BackendConnectionLost(BackendError):
    """The connection closed before the response was complete."""


# -- the caller's side ------------------------------------------------------


class ResponseSink(typing.Protocol):
    """
    Receives one backend response; implemented by the proxy resource, one per
    request.

    Calls come in this order: :meth:`response_started`, any number of
    :meth:`body_received`, then exactly one of :meth:`response_finished` or
    :meth:`response_failed`; or :meth:`response_failed` alone. Nothing is
    called after :meth:`Exchange.cancel`. A failure detected synchronously
    (an invalid host name) may call :meth:`response_failed` before
    :meth:`BackendPool.request` returns.
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


def _failure(error: BackendError, cause: BaseException | None = None) -> Failure:
    error.__cause__ = cause
    return Failure(error)


# -- one request ------------------------------------------------------------


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
        "_pool",
        "_backend",
        "_method",
        "_head",
        "_body",
        "_body_length",
        "_sink",
        "_conn",
        "_attempt",
        "_state",
        "_retried",
        "_paused",
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
    ) -> None:
        self._pool = pool
        self._backend = backend
        self._method = method
        #: the request head, followed by the whole body when it is small
        self._head = head
        #: a body too large to join with the head, else ``None``
        self._body = body
        self._body_length = body_length
        self._sink = sink
        self._conn: _Connection | None = None
        self._attempt: _ConnectAttempt | None = None
        self._state = _CONNECTING
        self._retried = False
        self._paused = False

    def cancel(self) -> None:
        """
        The client went away: abort the backend connection (it is never
        pooled, since the backend may still be sending) and stop every timer.
        No sink method is called afterwards.
        """
        if self._state == _DONE:
            return
        self._state = _DONE
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
                conn.transport.resumeProducing()

    def stopProducing(self) -> None:
        """The consumer is gone: same as :meth:`cancel`."""
        self.cancel()

    # Called by the connection and the pool.

    def _finish(self) -> None:
        if self._state != _DONE:
            self._state = _DONE
            self._sink.response_finished()

    def _fail(self, reason: Failure) -> None:
        if self._state != _DONE:
            self._state = _DONE
            self._sink.response_failed(reason)

    def _where(self) -> str:
        backend = self._backend
        return f"{backend.host}:{backend.port}"


# -- one connection ---------------------------------------------------------


class _StopParsing(Exception):
    """Raised from a parser callback to stop llhttp (bytes nobody asked for)."""


class _Connection(Protocol):
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
        self._attempt: _ConnectAttempt | None = None
        self._requests = 0
        self._dead = False
        self._gone = False
        self._timer: IDelayedCall | None = None
        self._sender: _BodySender | None = None
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

    # -- Twisted protocol ----------------------------------------------------

    def connectionMade(self) -> None:
        # Requests are small and answered at once: do not let Nagle hold back
        # the last segment of a request. A TLS transport forwards the call to
        # its TCP transport.
        self.transport.setTcpNoDelay(True)
        attempt = self._attempt
        self._attempt = None
        if attempt is None or not attempt.connected(self):
            # The attempt was given up already (timeout, cancel, or a second
            # address that connected too): nobody needs this connection.
            self._dead = True
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        ex = self._exchange
        if ex is None:
            # Bytes on an idle connection: nothing was asked, so whatever the
            # backend says is an error (or a response to come is corrupt).
            if not self._dead:
                self._pool._forget(self)
                self._abort()
            return
        if ex._state == _SENT:
            ex._state = _RECEIVING
        try:
            self._parser.feed_data(data)
        except (HttpParserError, HttpParserUpgrade) as e:
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
                self._fail(_failure(BackendError(f"response handling failed: {cause!r}"), cause))
                return
            if not self._done:
                self._fail(
                    _failure(BackendProtocolError(f"malformed response from {ex._where()}: {e}"), e)
                )
                return
            # The response is complete and more bytes followed (or a 101
            # switched protocols): this connection cannot be reused.
            self._keep_alive = False
        if self._done and self._exchange is ex:
            self._complete()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._dead = self._gone = True
        self._cancel_timer()
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
        if (
            ex._state == _SENT
            and self._requests > 1
            and not ex._retried
            and ex._method in IDEMPOTENT_METHODS
        ):
            # The backend closed this keep-alive connection as we reused it.
            self._pool._retry(ex)
            return
        if ex._state < _STREAMING:
            message = f"connection to {ex._where()} closed before the response"
        else:
            message = f"connection to {ex._where()} closed before the response was complete"
        if not reason.check(ConnectionDone):
            message = f"{message}: {reason.getErrorMessage()}"
        ex._fail(_failure(BackendConnectionLost(message), reason.value))

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
            # We never ask for an upgrade; whatever follows is not HTTP/1.1.
            self._done = True
            keep_alive = False
        elif not keep_alive:
            self._eof_ends = _close_delimited(headers)
        self._keep_alive = keep_alive
        ex._state = _STREAMING
        ex._sink.response_started(status, self._reason, headers, ex)

    def on_body(self, data: bytes) -> None:
        ex = self._exchange
        if ex is None or self._done:
            raise _StopParsing()
        ex._sink.body_received(data)

    def on_message_complete(self) -> None:
        if self._final:
            self._done = True

    # -- requests ----------------------------------------------------------------

    def send(self, ex: Exchange) -> None:
        """Write ``ex``'s request and make it the connection's exchange."""
        self._exchange = ex
        ex._conn = self
        ex._state = _SENT
        self._requests += 1
        self._final = self._done = self._eof_ends = False
        # Re-arm lazily: pushing a pending DelayedCall later costs no heap
        # operation (the reactor re-files it when it comes due), so
        # keep-alive requests share one timer per connection.
        timer = self._timer
        if timer is None:
            self._timer = self._pool._reactor.callLater(
                self._pool.response_timeout, self._timed_out
            )
        else:
            timer.reset(self._pool.response_timeout)
        transport = self.transport
        transport.write(ex._head)
        body = ex._body
        if body is not None:
            if isinstance(body, bytes):
                transport.write(body)
            else:
                # Over TLS, writes before the handshake completes are
                # buffered and pause the registered producer too.
                self._sender = _BodySender(self, body, ex._body_length)
                self._sender.start()

    def _timed_out(self) -> None:
        self._timer = None
        ex = self._exchange
        if ex is not None and ex._state < _STREAMING:
            timeout = self._pool.response_timeout
            self._fail(
                _failure(
                    BackendResponseTimeout(f"no response from {ex._where()} within {timeout:g} s")
                )
            )

    def _complete(self) -> None:
        """The response is whole: pool or close, then tell the sink."""
        ex = self._exchange
        assert ex is not None
        self._exchange = None
        ex._conn = None
        if self._sender is not None:
            # The backend answered before reading the whole request body.
            self._sender.stop()
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

    def body_short(self, sent: int) -> None:
        """The request body file ended before ``body_length`` bytes."""
        ex = self._exchange
        if ex is not None:
            self._fail(
                _failure(
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
class _BodySender:
    """
    Streams a large request body from a file under the backend connection's
    backpressure: the transport pauses us when its buffer fills, so memory
    stays at about one chunk whatever the body's size.
    """

    def __init__(self, conn: _Connection, file: IO[bytes], length: int) -> None:
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


# -- connecting -------------------------------------------------------------


class _ConnectAttempt(ClientFactory):
    """
    Opens one new connection for one exchange, within ``connect_timeout``.

    The factory for ``reactor.connectTCP`` and for ``HostnameEndpoint``; it
    is the attempt's state too, so the two paths share everything after the
    connect call.
    """

    noisy = False

    def __init__(self, pool: BackendPool, exchange: Exchange) -> None:
        self._pool = pool
        self._exchange = exchange
        self._finished = False
        self._timer: IDelayedCall | None = None
        self._connector: IConnector | None = None
        self._deferred: Deferred[Any] | None = None

    def buildProtocol(self, addr: Any) -> _Connection:
        conn = _Connection(self._pool, self._exchange._backend.key)
        conn._attempt = self
        return conn

    def connected(self, conn: _Connection) -> bool:
        """The TCP connection is up: send. ``False`` if no longer wanted."""
        if self._finished:
            return False
        self._end()
        self._pool.connections_opened += 1
        conn.send(self._exchange)
        return True

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        self.failed(reason)

    def failed(self, reason: Failure) -> None:
        if self._finished:
            return
        self._end()
        ex = self._exchange
        backend = ex._backend
        where = ex._where()
        error = reason.value
        if isinstance(error, ConnectionRefusedError):
            message = f"connection refused to {where}"
        elif isinstance(error, DNSLookupError):
            message = f"cannot resolve the backend host {backend.host}"
        else:
            message = f"cannot connect to {where}: {reason.getErrorMessage()}"
        ex._fail(_failure(BackendConnectError(message), error))

    def _timed_out(self) -> None:
        self._timer = None
        if self._finished:
            return
        self._end()
        self._stop()
        timeout = self._pool.connect_timeout
        self._exchange._fail(
            _failure(
                BackendConnectTimeout(
                    f"connect timeout: no connection to {self._exchange._where()} "
                    f"within {timeout:g} s"
                )
            )
        )

    def cancel(self) -> None:
        """The exchange was cancelled while connecting."""
        if not self._finished:
            self._end()
            self._stop()

    def _end(self) -> None:
        self._finished = True
        self._exchange._attempt = None
        timer = self._timer
        if timer is not None:
            self._timer = None
            timer.cancel()

    def _stop(self) -> None:
        connector = self._connector
        if connector is not None:
            try:
                connector.stopConnecting()
            except NotConnectingError:
                pass
        if self._deferred is not None:
            self._deferred.cancel()


# -- the pool ---------------------------------------------------------------


class BackendPool:
    """
    Pooled HTTP/1.1 connections to every backend.

    :param reactor: provides ``IReactorTCP``, ``IReactorTime`` and, for
        backends named by host name, ``IReactorPluggableNameResolver``.
    :param max_idle_per_backend: idle connections kept per backend; a
        connection released beyond that is closed.
    :param connect_timeout: seconds to establish a TCP connection.
    :param response_timeout: seconds from writing the request to the end of
        the response headers.
    :param idle_timeout: an idle connection is closed after this many
        seconds, before most backends' own keep-alive timeout would race us.
    :param tls_trust_root: an ``IOpenSSLTrustRoot`` for ``https`` backends;
        ``None`` trusts the platform's certificate authorities.

    :ivar connections_opened: new connections established.
    :ivar connections_reused: requests sent on a pooled connection.
    :ivar retries: requests re-sent after a stale pooled connection.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        *,
        max_idle_per_backend: int = 64,
        connect_timeout: float = 5.0,
        response_timeout: float = 60.0,
        idle_timeout: float = 60.0,
        tls_trust_root: Any = None,
    ) -> None:
        self._reactor = reactor
        self.max_idle_per_backend = max_idle_per_backend
        self.connect_timeout = connect_timeout
        self.response_timeout = response_timeout
        self.idle_timeout = idle_timeout
        self._trust_root = tls_trust_root
        self._idle: dict[tuple[str, str, int], deque[_Connection]] = {}
        self._sweep: IDelayedCall | None = None
        self._tls_creators: dict[str, Any] = {}
        self._closed = False
        self.connections_opened = 0
        self.connections_reused = 0
        self.retries = 0

    def request(
        self,
        backend: Backend,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes | IO[bytes] | None,
        body_length: int,
        sink: ResponseSink,
    ) -> Exchange:
        """
        Send one request to ``backend`` and stream the response to ``sink``.

        :param method: upper case, e.g. ``b"GET"``.
        :param target: the request target (path and query).
        :param headers: every header to send, already validated (no CR or LF)
            and without ``Content-Length`` or ``Transfer-Encoding``: this
            method adds ``Content-Length`` when there is a body or the method
            is POST, PUT or PATCH.
        :param body: ``bytes``, or a seekable file positioned at its start
            holding ``body_length`` bytes, or ``None``.
        :return: the exchange, to cancel it if the client goes away.
        """
        parts = [method, b" ", target, b" HTTP/1.1\r\n"]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        if body_length > 0 or method in _BODY_METHODS:
            parts.append(b"Content-Length: %d\r\n\r\n" % body_length)
        else:
            parts.append(b"\r\n")
        large: bytes | IO[bytes] | None = None
        if body is not None and body_length > 0:
            if isinstance(body, bytes):
                if body_length <= BODY_CHUNK:
                    parts.append(body)
                else:
                    large = body
            elif body_length <= BODY_CHUNK:
                parts.append(body.read(body_length))
            else:
                large = body
        ex = Exchange(self, backend, method, b"".join(parts), large, body_length, sink)
        idle = self._idle.get(backend.key)
        if idle:
            conn = idle.pop()
            conn.idle = False
            self.connections_reused += 1
            conn.send(ex)
        else:
            self._connect(ex)
        return ex

    def idle_count(self, key: tuple[str, str, int] | None = None) -> int:
        """Idle pooled connections, for one backend key or in all."""
        if key is not None:
            idle = self._idle.get(key)
            return len(idle) if idle else 0
        return sum(len(idle) for idle in self._idle.values())

    def close(self) -> Deferred[None]:
        """
        Close every idle connection (at shutdown); in-flight exchanges finish
        and their connections are closed instead of pooled.

        :return: fires once the idle connections are closed.
        """
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        waiting = []
        for idle in self._idle.values():
            for conn in idle:
                conn.idle = False
                waiting.append(conn.when_lost())
                conn.close()
        self._idle.clear()
        d: Deferred[None] = gatherResults(waiting).addCallback(lambda _: None)
        return d

    # -- connections ---------------------------------------------------------

    def _connect(self, ex: Exchange) -> None:
        """
        Open a connection for ``ex``.

        An IP address goes straight to ``reactor.connectTCP``: no resolver,
        no thread hop, no Deferred. A host name goes through
        ``HostnameEndpoint``, which asks the reactor's ``getaddrinfo``
        resolver off the reactor thread and tries every address (IPv4 and
        IPv6, happy eyeballs); ``connectTCP`` would resolve with
        ``gethostbyname`` (IPv4 only, first address only). Resolution is per
        new connection, so pooling amortises it and Service IP changes are
        picked up.
        """
        backend = ex._backend
        attempt = _ConnectAttempt(self, ex)
        ex._attempt = attempt
        factory: ClientFactory | TLSMemoryBIOFactory = attempt
        if backend.scheme == "https":
            factory = TLSMemoryBIOFactory(self._tls_creator(backend.host), True, attempt)
        attempt._timer = self._reactor.callLater(self.connect_timeout, attempt._timed_out)
        host = backend.host
        if isIPAddress(host) or isIPv6Address(host):
            # Our own timer enforces connect_timeout (uniformly for both paths).
            attempt._connector = self._reactor.connectTCP(host, backend.port, factory, timeout=None)
        else:
            d = HostnameEndpoint(self._reactor, host, backend.port).connect(factory)
            if not d.called:
                attempt._deferred = d
            d.addErrback(attempt.failed)

    def _tls_creator(self, host: str) -> Any:
        """
        One client connection creator per host name: building one loads the
        trust store and creates an OpenSSL context, far too slow to repeat per
        connection.
        """
        creator = self._tls_creators.get(host)
        if creator is None:
            creator = optionsForClientTLS(host, trustRoot=self._trust_root)
            self._tls_creators[host] = creator
        return creator

    def _release(self, conn: _Connection) -> None:
        """A connection finished a keep-alive exchange: keep it idle or close it."""
        if self._closed:
            conn.close()
            return
        idle = self._idle.get(conn.key)
        if idle is None:
            idle = self._idle[conn.key] = deque()
        if len(idle) >= self.max_idle_per_backend:
            conn.close()
            return
        conn.idle = True
        conn.idle_since = self._reactor.seconds()
        idle.append(conn)
        if self._sweep is None:
            self._sweep = self._reactor.callLater(self.idle_timeout, self._expire_idle)

    def _forget(self, conn: _Connection) -> None:
        """An idle connection closed or misbehaved: drop it from the pool."""
        if conn.idle:
            conn.idle = False
            idle = self._idle.get(conn.key)
            if idle is not None:
                try:
                    idle.remove(conn)
                except ValueError:
                    pass

    def _expire_idle(self) -> None:
        """
        Close connections idle for ``idle_timeout``. One timer per pool rather
        than one per idle connection: each deque is ordered oldest first, so
        this only looks at connections it closes, plus one per backend.
        """
        self._sweep = None
        now = self._reactor.seconds()
        limit = now - self.idle_timeout
        oldest: float | None = None
        for key in list(self._idle):
            idle = self._idle[key]
            while idle and idle[0].idle_since <= limit:
                conn = idle.popleft()
                conn.idle = False
                conn.close()
            if idle:
                since = idle[0].idle_since
                if oldest is None or since < oldest:
                    oldest = since
            else:
                del self._idle[key]
        if oldest is not None:
            self._sweep = self._reactor.callLater(
                max(0.0, oldest + self.idle_timeout - now), self._expire_idle
            )

    def _retry(self, ex: Exchange) -> None:
        """
        Send ``ex`` again on a fresh connection: its pooled connection was
        closed by the backend before any response byte came back.
        """
        ex._retried = True
        ex._state = _CONNECTING
        self.retries += 1
        self._log.info(
            "Retrying {method} to {where} on a new connection: "
            "the pooled connection closed before any response",
            method=ex._method,
            where=ex._where(),
        )
        body = ex._body
        if body is not None and not isinstance(body, bytes):
            body.seek(0)
        self._connect(ex)
