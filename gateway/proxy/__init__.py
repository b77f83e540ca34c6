"""
The hot path: a twisted.web leaf resource on the client side, our own
pooled HTTP/1.1 client on httptools on the backend side, and a listener
that drains at shutdown.
"""

from ._client import BackendError, BackendPool, BackendTimeout
from ._listener import TrafficListener
from ._resource import STATUS_PATH, ProxyResource, envelope
from ._site import DEFAULT_MAX_BODY, GatewayRequest, GatewaySite

__all__ = [
    "DEFAULT_MAX_BODY",
    "STATUS_PATH",
    "BackendError",
    "BackendPool",
    "BackendTimeout",
    "GatewayRequest",
    "GatewaySite",
    "ProxyResource",
    "TrafficListener",
    "envelope",
]
