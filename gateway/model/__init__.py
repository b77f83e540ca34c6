"""
Input objects as the sources hold them, and the store that holds them.

This package imports nothing else of ours and nothing of Twisted.
"""

from ._objects import (
    PATH_TYPES,
    Api,
    Body,
    Certificate,
    ObjectRef,
    Operation,
    Problem,
    Route,
    RouteSet,
    SourceObject,
)
from ._store import Store

__all__ = [
    "PATH_TYPES",
    "Api",
    "Body",
    "Certificate",
    "ObjectRef",
    "Operation",
    "Problem",
    "Route",
    "RouteSet",
    "SourceObject",
    "Store",
]
