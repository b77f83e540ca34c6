"""
The translated configuration: what the routing and TLS layers compile.

Everything here is immutable and already validated: a value of these types
never needs checking again on the request path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.model import ObjectRef, Problem

from ._subscriptions import ApiAccess, SubscriptionIndex
from .policy import Pipeline

if TYPE_CHECKING:
    from ._variants import ListenerClaim, Variant

#: An operation's (or an API's) effective pipelines by product context:
#: the id of the product whose subscription the request came with, or
#: ``None`` for a request in no product's context (no key, or a key scoped
#: to the API or to all APIs). Built once per configuration; the proxy
#: picks one with a single ``get``.
Pipelines = Mapping[str | None, Pipeline]

EXACT = "exact"
PREFIX = "prefix"

KIND_API = "api"
KIND_ROUTE = "route"


@dataclass(frozen=True, slots=True)
class Backend:
    """
    Where a route forwards to, parsed once per configuration.

    :ivar scheme: ``http`` or ``https``.
    :ivar host: host name or IP address, without brackets.
    :ivar port: explicit or scheme default.
    :ivar base_path: the URL's path without a trailing slash (``""`` for
        none); APIs append the rest of the request path to it.
    :ivar authority: the ``Host`` header value to send: ``host`` or
        ``host:port`` when the port is not the scheme default.
    """

    scheme: str
    host: str
    port: int
    base_path: str
    authority: str
    #: Connections are pooled per ``(scheme, host, port)``.
    key: tuple[str, str, int] = field(init=False, repr=False, compare=False)
    #: The URL, for logs and metrics.
    url: str = field(init=False, repr=False, compare=False)
    #: ``authority`` as the ``Host`` header sends it.
    authority_bytes: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Read on every request: computed once per configuration.
        object.__setattr__(self, "key", (self.scheme, self.host, self.port))
        object.__setattr__(self, "url", f"{self.scheme}://{self.authority}{self.base_path}")
        object.__setattr__(self, "authority_bytes", self.authority.encode("ascii"))


@dataclass(frozen=True, slots=True)
class OperationSpec:
    """
    One API operation ready for matching.

    :ivar method: upper case, or ``*`` for any method.
    :ivar segments: the URL template's path split on ``/`` without the leading
        empty element; a segment ``{name}`` captures one whole path segment.
        ``/`` gives ``()``; a trailing slash gives a final ``""`` segment.
    """

    name: str
    method: str
    template: str
    segments: tuple[str, ...]
    #: ``None``: no policy applies anywhere above this operation (the
    #: proxy's plain path); else its effective pipeline per product
    #: context (see :data:`Pipelines`). Excluded from the hash, not from
    #: equality.
    pipelines: Pipelines | None = field(default=None, hash=False)


@dataclass(frozen=True, slots=True)
class RouteEntry:
    """
    One effective route: a host pattern, a path with its match kind, and what
    to do with a request that matches.

    :ivar host: ``""`` for any host, a lower-case name, or ``*.suffix``.
    :ivar path: for :data:`PREFIX`, normalised without a trailing slash
        (``/`` stays ``/``); for :data:`EXACT`, exactly as configured; for
        :data:`~gateway.translate.REGEX`, the pattern.
    :ivar match: :data:`EXACT`, :data:`PREFIX` or
        :data:`~gateway.translate.REGEX` (Gateway API only).
    :ivar kind: :data:`KIND_API` (strip ``path``, append the rest to the
        backend's base path) or :data:`KIND_ROUTE` (path unchanged).
    :ivar operations: ``None``: every method and sub-path; otherwise only the
        listed operations match, below ``path``.
    :ivar origin: the source object the route came from.
    :ivar modified: that object's modification time.
    :ivar shadows: objects that configured the same key and lost.
    :ivar label: a short, stable name for metrics and logs.
    :ivar https_redirect: a plain-HTTP request is answered with a 308
        redirect to the same URL on HTTPS instead of being forwarded.
    :ivar schemes: ``None``: served on every listener; else the request
        schemes (``b"http"``, ``b"https"``) it is served on, others get 404
        (an API's ``protocols``).
    :ivar endpoints: ``None``: connect to ``backend``. Otherwise the
        endpoints the proxy balances over, sorted (``backend`` still gives
        the ``Host`` header and the label); plain data, since the balancing
        state is runtime state (:mod:`gateway.upstream`).
    :ivar access: for an API, what the subscription check needs (its id,
        key names, products, ``subscriptionRequired``), answered against
        :attr:`GatewayConfig.subscriptions`; ``None`` for a plain route
        (Ingress and file routes are not APIM APIs: no key, no policy).
    :ivar pipelines: the effective pipelines of the API level (global,
        product, API scopes): what an API *without* operations runs; for
        an API with operations (each :class:`OperationSpec` has its own),
        what a CORS preflight that no operation accepts runs. ``None``
        when no policy applies, so the plain path does nothing extra.
    :ivar policy_error: set when a policy document this API's pipelines
        are made of has a problem: the proxy answers every request of the
        API with APIM's 500 envelope instead of running a partial
        pipeline. The text names the policy objects (for the log), never
        a secret.
    """

    host: str
    path: str
    match: str
    kind: str
    backend: Backend
    origin: ObjectRef
    modified: float
    label: str
    operations: tuple[OperationSpec, ...] | None = None
    preserve_host: bool = False
    shadows: tuple[ObjectRef, ...] = ()
    https_redirect: bool = False
    endpoints: tuple[Backend, ...] | None = None
    schemes: frozenset[bytes] | None = None
    access: ApiAccess | None = None
    pipelines: Pipelines | None = field(default=None, hash=False)
    policy_error: str | None = None
    #: ``None``: a plain route (everything but the Gateway API), served as
    #: above. Otherwise a Gateway API route: the variants in precedence
    #: order, the first whose conditions hold is served (routing decides,
    #: the proxy never forwards to ``backend``, kept for labels).
    variants: tuple[Variant, ...] | None = None
    #: ``(host, match, path)``: two routes with the same key conflict; the
    #: newer one wins.
    key: tuple[str, str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", (self.host, self.match, self.path))


@dataclass(frozen=True, slots=True)
class Shadowing:
    """``loser`` configured the route ``key`` too, and ``winner`` was newer."""

    key: tuple[str, str, str]
    winner: ObjectRef
    loser: ObjectRef


@dataclass(frozen=True, slots=True)
class CertificateEntry:
    """
    A validated certificate: its PEM chain and key, the facts read from the
    leaf, and the configured host names it covers.

    Only certificates that parse, whose key matches and that have not
    expired become entries; the others are problems. A configured host that
    the certificate's names do not cover is a problem too, and is left out
    of ``hosts`` (it falls back to the default certificate).

    :ivar hosts: the configured host names (lower case, ``*.`` wildcards
        allowed) that the certificate's SANs cover; with no host
        configured, the certificate's own DNS names.
    :ivar shadowed_hosts: those of ``hosts`` that a newer certificate
        serves instead (``*`` when this one was configured as the default
        and lost that role); the rest are served by this one.
    :ivar chain_pem: the certificate chain, leaf first, as PEM (certificates
        only, re-encoded).
    :ivar key_pem: the private key as unencrypted PKCS#8 PEM.
    :ivar is_default: configured as the default certificate.
    :ivar subject: the leaf's subject (RFC 4514).
    :ivar issuer: the leaf's issuer (RFC 4514).
    :ivar sans: the leaf's DNS subject alternative names, lower case.
    :ivar not_before: start of validity, seconds since the epoch.
    :ivar not_after: end of validity, seconds since the epoch.
    :ivar fingerprint: SHA-256 of the leaf's DER, hex pairs joined by ``:``.
    :ivar modified: the source object's modification time (decides which
        certificate serves a host that several name).
    :ivar kept: the object's current version is invalid; this is its last
        valid version, still served (the problem is reported beside it).
    """

    ref: ObjectRef
    hosts: tuple[str, ...]
    chain_pem: str = field(repr=False)
    key_pem: str = field(repr=False)
    is_default: bool = False
    subject: str = ""
    issuer: str = ""
    sans: tuple[str, ...] = ()
    not_before: float = 0.0
    not_after: float = 0.0
    fingerprint: str = ""
    modified: float = 0.0
    kept: bool = False
    shadowed_hosts: tuple[str, ...] = ()

    @property
    def served_hosts(self) -> tuple[str, ...]:
        """The hosts this certificate is chosen for."""
        if not self.shadowed_hosts:
            return self.hosts
        return tuple(h for h in self.hosts if h not in self.shadowed_hosts)


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """
    The output of translation: effective routes in a deterministic order
    (sorted by key), problems, shadowed routes, and valid certificates
    (sorted by ref).

    :ivar default_certificate: the certificate served when no other one
        covers the client's server name: the newest of those configured as
        default; ``None`` when none is (the TLS layer then serves a
        generated self-signed one).
    :ivar subscriptions: the subscription key index of this generation
        (key → subscription), with the APIM access rules
        (:meth:`SubscriptionIndex.check`).
    :ivar secrets: the values of the secret named values that compiled
        pipelines hold, so that whatever shows a pipeline (``/config``,
        :func:`~gateway.translate.describe_pipeline`) can mask them. Never
        in ``repr``.
    :ivar claims: the hostnames Gateway API listeners claim, per scheme
        (listener isolation; :class:`~gateway.translate.ListenerClaim`),
        for :meth:`gateway.routing.RouteTable.build`.
    """

    routes: tuple[RouteEntry, ...] = ()
    problems: tuple[Problem, ...] = ()
    shadowed: tuple[Shadowing, ...] = ()
    certificates: tuple[CertificateEntry, ...] = ()
    default_certificate: ObjectRef | None = None
    subscriptions: SubscriptionIndex = field(default_factory=lambda: SubscriptionIndex())
    secrets: frozenset[str] = field(default=frozenset(), repr=False)
    claims: tuple[ListenerClaim, ...] = ()
