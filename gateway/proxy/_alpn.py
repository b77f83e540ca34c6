"""
The HTTPS listener's protocol switch: HTTP/1.1 connections served by our
strict server (:class:`~gateway.proxy.H1Server`), HTTP/2 by Twisted's
``H2Connection`` over the :class:`~gateway.proxy.GatewaySite`, as ALPN chose.

Twisted's TLS protocol makes the application protocol's connection at the
accept, before the handshake, so the negotiated protocol is known only when
the first application bytes arrive (the handshake is complete by then).
twisted.web's ``_GenericHTTPChannelProtocol`` switches at that point and
stays a proxy in front of the chosen channel for the connection's life. The
same switch here is smaller: every connection starts as an HTTP/1.1 channel
(its header timeout runs from the accept, so a client that never completes
its handshake, or never sends a request, is closed at that timeout as on
the plain port); on its first bytes, if ALPN chose ``h2``, the channel puts
an ``H2Connection`` in its place as the TLS protocol's application protocol
and steps out. HTTP/1.1 connections pay one attribute test and one call per
read, HTTP/2 connections nothing (no proxy in front of them).

The plain listener may serve HTTP/2 too, to clients with prior knowledge
(h2c, RFC 9113 §3.3: no ALPN, no ``Upgrade``; what a TLS-terminating load
balancer or an in-cluster client that speaks HTTP/2 sends). Such a client
opens with the connection preface, ``PRI * HTTP/2.0`` and ``SM``, which
no HTTP/1.1 request can be (the strict server answers it 505 otherwise): the
same switch, decided by the first 24 bytes instead of ALPN. A first read
shorter than that which is still a prefix of the preface is held until the
bytes decide (the header timeout still runs).

Every connection starts as an HTTP/1.1 one: ``H1Server.accepted`` counts
the HTTP/2 connections too.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.web.resource import Resource

from ._h1 import H1Channel, H1Server
from ._h1limits import H1Limits
from ._site import GatewaySite

__all__ = ["H2_PREFACE", "ALPNServer", "H2CServer", "listener_factory"]

#: What an HTTP/2 client sends first on a connection (RFC 9113 §3.4).
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class _SwitchingChannel(H1Channel):
    """
    An HTTP/1.1 channel that may become an HTTP/2 connection on its first
    bytes; a subclass says when (:meth:`_h2_decides`).
    """

    #: the site HTTP/2 streams are served by, until the protocol is known
    h2_site: GatewaySite | None = None

    def dataReceived(self, data: bytes) -> None:
        site = self.h2_site
        if site is not None:
            decided = self._h2_decides(data)
            if decided is None:
                return  # not known yet: held
            self.h2_site = None
            is_h2, data = decided
            if is_h2:
                self._become_h2(site, data)
                return
            # HTTP/1.1 for good: a plain H1Channel from now on, so that its
            # later reads go straight to H1Channel.dataReceived (the same
            # layout: the subclass adds no slots, only class attributes).
            self.__class__ = H1Channel  # type: ignore[assignment]
        H1Channel.dataReceived(self, data)

    def _h2_decides(self, data: bytes) -> tuple[bool, bytes] | None:
        """
        Whether the connection is HTTP/2, and the bytes to go on with; or
        ``None`` when ``data`` does not tell yet (the subclass holds it).
        """
        raise NotImplementedError

    def _become_h2(self, site: GatewaySite, data: bytes) -> None:
        """
        Hand the connection to an ``H2Connection``, as twisted.web's switch
        does: this channel lets go of the transport (producer, timers, the
        drain's list), the new connection is made on the same transport and
        registered as its producer, and the transport delivers to it from
        now on: the TLS protocol's ``wrappedProtocol`` (which it reads for
        every record), or the TCP connection's ``protocol``.
        """
        from twisted.web._http2 import H2Connection  # needs the h2 extra, as ALPN h2 does

        transport = self.transport
        self._gone = self._broken = True
        self._cancel_timers()
        self.server.channels.discard(self)
        self._unregister()
        connection: Any = H2Connection(self.clock)
        connection.requestFactory = site.requestFactory
        connection.site = site
        connection.factory = site
        connection.timeOut = site.timeOut
        connection.callLater = self.clock.callLater
        if isinstance(transport, tcp.Connection):
            transport.protocol = connection
        else:
            transport.wrappedProtocol = connection
        connection.makeConnection(transport)
        transport.registerProducer(connection, True)
        site.channels.add(connection)
        connection.dataReceived(data)


class _ALPNChannel(_SwitchingChannel):
    """HTTP/2 if ALPN chose h2 (the handshake is over by the first bytes)."""

    def _h2_decides(self, data: bytes) -> tuple[bool, bytes]:
        return getattr(self.transport, "negotiatedProtocol", None) == b"h2", data


class _PrefaceChannel(_SwitchingChannel):
    """HTTP/2 if the connection opens with the HTTP/2 preface (h2c, prior knowledge)."""

    #: the first bytes, while they are a proper prefix of the preface
    _opening = b""

    def _h2_decides(self, data: bytes) -> tuple[bool, bytes] | None:
        if self._opening:
            data = self._opening + data
            self._opening = b""
        size = min(len(data), len(H2_PREFACE))
        if data[:size] != H2_PREFACE[:size]:
            return False, data
        if size == len(H2_PREFACE):
            return True, data
        self._opening = data  # "P", "PRI * HT"...: the next read decides
        return None

    def _request_begun(self) -> bool:
        # Bytes held are a request begun (HTTP/1.1 or HTTP/2): not idle for
        # a drain, and answered 408 at the header timeout, not closed
        # silently as an empty connection is.
        return bool(self._opening) or H1Channel._request_begun(self)

    def _reject(self, status: int, message: str) -> None:
        # Answered in HTTP/1.1 (the header timeout while bytes are held):
        # the decision is over, what was held and what follows is dropped.
        self.h2_site = None
        H1Channel._reject(self, status, message)
        self._opening = b""


class _SwitchingServer(Factory):
    """
    An application factory whose connections start as HTTP/1.1 (by ``h1``,
    with its limits and ``on_refused`` hook) and may become HTTP/2 (by
    ``site``'s ``H2Connection``); both serve the same resource. A subclass
    names the channel that decides (:attr:`channel_kind`).

    It drains as :class:`GatewaySite` and :class:`H1Server` do
    (:meth:`close_idle_connections`), so :class:`TrafficListener` takes it
    as its ``site``.
    """

    channel_kind: type[_SwitchingChannel]

    def __init__(self, h1: H1Server, site: GatewaySite) -> None:
        self.h1 = h1
        self.site = site

    def buildProtocol(self, addr: Any) -> H1Channel:
        channel = self.h1.new_channel(self.channel_kind)
        channel.h2_site = self.site
        return channel

    def startFactory(self) -> None:
        # As when the site was the TLS factory's wrapped factory.
        self.site.doStart()

    def stopFactory(self) -> None:
        self.site.doStop()

    def close_idle_connections(self) -> int:
        """Close every HTTP/1.1 and HTTP/2 connection between requests. Returns how many."""
        return self.h1.close_idle_connections() + self.site.close_idle_connections()


class ALPNServer(_SwitchingServer):
    """
    The HTTPS listener's application factory (wrapped in TLS by
    :class:`gateway.tls.TLSServerFactory`): HTTP/1.1 for ALPN ``http/1.1``
    or no ALPN, HTTP/2 for ALPN ``h2``.
    """

    channel_kind = _ALPNChannel


class H2CServer(_SwitchingServer):
    """
    The plain listener's factory with ``gateway.http2.cleartext``: HTTP/1.1,
    and HTTP/2 for a client with prior knowledge (its connection opens with
    :data:`H2_PREFACE`).
    """

    channel_kind = _PrefaceChannel


def listener_factory(
    resource: Resource,
    clock: IReactorTime,
    *,
    strict: bool,
    tls: bool,
    limits: H1Limits | None = None,
    on_refused: Any = None,
    h2c: bool = False,
) -> GatewaySite | H1Server | ALPNServer | H2CServer:
    """
    What a traffic listener serves ``resource`` with (before TLS, which the
    caller adds for the HTTPS listener), and what its drain closes:

    * ``strict`` (``gateway.http1.server: strict``): on the plain port,
      :class:`H2CServer` with ``h2c`` (``gateway.http2.cleartext``), else
      :class:`H1Server`; :class:`ALPNServer` on the TLS port;
    * else (``twisted``): twisted.web's :class:`GatewaySite` on both (over
      TLS it switches to HTTP/2 itself; no h2c).

    :param limits: the HTTP/1.1 server's limits; ``max_body`` applies to
        the site (HTTP/2, or twisted.web) too.
    :param on_refused: see :class:`H1Server`.
    :param h2c: serve HTTP/2 with prior knowledge on the plain port.
    """
    limits = limits if limits is not None else H1Limits()
    site = GatewaySite(resource, max_body=limits.max_body)
    if not strict:
        return site
    h1 = H1Server(resource, clock, limits, on_refused=on_refused)
    if tls:
        return ALPNServer(h1, site)
    return H2CServer(h1, site) if h2c else h1
