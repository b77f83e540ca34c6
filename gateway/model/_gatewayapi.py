"""
What the Gateway API source hands the store: one :class:`GatewayRoutes`
per Gateway of ours, with every rule its listeners serve and the hostnames
its listeners claim.

One body per Gateway (rather than one for the whole source) so that a
change to one Gateway, or to the routes attached to it, replaces one
object, its problems name that Gateway, and the ref says which Gateway a
served rule came from. Translation merges the rules of all Gateways per
host and path (:mod:`gateway.translate._gatewayapi`).

Plain data like the rest of the model: regular expressions and URLs are
kept as text and compiled or parsed by translation.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "GATEWAY_PATH_TYPES",
    "GATEWAY_PROTOCOLS",
    "GatewayBackend",
    "GatewayClaim",
    "GatewayHeaderEdits",
    "GatewayPathChange",
    "GatewayRedirect",
    "GatewayRewrite",
    "GatewayRoutes",
    "GatewayRule",
    "GatewayValueMatch",
]

#: HTTPRoute path match types.
GATEWAY_PATH_TYPES = ("Exact", "PathPrefix", "RegularExpression")
#: The listener protocols served; a rule is served on the request scheme
#: of the same name, lower case.
GATEWAY_PROTOCOLS = ("HTTP", "HTTPS")


@dataclass(frozen=True, slots=True)
class GatewayValueMatch:
    """A header (``name`` lower case) or query parameter (``name`` exact)
    condition; ``regex``: ``value`` is a Python ``re`` pattern matched
    against the whole value."""

    name: str
    value: str
    regex: bool = False


@dataclass(frozen=True, slots=True)
class GatewayHeaderEdits:
    """``RequestHeaderModifier`` / ``ResponseHeaderModifier``: set, then add, then remove."""

    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class GatewayPathChange:
    """``kind``: ``full`` (``ReplaceFullPath``) or ``prefix`` (``ReplacePrefixMatch``)."""

    kind: str
    value: str


@dataclass(frozen=True, slots=True)
class GatewayRedirect:
    """``RequestRedirect``; ``None`` keeps the request's own value."""

    scheme: str | None = None
    hostname: str | None = None
    port: int | None = None
    path: GatewayPathChange | None = None
    status: int = 302


@dataclass(frozen=True, slots=True)
class GatewayRewrite:
    """``URLRewrite``: the ``Host`` and path the backend receives."""

    hostname: str | None = None
    path: GatewayPathChange | None = None


@dataclass(frozen=True, slots=True)
class GatewayBackend:
    """
    One weighted ``backendRef``: ``url`` (``http://service.ns.svc...:port``)
    or, for an invalid reference, ``None`` and the ``problem`` (its share of
    the traffic is answered 500).
    """

    service: str
    url: str | None
    weight: int = 1
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class GatewayRule:
    """
    One match of one HTTPRoute rule, as served on one listener.

    :ivar listener: the listener's hostname (``None``: any host); with
        ``protocol``, what decides listener isolation.
    :ivar protocol: the listener's, one of :data:`GATEWAY_PROTOCOLS`.
    :ivar host: the hostname served: an exact name, ``*.suffix`` (Gateway
        API semantics: any number of extra labels) or ``None`` (any host).
    :ivar path_type: one of :data:`GATEWAY_PATH_TYPES`.
    :ivar route: the HTTPRoute, ``namespace/name``.
    :ivar order: the resolver's precedence sort key among the rules of one
        host (lowest first; plain values).
    """

    listener: str | None
    protocol: str
    host: str | None
    path_type: str
    path: str
    route: str
    rule: int
    match_index: int
    order: tuple[int | float | str | bool, ...]
    method: str | None = None
    headers: tuple[GatewayValueMatch, ...] = ()
    query: tuple[GatewayValueMatch, ...] = ()
    request_headers: GatewayHeaderEdits | None = None
    response_headers: GatewayHeaderEdits | None = None
    redirect: GatewayRedirect | None = None
    rewrite: GatewayRewrite | None = None
    backends: tuple[GatewayBackend, ...] = ()


@dataclass(frozen=True, slots=True)
class GatewayClaim:
    """A programmed listener's hostname (``None``: any host) on its
    protocol: requests for a host it matches are served by the most
    specific such listener only (listener isolation)."""

    hostname: str | None
    protocol: str


@dataclass(frozen=True, slots=True)
class GatewayRoutes:
    """Everything one Gateway serves: its rules (per host in precedence
    order) and its listeners' claims."""

    rules: tuple[GatewayRule, ...] = ()
    claims: tuple[GatewayClaim, ...] = ()
