"""
Gateway API resources → :class:`~._types.Resolution`: the pure core of the
Gateway API source.

Given the raw objects the source watches (GatewayClass, Gateway, HTTPRoute
``gateway.networking.k8s.io/v1``, ReferenceGrant ``v1beta1`` or ``v1``,
Services, Secrets, Namespaces), :func:`resolve` decides which classes and
Gateways are ours, which listeners are programmed, where every HTTPRoute
attaches, the rules each listener serves per hostname in the spec's
precedence order, and every status condition the Lease holder will write.
No I/O, no clock, no logging: the same inputs give the same resolution
whatever order they arrived in (every input is sorted by
``namespace/name`` first).

A GatewayClass is ours when its ``spec.controllerName`` equals the
``k8s.gateway.controller`` setting; a Gateway when its
``gatewayClassName`` names one of those. GatewayClass ``parametersRef``
and Gateway ``addresses`` are not read (see docs/gateway-api.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ._hostnames import specificity
from ._kube import KubeObject, creation_time, generation, key, meta, spec
from ._listeners import (
    ListenerState,
    SecretChecks,
    mark_gateway_conflicts,
    resolve_listeners,
)
from ._matches import precedence
from ._routes import RouteContext, RulesMemo, attach_route
from ._types import (
    Condition,
    GatewayClassStatus,
    GatewayStatus,
    HostRoutes,
    ListenerStatus,
    Resolution,
    ResolvedListener,
    ResolvedRule,
    RouteStatus,
)

__all__ = ["DEFAULT_CONTROLLER", "GatewayApiInputs", "GatewayApiSettings", "resolve"]

DEFAULT_CONTROLLER = "apimgw.io/gateway-controller"


@dataclass(frozen=True)
class GatewayApiSettings:
    """The settings resolution depends on."""

    controller_name: str = DEFAULT_CONTROLLER
    dns_suffix: str = "svc.cluster.local"
    #: Serve backendRefs to ``ExternalName`` Services (off: SSRF, CVE-2021-25740).
    allow_external_name: bool = False
    #: The ports the gateway serves HTTP and HTTPS on, as clients reach it
    #: (its Service's ports): listeners on other ports are PortUnavailable.
    http_port: int = 80
    https_port: int = 443


@dataclass(frozen=True)
class GatewayApiInputs:
    """Everything one resolution reads: raw Kubernetes objects as dicts."""

    gateway_classes: tuple[KubeObject, ...] = ()
    gateways: tuple[KubeObject, ...] = ()
    http_routes: tuple[KubeObject, ...] = ()
    reference_grants: tuple[KubeObject, ...] = ()
    services: tuple[KubeObject, ...] = ()
    secrets: tuple[KubeObject, ...] = ()
    namespaces: tuple[KubeObject, ...] = ()
    settings: GatewayApiSettings = field(default_factory=GatewayApiSettings)


def _sorted(objects: tuple[KubeObject, ...]) -> list[KubeObject]:
    return sorted(objects, key=key)


def _gateway_status(gateway: KubeObject, listeners: list[ListenerState]) -> GatewayStatus:
    observed = generation(gateway)
    programmed = [state for state in listeners if state.programmed]
    if len(programmed) == len(listeners) and listeners:
        accepted = Condition("Accepted", True, "Accepted", "", observed)
    else:
        accepted = Condition(
            "Accepted",
            bool(programmed),
            "ListenersNotValid",
            "one or more listeners are invalid",
            observed,
        )
    if programmed:
        ready = Condition("Programmed", True, "Programmed", "", observed)
    else:
        ready = Condition("Programmed", False, "Invalid", "no listener can be programmed", observed)
    return GatewayStatus(
        key(gateway),
        (accepted, ready),
        tuple(
            ListenerStatus(state.name, state.kinds, len(state.attached), tuple(state.conditions))
            for state in listeners
        ),
    )


def _listener(
    state: ListenerState, rules: Mapping[str | None, list[ResolvedRule]]
) -> ResolvedListener:
    hosts = tuple(
        HostRoutes(host, tuple(sorted(rules[host], key=precedence)))
        for host in sorted(rules, key=specificity)
    )
    return ResolvedListener(
        state.gateway,
        state.name,
        state.port,
        state.protocol,
        state.hostname,
        state.certificates,
        hosts,
    )


def resolve(
    inputs: GatewayApiInputs,
    memo: RulesMemo | None = None,
    secret_checks: SecretChecks | None = None,
) -> Resolution:
    """
    Resolve every Gateway API object of ours (see the module docstring).

    :param memo: the source's :class:`RulesMemo`, so that the rules of the
        HTTPRoutes that did not change are not read again; the result is
        the same with or without it.
    :param secret_checks: the source's :class:`SecretChecks`, so that the
        certificates of unchanged Secrets are not parsed again (idem).
    """
    settings = inputs.settings
    classes = [
        c
        for c in _sorted(inputs.gateway_classes)
        if spec(c).get("controllerName") == settings.controller_name
    ]
    class_names = {meta(c).get("name") for c in classes}
    secrets = {key(s): s for s in inputs.secrets}
    grants = _sorted(inputs.reference_grants)
    gateways = [
        g for g in _sorted(inputs.gateways) if spec(g).get("gatewayClassName") in class_names
    ]
    if secret_checks is not None:
        secret_checks.begin()
    ports = {"HTTP": settings.http_port, "HTTPS": settings.https_port}
    listeners = {
        key(g): resolve_listeners(g, secrets, grants, secret_checks, ports) for g in gateways
    }
    oldest_first = sorted(gateways, key=lambda g: (creation_time(g), key(g)))
    mark_gateway_conflicts([(key(g), listeners[key(g)]) for g in oldest_first])
    ctx = RouteContext(
        gateways=listeners,
        namespace_labels={
            meta(n).get("name", ""): meta(n).get("labels") or {} for n in inputs.namespaces
        },
        services={key(s): s for s in inputs.services},
        grants=grants,
        controller_name=settings.controller_name,
        dns_suffix=settings.dns_suffix,
        memo=memo,
        allow_external_name=settings.allow_external_name,
    )
    if memo is not None:
        memo.begin(ctx.services, ctx.grants, settings.dns_suffix, settings.allow_external_name)
    served: dict[int, dict[str | None, list[ResolvedRule]]] = {}
    route_status = []
    for route in _sorted(inputs.http_routes):
        attachment = attach_route(route, ctx)
        if attachment.parents:
            route_status.append(RouteStatus(key(route), tuple(attachment.parents)))
        for state, host, rule in attachment.rules:
            served.setdefault(id(state), {}).setdefault(host, []).append(rule)
    resolved = tuple(
        _listener(state, served.get(id(state), {}))
        for g in gateways
        for state in listeners[key(g)]
        if state.programmed
    )
    return Resolution(
        listeners=resolved,
        classes=tuple(
            GatewayClassStatus(
                meta(c).get("name", ""),
                (Condition("Accepted", True, "Accepted", "", generation(c)),),
            )
            for c in classes
        ),
        gateways=tuple(_gateway_status(g, listeners[key(g)]) for g in gateways),
        routes=tuple(route_status),
        secrets=tuple(sorted({s for listener in resolved for s in listener.certificates})),
    )
