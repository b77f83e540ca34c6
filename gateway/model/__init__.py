"""
Input objects as the sources hold them, and the store that holds them.

This package imports nothing else of ours and nothing of Twisted.
"""

from ._apim import (
    DEFAULT_SUBSCRIPTION_KEY_HEADER,
    DEFAULT_SUBSCRIPTION_KEY_QUERY,
    POLICY_FORMATS,
    POLICY_SCOPES,
    PRODUCT_STATES,
    SUBSCRIPTION_SCOPES,
    SUBSCRIPTION_STATES,
    NamedValue,
    Policy,
    PolicyScope,
    Product,
    Subscription,
    SubscriptionKeyNames,
    SubscriptionScope,
)
from ._objects import (
    OBJECT_KINDS,
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
    kind_of,
)
from ._store import Store

__all__ = [
    "DEFAULT_SUBSCRIPTION_KEY_HEADER",
    "DEFAULT_SUBSCRIPTION_KEY_QUERY",
    "OBJECT_KINDS",
    "PATH_TYPES",
    "POLICY_FORMATS",
    "POLICY_SCOPES",
    "PRODUCT_STATES",
    "SUBSCRIPTION_SCOPES",
    "SUBSCRIPTION_STATES",
    "Api",
    "Body",
    "Certificate",
    "NamedValue",
    "ObjectRef",
    "Operation",
    "Policy",
    "PolicyScope",
    "Problem",
    "Product",
    "Route",
    "RouteSet",
    "SourceObject",
    "Store",
    "Subscription",
    "SubscriptionKeyNames",
    "SubscriptionScope",
    "kind_of",
]
