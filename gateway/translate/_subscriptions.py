"""
The subscription key index of one configuration, and APIM's access rules.

Built once per configuration by :func:`build_index` from the
subscriptions and products; the proxy asks :meth:`SubscriptionIndex.check`
once per API request (a dictionary lookup and a few comparisons) and never
looks at a subscription object itself.

The rules are APIM's, from "Subscriptions in Azure API Management"
(https://learn.microsoft.com/azure/api-management/api-management-subscriptions,
section *How API Management handles requests with or without subscription
keys*), and the product's ``subscriptionRequired`` from the REST API
(``ProductContract.subscriptionRequired``: "If true, the product is referred
to as 'protected' and a valid subscription key is required for a request to
an API included in the product to succeed. If false, the product is referred
to as 'open' and requests to an API included in the product can be made
without a subscription key"; default true):

*A request with a key*

1. The key belongs to an **active** subscription scoped to this API, to a
   (published) product that contains it, or to all APIs: allowed. The
   product context is the subscription's product for a product-scoped key,
   none otherwise (APIM: "If you use an API-scoped subscription, an all-APIs
   subscription, or the built-in all-access subscription, policies
   configured at the product scope aren't applied to requests from that
   subscription").
2. Otherwise, if an open product contains the API, the key is ignored and
   the request is handled as one without a key (rule 1 below).
3. Otherwise 401 :data:`INVALID_KEY`.

*A request without a key*

1. An open (published) product contains the API: allowed, in that
   product's context (APIM: "an API can be associated with at most one open
   product"; should several be configured, the smallest id is taken, so the
   choice is stable).
2. The API does not require a subscription: allowed, no product context.
   APIM's table says so even when every product containing the API is
   protected ("anonymous access to API"); the API's own
   ``subscriptionRequired`` decides, not its products'.
3. Otherwise 401 :data:`MISSING_KEY`.

A suspended, submitted, rejected, cancelled or expired subscription is not
active: its keys are answered 401 :data:`INVALID_KEY`, whose text itself
asks for "a valid key for an active subscription". No APIM document we
found gives suspended keys another status (APIM's 403 answers are those of
quota policies, "Out of call volume quota"); the messages are those of
APIM's troubleshooting article "Unauthorized errors (401) while invoking
APIs" (KB 4464930,
https://learn.microsoft.com/troubleshoot/azure/api-mgmt/availability/unauthorized-errors-invoke-apis).

A key configured for two subscriptions is admitted for neither (and both
carry a problem): picking one would open one subscription's scope with
another's key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gateway.model import (
    ObjectRef,
    Problem,
    Product,
    SourceObject,
    Subscription,
    SubscriptionKeyNames,
)

__all__ = [
    "INVALID_KEY",
    "MISSING_KEY",
    "Access",
    "ApiAccess",
    "Denial",
    "SubscriptionEntry",
    "SubscriptionIndex",
    "build_index",
]

#: APIM's message for a request without a key to an API that needs one.
MISSING_KEY = (
    "Access denied due to missing subscription key. "
    "Make sure to include subscription key when making requests to an API."
)
#: APIM's message for a key that opens nothing here.
INVALID_KEY = (
    "Access denied due to invalid subscription key. "
    "Make sure to provide a valid key for an active subscription."
)


@dataclass(frozen=True, slots=True)
class ApiAccess:
    """
    What the subscription check needs to know about one API, computed once
    per configuration and carried by its route entries.

    :ivar api_id: the API's id (its name).
    :ivar subscription_required: the API's own ``subscriptionRequired``.
    :ivar key_names: where the request carries the key.
    :ivar products: the ids of the published products that contain the API,
        sorted: a product-scoped key opens the API when its product is one
        of them.
    :ivar open_product: the published open product containing the API (the
        smallest id if several), or ``None``.
    """

    api_id: str
    subscription_required: bool = False
    key_names: SubscriptionKeyNames = SubscriptionKeyNames()
    products: tuple[str, ...] = ()
    open_product: str | None = None
    #: The key header's name, lower case, as bytes: read per request, so
    #: encoded once per configuration.
    header: bytes = field(init=False, repr=False, compare=False)
    #: The key query parameter's name as bytes (``name=``), likewise.
    query_prefix: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "header", self.key_names.header.lower().encode("latin-1"))
        object.__setattr__(self, "query_prefix", self.key_names.query.encode("utf-8") + b"=")


@dataclass(frozen=True, slots=True)
class Access:
    """
    An admitted request: the subscription it came with (``None`` without
    one, or when the key was ignored) and its product context, which picks
    the pipeline (``None``: no product).
    """

    subscription_id: str | None
    product_id: str | None


@dataclass(frozen=True, slots=True)
class ApiCall:
    """
    Which APIM API call a request was, for the access log and metrics: set
    by the proxy on the request once the subscription check admitted it.
    Ids only, never a key.

    :ivar api: the API's id.
    :ivar operation: the matched operation's name, ``None`` for an API
        without operations.
    :ivar product: the product context (``None``: none).
    :ivar subscription: the subscription's id (``None``: no key, or an
        ignored one).
    """

    api: str
    operation: str | None
    product: str | None
    subscription: str | None


@dataclass(frozen=True, slots=True)
class Denial:
    """A refused request: the status and message of APIM's envelope."""

    status: int
    message: str


