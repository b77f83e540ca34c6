"""
What a Gateway API rule adds to a route: the conditions beyond host and
path (method, headers, query parameters), the filters, and weighted
backends.

A :class:`~gateway.translate.RouteEntry` with ``variants`` set is a
*conditional* route: routing picks the first :class:`Variant` whose
conditions hold (they are in the spec's precedence order) and the proxy
serves that variant instead of the entry's own backend. Entries without
variants (Ingress, file, cloud, APIs) never look at any of this, so their
request path costs nothing extra.

Plain frozen data, validated once per configuration: regular expressions
are compiled and backend URLs parsed by translation, never per request.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.model import ObjectRef

from ._config import Backend
from ._regex import LinearPattern

__all__ = [
    "REGEX",
    "HeaderEdits",
    "ListenerClaim",
    "PathChange",
    "Redirect",
    "Rewrite",
    "ValueMatch",
    "Variant",
    "WeightedBackend",
]

#: A third :attr:`RouteEntry.match` kind besides ``EXACT`` and ``PREFIX``:
#: ``path`` is a Python :mod:`re` pattern, ``fullmatch``-ed against the raw
#: request path.
REGEX = "regex"


@dataclass(frozen=True, slots=True)
class ValueMatch:
    """
    A header or query-parameter condition.

    :ivar name: a header name in lower case; a query parameter name exactly
        (the spec makes those case-sensitive).
    :ivar pattern: for ``RegularExpression``: ``pattern.fullmatch(actual)``
        decides (RE2, :mod:`._regex`); ``None``: ``actual == value``.
    """

    name: str
    value: str
    pattern: LinearPattern | None = None

    def holds(self, actual: str | None) -> bool:
        """Whether the request's value (``None``: absent) satisfies this condition."""
        if actual is None:
            return False
        if self.pattern is None:
            return actual == self.value
        return self.pattern.fullmatch(actual) is not None


@dataclass(frozen=True, slots=True)
class HeaderEdits:
    """``RequestHeaderModifier`` / ``ResponseHeaderModifier``: set, then add, then remove."""

    set: tuple[tuple[bytes, bytes], ...] = ()
    add: tuple[tuple[bytes, bytes], ...] = ()
    #: Lower-case names.
    remove: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class PathChange:
    """
    :ivar kind: ``"full"`` (``ReplaceFullPath``) or ``"prefix"``
        (``ReplacePrefixMatch``: replaces the matched ``entry.path`` prefix).
    """

    kind: str
    value: str


@dataclass(frozen=True, slots=True)
class Redirect:
    """``RequestRedirect``: ``None`` keeps the request's own value."""

    scheme: str | None
    hostname: str | None
    port: int | None
    path: PathChange | None
    #: 301 or 302 (the spec's default is 302; newer versions allow 303, 307, 308).
    status: int


@dataclass(frozen=True, slots=True)
class Rewrite:
    """``URLRewrite``: what the backend receives (``hostname`` becomes its ``Host``)."""

    hostname: str | None
    path: PathChange | None


@dataclass(frozen=True, slots=True)
class WeightedBackend:
    """
    One ``backendRef``. ``backend`` is ``None`` for an invalid reference
    (``BackendNotFound``, ``RefNotPermitted``, ``InvalidKind``: see
    ``problem``): its share of the traffic is answered 500, as the spec
    requires, rather than moved to the others. Weight 0 is never chosen.
    """

    backend: Backend | None
    weight: int
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class Variant:
    """
    One match of one HTTPRoute rule, as served.

    :ivar label: ``"namespace/route rule N match M"``: stable, for metrics
        and logs.
    :ivar origin: the model object it came from.
    :ivar schemes: the request schemes (``b"http"``, ``b"https"``) of the
        listeners it is served on; ``None`` for both.
    :ivar method: upper case; ``None`` for any method.
    :ivar backends: empty with no ``redirect``: answered 500 (the spec).
    """

    label: str
    origin: ObjectRef
    schemes: frozenset[bytes] | None
    method: str | None
    headers: tuple[ValueMatch, ...] = ()
    query: tuple[ValueMatch, ...] = ()
    request_headers: HeaderEdits | None = None
    response_headers: HeaderEdits | None = None
    redirect: Redirect | None = None
    rewrite: Rewrite | None = None
    backends: tuple[WeightedBackend, ...] = ()


@dataclass(frozen=True, slots=True)
class ListenerClaim:
    """
    A Gateway listener's hostname on its request scheme (listener
    isolation): a request whose host it matches is served by the tier of
    that hostname or more specific ones only, never by a less specific
    host tier (routing answers 404 instead of falling through).

    :ivar hostname: an exact lower-case name, ``*.suffix`` (Gateway API
        semantics: any number of extra labels), or ``None`` for any host
        (which claims nothing beyond the last tier).
    :ivar scheme: ``b"http"`` or ``b"https"``.
    """

    hostname: str | None
    scheme: bytes
