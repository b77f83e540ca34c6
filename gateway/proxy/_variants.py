"""
Serving a Gateway API rule: what the proxy does with the
:class:`~gateway.translate.Variant` routing picked.

Pure helpers, one job each, so the request path in ``_resource.py`` stays a
sequence of calls and each rule of the spec is tested here without sockets:

* :class:`RequestFacts` lets routing read headers and query parameters,
  parsing the query string only if a variant asks, at most once;
* :class:`BackendChooser` splits traffic by ``backendRefs`` weight;
* :func:`redirect_location` builds a ``RequestRedirect``'s ``Location``;
* :func:`change_path` applies ``ReplaceFullPath`` / ``ReplacePrefixMatch``
  (redirects and ``URLRewrite`` alike);
* :func:`edit_headers` applies a ``RequestHeaderModifier`` or
  ``ResponseHeaderModifier``.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Callable

from twisted.web.http_headers import Headers

from gateway.translate import HeaderEdits, PathChange, Redirect, Variant, WeightedBackend

from ._headers import HOP_BY_HOP

__all__ = [
    "BackendChooser",
    "RequestFacts",
    "change_path",
    "edit_headers",
    "redirect_location",
    "split_host",
]

#: The well-known ports of the redirect schemes (the spec names these two).
DEFAULT_PORTS = {"http": 80, "https": 443}


class RequestFacts:
    """
    The request's headers and query parameters as routing reads them
    (:class:`gateway.routing.RequestFacts`). It does nothing until asked:
    routing asks only for entries with variants, and the query string is
    split once, on the first :meth:`query`.

    The proxy makes one per resource and rebinds it to each request
    (``headers``, ``raw_query``, ``params = None``) rather than allocating
    one per request: three attribute stores cost a tenth of a new object,
    and the lookup that reads it is synchronous, so no two requests ever
    share it at once.
    """

    __slots__ = ("headers", "params", "raw_query")

    def __init__(self, headers: Headers, query: bytes) -> None:
        self.headers = headers
        self.raw_query = query
        #: The parsed query, once asked; ``None`` before.
        self.params: dict[str, str] | None = None

    def header(self, name: bytes) -> str | None:
        """
        The value of header ``name`` (lower case), latin-1; ``None`` when
        absent. A header sent several times is matched as its values
        joined with ``", "`` (RFC 9110 §5.3, which the spec's header
        matching follows): a match cannot be dodged or forced by splitting
        or repeating a header.
        """
        values = self.headers.getRawHeaders(name)
        if not values:
            return None
        if len(values) == 1:
            return values[0].decode("latin-1")
        return b", ".join(values).decode("latin-1")

    def query(self, name: str) -> str | None:
        """
        The first value of query parameter ``name`` as sent (no
        percent-decoding: the spec compares the values the client wrote);
        ``None`` when absent. ``?a`` gives ``a`` the value ``""``.
        """
        params = self.params
        if params is None:
            params = self.params = parse_query(self.raw_query)
        return params.get(name)


def parse_query(query: bytes) -> dict[str, str]:
    """``a=1&b=2&a=3`` → ``{"a": "1", "b": "2"}``: the first value of each name, as sent."""
    params: dict[str, str] = {}
    if not query:
        return params
    for part in query.decode("latin-1").split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        params.setdefault(name, value)
    return params


class _Split:
    """One variant's weights, computed once: the cumulative weights of the backends that can be chosen."""

    __slots__ = ("bounds", "choices", "total", "variant")

    def __init__(self, variant: Variant) -> None:
        #: Kept so the memo's ``id()`` key cannot be reused by another object.
        self.variant = variant
        chosen = [b for b in variant.backends if b.weight > 0]
        self.choices = tuple(chosen)
        bounds = []
        total = 0
        for b in chosen:
            total += b.weight
            bounds.append(total)
        self.bounds = tuple(bounds)
        self.total = total


class BackendChooser:
    """
    Picks a variant's backend by weight: backend *i* with probability
    ``weight_i / sum(weights)``; weight 0 is never picked.

    Random rather than (smooth) weighted round robin: it needs no state per
    variant, so nothing has to be carried over (or reset, biasing the split)
    when a configuration swap replaces every variant, and several gateway
    replicas together keep the same split. The Gateway API asks for a
    proportional split, not an exact sequence; over a few hundred requests
    random is within a few percent.

    The cumulative weights are computed once per variant object and kept
    until the generation changes (variants are rebuilt with it).

    :param rng: a float in ``[0, 1)`` per call; tests pass a deterministic one.
    """

    __slots__ = ("_generation", "_rng", "_splits")

    def __init__(self, rng: Callable[[], float] = random.random) -> None:
        self._rng = rng
        self._generation = -1
        self._splits: dict[int, _Split] = {}

    def choose(self, variant: Variant, generation: int = 0) -> WeightedBackend | None:
        """
        The backend this request goes to, or ``None`` when there is none to
        choose (no backends, or every weight 0): the spec answers 500.
        The chosen one may have ``backend is None`` (an invalid reference):
        its share is answered 500 too.
        """
        if generation != self._generation:
            self._generation = generation
            self._splits = {}
        split = self._splits.get(id(variant))
        if split is None or split.variant is not variant:
            split = self._splits[id(variant)] = _Split(variant)
        choices = split.choices
        if len(choices) < 2:
            return choices[0] if choices else None
        return choices[bisect_right(split.bounds, self._rng() * split.total)]


