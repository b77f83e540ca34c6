"""
Kubernetes Ingress objects → model objects and problems: the Ingress
source's pure decoder.

The source keeps the raw objects it watches (Ingresses, IngressClasses,
Services, Secrets, EndpointSlices) and calls :func:`decode_ingresses`
whenever one of them changes; the objects and problems it returns replace
everything the source holds in the store (``Store.replace_source``), and
translation reports the problems with its own (``GatewayConfig.problems``:
``/config``, the problems metric and the ``InvalidIngress`` Events). No I/O,
no clock, no logging: the same inputs give the same objects and problems,
whatever order they arrived in. Only what the Ingress API itself says is
checked here; host names, paths and backend URLs are validated again by
translation, like every source's.

Rules (``networking.k8s.io/v1``, as the Azure self-hosted gateway and
ingress-nginx read them):

* **Class** (:func:`is_ours`): the ``kubernetes.io/ingress.class`` annotation
  wins when present and must equal our class; else ``spec.ingressClassName``
  must name an IngressClass whose ``spec.controller`` equals our class (a
  class *name* cannot contain ``/``, so the controller is what matches);
  else the Ingress is ours only when one of our IngressClasses is marked
  ``ingressclass.kubernetes.io/is-default-class: "true"``.
* **Rules**: each ``rules[].http.paths[]`` becomes a route: host exact or
  ``*.`` one-label wildcard (absent: any host), ``Exact`` / ``Prefix`` /
  ``ImplementationSpecific`` (treated as ``Prefix``; documented), path sent
  unchanged. ``spec.defaultBackend`` becomes a catch-all ``Prefix /`` on any
  host.
* **Backends**: ``service.name`` + ``port.number`` or ``port.name`` (resolved
  through the Service's ``spec.ports``) → ``http://<svc>.<ns>.<suffix>:<port>``;
  a Service of type ``ExternalName`` → ``http://<externalName>:<port>``. A
  missing Service, an unknown port name and ``resource`` backends are
  problems of that Ingress; that path is left out, the rest is served.
* **Endpoints mode** (``backend_mode="endpoints"``, ``k8s.ingress.backend``):
  the route also carries the ready addresses of the Service's
  EndpointSlices (label ``kubernetes.io/service-name``) on the slice port
  whose name equals the Service port's name, and the gateway balances over
  them itself; an endpoint whose ``conditions.ready`` is false is left out
  (absent counts as ready, as the API documents), only an endpoint's first
  address is used. No ready endpoint: the route stays and is answered 503.
  ``ExternalName`` Services keep their DNS name.
* **TLS**: ``spec.tls[]`` → one certificate per entry from the
  ``kubernetes.io/tls`` Secret ``secretName`` in the Ingress's namespace,
  for ``hosts`` (empty: the hosts of the rules). A missing Secret, another
  type or missing ``tls.crt``/``tls.key`` is a problem; the certificate is
  left out (its hosts fall back to the default certificate).
* **Modification time** ("last one wins", DESIGN.md): the newest
  ``metadata.managedFields[].time``, else ``creationTimestamp``. A
  certificate's time is the newer of its Ingress's and its Secret's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.model import Certificate, ObjectRef, Problem, Route, RouteSet, SourceObject

from ..kubernetes import InvalidSecret, modification_time, tls_secret_pem

__all__ = [
    "BACKEND_MODES",
    "CLASS_ANNOTATION",
    "DEFAULT_CLASS_ANNOTATION",
    "SERVICE_NAME_LABEL",
    "SOURCE",
    "IngressDecoding",
    "IngressInputs",
    "IngressMemo",
    "IngressSettings",
    "decode_ingresses",
    "is_ours",
    "modification_time",
]

CLASS_ANNOTATION = "kubernetes.io/ingress.class"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
BACKEND_MODES = ("service", "endpoints")
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
SOURCE = "ingress"
_PATH_TYPES = ("Exact", "Prefix", "ImplementationSpecific")

KubeObject = Mapping[str, Any]


@dataclass(frozen=True)
class IngressSettings:
    """The settings decoding depends on (``k8s.ingress.*``)."""

    ingress_class: str = "azure-api-management/gateway"
    dns_suffix: str = "svc.cluster.local"
    #: ``service`` (cluster DNS name) or ``endpoints`` (EndpointSlices).
    backend_mode: str = "service"


@dataclass(frozen=True)
class IngressInputs:
    """Everything one decoding reads: raw Kubernetes objects as dicts."""

    ingresses: tuple[KubeObject, ...] = ()
    ingress_classes: tuple[KubeObject, ...] = ()
    services: tuple[KubeObject, ...] = ()
    secrets: tuple[KubeObject, ...] = ()
    endpoint_slices: tuple[KubeObject, ...] = ()
    settings: IngressSettings = field(default_factory=IngressSettings)


@dataclass(frozen=True)
class IngressDecoding:
    """
    :ivar objects: the model objects to hold for source ``ingress``.
    :ivar problems: per Ingress (ref ``ingress:routes/<ns>/<name>``).
    :ivar served: ``ns/name`` of every Ingress of our class (status and
        events are written for these only).
    :ivar secrets: ``ns/name`` of the Secrets served Ingresses reference
        (only those need to be kept in memory).
    """

    objects: tuple[SourceObject, ...] = ()
    problems: tuple[Problem, ...] = ()
    served: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()


def _meta(obj: KubeObject) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _key(obj: KubeObject) -> str:
    meta = _meta(obj)
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def is_ours(ingress: KubeObject, classes: Iterable[KubeObject], ingress_class: str) -> bool:
    """Whether an Ingress belongs to this gateway (rules in the module docstring)."""
    annotations = _meta(ingress).get("annotations") or {}
    if CLASS_ANNOTATION in annotations:
        return annotations[CLASS_ANNOTATION] == ingress_class
    ours = [c for c in classes if (c.get("spec") or {}).get("controller") == ingress_class]
    class_name = (ingress.get("spec") or {}).get("ingressClassName")
    if class_name:
        return any(_meta(c).get("name") == class_name for c in ours)
    return any(
        str((_meta(c).get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION, "")).lower() == "true"
        for c in ours
    )


class _Invalid(ValueError):
    """One part of an Ingress cannot be served."""


@dataclass
class _Context:
    services: dict[str, KubeObject]
    secrets: dict[str, KubeObject]
    settings: IngressSettings
    #: EndpointSlices by ``namespace/service`` (endpoints mode only).
    slices: dict[str, list[KubeObject]] = field(default_factory=dict)
    #: What the Ingress being decoded read: ``(kind, key, identities)``.
    reads: list[tuple[str, str, tuple[int, ...]]] = field(default_factory=list)

    def service(self, key: str) -> KubeObject | None:
        found = self.services.get(key)
        self.reads.append(("service", key, _ids(found)))
        return found

    def secret(self, key: str) -> KubeObject | None:
        found = self.secrets.get(key)
        self.reads.append(("secret", key, _ids(found)))
        return found

    def endpoint_slices(self, key: str) -> list[KubeObject]:
        found = self.slices.get(key, [])
        self.reads.append(("slices", key, tuple(id(s) for s in found)))
        return found

    def unchanged(self, reads: list[tuple[str, str, tuple[int, ...]]]) -> bool:
        """Whether every object in ``reads`` is still the very same object."""
        for kind, key, ids in reads:
            if kind == "service":
                now = _ids(self.services.get(key))
            elif kind == "secret":
                now = _ids(self.secrets.get(key))
            else:
                now = tuple(id(s) for s in self.slices.get(key, ()))
            if now != ids:
                return False
        return True


def _ids(obj: KubeObject | None) -> tuple[int, ...]:
    return () if obj is None else (id(obj),)


@dataclass
class _Decoded:
    """One Ingress's share of a decoding, and what it was computed from."""

    ingress: KubeObject
    reads: list[tuple[str, str, tuple[int, ...]]]
    objects: list[SourceObject]
    problems: list[Problem]
    secrets: set[str]


