"""
An HTTPRoute rule's matches and filters, read and checked, and the
precedence order between matches.

A rule we cannot serve exactly as written (an unknown match type, a filter
we do not implement, a ``ReplacePrefixMatch`` without a ``PathPrefix``
match, a regular expression that does not compile) raises
:class:`UnsupportedRule`: the resolver drops that rule and reports the
route ``PartiallyInvalid`` (or not ``Accepted`` when no rule is left), as
the spec asks, rather than serving something close to it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

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


def _regex(pattern: str, what: str) -> None:
    try:
        re.compile(pattern)
    except re.error as e:
        raise UnsupportedRule(f"{what}: invalid regular expression {pattern!r}: {e}") from None


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


def _pairs(raw: Sequence[Mapping[str, Any]] | None) -> tuple[tuple[str, str], ...]:
    return tuple((entry.get("name", ""), entry.get("value", "")) for entry in raw or ())


def _header_modifier(raw: Mapping[str, Any] | None) -> HeaderModifier:
    raw = raw or {}
    return HeaderModifier(
        _pairs(raw.get("set")), _pairs(raw.get("add")), tuple(raw.get("remove") or ())
    )


def _path_modifier(raw: Mapping[str, Any] | None, matches: Sequence[Match]) -> PathModifier | None:
    if not raw:
        return None
    kind = raw.get("type")
    if kind == "ReplaceFullPath":
        return PathModifier(kind, raw.get("replaceFullPath") or "/")
    if kind == "ReplacePrefixMatch":
        if any(m.path_kind != "PathPrefix" for m in matches):
            raise UnsupportedRule("ReplacePrefixMatch needs PathPrefix matches")
        return PathModifier(kind, raw.get("replacePrefixMatch") or "/")
    raise UnsupportedRule(f"path modifier {kind!r} is not supported")


def read_filters(rule: Mapping[str, Any], matches: Sequence[Match]) -> RuleFilters:
    """A rule's filters (each type at most once; redirect and rewrite exclude each other)."""
    found: dict[str, Any] = {}
    for raw in rule.get("filters") or ():
        kind = raw.get("type")
        if kind in found:
            raise UnsupportedRule(f"filter {kind} is given twice")
        if kind == "RequestHeaderModifier":
            found[kind] = _header_modifier(raw.get("requestHeaderModifier"))
        elif kind == "ResponseHeaderModifier":
            found[kind] = _header_modifier(raw.get("responseHeaderModifier"))
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
                body.get("hostname"),
                _path_modifier(body.get("path"), matches),
                body.get("port"),
                code,
            )
        elif kind == "URLRewrite":
            body = raw.get("urlRewrite") or {}
            found[kind] = URLRewrite(
                body.get("hostname"), _path_modifier(body.get("path"), matches)
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