_MISSING = Denial(401, MISSING_KEY)
_INVALID = Denial(401, INVALID_KEY)


@dataclass(frozen=True, slots=True)
class SubscriptionEntry:
    """
    One subscription as the index holds it (never its keys).

    :ivar id: the subscription id (``context.Subscription.Id``).
    :ivar state: APIM's state; only ``active`` opens anything.
    :ivar scope: APIM's text form: ``/apis``, ``/apis/{id}``, ``/products/{id}``.
    :ivar kind: ``all``, ``api`` or ``product``.
    :ivar target: the API or product id (``""`` for all APIs).
    :ivar products: the products it grants (its product, if that exists
        and is published), the product context of its requests.
    :ivar admitted_keys: how many of its keys the index admits (a key
        that another subscription also has is not admitted).
    :ivar fingerprints: the first 8 hex digits of SHA-256 of each admitted
        key, to tell keys apart in ``/config`` without showing them.
    """

    id: str
    state: str
    scope: str
    kind: str
    target: str
    ref: ObjectRef
    products: tuple[str, ...] = ()
    admitted_keys: int = 0
    fingerprints: tuple[str, ...] = ()

    def opens(self, access: ApiAccess) -> bool:
        """Whether a key of this subscription opens the API (state aside)."""
        if self.kind == "all":
            return True
        if self.kind == "api":
            return self.target == access.api_id
        return self.target in access.products


@dataclass(frozen=True, slots=True)
class SubscriptionIndex:
    """
    Key → subscription, for one configuration.

    :ivar entries: every subscription, sorted by id (what ``/config`` and
        the golden files show: states, scopes, key counts, no key).
    """

    entries: tuple[SubscriptionEntry, ...] = ()
    _by_key: Mapping[str, SubscriptionEntry] = field(
        default_factory=dict, repr=False, compare=False, hash=False
    )

    def check(self, access: ApiAccess, key: str | None) -> Access | Denial:
        """
        APIM's answer for a request to the API ``access`` with ``key``
        (``None``: the request carries none); see the module's docstring
        for the rules and where they come from.
        """
        if key is not None:
            entry = self._by_key.get(key)
            if entry is not None and entry.state == "active" and entry.opens(access):
                product = entry.target if entry.kind == "product" else None
                return Access(entry.id, product)
            if access.open_product is None:
                return _INVALID
        if access.open_product is not None:
            return Access(None, access.open_product)
        if not access.subscription_required:
            return Access(None, None)
        return _MISSING

    def __len__(self) -> int:
        """How many keys are admitted."""
        return len(self._by_key)


def _fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def build_index(
    subscriptions: Iterable[SourceObject],
    products: Mapping[str, Product],
    api_ids: frozenset[str],
    problems: list[Problem],
) -> SubscriptionIndex:
    """
    The index of the effective subscriptions (one object per id, already
    chosen by the caller), with a problem for a scope whose target does not
    exist and for a key that several subscriptions share (no key text in
    any message).
    """
    owners: dict[str, list[SourceObject]] = {}
    for obj in subscriptions:
        body = obj.body
        assert isinstance(body, Subscription)
        for key in set(body.keys):
            owners.setdefault(key, []).append(obj)
    shared = {k for k, objs in owners.items() if len(objs) > 1}
    for key in sorted(shared, key=lambda k: sorted(o.ref.order for o in owners[k])):
        objs = sorted(owners[key], key=lambda o: o.ref.order)
        for obj in objs:
            others = ", ".join(str(o.ref) for o in objs if o is not obj)
            which = "primary" if obj.body.primary_key == key else "secondary"  # type: ignore[union-attr]
            problems.append(Problem(
                obj.ref, f"its {which} key is also a key of {others}; "
                         "the key is admitted for none of them"))
    entries: list[SubscriptionEntry] = []
    by_key: dict[str, SubscriptionEntry] = {}
    for obj in sorted(subscriptions, key=lambda o: (o.body.name, o.ref.order)):  # type: ignore[union-attr]
        body = obj.body
        assert isinstance(body, Subscription)
        scope = body.scope
        granted: tuple[str, ...] = ()
        if scope.kind == "api" and scope.target not in api_ids:
            problems.append(Problem(obj.ref, f"scope {scope}: no API {scope.target!r}; "
                                             "its keys open nothing"))
        elif scope.kind == "product":
            product = products.get(scope.target)
            if product is None:
                problems.append(Problem(obj.ref, f"scope {scope}: no product "
                                                 f"{scope.target!r}; its keys open nothing"))
            elif product.state != "published":
                problems.append(Problem(obj.ref, f"scope {scope}: the product is not "
                                                 "published; its keys open nothing"))
            else:
                granted = (scope.target,)
        admitted = tuple(k for k in dict.fromkeys(body.keys) if k not in shared)
        entry = SubscriptionEntry(
            id=body.name,
            state=body.state,
            scope=str(scope),
            kind=scope.kind,
            # A product that is missing or unpublished opens nothing: no
            # target product can match.
            target=scope.target if scope.kind != "product" or granted else "",
            ref=obj.ref,
            products=granted,
            admitted_keys=len(admitted),
            fingerprints=tuple(_fingerprint(k) for k in admitted),
        )
        entries.append(entry)
        for key in admitted:
            by_key[key] = entry
    return SubscriptionIndex(tuple(entries), by_key)