def split_host(host: str) -> tuple[str, int | None]:
    """
    ``example.com:8080`` → (``example.com``, 8080); ``[::1]:80`` → (``[::1]``,
    80); no port or an unreadable one → (host, ``None``).
    """
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return host, None
        name, rest = host[: end + 1], host[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port_text = host.partition(":")
    return name, int(port_text) if port_text.isdigit() else None


def change_path(path: str, change: PathChange, prefix: str) -> str:
    """
    The path after a ``ReplaceFullPath`` (``kind == "full"``) or a
    ``ReplacePrefixMatch`` (``"prefix"``) of the matched Prefix ``prefix``.

    ``ReplacePrefixMatch`` follows the spec's table (``HTTPPathModifier``):
    the matched prefix (whole segments, trailing slash ignored) is replaced
    and the rest kept, joined by exactly one ``/``; an empty result is
    ``/``::

        /foo/bar  prefix /foo   replacement /xyz   → /xyz/bar
        /foo/bar  prefix /foo   replacement /xyz/  → /xyz/bar
        /foo/     prefix /foo   replacement /xyz   → /xyz/
        /foo      prefix /foo   replacement ""     → /
        /foo/bar  prefix /foo   replacement /      → /bar

    A path that does not start with ``prefix`` (only possible for a route
    built by hand: translation allows ``ReplacePrefixMatch`` after a
    PathPrefix match only) is left unchanged.
    """
    if change.kind == "full":
        return change.value
    stem = prefix.rstrip("/")
    if stem and not (path == stem or path.startswith(stem + "/")):
        return path
    rest = path[len(stem) :]
    replacement = change.value.rstrip("/")
    if not rest:
        return replacement or "/"
    return replacement + rest


def redirect_location(
    redirect: Redirect,
    scheme: str,
    host: str,
    path: str,
    query: str,
    prefix: str,
) -> str:
    """
    The absolute ``Location`` of a ``RequestRedirect``.

    :param scheme: the listener's (``http`` / ``https``).
    :param host: the request's host as the client sent it, port included
        when it sent one.
    :param path: the raw request path; ``query`` is kept as it was.
    :param prefix: the matched Prefix path (for ``ReplacePrefixMatch``).

    The port, when the filter gives none, per the spec: "If redirect scheme
    is not-empty, the redirect port MUST be the well-known port associated
    with the redirect scheme ... If redirect scheme is empty, the redirect
    port MUST be the Gateway Listener port." The listener port is the one
    the client connected to, which its ``Host`` header names (the gateway's
    own socket port may differ behind a Service); a ``Host`` without a port
    means the scheme's default. "Implementations SHOULD NOT add the port
    number in the 'Location' header" when it is the new scheme's default
    (80 for http, 443 for https).
    """
    new_scheme = redirect.scheme or scheme
    name, host_port = split_host(host)
    hostname = redirect.hostname or name
    port: int | None
    if redirect.port is not None:
        port = redirect.port
    elif redirect.scheme is not None and redirect.scheme in DEFAULT_PORTS:
        port = DEFAULT_PORTS[redirect.scheme]
    else:
        port = host_port if host_port is not None else DEFAULT_PORTS.get(scheme)
    if port is None or port == DEFAULT_PORTS.get(new_scheme):
        authority = hostname
    else:
        authority = f"{hostname}:{port}"
    if redirect.path is not None:
        path = change_path(path, redirect.path, prefix)
    location = f"{new_scheme}://{authority}{path}"
    return f"{location}?{query}" if query else location


#: Headers a modifier must not touch: the message's framing and connection
#: are the proxy's (a modifier that set ``Content-Length`` or
#: ``Transfer-Encoding`` would corrupt the message).
PROTECTED = HOP_BY_HOP | {b"content-length"}


def edit_headers(
    headers: list[tuple[bytes, bytes]], edits: HeaderEdits
) -> list[tuple[bytes, bytes]]:
    """
    ``headers`` after a header modifier, in the spec's order: ``set``
    replaces every value of its name, ``add`` appends a value to the
    header's last line, comma-separated (a new line when the message has
    none, and always for ``Set-Cookie``), ``remove`` drops every value of its name, including
    one ``set`` or ``add`` gave. Names compare case-insensitively; the
    order of untouched headers is kept. Hop-by-hop headers and
    ``Content-Length`` are never changed (:data:`PROTECTED`).

    :param headers: a list of the caller's own; it may be changed in place.
    """
    removed = {name.lower() for name in edits.remove}
    replaced = {name.lower() for name, _ in edits.set}
    dropped = (removed | replaced) - PROTECTED
    if dropped:
        headers = [pair for pair in headers if pair[0].lower() not in dropped]
    for name, value in edits.set:
        lower = name.lower()
        if lower not in removed and lower not in PROTECTED:
            headers.append((name, value))
    for name, value in edits.add:
        lower = name.lower()
        if lower in removed or lower in PROTECTED:
            continue
        if lower != b"set-cookie":
            # The spec's example: "my-header: foo" plus add "bar,baz" is
            # "my-header: foo,bar,baz", one line (a backend reading only
            # the first line of a repeated header still sees it).
            # Set-Cookie is the one header that cannot be folded.
            for index in range(len(headers) - 1, -1, -1):
                if headers[index][0].lower() == lower:
                    headers[index] = (headers[index][0], headers[index][1] + b"," + value)
                    break
            else:
                headers.append((name, value))
            continue
        headers.append((name, value))
    return headers
