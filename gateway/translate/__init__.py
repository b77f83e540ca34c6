"""
Pure translation from source objects to one validated configuration.

Merge and precedence rules live here ("last one wins" by the object's own
modification time, then a stable tiebreak), and so do the API management
rules: each operation's compiled policy pipelines and the subscription
key index. No Twisted, no I/O, no clock.
"""

from ._certificates import DEFAULT_ROLE, InvalidCertificate, certificate_entry, covers
from ._config import (
    EXACT,
    KIND_API,
    KIND_ROUTE,
    PREFIX,
    Backend,
    CertificateEntry,
    GatewayConfig,
    OperationSpec,
    Pipelines,
    Problem,
    RouteEntry,
    Shadowing,
)
from ._gatewayapi import DEEP_WILDCARD
from ._pipelines import MASK, describe_pipeline
from ._regex import LinearPattern, RegexError, compile_linear
from ._subscriptions import (
    INVALID_KEY,
    MISSING_KEY,
    Access,
    ApiAccess,
    ApiCall,
    Denial,
    SubscriptionEntry,
    SubscriptionIndex,
)
from ._translate import InvalidObject, normalize_host, parse_backend, parse_template, translate
from ._variants import (
    REGEX,
    HeaderEdits,
    ListenerClaim,
    PathChange,
    Redirect,
    Rewrite,
    ValueMatch,
    Variant,
    WeightedBackend,
)

__all__ = [
    "DEEP_WILDCARD",
    "DEFAULT_ROLE",
    "EXACT",
    "INVALID_KEY",
    "KIND_API",
    "KIND_ROUTE",
    "MASK",
    "MISSING_KEY",
    "PREFIX",
    "REGEX",
    "Access",
    "ApiAccess",
    "ApiCall",
    "Backend",
    "CertificateEntry",
    "Denial",
    "GatewayConfig",
    "HeaderEdits",
    "InvalidCertificate",
    "InvalidObject",
    "LinearPattern",
    "ListenerClaim",
    "OperationSpec",
    "PathChange",
    "Pipelines",
    "Problem",
    "Redirect",
    "RegexError",
    "Rewrite",
    "RouteEntry",
    "Shadowing",
    "SubscriptionEntry",
    "SubscriptionIndex",
    "ValueMatch",
    "Variant",
    "WeightedBackend",
    "certificate_entry",
    "compile_linear",
    "covers",
    "describe_pipeline",
    "normalize_host",
    "parse_backend",
    "parse_template",
    "translate",
]
