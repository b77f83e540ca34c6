"""
Immutable input objects: what the sources hand over, before any merging.

Sources (file, Ingress, cloud) translate whatever they watch into these
frozen objects and push whole objects to the :class:`~gateway.model.Store`.
Nothing here knows about Twisted, routing or the network: the objects are
plain data, hashable, and safe to share between generations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Union

from ._apim import NamedValue, Policy, Product, Subscription, SubscriptionKeyNames
from ._gatewayapi import GatewayRoutes

#: Path match kinds, as in the Kubernetes Ingress API.
PATH_TYPES = ("Exact", "Prefix", "ImplementationSpecific")


@dataclass(frozen=True, slots=True, order=True)
class ObjectRef:
    """
    The identity of one source object: which source holds it, of which kind,
    under which name. Two objects with the same ref are the same object (an
    upsert replaces, a delete removes).

    :ivar source: the source that holds it: ``file``, ``ingress``, ``cloud``,
        ``memory`` (tests), ...
    :ivar kind: the kind of its body, one of the :data:`OBJECT_KINDS`
        values (``api``, ``routes``, ``certificate``, ``product``, ...).
    :ivar name: unique within ``(source, kind)``; for namespaced Kubernetes
        objects ``namespace/name``.
    """

    source: str
    kind: str
    name: str
    #: The hash, computed once: refs are dict keys in every build.
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.source, self.kind, self.name)))

    def __hash__(self) -> int:
        return self._hash

    def __str__(self) -> str:
        return f"{self.source}:{self.kind}/{self.name}"

    @property
    def order(self) -> tuple[str, str, str]:
        """The sort key (what ``<`` compares), for ``sorted(key=...)``."""
        return (self.source, self.kind, self.name)


@dataclass(frozen=True, slots=True)
class Operation:
    """
    One API operation: an HTTP method and a URL template relative to the API
    path, such as ``GET /users/{id}``. ``method`` ``*`` matches every method.
    """

    name: str
    method: str
    url_template: str


@dataclass(frozen=True, slots=True)
class Api:
    """
    An API in the APIM sense: requests under ``/<path>/`` are forwarded to
    ``service_url`` with the API path stripped and the rest appended.

    An API with no operations accepts every method and path below its
    ``path``; with operations, only the listed method + template pairs match
    and anything else is answered 404.

    ``protocols`` are the schemes it is served on (``http``, ``https``); a
    request on another one is answered 404, as APIM does.

    ``subscription_key_parameter_names`` are where a request carries its
    subscription key for this API (APIM's ``subscriptionKeyParameterNames``;
    by default the ``Ocp-Apim-Subscription-Key`` header, else the
    ``subscription-key`` query parameter).
    """

    name: str
    path: str
    service_url: str
    hostnames: tuple[str, ...] = ()
    subscription_required: bool = False
    operations: tuple[Operation, ...] = ()
    display_name: str = ""
    protocols: tuple[str, ...] = ("http", "https")
    subscription_key_parameter_names: SubscriptionKeyNames = SubscriptionKeyNames()


@dataclass(frozen=True, slots=True)
class Route:
    """
    A plain host/path route, the shape an Ingress rule takes: the request path
    is forwarded unchanged to ``backend``.

    :ivar host: ``None`` for any host, ``www.example.com`` for one host, or
        ``*.example.com`` for exactly one extra label.
    :ivar path: absolute path, starting with ``/``.
    :ivar path_type: one of :data:`PATH_TYPES`; ``ImplementationSpecific`` is
        treated as ``Prefix``.
    :ivar backend: an absolute ``http://`` or ``https://`` URL; its path, if
        any, is ignored for plain routes (the request path goes unchanged).
    :ivar preserve_host: send the client's ``Host`` to the backend instead of
        the backend's own authority.
    :ivar https_redirect: answer a plain-HTTP request with a ``308``
        redirect to the same URL on HTTPS instead of forwarding it (what the
        Ingress ``ssl-redirect`` annotations map onto).
    :ivar endpoints: ``None``: connect to ``backend``'s host. Otherwise the
        URLs (``http://10.1.2.3:8080``) the gateway balances over itself,
        round robin, while ``Host`` still names ``backend`` (the Ingress
        source's ``endpoints`` mode); empty: no endpoint is ready, answered
        ``503``.
    """

    path: str
    backend: str
    host: str | None = None
    path_type: str = "Prefix"
    preserve_host: bool = False
    https_redirect: bool = False
    endpoints: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class RouteSet:
    """
    A named group of plain routes that come and go together: one Ingress,
    or the ``routes:`` list of a configuration file.
    """

    routes: tuple[Route, ...]


@dataclass(frozen=True, slots=True)
class Certificate:
    """
    A PEM certificate chain and its key, and the host names it is configured
    to serve. Validation (parsing, key match, SAN coverage, expiry) happens
    in translation, not here.

    :ivar hosts: the names it serves (``*.example.com`` for one label);
        empty: the certificate's own DNS names.
    :ivar cert_pem: the chain, leaf first (it may also hold the key).
    :ivar key_pem: the private key, PEM, unencrypted.
    :ivar is_default: served to clients whose server name no certificate
        covers, and to clients that send none.
    """

    hosts: tuple[str, ...]
    cert_pem: str = field(repr=False)
    key_pem: str = field(repr=False)
    is_default: bool = False


Body = Union[Api, RouteSet, Certificate, Product, Subscription, NamedValue, Policy, GatewayRoutes]

#: The one place the object kinds are named: body type → the ``kind`` of
#: its :class:`ObjectRef`. Sources build refs with :func:`kind_of`, so a
#: kind is spelt the same by every source, and ``/config`` and the
#: problems metric show the same names.
OBJECT_KINDS: Mapping[type, str] = {
    Api: "api",
    RouteSet: "routes",
    Certificate: "certificate",
    Product: "product",
    Subscription: "subscription",
    NamedValue: "namedvalue",
    Policy: "policy",
    GatewayRoutes: "gatewayroutes",
}


def kind_of(body: Body | type) -> str:
    """
    The ref kind of a body, or of a body type (for the ref of an entity
    that could not be decoded into one).

    :raises KeyError: not a model body.
    """
    return OBJECT_KINDS[body if isinstance(body, type) else type(body)]


@dataclass(frozen=True, slots=True)
class Problem:
    """
    Something wrong with one source object; the rest is still served.

    Sources report the problems their decoders find (an Ingress that cannot
    be read, a cloud entity of the wrong shape) through the
    :class:`~gateway.model.Store`; translation adds its own. Both end up in
    the same list, so ``/config``, the problems metric and Kubernetes
    Events show them alike.
    """

    ref: ObjectRef
    message: str

    def __str__(self) -> str:
        return f"{self.ref}: {self.message}"


@dataclass(frozen=True, slots=True)
class SourceObject:
    """
    One object as a source holds it: its identity, its own last-modification
    time (seconds since the epoch, from the object itself: an Ingress's
    ``managedFields`` time, a cloud event's time, a file's mtime), and its
    body. The modification time decides "last one wins" conflicts, so it
    must come from the object, never from the moment the gateway loaded it.
    """

    ref: ObjectRef
    modified: float
    body: Body
