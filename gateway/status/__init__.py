"""
The status stage: what the gateway writes back about the objects it serves,
after each generation swap (a stage beside observability).

* :mod:`._stage`: :class:`StatusStage`, the reconciler's swap listener,
  handing each new generation to its :class:`StatusWriter`\\ s.
* :mod:`._ingress`: :class:`IngressStatusWriter`, Ingress
  ``status.loadBalancer`` addresses and ``InvalidIngress`` /
  ``RouteShadowed`` Events, from the replica holding the Lease.
* :mod:`._gatewayapi`: :class:`GatewayApiStatusWriter`, the ``status`` of
  our GatewayClasses, Gateways and HTTPRoutes as the Gateway API source's
  resolution says, from the replica holding that source's Lease.

This package may import ``routing``, ``model`` and the sources (for their
Kubernetes client, informers and election); nothing but ``tap`` imports it,
so no source depends on a generation.
"""

from ._gatewayapi import GatewayApiStatusSource, GatewayApiStatusWriter
from ._ingress import IngressStatusWriter, StatusPublisher, address_entries, service_addresses
from ._stage import StatusStage, StatusWriter

__all__ = [
    "GatewayApiStatusSource",
    "GatewayApiStatusWriter",
    "IngressStatusWriter",
    "StatusPublisher",
    "StatusStage",
    "StatusWriter",
    "address_entries",
    "service_addresses",
]
