"""
A :class:`Resolution` as model bodies: what the source pushes to the store.

Pure: one :class:`~gateway.model.GatewayRoutes` per Gateway of ours, named
``namespace/name`` (the source's ref is ``ObjectRef("gatewayapi",
"gatewayroutes", name)``). Every programmed listener contributes its claim
(hostname and protocol) and, per host group, its rules with the
resolver's precedence key, so translation can merge the rules of several
Gateways per host and path in the spec's order.
"""

from __future__ import annotations

from gateway.model import (
    GatewayBackend,
    GatewayClaim,
    GatewayHeaderEdits,
    GatewayPathChange,
    GatewayRedirect,
    GatewayRewrite,
    GatewayRoutes,
    GatewayRule,
    GatewayValueMatch,
)

from ._matches import precedence
from ._types import (
    Backend,
    HeaderMatch,
    HeaderModifier,
    PathModifier,
    QueryMatch,
    Resolution,
    ResolvedListener,
    ResolvedRule,
)

__all__ = ["BodiesMemo", "bodies"]


class BodiesMemo:
    """
    The model rule made of each resolved rule, kept from one call of
    :func:`bodies` to the next by the resolved rule's identity (which
    :class:`~._routes.RulesMemo` keeps for unchanged HTTPRoutes), so an
    unchanged rule gives the very same model object again and translation
    can keep its work for it too. Only the last call's entries are kept.
    """

    def __init__(self) -> None:
        self._previous: dict[tuple[object, ...], tuple[ResolvedRule, GatewayRule]] = {}
        self._current: dict[tuple[object, ...], tuple[ResolvedRule, GatewayRule]] = {}

    def rule(self, listener: ResolvedListener, host: str | None, rule: ResolvedRule) -> GatewayRule:
        key = (id(rule), listener.hostname, listener.protocol, host)
        found = self._current.get(key) or self._previous.get(key)
        if found is None or found[0] is not rule:
            found = (rule, _rule(listener, host, rule))
        self._current[key] = found
        return found[1]

    def rotate(self) -> None:
        self._previous, self._current = self._current, {}

_PATH_KINDS = {"ReplaceFullPath": "full", "ReplacePrefixMatch": "prefix"}


def _value(match: HeaderMatch | QueryMatch) -> GatewayValueMatch:
    return GatewayValueMatch(match.name, match.value, match.kind == "RegularExpression")


def _edits(modifier: HeaderModifier | None) -> GatewayHeaderEdits | None:
    if modifier is None:
        return None
    return GatewayHeaderEdits(modifier.set, modifier.add, modifier.remove)


def _path(modifier: PathModifier | None) -> GatewayPathChange | None:
    if modifier is None:
        return None
    return GatewayPathChange(_PATH_KINDS[modifier.kind], modifier.value)


def _backend(backend: Backend) -> GatewayBackend:
    port = "" if backend.port is None else f":{backend.port}"
    return GatewayBackend(f"{backend.service}{port}", backend.url, backend.weight, backend.problem)


def _rule(listener: ResolvedListener, host: str | None, rule: ResolvedRule) -> GatewayRule:
    match, filters = rule.match, rule.filters
    redirect = filters.redirect
    rewrite = filters.rewrite
    return GatewayRule(
        listener=listener.hostname,
        protocol=listener.protocol,
        host=host,
        path_type=match.path_kind,
        path=match.path,
        route=rule.route,
        rule=rule.rule,
        match_index=rule.match_index,
        order=precedence(rule),
        method=match.method,
        headers=tuple(map(_value, match.headers)),
        query=tuple(map(_value, match.query)),
        request_headers=_edits(filters.request_headers),
        response_headers=_edits(filters.response_headers),
        redirect=None
        if redirect is None
        else GatewayRedirect(
            redirect.scheme,
            redirect.hostname,
            redirect.port,
            _path(redirect.path),
            redirect.status_code,
        ),
        rewrite=None if rewrite is None else GatewayRewrite(rewrite.hostname, _path(rewrite.path)),
        backends=tuple(map(_backend, rule.backends)),
    )


def bodies(resolution: Resolution, memo: BodiesMemo | None = None) -> dict[str, GatewayRoutes]:
    """
    One body per Gateway with at least one programmed listener, by
    ``namespace/name``. A Gateway with programmed listeners but no routes
    still gets a body: its claims isolate the hosts it listens for. With
    ``memo``, unchanged rules are the same objects as in the last call.
    """
    make = _rule if memo is None else memo.rule
    rules: dict[str, list[GatewayRule]] = {}
    claims: dict[str, list[GatewayClaim]] = {}
    for listener in resolution.listeners:
        claim = GatewayClaim(listener.hostname, listener.protocol)
        found = claims.setdefault(listener.gateway, [])
        if claim not in found:
            found.append(claim)
        served = rules.setdefault(listener.gateway, [])
        for group in listener.hosts:
            served.extend(make(listener, group.host, rule) for rule in group.rules)
    if memo is not None:
        memo.rotate()
    return {
        name: GatewayRoutes(tuple(rules[name]), tuple(claims[name])) for name in sorted(claims)
    }