class IngressMemo:
    """
    The per-Ingress results of the last decoding, for the next one.

    The source decodes all Ingresses again on every change (a Service or a
    Secret may affect any of them), but usually one object changed among
    thousands. An Ingress's result is reused when the Ingress is the very
    same object as last time (informer caches replace an object only when
    it changes) and so is everything it read (its Services, Secrets and
    EndpointSlices, including their absence). Any change of the
    IngressClasses or the settings starts afresh. Reusing also keeps the
    model objects identical, which lets the reconciler reuse its work too.

    Objects are kept with the results, so ids stay unique while compared.
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Decoded] = {}
        self._classes: tuple[Any, ...] = ()
        self.hits = 0
        self.misses = 0

    def _reset_if(self, classes: tuple[KubeObject, ...], settings: IngressSettings) -> None:
        key = (settings, *classes)
        if len(key) != len(self._classes) or any(a is not b for a, b in zip(key, self._classes, strict=True)):
            self._entries = {}
            self._classes = key


def _slices_by_service(slices: Iterable[KubeObject]) -> dict[str, list[KubeObject]]:
    result: dict[str, list[KubeObject]] = {}
    for item in slices:
        meta = _meta(item)
        service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if service:
            result.setdefault(f"{meta.get('namespace', '')}/{service}", []).append(item)
    return result


def _ready_endpoints(slices: Iterable[KubeObject], port_name: str) -> tuple[str, ...]:
    """``http://address:port`` of every ready endpoint on the named slice port."""
    urls = set()
    for item in slices:
        ports = [
            p.get("port")
            for p in item.get("ports") or ()
            if (p.get("name") or "") == port_name and p.get("protocol", "TCP") == "TCP"
        ]
        if not ports or not isinstance(ports[0], int):
            continue
        ipv6 = item.get("addressType") == "IPv6"
        for endpoint in item.get("endpoints") or ():
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            addresses = endpoint.get("addresses") or ()
            if not addresses:
                continue
            address = f"[{addresses[0]}]" if ipv6 else addresses[0]
            urls.add(f"http://{address}:{ports[0]}")
    return tuple(sorted(urls))


