"""
``backendRefs`` → weighted :class:`~._types.Backend`\\ s.

A reference is to a core ``Service`` (other kinds: ``InvalidKind``), in
the route's namespace unless a ReferenceGrant in the Service's namespace
allows the route's (``RefNotPermitted``), that exists and has the port
(``BackendNotFound``). An invalid reference stays in the list with no
URL: the spec wants its share of requests answered 500, so dropping it
would silently send that traffic elsewhere. The URL is the Service's
cluster DNS name, as the Ingress source builds it
(``http://<svc>.<ns>.<suffix>:<port>``; ``ExternalName``: its name).

``ExternalName`` Services are refused unless the operator allows them
(``k8s.gateway.allow-external-name``): a tenant who may create a Service
could otherwise point it at ``localhost`` or a cloud metadata endpoint and
have the gateway fetch it (CVE-2021-25740; the spec says implementations
SHOULD NOT support them). Refused, the reference stays without URL with
the problem ``UnsupportedValue``, answered 500 like any invalid one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ._grants import Reference, permitted
from ._kube import GROUP, KubeObject, spec
from ._types import Backend

__all__ = ["EXTERNAL_NAME_SETTING", "UNSUPPORTED_VALUE", "read_backends"]

#: The setting that allows ExternalName Services, named in the route's status.
EXTERNAL_NAME_SETTING = "k8s.gateway.allow-external-name"
#: The problem of a reference to an ExternalName Service when they are not allowed.
UNSUPPORTED_VALUE = "UnsupportedValue"


def _is_external_name(service: KubeObject) -> bool:
    return spec(service).get("type") == "ExternalName"


def _url(service: KubeObject, name: str, namespace: str, port: int, dns_suffix: str) -> str | None:
    body = spec(service)
    if _is_external_name(service) and body.get("externalName"):
        return f"http://{body['externalName']}:{port}"
    if not any(p.get("port") == port for p in body.get("ports") or ()):
        return None
    return f"http://{name}.{namespace}.{dns_suffix}:{port}"


def read_backends(
    refs: Iterable[Mapping[str, Any]],
    route_namespace: str,
    services: Mapping[str, KubeObject],
    grants: Iterable[KubeObject],
    dns_suffix: str,
    allow_external_name: bool = False,
) -> tuple[Backend, ...]:
    """
    A rule's backends, valid or not, in the order given;
    ``allow_external_name``: serve ``ExternalName`` Services (see the
    module docstring).
    """
    grants = tuple(grants)
    found = []
    for ref in refs:
        name = ref.get("name", "")
        namespace = ref.get("namespace") or route_namespace
        port = ref.get("port")
        weight = ref.get("weight", 1)
        target = f"{namespace}/{name}"
        group, kind = ref.get("group") or "", ref.get("kind") or "Service"
        problem = None
        url = None
        if (group, kind) != ("", "Service"):
            problem = "InvalidKind"
        elif not permitted(
            Reference(GROUP, "HTTPRoute", route_namespace, "", "Service", namespace, name), grants
        ):
            problem = "RefNotPermitted"
        elif target not in services or not isinstance(port, int):
            problem = "BackendNotFound"
        elif _is_external_name(services[target]) and not allow_external_name:
            problem = UNSUPPORTED_VALUE
        else:
            url = _url(services[target], name, namespace, port, dns_suffix)
            if url is None:
                problem = "BackendNotFound"
        found.append(Backend(target, port, weight, url, problem))
    return tuple(found)
