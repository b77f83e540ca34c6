"""
Gateway API bodies (:class:`~gateway.model.GatewayRoutes`, one per Gateway)
into route entries with variants, and the listeners' claims.

Rules of every Gateway are grouped by route key ``(host, match, path)``;
within a key the variants keep the resolver's precedence order (its sort
key, then the Gateway's ref), so the first variant whose conditions hold
is the one the spec says wins. The group becomes one
:class:`~gateway.translate.RouteEntry` with ``variants``; against an
Ingress, file or cloud entry on the same key the ordinary "newest wins"
rule of :func:`~gateway.translate.translate` applies.

Hosts: an exact name stays as it is, ``None`` (any host) is ``""``, and a
Gateway API wildcard ``*.example.com`` (any number of extra labels,
unlike an Ingress one) is written ``**.example.com``, a host marker of its
own: it never collides with an Ingress wildcard's key, and routing gives it
its own tiers.

Listener isolation: a request is served by the most specific listener
whose hostname matches it (per protocol). Routing enforces it with the
claims (no fallthrough past the claimed host tier); here a host group
that a more specific listener claims entirely (``foo.example.com`` on an
any-host listener while a ``*.example.com`` listener exists) is left out,
since no request for it may reach that listener.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gateway.memo import BuildMemo
from gateway.model import (
    GatewayHeaderEdits,
    GatewayPathChange,
    GatewayRoutes,
    GatewayRule,
    GatewayValueMatch,
    Problem,
    SourceObject,
)

from ._config import EXACT, KIND_ROUTE, PREFIX, Backend, RouteEntry
from ._regex import LinearPattern, RegexError, compile_linear
from ._variants import (
    REGEX,
    HeaderEdits,
    ListenerClaim,
    PathChange,
    Redirect,
    Rewrite,
    ValueMatch,
    Variant,
    WeightedBackend,
)

__all__ = ["DEEP_WILDCARD", "gateway_entries"]

#: The host marker of a Gateway API wildcard (any number of extra labels).
DEEP_WILDCARD = "**."

#: ``RouteEntry.backend`` of an entry none of whose variants has a valid
#: backend (redirects only, or invalid references): never connected to
#: (the proxy serves the variants), only shown. ``.invalid`` is reserved.
_NO_BACKEND = Backend("http", "gatewayapi.invalid", 80, "", "gatewayapi.invalid")

_SCHEMES = {"HTTP": b"http", "HTTPS": b"https"}
_MATCHES = {"Exact": EXACT, "PathPrefix": PREFIX, "RegularExpression": REGEX}


class _Invalid(ValueError):
    """One rule cannot be served; the message says why."""


def _covers(pattern: str | None, host: str | None) -> bool:
    """Whether every host ``host`` (a Gateway API pattern) stands for is matched by ``pattern``."""
    if pattern is None:
        return True
    if host is None:
        return False
    if not pattern.startswith("*."):
        return host == pattern
    suffix = pattern[1:]  # ".example.com"
    return host.endswith(suffix) and len(host) > len(suffix)


def _isolated(rule: GatewayRule, claims: frozenset[tuple[str | None, str]]) -> bool:
    """Whether a more specific listener than the rule's, on its protocol, claims all of its host."""
    for hostname, protocol in claims:
        if (
            protocol == rule.protocol
            and hostname != rule.listener
            and hostname is not None
            and _covers(rule.listener, hostname)
            and _covers(hostname, rule.host)
        ):
            return True
    return False


def _host(host: str | None) -> str:
    if host is None:
        return ""
    name = host.strip().lower().rstrip(".")
    if name.startswith("*."):
        return DEEP_WILDCARD + name[2:]
    return name


def _compile(pattern: str, what: str) -> LinearPattern:
    try:
        return compile_linear(pattern)
    except RegexError as e:
        raise _Invalid(f"invalid regular expression {pattern!r} in {what}: {e}") from None


def _values(matches: tuple[GatewayValueMatch, ...], what: str, lower: bool) -> tuple[ValueMatch, ...]:
    return tuple(
        ValueMatch(
            m.name.lower() if lower else m.name,
            m.value,
            _compile(m.value, f"{what} {m.name}") if m.regex else None,
        )
        for m in matches
    )


#: An HTTP header name (RFC 9110 ``token``).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: Control characters (HTAB allowed in header values only).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
#: A host name a redirect or rewrite writes (a DNS name, case as given).
_HOSTNAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*")
#: What a path a filter writes into the request line may not hold.
_NOT_IN_PATH = re.compile(r"[\x00-\x20\x7f?#]")


