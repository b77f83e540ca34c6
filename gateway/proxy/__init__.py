"""
The hot path: a twisted.web leaf resource on the client side (forwarding
over :mod:`gateway.upstream`, our own pooled HTTP/1.1 client on httptools)
and a listener that drains at shutdown.

``BackendPool``, ``BackendError`` and ``BackendTimeout`` are re-exported
from :mod:`gateway.upstream` for compatibility; new code imports them from
there.
"""

from gateway.upstream import BackendError, BackendPool, BackendTimeout

from ._alpn import ALPNServer, H2CServer, listener_factory
from ._contracts import ProxyHealth, ProxyObserver, ProxyRequest
from ._h1 import H1Server
from ._h1limits import H1Limits
from ._listener import TrafficListener
from ._replies import envelope
from ._resource import STATUS_PATH, ProxyResource
from ._site import DEFAULT_MAX_BODY, GatewayRequest, GatewaySite

__all__ = [
    "DEFAULT_MAX_BODY",
    "STATUS_PATH",
    "ALPNServer",
    "BackendError",
    "BackendPool",
    "BackendTimeout",
    "GatewayRequest",
    "GatewaySite",
    "H1Limits",
    "H1Server",
    "H2CServer",
    "ProxyHealth",
    "ProxyObserver",
    "ProxyRequest",
    "ProxyResource",
    "TrafficListener",
    "envelope",
    "listener_factory",
]
