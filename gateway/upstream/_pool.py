"""
The pool: pooled HTTP/1.1 connections to every backend, and the one place
that decides when a request is sent again.

Why not ``twisted.web.client.Agent``: on the hot path it costs a Deferred
chain, an ``IResponse``, a body protocol and several wrappers per request, and
it tops out near 6,000 requests/s on our reference machine, where a lean
client on httptools (llhttp, the parser of Node.js) reaches 16,800 (see
"Hot path budget" in DESIGN.md). This package is that lean client.

Per request, the steady state (a pooled keep-alive connection) costs one
:class:`Exchange`, one ``bytes`` join for the request head, one header list
for the response and direct method calls into the caller's
:class:`ResponseSink`: no Deferred, no ``callLater`` (the response timer of a
connection is re-armed lazily, idle connections are expired by one sweep per
pool) and no log formatting unless something fails.

Connections are kept per :attr:`Backend.key` in a LIFO deque: the most
recently used connection is the one least likely to have been closed by the
backend, and the oldest ones age out at the other end.

Retries live here and nowhere else: a connection reports what happened
(:meth:`BackendPool._retry_stale`, :meth:`BackendPool._connect_failed`)
and the pool decides, so the proxy above only ever sees one outcome per
request.
"""

from __future__ import annotations

from collections import deque
from typing import IO, TYPE_CHECKING, Any

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ClientFactory
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from ._balancer import Balancer, Balancers
from ._connect import ConnectAttempt, refused_by_idna
from ._connection import BODY_CHUNK, Connection
from ._errors import BackendConnectError, backend_failure
from ._exchange import CONNECTING, DONE, Exchange, ResponseSink

if TYPE_CHECKING:
    from gateway.translate import Backend

    from ._upload import BodySource

__all__ = ["IDEMPOTENT_METHODS", "BackendPool"]

#: Methods whose request may be sent twice (RFC 9110, 9.2.2): only these are
#: retried after a stale pooled connection.
IDEMPOTENT_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})

#: Methods that always carry ``Content-Length``, even ``0``: some servers
#: answer 411 to a bodiless POST without it.
_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})

