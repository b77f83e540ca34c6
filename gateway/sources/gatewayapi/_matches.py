"""
An HTTPRoute rule's matches and filters, read and checked, and the
precedence order between matches.

A rule we cannot serve exactly as written (an unknown match type, a filter
we do not implement, a ``ReplacePrefixMatch`` without a ``PathPrefix``
match, a regular expression RE2 refuses) raises :class:`UnsupportedRule`:
the resolver drops that rule and reports the route ``PartiallyInvalid``
(or not ``Accepted`` when no rule is left), as the spec asks, rather than
serving something close to it.

Values that end up in the request sent to the backend, or in a redirect's
``Location``, are checked here too, because the API server does not
always (the CRD's CEL rules are optional, and objects may come from an
older CRD): a header name that is not an RFC 7230 token, a header value
with a control character (CR, LF, NUL: header injection), a path
replacement that is not an absolute path without spaces, ``?``, ``#`` or
control characters (request-line injection), a hostname that is not a DNS
name. Such a rule is unsupported like any other.

Regular expressions are RE2 syntax (linear-time matching, no
backreferences or lookarounds): translation compiles them with RE2, and
a pattern RE2 refuses is reported here rather than dropped there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import re2  # type: ignore[import-untyped]  # no stubs published

from ._types import (
    HeaderMatch,
    HeaderModifier,
    Match,
    PathModifier,
    QueryMatch,
    RequestRedirect,
    ResolvedRule,
    RuleFilters,
    URLRewrite,
)

__all__ = ["UnsupportedRule", "precedence", "read_filters", "read_matches"]

_PATH_KINDS = ("Exact", "PathPrefix", "RegularExpression")
_VALUE_KINDS = ("Exact", "RegularExpression")
_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
_REDIRECT_CODES = (301, 302, 303, 307, 308)
#: Path kinds in precedence order. The spec ranks Exact above Prefix and
#: leaves RegularExpression to implementations; we put it between them (as
#: Envoy Gateway does), so a regex is not hidden behind a ``/`` prefix.
_PATH_RANK = {"Exact": 0, "RegularExpression": 1, "PathPrefix": 2}


class UnsupportedRule(ValueError):
    """A rule that cannot be served as written (the message says why)."""


#: RFC 7230 ``token``: what a header name may be.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: Control characters other than HTAB, which no header value may hold.
_VALUE_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
#: What a path replacement may not hold: control characters, space, ``?``, ``#``.
_PATH_FORBIDDEN = re.compile(r"[\x00-\x20\x7f?#]")
#: A DNS name (RFC 1123 labels), as the API's ``PreciseHostname``, any case.
_HOSTNAME = re.compile(
    r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*", re.IGNORECASE
)


def _re2_options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # a refused pattern is reported, not printed to stderr
    return options


_RE2_OPTIONS = _re2_options()


def _regex(pattern: Any, what: str) -> None:
    """Refuse what RE2 cannot compile (translation matches with RE2)."""
    if not isinstance(pattern, str):
        raise UnsupportedRule(f"{what}: regular expression {pattern!r} is not a string")
    try:
        re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as e:
        why = e.args[0].decode(errors="replace") if e.args and isinstance(e.args[0], bytes) else e
        raise UnsupportedRule(
            f"{what}: regular expression {pattern!r} is not valid RE2 syntax ({why}; "
            "backreferences and lookarounds are not supported)"
        ) from None


def _header_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        raise UnsupportedRule(f"{what}: header name {name!r} is not an HTTP token")
    return name


def _header_value(value: Any, what: str) -> str:
    if not isinstance(value, str) or _VALUE_CONTROL.search(value):
        raise UnsupportedRule(f"{what}: header value {value!r} holds a control character")
    return value


def _replacement_path(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.startswith("/") or _PATH_FORBIDDEN.search(value):
        raise UnsupportedRule(
            f"{what} {value!r} must be an absolute path without spaces, '?', '#' or control "
            "characters"
        )
    return value


def _hostname(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 253 or not _HOSTNAME.fullmatch(value):
        raise UnsupportedRule(f"{what} hostname {value!r} is not a DNS name")
    return value


def _path(raw: Mapping[str, Any] | None) -> tuple[str, str]:
    raw = raw or {}
    kind = raw.get("type") or "PathPrefix"
    value = raw.get("value") or "/"
    if kind not in _PATH_KINDS:
        raise UnsupportedRule(f"path match type {kind!r} is not supported")
    if kind == "RegularExpression":
        _regex(value, "path")
    elif not value.startswith("/"):
        raise UnsupportedRule(f"path {value!r} must start with '/'")
    if kind == "PathPrefix" and len(value) > 1:
        value = value.rstrip("/")  # "/foo/" and "/foo" are the same prefix
    return kind, value


def _values(raw: Sequence[Mapping[str, Any]], what: str, fold: bool) -> list[tuple[str, str, str]]:
    """Header or query conditions; for equal names only the first counts (the spec)."""
    seen: set[str] = set()
    found = []
    for entry in raw or ():
        name = entry.get("name", "")
        kind = entry.get("type") or "Exact"
        value = entry.get("value", "")
        if kind not in _VALUE_KINDS:
            raise UnsupportedRule(f"{what} match type {kind!r} is not supported")
        if kind == "RegularExpression":
            _regex(value, f"{what} {name}")
        if fold:  # headers: the name is a token (query names are only compared)
            _header_name(name, f"{what} match")
        folded = name.lower() if fold else name
        if folded in seen:
            continue
        seen.add(folded)
        found.append((folded, value, kind))
    return found


def read_matches(rule: Mapping[str, Any]) -> tuple[Match, ...]:
    """A rule's matches; none listed is one match of every request (``PathPrefix /``)."""
    matches = []
    for raw in rule.get("matches") or [{}]:
        kind, path = _path(raw.get("path"))
        method = raw.get("method")
        if method is not None and method not in _METHODS:
            raise UnsupportedRule(f"method {method!r} is not supported")
        headers = tuple(HeaderMatch(*v) for v in _values(raw.get("headers"), "header", True))
        query = tuple(QueryMatch(*v) for v in _values(raw.get("queryParams"), "query", False))
        matches.append(Match(kind, path, method, headers, query))
    return tuple(matches)


