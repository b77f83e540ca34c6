"""
The API *management* objects: products, subscriptions, named values and
policy documents, as APIM's data model has them.

They are input objects like :class:`~gateway.model.Api`: sources decode
them (the configuration service's entities, the file's ``products:``,
``subscriptions:``, ``namedValues:``, ``policies:``), the store holds them,
and translation compiles them into each operation's pipeline and the
subscription key index. Field and state names follow the APIM REST API
(``subscriptionRequired``, ``state: notPublished``, ``scope: /apis/{id}``),
so a reader who knows APIM recognises them; Python spelling aside.

Invalid values (an unknown state, a scope without its target) cannot be
built: each class checks its enumerated fields on construction and raises
:class:`ValueError`, which the decoders turn into a problem on the object.
Whether the target of a scope exists is not checked here: that needs the
other objects, so it is translation's job.

Secrets (subscription keys, the value of a secret named value) never show
in ``repr``, so a log line or a test failure that prints the object does
not leak them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_SUBSCRIPTION_KEY_HEADER",
    "DEFAULT_SUBSCRIPTION_KEY_QUERY",
    "POLICY_FORMATS",
    "POLICY_SCOPES",
    "PRODUCT_STATES",
    "SUBSCRIPTION_SCOPES",
    "SUBSCRIPTION_STATES",
    "NamedValue",
    "Policy",
    "PolicyScope",
    "Product",
    "Subscription",
    "SubscriptionKeyNames",
    "SubscriptionScope",
]

#: APIM's product states: only a published product's subscriptions grant access.
PRODUCT_STATES = ("published", "notPublished")

#: APIM's subscription states. Only ``active`` grants access; the others are
#: kept (not dropped by the decoders) because APIM answers a suspended key
#: differently from an unknown one.
SUBSCRIPTION_STATES = ("active", "suspended", "submitted", "rejected", "cancelled", "expired")

#: What a subscription can be scoped to: every API, one API, one product.
SUBSCRIPTION_SCOPES = ("all", "api", "product")

#: Where a policy document applies, from broad to narrow (the order in
#: which ``<base/>`` nests them).
POLICY_SCOPES = ("global", "product", "api", "operation")

#: Policy document formats the gateway accepts. APIM's ``xml`` and
#: ``rawxml`` both carry the document inline (they differ in how the
#: management API escapes policy expressions on the way in, not in what
#: the gateway runs); the ``-link`` formats name a URL to fetch, which
#: only the management side does.
POLICY_FORMATS = ("xml", "rawxml")

#: APIM's default names for the subscription key in a request.
DEFAULT_SUBSCRIPTION_KEY_HEADER = "Ocp-Apim-Subscription-Key"
DEFAULT_SUBSCRIPTION_KEY_QUERY = "subscription-key"


def _one_of(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(allowed)}, not {value!r}")


@dataclass(frozen=True, slots=True)
class SubscriptionKeyNames:
    """
    Where an API looks for the subscription key (APIM's
    ``subscriptionKeyParameterNames``): a request header, and the query
    parameter looked at only when the header is absent.
    """

    header: str = DEFAULT_SUBSCRIPTION_KEY_HEADER
    query: str = DEFAULT_SUBSCRIPTION_KEY_QUERY

    def __post_init__(self) -> None:
        if not self.header or not self.query:
            raise ValueError("the subscription key header and query names must not be empty")


@dataclass(frozen=True, slots=True)
class Product:
    """
    A product: a set of APIs offered together, the unit most subscriptions
    are scoped to.

    :ivar name: the product id.
    :ivar api_ids: the ids of the APIs it contains, sorted (membership, not
        order, is what counts).
    :ivar subscription_required: its APIs need a key of a subscription to
        this product (APIM's default: ``True``); ``False`` makes an "open"
        product whose APIs need none through it.
    :ivar state: one of :data:`PRODUCT_STATES`.
    """

    name: str
    display_name: str = ""
    api_ids: tuple[str, ...] = ()
    subscription_required: bool = True
    state: str = "published"

    def __post_init__(self) -> None:
        _one_of(self.state, PRODUCT_STATES, "a product's state")
        object.__setattr__(self, "api_ids", tuple(sorted(set(self.api_ids))))


@dataclass(frozen=True, slots=True)
class SubscriptionScope:
    """
    What a subscription's keys open: every API (``all``), one API
    (``api`` and its id) or one product (``product`` and its id).

    Its text form is APIM's: ``/apis``, ``/apis/{apiId}``,
    ``/products/{productId}`` (see :meth:`parse` and ``str()``).
    """

    kind: str
    target: str = ""

    def __post_init__(self) -> None:
        _one_of(self.kind, SUBSCRIPTION_SCOPES, "a subscription's scope")
        if (self.kind == "all") != (not self.target):
            raise ValueError(
                "a subscription scoped to all APIs has no target; one scoped to an API "
                "or a product names it"
            )

    @classmethod
    def parse(cls, text: str) -> SubscriptionScope:
        """
        The scope written ``/apis``, ``/apis/{apiId}`` or
        ``/products/{productId}`` (a trailing ``/`` is ignored). APIM also
        writes full resource ids (``/subscriptions/.../service/x/apis/a``):
        their last two segments decide.

        :raises ValueError: anything else.
        """
        parts = [p for p in text.strip().split("/") if p]
        if text.startswith("/subscriptions/") and "service" in parts[:-1]:
            # .../providers/Microsoft.ApiManagement/service/{name}/<scope>
            parts = parts[parts.index("service") + 2:]
        if parts == ["apis"]:
            return cls("all")
        if len(parts) == 2 and parts[0] in ("apis", "products"):
            return cls("api" if parts[0] == "apis" else "product", parts[1])
        raise ValueError(
            f"a subscription's scope must be /apis, /apis/{{apiId}} or /products/{{productId}}, "
            f"not {text!r}"
        )

    def __str__(self) -> str:
        if self.kind == "all":
            return "/apis"
        return f"/{'apis' if self.kind == 'api' else 'products'}/{self.target}"

    def covers(self, api_id: str, product_ids: frozenset[str] | tuple[str, ...] = ()) -> bool:
        """
        Whether a key of this scope opens the API ``api_id``, which belongs
        to the products ``product_ids`` (APIM's rule: a key is valid for
        its API, the APIs of its product, or every API).
        """
        if self.kind == "all":
            return True
        if self.kind == "api":
            return self.target == api_id
        return self.target in product_ids


@dataclass(frozen=True, slots=True)
class Subscription:
    """
    A subscription: a scope and the two keys that open it (two, so a key
    can be rotated without downtime).

    :ivar name: the subscription id (``context.Subscription.Id``).
    :ivar state: one of :data:`SUBSCRIPTION_STATES`.
    :ivar primary_key: never in ``repr``.
    :ivar secondary_key: never in ``repr``; ``None`` when the source gave
        none (a local file may give only a primary key). Never empty, so an
        empty key in a request cannot match an absent one.
    """

    name: str
    scope: SubscriptionScope
    primary_key: str = field(repr=False)
    secondary_key: str | None = field(default=None, repr=False)
    state: str = "active"
    display_name: str = ""

    def __post_init__(self) -> None:
        _one_of(self.state, SUBSCRIPTION_STATES, "a subscription's state")
        if not self.primary_key or self.secondary_key == "":
            raise ValueError("a subscription key must not be empty")

    @property
    def keys(self) -> tuple[str, ...]:
        """The keys that identify it: the primary, and the secondary if any."""
        return (self.primary_key,) if self.secondary_key is None else (
            self.primary_key, self.secondary_key)


@dataclass(frozen=True, slots=True)
class NamedValue:
    """
    A named value, substituted for ``{{name}}`` in policy documents when
    they are compiled.

    :ivar value: shown by ``repr`` only when the value is not secret.
    :ivar secret: the value must never be shown (logs, ``/config``) or
        written in clear (the backup).
    """

    name: str
    value: str
    secret: bool = False
    display_name: str = ""
    tags: tuple[str, ...] = ()

    def __repr__(self) -> str:
        value = "<secret>" if self.secret else repr(self.value)
        return (f"NamedValue(name={self.name!r}, value={value}, secret={self.secret!r}, "
                f"display_name={self.display_name!r}, tags={self.tags!r})")


@dataclass(frozen=True, slots=True)
class PolicyScope:
    """
    Where a policy document applies: ``global``, a ``product``, an ``api``
    or one ``operation`` of an API, with the ids that name the target.

    :ivar product_id: set for the ``product`` scope only.
    :ivar api_id: set for the ``api`` and ``operation`` scopes only.
    :ivar operation_id: set for the ``operation`` scope only.
    """

    scope: str
    product_id: str = ""
    api_id: str = ""
    operation_id: str = ""

    def __post_init__(self) -> None:
        _one_of(self.scope, POLICY_SCOPES, "a policy's scope")
        needed = {
            "global": (),
            "product": ("product_id",),
            "api": ("api_id",),
            "operation": ("api_id", "operation_id"),
        }[self.scope]
        for name in ("product_id", "api_id", "operation_id"):
            if bool(getattr(self, name)) != (name in needed):
                wanted = " and ".join(needed) + " and no other target id" if needed else (
                    "no target id")
                raise ValueError(f"a policy at {self.scope} scope names {wanted}")

    @property
    def id(self) -> str:
        """
        The scope as one path-like id: ``global``, ``products/{p}``,
        ``apis/{a}``, ``apis/{a}/operations/{o}`` (the configuration
        service's policy entity ids). At most one policy per id.
        """
        if self.scope == "global":
            return "global"
        if self.scope == "product":
            return f"products/{self.product_id}"
        if self.scope == "api":
            return f"apis/{self.api_id}"
        return f"apis/{self.api_id}/operations/{self.operation_id}"


@dataclass(frozen=True, slots=True)
class Policy:
    """
    One policy document at one scope, as text: parsing and compiling it is
    translation's job (once per generation), so a document that does not
    parse is a problem there, with the element path, not a decode error.

    :ivar xml: the ``<policies>`` document.
    :ivar format: one of :data:`POLICY_FORMATS`.
    """

    scope: PolicyScope
    xml: str
    format: str = "xml"

    def __post_init__(self) -> None:
        _one_of(self.format, POLICY_FORMATS, "a policy's format")
