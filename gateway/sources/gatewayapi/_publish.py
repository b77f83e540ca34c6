"""
What the Gateway API source holds in the store: one
:class:`~gateway.model.GatewayRoutes` per Gateway of ours (from
:func:`._bodies.bodies`), the HTTPS listeners' certificates, read from
their Secrets, and the problems the resolution found. Pure (no I/O, no
clock), like the resolver it follows.

* **Routes** (:func:`route_objects`): each Gateway's body, modified when
  the newest of the Gateway and the HTTPRoutes it serves was: the time
  comes from the objects (``managedFields``, never a status write), so
  "last one wins" against the other sources survives a restart.

* **Secrets to keep** (:func:`referenced_secrets`): every Secret a
  ``certificateRefs`` entry of an HTTPS listener of one of our Gateways
  names, whether or not it exists or is permitted yet, so the source can
  fetch a newly named one before resolving without it. The resolution's
  own ``secrets`` are only those already found usable.
* **Certificates** (:func:`certificates`): one model
  :class:`~gateway.model.Certificate` per programmed listener and usable
  Secret, for the listener's hostname (none: the certificate's own DNS
  names). The PEM is decoded by the Ingress source's decoder, so both
  sources accept and refuse the same Secrets; a Secret whose data is not
  base64 PEM is a problem of that certificate and is left out.
* **Problems** (:func:`resolution_problems`): each failing condition of a
  listener or of an HTTPRoute's parent (what the status writer also
  writes to the objects' status), so ``/config`` and the logs name them
  like the other sources' problems.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gateway.model import Certificate, ObjectRef, Problem, RouteSet, SourceObject, kind_of

from ..kubernetes import InvalidSecret, modification_time, tls_secret_pem
from ._bodies import BodiesMemo, bodies
from ._kube import KubeObject, key, meta, spec
from ._types import Condition, Resolution

__all__ = [
    "SOURCE",
    "certificates",
    "keyed",
    "ours",
    "problem_ref",
    "referenced_secrets",
    "resolution_problems",
    "route_objects",
]

#: The store's name for this source.
SOURCE = "gatewayapi"

#: Condition types whose ``True`` is the failure.
_BAD_WHEN_TRUE = ("Conflicted", "PartiallyInvalid")


def ours(
    gateway_classes: Iterable[KubeObject], gateways: Iterable[KubeObject], controller: str
) -> list[KubeObject]:
    """The Gateways whose class names ``controller`` (the resolver's rule)."""
    names = {
        meta(c).get("name") for c in gateway_classes if spec(c).get("controllerName") == controller
    }
    return [g for g in gateways if spec(g).get("gatewayClassName") in names]


def referenced_secrets(gateways: Iterable[KubeObject]) -> set[str]:
    """``namespace/name`` of every Secret an HTTPS listener of ``gateways`` names."""
    wanted: set[str] = set()
    for gateway in gateways:
        namespace = meta(gateway).get("namespace", "")
        for listener in spec(gateway).get("listeners") or ():
            if listener.get("protocol") != "HTTPS":
                continue
            for ref in (listener.get("tls") or {}).get("certificateRefs") or ():
                if (ref.get("group") or "", ref.get("kind") or "Secret") == ("", "Secret"):
                    wanted.add(f"{ref.get('namespace') or namespace}/{ref.get('name', '')}")
    return wanted


def certificates(
    resolution: Resolution,
    gateways: Mapping[str, KubeObject],
    secrets: Mapping[str, KubeObject],
) -> tuple[list[SourceObject], list[Problem]]:
    """
    The certificates of the resolution's listeners (see the module
    docstring). ``gateways`` and ``secrets`` by ``namespace/name``. The
    modification time is the newer of the Gateway's and the Secret's, so
    a renewed certificate wins "last one wins" over an older one for the
    same host from another source.
    """
    objects: list[SourceObject] = []
    problems: list[Problem] = []
    seen: set[tuple[tuple[str, ...], str]] = set()
    for listener in resolution.listeners:
        hosts = (listener.hostname,) if listener.hostname else ()
        for secret_key in listener.certificates:
            if (hosts, secret_key) in seen:
                # The same host and Secret on another port: one certificate.
                continue
            seen.add((hosts, secret_key))
            ref = ObjectRef(
                SOURCE, kind_of(Certificate), f"{listener.gateway}/{listener.name}/{secret_key}"
            )
            secret = secrets.get(secret_key)
            try:
                cert, private = tls_secret_pem(secret)
            except InvalidSecret as e:
                problems.append(Problem(ref, f"listener {listener.name}: Secret {secret_key} {e}"))
                continue
            assert secret is not None  # tls_secret_pem refuses None
            gateway = gateways.get(listener.gateway)
            modified = max(
                modification_time(gateway) if gateway is not None else 0.0,
                modification_time(secret),
            )
            objects.append(
                SourceObject(
                    ref, modified, Certificate(hosts=hosts, cert_pem=cert, key_pem=private)
                )
            )
    return objects, problems


def route_objects(
    resolution: Resolution,
    gateways: Mapping[str, KubeObject],
    routes: Mapping[str, KubeObject],
    memo: BodiesMemo | None = None,
) -> list[SourceObject]:
    """
    The Gateways' route bodies as store objects (see the module
    docstring); ``gateways`` and ``routes`` (HTTPRoutes) by
    ``namespace/name``; ``memo``: the source's, see :class:`BodiesMemo`.
    """
    objects = []
    for name, body in bodies(resolution, memo).items():
        times = [modification_time(gateways[name])] if name in gateways else []
        times.extend(
            modification_time(routes[route])
            for route in {rule.route for rule in body.rules}
            if route in routes
        )
        objects.append(
            SourceObject(ObjectRef(SOURCE, kind_of(body), name), max(times, default=0.0), body)
        )
    return objects


def problem_ref(kind: str, name: str) -> ObjectRef:
    """
    The ref problems of a Gateway (``kind`` ``Gateway``) or an HTTPRoute
    are reported under: ``gatewayapi:routes/<Kind>/<namespace>/<name>``.
    """
    return ObjectRef(SOURCE, kind_of(RouteSet), f"{kind}/{name}")


def _failing(conditions: Iterable[Condition]) -> list[Condition]:
    return [
        c
        for c in conditions
        if (c.status if c.type in _BAD_WHEN_TRUE else not c.status) and c.type != "Programmed"
    ]


def _describe(condition: Condition) -> str:
    verdict = "True" if condition.status else "False"
    text = f"{condition.type}={verdict} {condition.reason}"
    return f"{text}: {condition.message}" if condition.message else text


def resolution_problems(resolution: Resolution) -> list[Problem]:
    """
    One problem per failing listener or route-parent condition
    (``Programmed=False`` only follows from another, so it is left out).
    """
    problems: list[Problem] = []
    for gateway in resolution.gateways:
        ref = problem_ref("Gateway", gateway.gateway)
        for listener in gateway.listeners:
            for condition in _failing(listener.conditions):
                problems.append(Problem(ref, f"listener {listener.name}: {_describe(condition)}"))
    for route in resolution.routes:
        ref = problem_ref("HTTPRoute", route.route)
        for status in route.parents:
            parent = status.parent
            name = f"{parent.namespace}/{parent.name}"
            if parent.section_name:
                name += f"/{parent.section_name}"
            for condition in _failing(status.conditions):
                problems.append(Problem(ref, f"parent {name}: {_describe(condition)}"))
    return problems


def keyed(objects: Iterable[KubeObject]) -> dict[str, KubeObject]:
    """Objects by ``namespace/name``."""
    return {key(o): o for o in objects}