def _pairs(raw: Sequence[Mapping[str, Any]] | None, what: str) -> tuple[tuple[str, str], ...]:
    return tuple(
        (
            _header_name(entry.get("name", ""), what),
            _header_value(entry.get("value", ""), what),
        )
        for entry in raw or ()
    )


def _header_modifier(raw: Mapping[str, Any] | None, what: str) -> HeaderModifier:
    raw = raw or {}
    return HeaderModifier(
        _pairs(raw.get("set"), what),
        _pairs(raw.get("add"), what),
        tuple(_header_name(name, what) for name in raw.get("remove") or ()),
    )


def _path_modifier(raw: Mapping[str, Any] | None, matches: Sequence[Match]) -> PathModifier | None:
    if not raw:
        return None
    kind = raw.get("type")
    if kind == "ReplaceFullPath":
        return PathModifier(kind, _replacement_path(raw.get("replaceFullPath") or "/", kind))
    if kind == "ReplacePrefixMatch":
        if any(m.path_kind != "PathPrefix" for m in matches):
            raise UnsupportedRule("ReplacePrefixMatch needs PathPrefix matches")
        return PathModifier(kind, _replacement_path(raw.get("replacePrefixMatch") or "/", kind))
    raise UnsupportedRule(f"path modifier {kind!r} is not supported")


def read_filters(rule: Mapping[str, Any], matches: Sequence[Match]) -> RuleFilters:
    """A rule's filters (each type at most once; redirect and rewrite exclude each other)."""
    found: dict[str, Any] = {}
    for raw in rule.get("filters") or ():
        kind = raw.get("type")
        if kind in found:
            raise UnsupportedRule(f"filter {kind} is given twice")
        if kind == "RequestHeaderModifier":
            found[kind] = _header_modifier(raw.get("requestHeaderModifier"), kind)
        elif kind == "ResponseHeaderModifier":
            found[kind] = _header_modifier(raw.get("responseHeaderModifier"), kind)
        elif kind == "RequestRedirect":
            body = raw.get("requestRedirect") or {}
            code = body.get("statusCode", 302)
            if code not in _REDIRECT_CODES:
                raise UnsupportedRule(f"redirect status {code} is not supported")
            scheme = body.get("scheme")
            if scheme not in (None, "http", "https"):
                raise UnsupportedRule(f"redirect scheme {scheme!r} is not supported")
            found[kind] = RequestRedirect(
                scheme,
                _hostname(body.get("hostname"), "RequestRedirect"),
                _path_modifier(body.get("path"), matches),
                body.get("port"),
                code,
            )
        elif kind == "URLRewrite":
            body = raw.get("urlRewrite") or {}
            found[kind] = URLRewrite(
                _hostname(body.get("hostname"), "URLRewrite"),
                _path_modifier(body.get("path"), matches),
            )
        else:
            raise UnsupportedRule(f"filter {kind!r} is not supported")
    if "RequestRedirect" in found and "URLRewrite" in found:
        raise UnsupportedRule("RequestRedirect and URLRewrite cannot be used on the same rule")
    if "RequestRedirect" in found and rule.get("backendRefs"):
        raise UnsupportedRule("RequestRedirect cannot be used with backendRefs")
    return RuleFilters(
        found.get("RequestHeaderModifier"),
        found.get("ResponseHeaderModifier"),
        found.get("RequestRedirect"),
        found.get("URLRewrite"),
    )


def precedence(rule: ResolvedRule) -> tuple[Any, ...]:
    """
    Sort key of a match among all those served for one hostname, lowest
    first. The spec (``HTTPRouteRule``): "precedence must be given to the
    match having: 'Exact' path match; 'Prefix' path match with largest
    number of characters; Method match; Largest number of header matches;
    Largest number of query param matches. [...] If ties still exist across
    multiple Routes, [...] The oldest Route based on creation timestamp; The
    Route appearing first in alphabetical order by '{namespace}/{name}'. If
    ties still exist within an HTTPRoute, matching precedence MUST be
    granted to the FIRST matching rule (in list order)". The match's own
    index within the rule ends the order, so the sort is total and stable.
    (Hostname specificity comes first, and is the grouping in
    :class:`~._types.HostRoutes`.)
    """
    match = rule.match
    return (
        _PATH_RANK[match.path_kind],
        -len(match.path) if match.path_kind != "Exact" else 0,
        match.method is None,
        -len(match.headers),
        -len(match.query),
        rule.created,
        rule.route,
        rule.rule,
        rule.match_index,
    )
