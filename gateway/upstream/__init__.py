"""
The backend side of the gateway: our own pooled HTTP/1.1 client on
httptools, and the runtime state of balancing over a route's endpoints.

Used only by :mod:`gateway.proxy` (and composed in :mod:`gateway.tap`); it
imports nothing of the gateway but :class:`gateway.translate.Backend`.

* :mod:`._errors`: why an exchange failed, one class per cause.
* :mod:`._exchange`: one request and its response, the caller's
  :class:`ResponseSink` contract.
* :mod:`._connection`: one connection, parsing responses with llhttp.
* :mod:`._upload`: a request body streamed to the backend as it arrives.
* :mod:`._connect`: opening a connection within a timeout.
* :mod:`._pool`: keep-alive reuse, idle expiry, and every retry.
* :mod:`._balancer`: round robin with failure holds, across generations.
* :mod:`._service`: closing the pool's idle connections at shutdown.
"""

from ._balancer import FAILURE_HOLD, Balancer, Balancers
from ._errors import (
    BackendConnectError,
    BackendConnectionLost,
    BackendConnectTimeout,
    BackendError,
    BackendProtocolError,
    BackendResponseTimeout,
    BackendTimeout,
    RequestBodyError,
)
from ._exchange import Exchange, ResponseSink
from ._pool import IDEMPOTENT_METHODS, BackendPool
from ._service import PoolService
from ._upload import BodySource

__all__ = [
    "FAILURE_HOLD",
    "IDEMPOTENT_METHODS",
    "BackendConnectError",
    "BackendConnectTimeout",
    "BackendConnectionLost",
    "BackendError",
    "BackendPool",
    "BackendProtocolError",
    "BackendResponseTimeout",
    "BackendTimeout",
    "Balancer",
    "Balancers",
    "BodySource",
    "Exchange",
    "PoolService",
    "RequestBodyError",
    "ResponseSink",
]