#: TLS client contexts kept, one per backend host name.
_TLS_CREATORS = 1024


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
    :ivar balancers: the round-robin and failure-hold state of every
        endpoint set; here because the pool is the one backend-side object
        that lives as long as the process and is shared by every listener.
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
        self._idle: dict[tuple[str, str, int], deque[Connection]] = {}
        self._sweep: IDelayedCall | None = None
        self._tls_creators: dict[str, Any] = {}
        self._closed = False
        self.connections_opened = 0
        self.connections_reused = 0
        self.retries = 0
        self.balancers = Balancers()

    def request(
        self,
        backend: Backend,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes | IO[bytes] | None,
        body_length: int,
        sink: ResponseSink,
        balancer: Balancer | None = None,
        response_timeout: float | None = None,
        *,
        source: BodySource | None = None,
        upgrade: bool = False,
    ) -> Exchange:
        """
        Send one request to ``backend`` and stream the response to ``sink``.

        Every retry happens here, below the caller: an idempotent request
        whose pooled connection turns out closed before any response byte is
        sent once more on a new connection; and with a ``balancer``, a
        request whose connection to ``backend`` cannot be made goes, once, to
        another endpoint (``backend`` is put on hold and
        :meth:`ResponseSink.endpoint_failed` reports the move).

        :param method: upper case, e.g. ``b"GET"``.
        :param target: the request target (path and query).
        :param headers: every header to send, already validated (no CR or LF)
            and without ``Content-Length`` or ``Transfer-Encoding``: this
            method adds ``Content-Length`` when there is a body or the method
            is POST, PUT or PATCH.
        :param body: ``bytes``, or a seekable file positioned at its start
            holding ``body_length`` bytes, or ``None``.
        :param balancer: the balancer ``backend`` was picked from (the
            route's endpoints, from :attr:`balancers`), or ``None``.
        :param response_timeout: seconds for the response headers, for this
            request only (a ``forward-request timeout``); ``None``: the
            pool's :attr:`response_timeout`. For a streamed body, counted
            from the end of the body (and while it streams, from the
            backend's last progress in taking it).
        :param source: a body streamed as it arrives (``body`` is then
            ``None``), sent with ``Content-Length: body_length``, or chunked
            when ``body_length`` is ``-1``. Retries (a stale connection,
            another endpoint) happen only while the source can rewind: at
            most its replay buffer (64 KiB) was sent.
        :param upgrade: the request asks to switch protocols (its headers
            carry ``Connection: upgrade`` and ``Upgrade``; ``sink`` is an
            :class:`UpgradeSink`): it goes on a new connection, never
            pooled afterwards, whatever the answer; a 101 hands the
            connection over to ``sink.switched``.
        :return: the exchange, to cancel it if the client goes away.
        """
        # Each header line joined in C (b": ".join of the pair), not formatted.
        parts = [method, b" ", target, b" HTTP/1.1\r\n", b"\r\n".join(map(b": ".join, headers))]
        parts.append(b"\r\n" if headers else b"")
        if body_length < 0:
            parts.append(b"Transfer-Encoding: chunked\r\n\r\n")
        elif body_length > 0 or method in _BODY_METHODS:
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
        ex = Exchange(
            self,
            backend,
            method,
            b"".join(parts),
            large,
            body_length,
            sink,
            balancer,
            self.response_timeout if response_timeout is None else response_timeout,
            source,
        )
        ex._upgrade = upgrade
        self._dispatch(ex, backend)
        return ex

    def _dispatch(self, ex: Exchange, backend: Backend) -> None:
        """Send ``ex`` on an idle connection to ``backend``, or on a new one."""
        idle = None if ex._upgrade else self._idle.get(backend.key)
        if idle:
            conn = idle.pop()
            conn.idle = False
            self.connections_reused += 1
            conn.send(ex)
        else:
            self._connect(ex)

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
        attempt = ConnectAttempt(self, ex)
        ex._attempt = attempt
        factory: ClientFactory | TLSMemoryBIOFactory = attempt
        if backend.scheme == "https":
            try:
                creator = self._tls_creator(backend.host)
            except (ValueError, UnicodeError) as e:
                # A name TLS cannot check a certificate against (IDNA
                # refuses my_service): no connection is possible.
                ex._attempt = None
                self._connect_failed(
                    ex,
                    backend_failure(
                        BackendConnectError(
                            f"cannot connect to {backend.host} over TLS: not a host name "
                            f"a certificate can be checked against ({e})"
                        )
                    ),
                )
                return
            factory = TLSMemoryBIOFactory(creator, True, attempt)
        attempt._timer = self._reactor.callLater(self.connect_timeout, attempt._timed_out)
        host = backend.host
        if isIPAddress(host) or isIPv6Address(host):
            # Our own timer enforces connect_timeout (uniformly for both paths).
            attempt._connector = self._reactor.connectTCP(host, backend.port, factory, timeout=None)
        elif refused_by_idna(host):
            # e.g. my_service (Docker Compose): the system resolver knows it.
            attempt.resolve_then_connect(self._reactor, host, backend.port, factory)
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
        creators = self._tls_creators
        creator = creators.get(host)
        if creator is None:
            creator = optionsForClientTLS(host, trustRoot=self._trust_root)
            if len(creators) >= _TLS_CREATORS:
                # Host names can come from requests (a policy's computed
                # backend URL): bounded, the oldest dropped first.
                del creators[next(iter(creators))]
            creators[host] = creator
        return creator

    def _release(self, conn: Connection) -> None:
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

    def _forget(self, conn: Connection) -> None:
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

    # -- retries: the one place that decides to send a request again -------------

    def _retry_stale(self, ex: Exchange) -> bool:
        """
        ``ex``'s reused keep-alive connection closed before any response
        byte: the backend closed it as we reused it, a race every keep-alive
        client loses now and then. Send ``ex`` again on a fresh connection,
        once, and only if its method is idempotent (RFC 9110, 9.2.2: a POST
        may have been acted upon). Whether it was sent again.
        """
        if ex._retried or ex._method not in IDEMPOTENT_METHODS:
            return False
        source = ex._source
        if source is not None and not source.rewind():
            # More of a streamed body was sent than its replay buffer holds.
            return False
        ex._retried = True
        ex._state = CONNECTING
        self.retries += 1
        self._log.info(
            "Retrying {method} to {where} on a new connection: "
            "the pooled connection closed before any response",
            method=ex._method,
            where=ex._where(),
        )
        _rewind(ex)
        self._connect(ex)
        return True

    def _connect_failed(self, ex: Exchange, reason: Failure) -> None:
        """
        No connection to ``ex``'s backend could be made (``reason`` is a
        :class:`BackendConnectError` or :class:`BackendConnectTimeout`).
        Nothing was sent, so any method may go elsewhere: with a balancer,
        put the endpoint on hold and, once per request, send to the next
        endpoint (a pooled connection to it if one is idle); else fail.
        """
        balancer = ex._balancer
        if balancer is not None:
            ex._balancer = None
            failed = ex._backend
            now = self._reactor.seconds()
            balancer.failed(failed, now)
            backend = balancer.pick(now, avoid=failed)
            if backend is not None:
                ex._backend = backend
                ex._state = CONNECTING
                # A stale pooled connection on the new endpoint may be
                # retried once more, as for any request sent there first.
                ex._retried = False
                ex._sink.endpoint_failed(failed, backend, reason)
                if ex._state == DONE:
                    # The sink cancelled the exchange.
                    return
                if not _rewind(ex):
                    ex._fail(reason)
                    return
                self._dispatch(ex, backend)
                return
        ex._fail(reason)


def _rewind(ex: Exchange) -> bool:
    """Before sending ``ex`` again: its body starts over. Whether it can."""
    source = ex._source
    if source is not None:
        return source.rewind()
    body = ex._body
    if body is not None and not isinstance(body, bytes):
        body.seek(0)
    return True