def _bytes(text: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        raise _Invalid(f"header text {text!r} is not latin-1") from None


def _name(text: str) -> bytes:
    """A header name a filter sets, adds or removes: a token, never anything that splits a line."""
    if not _TOKEN.fullmatch(text):
        raise _Invalid(f"header name {text!r} is not an HTTP token")
    return text.encode("ascii")


def _value(text: str) -> bytes:
    """A header value a filter writes: no CR, LF, NUL or other control (HTAB allowed)."""
    if _CONTROL.search(text):
        raise _Invalid(f"header value {text!r} holds a control character")
    return _bytes(text)


def _edits(edits: GatewayHeaderEdits | None) -> HeaderEdits | None:
    """
    Header edits, checked here as well as by the resolver: they are
    written into the request to the backend, so a CR or LF would split a
    second request onto a pooled connection.
    """
    if edits is None:
        return None
    return HeaderEdits(
        tuple((_name(n), _value(v)) for n, v in edits.set),
        tuple((_name(n), _value(v)) for n, v in edits.add),
        tuple(_name(n.lower()) for n in edits.remove),
    )


def _hostname(text: str | None) -> str | None:
    """A host name a filter writes into ``Host`` or a ``Location``: a DNS name only."""
    if text is not None and not _HOSTNAME.fullmatch(text):
        raise _Invalid(f"hostname {text!r} is not a DNS name")
    return text


def _path_change(change: GatewayPathChange | None) -> PathChange | None:
    """A path a filter writes into the request line or a Location: absolute, no space, control, ``?`` or ``#``."""
    if change is None:
        return None
    if change.kind not in ("full", "prefix"):
        raise _Invalid(f"unknown path change {change.kind!r}")
    if not change.value.startswith("/") or _NOT_IN_PATH.search(change.value):
        raise _Invalid(f"path {change.value!r} must start with '/' and hold no space, control, '?' or '#'")
    return PathChange(change.kind, change.value)


@dataclass(frozen=True, slots=True)
class _Served:
    """One rule ready to group: its key, its variant and what orders it."""

    key: tuple[str, str, str]
    order: tuple[object, ...]
    variant: Variant
    modified: float


def _variant(
    obj: SourceObject, rule: GatewayRule, parse: Callable[[str], Backend], problems: list[Problem]
) -> _Served:
    """
    :raises _Invalid: the rule cannot be served.
    """
    scheme = _SCHEMES.get(rule.protocol)
    if scheme is None:
        raise _Invalid(f"unsupported listener protocol {rule.protocol!r}")
    match = _MATCHES.get(rule.path_type)
    if match is None:
        raise _Invalid(f"unknown path type {rule.path_type!r}")
    path = rule.path
    if match == REGEX:
        _compile(path, "path")
    elif not path.startswith("/"):
        raise _Invalid(f"path {path!r} must start with '/'")
    elif match == PREFIX:
        path = path.rstrip("/") or "/"
    label = f"{rule.route} rule {rule.rule} match {rule.match_index}"
    backends = []
    for b in rule.backends:
        backend = None
        problem = b.problem
        if b.url is not None:
            try:
                backend = parse(b.url)
            except ValueError as e:
                problem = str(e)
                problems.append(Problem(obj.ref, f"{label}: backend {b.service}: {e}; answered 500"))
        elif problem is None:
            problem = "no URL"
        backends.append(WeightedBackend(backend, b.weight, problem))
    redirect = rule.redirect
    rewrite = rule.rewrite
    variant = Variant(
        label=label,
        origin=obj.ref,
        schemes=frozenset((scheme,)),
        method=rule.method.upper() if rule.method else None,
        headers=_values(rule.headers, "header", lower=True),
        query=_values(rule.query, "query parameter", lower=False),
        request_headers=_edits(rule.request_headers),
        response_headers=_edits(rule.response_headers),
        redirect=None
        if redirect is None
        else Redirect(
            redirect.scheme,
            _hostname(redirect.hostname),
            redirect.port,
            _path_change(redirect.path),
            redirect.status,
        ),
        rewrite=None
        if rewrite is None
        else Rewrite(_hostname(rewrite.hostname), _path_change(rewrite.path)),
        backends=tuple(backends),
    )
    return _Served((_host(rule.host), match, path), (rule.order, obj.ref.order), variant, obj.modified)


def _entry(key: tuple[str, str, str], variants: tuple[Variant, ...], modified: float) -> RouteEntry:
    """The route entry of one route key: its variants in precedence order."""
    first = variants[0]
    backend = next(
        (b.backend for v in variants for b in v.backends if b.backend is not None), _NO_BACKEND
    )
    host, match, path = key
    return RouteEntry(
        host=host,
        path=path,
        match=match,
        kind=KIND_ROUTE,
        backend=backend,
        origin=first.origin,
        modified=modified,
        label=f"{first.origin.name}:{host or '*'}{path}",
        variants=variants,
    )


def _served(
    obj: SourceObject,
    rule: GatewayRule,
    parse: Callable[[str], Backend],
    memo: BuildMemo | None,
) -> tuple[_Served | None, tuple[Problem, ...]]:
    """
    One rule's variant (``None`` when it cannot be served) and its
    problems. With ``memo``, kept by the rule's identity (the source hands
    out the same rule object while its HTTPRoute does not change) within
    the same object: a change to one HTTPRoute compiles its rules only,
    though the body's time (every rule's) moves with it.
    """

    def compute() -> tuple[_Served | None, tuple[Problem, ...]]:
        problems: list[Problem] = []
        try:
            return _variant(obj, rule, parse, problems), tuple(problems)
        except _Invalid as e:
            label = f"{rule.route} rule {rule.rule} match {rule.match_index}"
            return None, (*problems, Problem(obj.ref, f"{label}: {e}"))

    if memo is None:
        return compute()
    served, problems = memo.get_for(rule, f"gatewayapi-rule {obj.ref}", compute)
    if served is not None and served.modified != obj.modified:
        # Compiled for an older version of the same body: only the time moved.
        served = _Served(served.key, served.order, served.variant, obj.modified)
    return served, problems


def gateway_entries(
    objects: Iterable[SourceObject],
    parse_backend: Callable[[str], Backend],
    memo: BuildMemo | None = None,
) -> tuple[tuple[RouteEntry, ...], tuple[Problem, ...], tuple[ListenerClaim, ...]]:
    """
    The route entries of all Gateway API bodies among ``objects`` (one
    per route key), their problems, and the claims of their listeners.
    Depends on these objects alone (a build memo may reuse the result).
    With ``memo``, the variant of an unchanged rule and the entry of an
    unchanged group of variants are the previous build's objects, so the
    route table keeps the compiled tiers of unchanged hosts too.
    """
    gateways = sorted(
        (o for o in objects if isinstance(o.body, GatewayRoutes)), key=lambda o: o.ref.order
    )
    claimed = frozenset(
        (c.hostname, c.protocol)
        for o in gateways
        for c in o.body.claims  # type: ignore[union-attr]
    )
    problems: list[Problem] = []
    parsed: dict[str, Backend] = {}

    def parse(url: str) -> Backend:
        backend = parsed.get(url)
        if backend is None:
            backend = parsed[url] = parse_backend(url)
        return backend

    groups: dict[tuple[str, str, str], list[_Served]] = {}
    for obj in gateways:
        body: GatewayRoutes = obj.body  # type: ignore[assignment]
        for rule in body.rules:
            if _isolated(rule, claimed):
                continue
            served, found = _served(obj, rule, parse, memo)
            problems.extend(found)
            if served is not None:
                groups.setdefault(served.key, []).append(served)
    entries = []
    for key in sorted(groups):
        ranked = sorted(groups[key], key=lambda s: s.order)  # type: ignore[arg-type, return-value]
        variants = tuple(s.variant for s in ranked)
        modified = max(s.modified for s in ranked)
        if memo is None:
            entries.append(_entry(key, variants, modified))
        else:
            # The entry holds its variants, so their ids stay unique while it lives.
            entries.append(
                memo.get(
                    ("gatewayapi-entry", key, tuple(map(id, variants)), modified),
                    lambda k=key, v=variants, m=modified: _entry(k, v, m),  # type: ignore[misc]
                )
            )
    claims = tuple(
        sorted(
            (
                ListenerClaim(None if h is None else h.lower(), _SCHEMES[p])
                for h, p in claimed
                if p in _SCHEMES
            ),
            key=lambda c: (c.scheme, c.hostname or ""),
        )
    )
    return tuple(entries), tuple(problems), claims
