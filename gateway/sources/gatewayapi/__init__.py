"""
The Gateway API source (``gateway.networking.k8s.io``): GatewayClass,
Gateway, HTTPRoute and ReferenceGrant.

Part 1 of issue 13: the pure resolver only (:func:`resolve`), golden-file
tested against the published conformance manifests. It is not wired into
the running gateway yet: routing does not serve header, query and method
matches or weights, and no informer watches these kinds. See
docs/gateway-api.md.
"""

from ._grants import Reference, permitted
from ._hostnames import effective_hostnames, host_matches, intersect, specificity
from ._matches import UnsupportedRule, precedence
from ._resolve import DEFAULT_CONTROLLER, GatewayApiInputs, GatewayApiSettings, resolve
from ._selectors import InvalidSelector, selector_matches
from ._types import (
    Backend,
    Condition,
    GatewayClassStatus,
    GatewayStatus,
    HeaderMatch,
    HeaderModifier,
    HostRoutes,
    ListenerStatus,
    Match,
    ParentRef,
    PathModifier,
    QueryMatch,
    RequestRedirect,
    Resolution,
    ResolvedListener,
    ResolvedRule,
    RouteParentStatus,
    RouteStatus,
    RuleFilters,
    URLRewrite,
)

__all__ = [
    "DEFAULT_CONTROLLER",
    "Backend",
    "Condition",
    "GatewayApiInputs",
    "GatewayApiSettings",
    "GatewayClassStatus",
    "GatewayStatus",
    "HeaderMatch",
    "HeaderModifier",
    "HostRoutes",
    "InvalidSelector",
    "ListenerStatus",
    "Match",
    "ParentRef",
    "PathModifier",
    "QueryMatch",
    "Reference",
    "RequestRedirect",
    "Resolution",
    "ResolvedListener",
    "ResolvedRule",
    "RouteParentStatus",
    "RouteStatus",
    "RuleFilters",
    "URLRewrite",
    "UnsupportedRule",
    "effective_hostnames",
    "host_matches",
    "intersect",
    "permitted",
    "precedence",
    "resolve",
    "selector_matches",
    "specificity",
]
