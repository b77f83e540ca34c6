"""
Pure translation from source objects to one validated configuration.

Merge and precedence rules live here ("last one wins" by the object's own
modification time, then a stable tiebreak). No Twisted, no I/O, no clock.
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
    Problem,
    RouteEntry,
    Shadowing,
)
from ._translate import InvalidObject, normalize_host, parse_backend, parse_template, translate

__all__ = [
    "DEFAULT_ROLE",
    "InvalidCertificate",
    "certificate_entry",
    "covers",
    "EXACT",
    "KIND_API",
    "KIND_ROUTE",
    "PREFIX",
    "Backend",
    "CertificateEntry",
    "GatewayConfig",
    "InvalidObject",
    "OperationSpec",
    "Problem",
    "RouteEntry",
    "Shadowing",
    "normalize_host",
    "parse_backend",
    "parse_template",
    "translate",
]