def _backend(
    backend: Mapping[str, Any], namespace: str, ctx: _Context
) -> tuple[str, tuple[str, ...] | None]:
    """The backend URL of an Ingress backend, and its endpoints in endpoints mode."""
    if not isinstance(backend, Mapping):
        raise _Invalid("backend must be an object")
    if "resource" in backend:
        kind = (backend.get("resource") or {}).get("kind", "?")
        raise _Invalid(f"resource backends ({kind}) are not supported")
    service = backend.get("service")
    if not isinstance(service, Mapping) or not service.get("name"):
        raise _Invalid("backend.service.name is required")
    name = service["name"]
    port = service.get("port") or {}
    svc = ctx.service(f"{namespace}/{name}")
    if svc is None:
        raise _Invalid(f"Service {namespace}/{name} not found")
    spec = svc.get("spec") or {}
    service_ports = spec.get("ports") or ()
    if "number" in port:
        number = port["number"]
        matches = [p for p in service_ports if p.get("port") == number]
    elif "name" in port:
        matches = [p for p in service_ports if p.get("name") == port["name"]]
        if not matches:
            raise _Invalid(f"Service {namespace}/{name} has no port named {port['name']!r}")
        number = matches[0].get("port")
    else:
        raise _Invalid("backend.service.port needs a number or a name")
    if not isinstance(number, int) or not 0 < number < 65536:
        raise _Invalid(f"invalid port {number!r} for Service {namespace}/{name}")
    if spec.get("type") == "ExternalName" and spec.get("externalName"):
        return f"http://{spec['externalName']}:{number}", None
    url = f"http://{name}.{namespace}.{ctx.settings.dns_suffix}:{number}"
    if ctx.settings.backend_mode != "endpoints":
        return url, None
    if not matches:
        raise _Invalid(f"Service {namespace}/{name} has no port {number}")
    port_name = matches[0].get("name") or ""
    return url, _ready_endpoints(ctx.endpoint_slices(f"{namespace}/{name}"), port_name)


def _routes(ingress: KubeObject, ctx: _Context, problems: list[str]) -> list[Route]:
    namespace = _meta(ingress).get("namespace", "")
    spec = ingress.get("spec") or {}
    routes: list[Route] = []
    default = spec.get("defaultBackend")
    if default is not None:
        try:
            url, endpoints = _backend(default, namespace, ctx)
            routes.append(Route(path="/", backend=url, endpoints=endpoints))
        except _Invalid as e:
            problems.append(f"defaultBackend: {e}")
    rules = _rule_routes(spec, namespace, ctx, problems)
    if routes and any(_catches_all(route) for route in rules):
        # "DefaultBackend is the backend that should handle requests that
        # don't match any rule" (networking.k8s.io/v1 IngressSpec). A
        # host-less Prefix "/" rule matches every request on every host,
        # so nothing is left for the defaultBackend: leave it out rather
        # than let it take the rule's key (it came first, and translation
        # keeps the first of two equal keys of one object).
        routes = []
    return routes + rules


def _catches_all(route: Route) -> bool:
    """Whether a rule's route matches every request (host-less, Prefix ``/``)."""
    return route.host is None and route.path == "/" and route.path_type != "Exact"


