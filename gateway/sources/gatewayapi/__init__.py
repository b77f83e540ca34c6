"""
The Gateway API source (``gateway.networking.k8s.io``): GatewayClass,
Gateway, HTTPRoute and ReferenceGrant.

The pure resolver (:func:`resolve`), golden-file tested against the
published conformance manifests; :func:`bodies`, which turns its result
into the model bodies translation and routing serve; and
:class:`GatewayApiSource` (:mod:`._source`), the
service that watches these kinds with the informers of
:mod:`gateway.sources.kubernetes`, resolves each burst of changes and
pushes the bodies, the listeners' certificates and the problems
(:mod:`._publish`) to the store. See docs/gateway-api.md.
"""

from ._bodies import BodiesMemo, bodies
from ._grants import Reference, permitted
from ._hostnames import effective_hostnames, host_matches, intersect, specificity
from ._listeners import SecretChecks
from ._matches import UnsupportedRule, precedence
from ._publish import SOURCE
from ._resolve import DEFAULT_CONTROLLER, GatewayApiInputs, GatewayApiSettings, resolve
from ._routes import RulesMemo
from ._selectors import InvalidSelector, selector_matches
from ._source import DEFAULT_ELECTION_ID, WAITING, GatewayApiSource
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
    "DEFAULT_ELECTION_ID",
    "SOURCE",
    "WAITING",
    "Backend",
    "BodiesMemo",
    "Condition",
    "GatewayApiInputs",
    "GatewayApiSettings",
    "GatewayApiSource",
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
    "RulesMemo",
    "SecretChecks",
    "URLRewrite",
    "UnsupportedRule",
    "bodies",
    "effective_hostnames",
    "host_matches",
    "intersect",
    "permitted",
    "precedence",
    "resolve",
    "selector_matches",
    "specificity",
]
