"""
What the resolver returns: plain frozen data, no Kubernetes dicts.

These are deliberately not model objects: they say exactly what the
Gateway API resources ask for (the golden files show it), and
:func:`~._bodies.bodies` turns a :class:`Resolution` into the model bodies
that translation and routing serve.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "Backend",
    "Condition",
    "GatewayClassStatus",
    "GatewayStatus",
    "HeaderMatch",
    "HeaderModifier",
    "HostRoutes",
    "ListenerStatus",
    "Match",
    "ParentRef",
    "PathModifier",
    "QueryMatch",
    "RequestRedirect",
    "Resolution",
    "ResolvedListener",
    "ResolvedRule",
    "RouteParentStatus",
    "RouteStatus",
    "RuleFilters",
    "URLRewrite",
]


# --- matches and filters --------------------------------------------------


@dataclass(frozen=True)
class HeaderMatch:
    """One header condition; ``name`` lower case (header names are case-insensitive)."""

    name: str
    value: str
    kind: str = "Exact"  # or "RegularExpression"


@dataclass(frozen=True)
class QueryMatch:
    """One query parameter condition; names are compared exactly (the spec: case-sensitive)."""

    name: str
    value: str
    kind: str = "Exact"  # or "RegularExpression"


@dataclass(frozen=True)
class Match:
    """
    One ``HTTPRouteMatch``: every condition must hold. ``path_kind`` is
    ``Exact``, ``PathPrefix`` (whole segments: ``/foo`` matches ``/foo/bar``,
    never ``/foobar``) or ``RegularExpression`` (RE2 syntax,
    matched against the whole path).
    """

    path_kind: str = "PathPrefix"
    path: str = "/"
    method: str | None = None
    headers: tuple[HeaderMatch, ...] = ()
    query: tuple[QueryMatch, ...] = ()


@dataclass(frozen=True)
class HeaderModifier:
    """``RequestHeaderModifier`` / ``ResponseHeaderModifier``: set, then add, then remove."""

    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class PathModifier:
    """``ReplaceFullPath`` or ``ReplacePrefixMatch`` (the latter only after a ``PathPrefix`` match)."""

    kind: str
    value: str


@dataclass(frozen=True)
class RequestRedirect:
    """
    ``RequestRedirect``: ``None`` fields keep the request's own value. The
    port is left to the router: the spec derives it from the scheme when
    only the scheme changes.
    """

    scheme: str | None = None
    hostname: str | None = None
    path: PathModifier | None = None
    port: int | None = None
    status_code: int = 302


@dataclass(frozen=True)
class URLRewrite:
    """``URLRewrite``: the host and/or path the backend receives."""

    hostname: str | None = None
    path: PathModifier | None = None


@dataclass(frozen=True)
class RuleFilters:
    """A rule's filters, each type at most once (the spec allows no repeats of these)."""

    request_headers: HeaderModifier | None = None
    response_headers: HeaderModifier | None = None
    redirect: RequestRedirect | None = None
    rewrite: URLRewrite | None = None


@dataclass(frozen=True)
class Backend:
    """
    One weighted ``backendRef``. ``url`` is ``None`` for an invalid
    reference (``problem`` says why: ``BackendNotFound``,
    ``RefNotPermitted``, ``InvalidKind``): its share of the traffic is
    answered 500, as the spec requires, rather than moved to the others.
    """

    service: str  # namespace/name
    port: int | None
    weight: int
    url: str | None
    problem: str | None = None


# --- resolved routes ------------------------------------------------------


@dataclass(frozen=True)
class ResolvedRule:
    """
    One match of one rule of one HTTPRoute, flattened so that a list of
    them can be sorted in the spec's precedence order (``_precedence``).
    """

    route: str  # namespace/name
    rule: int
    match_index: int
    match: Match
    filters: RuleFilters
    backends: tuple[Backend, ...]
    created: float


@dataclass(frozen=True)
class HostRoutes:
    """
    The rules served for one hostname pattern on one listener, in
    precedence order (the first whose match holds wins). ``host`` is an
    exact name, a ``*.`` wildcard, or ``None`` (any host the listener
    takes).
    """

    host: str | None
    rules: tuple[ResolvedRule, ...]


@dataclass(frozen=True)
class ResolvedListener:
    """
    One programmed listener of one of our Gateways. Listener isolation: a
    request is served by the most specific listener whose hostname matches
    it on its port, and only by that listener's routes; within it, by the
    most specific :class:`HostRoutes` (``hosts`` is ordered that way).
    """

    gateway: str  # namespace/name
    name: str
    port: int
    protocol: str
    hostname: str | None
    certificates: tuple[str, ...]  # Secret namespace/name, HTTPS only
    hosts: tuple[HostRoutes, ...]


# --- status ---------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """A ``metav1.Condition`` without its transition time (the writer adds that)."""

    type: str
    status: bool
    reason: str
    message: str = ""
    observed_generation: int | None = None


@dataclass(frozen=True)
class GatewayClassStatus:
    name: str
    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class ListenerStatus:
    name: str
    supported_kinds: tuple[str, ...]
    attached_routes: int
    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class GatewayStatus:
    gateway: str  # namespace/name
    conditions: tuple[Condition, ...]
    listeners: tuple[ListenerStatus, ...]


@dataclass(frozen=True)
class ParentRef:
    """A ``parentRef`` as written back in ``RouteParentStatus`` (defaults filled in)."""

    name: str
    namespace: str
    section_name: str | None = None
    port: int | None = None
    group: str = "gateway.networking.k8s.io"
    kind: str = "Gateway"


@dataclass(frozen=True)
class RouteParentStatus:
    parent: ParentRef
    controller_name: str
    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class RouteStatus:
    route: str  # namespace/name
    parents: tuple[RouteParentStatus, ...]


@dataclass(frozen=True)
class Resolution:
    """
    Everything resolved from one set of inputs.

    :ivar listeners: the programmed listeners of our Gateways, with their
        routes, ordered by Gateway, then listener order.
    :ivar classes: status of our GatewayClasses.
    :ivar gateways: status of the Gateways of our classes.
    :ivar routes: status of the HTTPRoutes that name one of our Gateways
        (only the parent entries of our Gateways: other controllers own
        theirs).
    :ivar secrets: ``namespace/name`` of the Secrets programmed listeners
        use (the source needs to keep only these).
    """

    listeners: tuple[ResolvedListener, ...] = ()
    classes: tuple[GatewayClassStatus, ...] = ()
    gateways: tuple[GatewayStatus, ...] = ()
    routes: tuple[RouteStatus, ...] = ()
    secrets: tuple[str, ...] = field(default=())