def _rule_routes(
    spec: Mapping[str, Any], namespace: str, ctx: _Context, problems: list[str]
) -> list[Route]:
    routes: list[Route] = []
    for r, rule in enumerate(spec.get("rules") or ()):
        host = rule.get("host") or None
        for p, path in enumerate((rule.get("http") or {}).get("paths") or ()):
            where = f"rules[{r}].http.paths[{p}]"
            path_type = path.get("pathType")
            value = path.get("path")
            if path_type not in _PATH_TYPES:
                problems.append(f"{where}: pathType must be one of {', '.join(_PATH_TYPES)}")
                continue
            if value is None and path_type == "ImplementationSpecific":
                value = "/"
            if not isinstance(value, str) or not value.startswith("/"):
                problems.append(f"{where}: path {value!r} must start with '/'")
                continue
            try:
                url, endpoints = _backend(path.get("backend"), namespace, ctx)
            except _Invalid as e:
                problems.append(f"{where}: {e}")
                continue
            routes.append(
                Route(path=value, backend=url, host=host, path_type=path_type, endpoints=endpoints)
            )
    return routes


def _certificates(
    ingress: KubeObject, ctx: _Context, modified: float, problems: list[str], secrets: set[str]
) -> list[SourceObject]:
    meta = _meta(ingress)
    namespace = meta.get("namespace", "")
    spec = ingress.get("spec") or {}
    rule_hosts = sorted({r.get("host") for r in spec.get("rules") or () if r.get("host")})
    result = []
    for t, tls in enumerate(spec.get("tls") or ()):
        secret_name = tls.get("secretName")
        hosts = tuple(tls.get("hosts") or rule_hosts)
        if not secret_name:
            problems.append(f"tls[{t}]: secretName is required")
            continue
        key = f"{namespace}/{secret_name}"
        secrets.add(key)
        secret = ctx.secret(key)
        try:
            cert, private = tls_secret_pem(secret)
        except InvalidSecret as e:
            problems.append(f"tls[{t}]: Secret {key} {e}")
            continue
        result.append(
            SourceObject(
                ObjectRef(SOURCE, "certificate", f"{_key(ingress)}/{secret_name}"),
                max(modified, modification_time(secret)),
                Certificate(hosts=hosts, cert_pem=cert, key_pem=private),
            )
        )
    return result


def _decode_one(ingress: KubeObject, ctx: _Context) -> _Decoded:
    key = _key(ingress)
    ref = ObjectRef(SOURCE, "routes", key)
    modified = modification_time(ingress)
    messages: list[str] = []
    secrets: set[str] = set()
    ctx.reads = []
    objects: list[SourceObject] = []
    routes = _routes(ingress, ctx, messages)
    if routes:
        objects.append(SourceObject(ref, modified, RouteSet(tuple(routes))))
    objects.extend(_certificates(ingress, ctx, modified, messages, secrets))
    problems = [Problem(ref, message) for message in messages]
    return _Decoded(ingress, ctx.reads, objects, problems, secrets)


def decode_ingresses(
    inputs: IngressInputs, memo: IngressMemo | None = None
) -> IngressDecoding:
    """
    Decode every Ingress of our class; see the module docstring. With
    ``memo`` (kept by the caller from one call to the next), unchanged
    Ingresses are not decoded again: the result is the same.
    """
    ctx = _Context(
        services={_key(s): s for s in inputs.services},
        secrets={_key(s): s for s in inputs.secrets},
        settings=inputs.settings,
        slices=_slices_by_service(inputs.endpoint_slices),
    )
    entries: dict[str, _Decoded] = {}
    if memo is not None:
        memo._reset_if(inputs.ingress_classes, inputs.settings)
    objects: list[SourceObject] = []
    problems: list[Problem] = []
    served: list[str] = []
    secrets: set[str] = set()
    for ingress in sorted(inputs.ingresses, key=_key):
        key = _key(ingress)
        known = memo._entries.get(key) if memo is not None else None
        if known is not None and known.ingress is ingress and ctx.unchanged(known.reads):
            result = known
            memo.hits += 1  # type: ignore[union-attr]
        else:
            if not is_ours(ingress, inputs.ingress_classes, inputs.settings.ingress_class):
                continue
            result = _decode_one(ingress, ctx)
            if memo is not None:
                memo.misses += 1
        entries[key] = result
        served.append(key)
        objects.extend(result.objects)
        problems.extend(result.problems)
        secrets.update(result.secrets)
    if memo is not None:
        memo._entries = entries
    return IngressDecoding(tuple(objects), tuple(problems), tuple(served), tuple(sorted(secrets)))
