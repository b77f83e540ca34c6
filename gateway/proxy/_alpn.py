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

Every TLS connection starts as an HTTP/1.1 one: ``H1Server.accepted``
counts the HTTP/2 connections too.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.web.resource import Resource

from ._h1 import H1Channel, H1Server
from ._h1limits import H1Limits
from ._site import GatewaySite

__all__ = ["ALPNServer", "listener_factory"]


class _ALPNChannel(H1Channel):
    """An HTTP/1.1 channel that becomes an HTTP/2 connection if ALPN chose h2."""

    #: the site HTTP/2 streams are served by, until the first read
    h2_site: GatewaySite | None = None

    def dataReceived(self, data: bytes) -> None:
        site = self.h2_site
        if site is not None:
            self.h2_site = None
            if getattr(self.transport, "negotiatedProtocol", None) == b"h2":
                self._become_h2(site, data)
                return
        H1Channel.dataReceived(self, data)

    def _become_h2(self, site: GatewaySite, data: bytes) -> None:
        """
        Hand the connection to an ``H2Connection``, as twisted.web's switch
        does: this channel lets go of the transport (producer, timers, the
        drain's list), the new connection is made on the same transport and
        registered as its producer, and the TLS protocol delivers to it from
        now on (``wrappedProtocol``, which it reads for every record).
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
        transport.wrappedProtocol = connection
        connection.makeConnection(transport)
        transport.registerProducer(connection, True)
        site.channels.add(connection)
        connection.dataReceived(data)


class ALPNServer(Factory):
    """
    The HTTPS listener's application factory (wrapped in TLS by
    :class:`gateway.tls.TLSServerFactory`): HTTP/1.1 (ALPN ``http/1.1`` or
    no ALPN) by ``h1``, with its limits and ``on_refused`` hook; HTTP/2 by
    ``site``'s ``H2Connection``. Both serve the same resource.

    It drains as :class:`GatewaySite` and :class:`H1Server` do
    (:meth:`close_idle_connections`), so :class:`TrafficListener` takes it
    as its ``site``.
    """

    def __init__(self, h1: H1Server, site: GatewaySite) -> None:
        self.h1 = h1
        self.site = site

    def buildProtocol(self, addr: Any) -> H1Channel:
        channel = self.h1.new_channel(_ALPNChannel)
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


def listener_factory(
    resource: Resource,
    clock: IReactorTime,
    *,
    strict: bool,
    tls: bool,
    limits: H1Limits | None = None,
    on_refused: Any = None,
) -> GatewaySite | H1Server | ALPNServer:
    """
    What a traffic listener serves ``resource`` with (before TLS, which the
    caller adds for the HTTPS listener), and what its drain closes:

    * ``strict`` (``gateway.http1.server: strict``): :class:`H1Server` on the
      plain port, :class:`ALPNServer` on the TLS port;
    * else (``twisted``): twisted.web's :class:`GatewaySite` on both (over
      TLS it switches to HTTP/2 itself).

    :param limits: the HTTP/1.1 server's limits; ``max_body`` applies to
        the site (HTTP/2, or twisted.web) too.
    :param on_refused: see :class:`H1Server`.
    """
    limits = limits if limits is not None else H1Limits()
    site = GatewaySite(resource, max_body=limits.max_body)
    if not strict:
        return site
    h1 = H1Server(resource, clock, limits, on_refused=on_refused)
    return ALPNServer(h1, site) if tls else h1
