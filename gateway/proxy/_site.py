"""
The client side of the proxy: a twisted.web :class:`Site` with one leaf
resource, a bounded request body, and connection tracking for draining.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

from twisted.python.failure import Failure
from twisted.web import http, server

from ._body import BoundedBody
from ._httpdate import HTTP_DATE

#: Default request-body limit (bytes): above it the request is answered 413.
DEFAULT_MAX_BODY = 100 * 1024 * 1024


class GatewayRequest(server.Request):
    """
    A request that skips resource traversal (the root is a leaf), does not
    pre-set ``Server``/``Date`` headers (the backend's are forwarded; a
    ``Date`` is added at the first write when neither the backend nor the
    gateway set one, RFC 9110 §6.6.1), and tells the proxy when the client
    goes away so the backend exchange is aborted.
    """

    #: Set by the proxy resource while a backend exchange is running.
    exchange: Any = None
    #: Set by the proxy resource: called once if the client disconnects first.
    on_client_gone: Any = None
    #: Set by the proxy resource for an APIM API call (a
    #: :class:`gateway.translate.ApiCall`): read by the access log and metrics.
    api_call: Any = None

    def process(self) -> None:
        self.site = self.channel.site
        try:
            self.render(self.site.resource)
        except BaseException:
            self.processingFailed(Failure())

    def write(self, data: bytes) -> None:
        if not self.startedWriting and not self.responseHeaders.hasHeader(b"date"):
            self.responseHeaders.setRawHeaders(b"date", [HTTP_DATE.at(time.time()).value])
        super().write(data)

    def connectionLost(self, reason: Failure) -> None:
        callback = self.on_client_gone
        self.on_client_gone = None
        super().connectionLost(reason)
        if callback is not None:
            callback(reason)


class _GatewayChannel(http.HTTPChannel):
    """
    An HTTP/1.1 channel that asks the socket for its local address once per
    connection: twisted.web's ``Request.__init__`` calls ``getHost()`` for
    every request, a ``getsockname`` system call each time (about 4% of the
    proxy's time per request in a py-spy profile).
    """

    _local_address: Any = None

    def getHost(self) -> Any:
        address = self._local_address
        if address is None:
            address = self._local_address = self.transport.getHost()
        return address


class GatewaySite(server.Site):
    """
    :class:`Site` for the gateway's HTTP and HTTPS listeners.

    * request bodies are spooled through :class:`BoundedBody` with a limit;
    * twisted.web's own access log is off (the proxy logs its own lines);
    * open channels are tracked so a drain can close idle keep-alive
      connections instead of resetting them at exit.
    """

    requestFactory = GatewayRequest

    def __init__(self, resource: Any, *, max_body: int = DEFAULT_MAX_BODY, **kw: Any) -> None:
        super().__init__(resource, **kw)
        self.max_body = max_body
        self.channels: weakref.WeakSet[Any] = weakref.WeakSet()

    def log(self, request: server.Request) -> None:
        """Access logging is done by the proxy resource, not here."""

    def protocol(self) -> Any:
        # As twisted.web's own factory (HTTP/1.1 that can switch to HTTP/2
        # after ALPN), with the caching channel.
        return http._GenericHTTPChannelProtocol(_GatewayChannel())

    def getContentFile(self, length: int | None) -> BoundedBody:
        return BoundedBody(self.max_body, length)

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        self.channels.add(channel)
        return channel

    def close_idle_connections(self) -> int:
        """
        Close every tracked connection that has no request in progress
        (called after the in-flight requests drained). Returns how many.
        """
        closed = 0
        for tracked in list(self.channels):
            # The site builds twisted.web's protocol switcher, which proxies
            # IProtocol only: the channel behind it (HTTP/1.1, or HTTP/2 after
            # ALPN chose h2) has the transport and the requests.
            channel = getattr(tracked, "_channel", tracked)
            transport = getattr(channel, "transport", None)
            if transport is None or getattr(transport, "disconnecting", False):
                continue
            if getattr(channel, "requests", None) or getattr(channel, "streams", None):
                # A request in progress (HTTP/1.1: it closes after its
                # response because draining marks it non-persistent).
                continue
            _close(channel, transport)
            closed += 1
        return closed


def _close(channel: Any, transport: Any) -> None:
    """
    Close an idle connection cleanly. The channel is registered as its
    transport's producer, and a TLS transport closes (close_notify, then
    FIN) only once no producer is registered, so the producer goes first:
    HTTP/1.1's own ``loseConnection`` does that; an HTTP/2 connection is
    first told ``GOAWAY``, so the client knows no stream was lost.
    """
    h2 = getattr(channel, "conn", None)
    if h2 is not None and hasattr(h2, "close_connection"):
        h2.close_connection()
        transport.write(h2.data_to_send())
        transport.unregisterProducer()
        transport.loseConnection()
    elif hasattr(channel, "loseConnection"):
        channel.loseConnection()
    else:
        transport.loseConnection()
