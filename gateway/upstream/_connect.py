"""
Opening one new backend connection for one exchange.

A failure to connect (refused, unreachable, unknown name, or no connection
within ``connect_timeout``) is handed to the pool, which decides whether
the request can go to another endpoint (:meth:`BackendPool._connect_failed`):
nothing was sent, so that is safe for every method.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import idna
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError, DNSLookupError, NotConnectingError
from twisted.internet.interfaces import IConnector, IDelayedCall, IResolutionReceiver
from twisted.internet.protocol import ClientFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from ._connection import Connection
from ._errors import BackendConnectError, BackendConnectTimeout, backend_failure

if TYPE_CHECKING:
    from ._exchange import Exchange
    from ._pool import BackendPool

__all__ = ["ConnectAttempt", "refused_by_idna"]

#: Host names already checked by :func:`refused_by_idna` (bounded: names
#: can come from requests, through a policy's computed backend URL).
_IDNA_CHECKED: dict[str, bool] = {}
_IDNA_CHECKED_MAX = 1024


def refused_by_idna(host: str) -> bool:
    """
    Whether Twisted's ``HostnameEndpoint`` refuses ``host`` before resolving
    it ("invalid hostname"): it encodes names with IDNA 2008, which has no
    ``_`` (``my_service``, a Docker Compose service), no label over 63
    characters and no label starting with ``-``. The system resolver
    (``getaddrinfo``) resolves such names; :meth:`ConnectAttempt.resolve_then_connect`
    takes that path for them.
    """
    refused = _IDNA_CHECKED.get(host)
    if refused is None:
        try:
            idna.encode(host)
            refused = False
        except (idna.IDNAError, UnicodeError):
            refused = True
        if len(_IDNA_CHECKED) >= _IDNA_CHECKED_MAX:
            _IDNA_CHECKED.clear()
        _IDNA_CHECKED[host] = refused
    return refused


@implementer(IResolutionReceiver)
class _Addresses:
    """Collects what the reactor's name resolver finds, then fires ``done`` with it."""

    def __init__(self) -> None:
        self.addresses: list[Any] = []
        self.done: Deferred[list[Any]] = Deferred()

    def resolutionBegan(self, resolution: Any) -> None:
        pass

    def addressResolved(self, address: Any) -> None:
        self.addresses.append(address)

    def resolutionComplete(self) -> None:
        self.done.callback(self.addresses)


class ConnectAttempt(ClientFactory):
    """
    Opens one new connection for one exchange, within ``connect_timeout``.

    The factory for ``reactor.connectTCP`` and for ``HostnameEndpoint``; it
    is the attempt's state too, so the two paths share everything after the
    connect call.
    """

    noisy = False

    def __init__(self, pool: BackendPool, exchange: Exchange) -> None:
        self._pool = pool
        #: until the attempt ends: then let go (Twisted's connector and its
        #: transport point at each other and at this factory, and would keep
        #: the request alive until the cyclic garbage collector runs)
        self._exchange: Exchange | None = exchange
        self._key = exchange._backend.key
        self._finished = False
        self._timer: IDelayedCall | None = None
        self._connector: IConnector | None = None
        #: resolve_then_connect: addresses still to try, in order
        self._later_addresses: list[tuple[str, int, Any, Any]] = []
        self._deferred: Deferred[Any] | None = None

    def buildProtocol(self, addr: Any) -> Connection:
        conn = Connection(self._pool, self._key)
        conn._attempt = self
        return conn

    def connected(self, conn: Connection) -> bool:
        """The TCP connection is up: send. ``False`` if no longer wanted."""
        if self._finished:
            return False
        ex = self._end()
        self._pool.connections_opened += 1
        conn.send(ex)
        return True

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        later = self._later_addresses
        if later and not self._finished:
            # resolve_then_connect: the next address, within the same timer.
            host, port, factory, reactor = later.pop(0)
            self._connector = reactor.connectTCP(host, port, factory, timeout=None)
            return
        self.failed(reason)

    def failed(self, reason: Failure) -> None:
        if self._finished:
            return
        ex = self._end()
        backend = ex._backend
        where = ex._where()
        error = reason.value
        if isinstance(error, ConnectionRefusedError):
            message = f"connection refused to {where}"
        elif isinstance(error, DNSLookupError):
            message = f"cannot resolve the backend host {backend.host}"
        else:
            message = f"cannot connect to {where}: {reason.getErrorMessage()}"
        self._pool._connect_failed(ex, backend_failure(BackendConnectError(message), error))

    def _timed_out(self) -> None:
        self._timer = None
        if self._finished:
            return
        ex = self._end()
        self._stop()
        timeout = self._pool.connect_timeout
        self._pool._connect_failed(
            ex,
            backend_failure(
                BackendConnectTimeout(
                    f"connect timeout: no connection to {ex._where()} within {timeout:g} s"
                )
            ),
        )

    def cancel(self) -> None:
        """The exchange was cancelled while connecting."""
        if not self._finished:
            self._end()
            self._stop()

    def resolve_then_connect(self, reactor: Any, host: str, port: int, factory: Any) -> None:
        """
        Connect to ``host`` by the reactor's name resolver (``getaddrinfo``
        in a thread) and ``connectTCP`` to the addresses found, IPv4 first,
        one after the other while each refuses: for names
        :func:`refused_by_idna` (``HostnameEndpoint`` would refuse them).
        No happy eyeballs (addresses are tried in turn, not raced); the
        connect timeout covers the resolution and every address.
        """
        try:
            # What getaddrinfo does with the name first (IDNA 2003): a name
            # it cannot encode (a label over 63 characters, an empty one)
            # would make Twisted's resolver fail without telling us.
            host.encode("idna")
        except UnicodeError:
            self.failed(Failure(DNSLookupError(host)))
            return
        receiver = _Addresses()
        reactor.nameResolver.resolveHostName(receiver, host, port)

        def resolved(addresses: list[Any]) -> None:
            if self._finished:
                return  # timed out or cancelled meanwhile
            if not addresses:
                self.failed(Failure(DNSLookupError(host)))
                return
            # IPv4 first (a dual-stack name whose backend listens on IPv4
            # only), then each other address in turn if one refuses.
            ordered = sorted(addresses, key=lambda a: a.type != "TCP" or ":" in a.host)
            self._later_addresses = [(a.host, port, factory, reactor) for a in ordered[1:]]
            self._connector = reactor.connectTCP(ordered[0].host, port, factory, timeout=None)

        receiver.done.addCallback(resolved)
        receiver.done.addErrback(self.failed)

    def _end(self) -> Exchange:
        """The attempt is over: its exchange (no longer held here)."""
        self._finished = True
        ex = self._exchange
        assert ex is not None
        self._exchange = None
        ex._attempt = None
        timer = self._timer
        if timer is not None:
            self._timer = None
            timer.cancel()
        return ex

    def _stop(self) -> None:
        connector = self._connector
        if connector is not None:
            try:
                connector.stopConnecting()
            except NotConnectingError:
                pass
        if self._deferred is not None:
            self._deferred.cancel()
