"""
The resource types the gateway reads and writes, and where each lives in
the API (``/api/v1/...`` for the core group, ``/apis/<group>/<version>/...``
for the others).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

__all__ = [
    "ENDPOINT_SLICE",
    "EVENT",
    "GATEWAY",
    "GATEWAY_CLASS",
    "HTTP_ROUTE",
    "INGRESS",
    "INGRESS_CLASS",
    "LEASE",
    "NAMESPACE",
    "REFERENCE_GRANT",
    "SECRET",
    "SERVICE",
    "Kind",
]


@dataclass(frozen=True)
class Kind:
    """
    One resource type: where it lives in the API and what it is called.

    :ivar plural: the resource name in URLs (``ingresses``).
    :ivar namespaced: ``False`` for cluster-scoped kinds (IngressClass).
    """

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        """
        The URL path of the collection (``namespace=None``: every namespace)
        or of one object.
        """
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{quote(namespace, safe='')}"
        elif not self.namespaced and namespace is not None:
            raise ValueError(f"{self.kind} is cluster-scoped: no namespace")
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{quote(name, safe='')}"
            if subresource is not None:
                base += f"/{subresource}"
        return base

    def __str__(self) -> str:
        return f"{self.api_version} {self.kind}"


INGRESS = Kind("networking.k8s.io", "v1", "Ingress", "ingresses")
INGRESS_CLASS = Kind("networking.k8s.io", "v1", "IngressClass", "ingressclasses", namespaced=False)
SERVICE = Kind("", "v1", "Service", "services")
SECRET = Kind("", "v1", "Secret", "secrets")
ENDPOINT_SLICE = Kind("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices")
LEASE = Kind("coordination.k8s.io", "v1", "Lease", "leases")
EVENT = Kind("", "v1", "Event", "events")
NAMESPACE = Kind("", "v1", "Namespace", "namespaces", namespaced=False)

# The Gateway API (gateway.networking.k8s.io), read by the Gateway API
# source; every kind but ReferenceGrant has a /status subresource.
GATEWAY_CLASS = Kind(
    "gateway.networking.k8s.io", "v1", "GatewayClass", "gatewayclasses", namespaced=False
)
GATEWAY = Kind("gateway.networking.k8s.io", "v1", "Gateway", "gateways")
HTTP_ROUTE = Kind("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes")
REFERENCE_GRANT = Kind("gateway.networking.k8s.io", "v1beta1", "ReferenceGrant", "referencegrants")
