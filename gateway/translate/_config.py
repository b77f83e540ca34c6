"""
The translated configuration: what the routing and TLS layers compile.

Everything here is immutable and already validated: a value of these types
never needs checking again on the request path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.model import ObjectRef

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

    @property
    def key(self) -> tuple[str, str, int]:
        """Connections are pooled per ``(scheme, host, port)``."""
        return (self.scheme, self.host, self.port)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.authority}{self.base_path}"


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


@dataclass(frozen=True, slots=True)
class RouteEntry:
    """
    One effective route: a host pattern, a path with its match kind, and what
    to do with a request that matches.

    :ivar host: ``""`` for any host, a lower-case name, or ``*.suffix``.
    :ivar path: for :data:`PREFIX`, normalised without a trailing slash
        (``/`` stays ``/``); for :data:`EXACT`, exactly as configured.
    :ivar match: :data:`EXACT` or :data:`PREFIX`.
    :ivar kind: :data:`KIND_API` (strip ``path``, append the rest to the
        backend's base path) or :data:`KIND_ROUTE` (path unchanged).
    :ivar operations: ``None``: every method and sub-path; otherwise only the
        listed operations match, below ``path``.
    :ivar origin: the source object the route came from.
    :ivar modified: that object's modification time.
    :ivar shadows: objects that configured the same key and lost.
    :ivar label: a short, stable name for metrics and logs.
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

    @property
    def key(self) -> tuple[str, str, str]:
        """Two routes with the same key conflict; the newer one wins."""
        return (self.host, self.match, self.path)


@dataclass(frozen=True, slots=True)
class Problem:
    """Something wrong with one source object; the rest is still served."""

    ref: ObjectRef
    message: str

    def __str__(self) -> str:
        return f"{self.ref}: {self.message}"


@dataclass(frozen=True, slots=True)
class Shadowing:
    """``loser`` configured the route ``key`` too, and ``winner`` was newer."""

    key: tuple[str, str, str]
    winner: ObjectRef
    loser: ObjectRef


@dataclass(frozen=True, slots=True)
class CertificateEntry:
    """A certificate as configured (validated by the TLS layer)."""

    ref: ObjectRef
    hosts: tuple[str, ...]
    cert_pem: str = field(repr=False)
    key_pem: str = field(repr=False)
    is_default: bool = False


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """
    The output of translation: effective routes in a deterministic order
    (sorted by key), problems, shadowed routes, and certificates.
    """

    routes: tuple[RouteEntry, ...] = ()
    problems: tuple[Problem, ...] = ()
    shadowed: tuple[Shadowing, ...] = ()
    certificates: tuple[CertificateEntry, ...] = ()
