"""
One HTTPRoute against our Gateways: which listeners each ``parentRef``
attaches it to, on which hostnames, and the per-parent status.

The checks run in the order a user reads the reasons (``RouteConditionReason``
in the v1 API): the parent (Gateway of ours; ``sectionName`` and ``port``
naming listeners: else ``NoMatchingParent``), then the listeners' consent
(``allowedRoutes`` namespaces and kinds: else ``NotAllowedByListeners``),
then hostnames (an intersection with at least one listener: else
``NoMatchingListenerHostname``), then the rules themselves (none servable:
``UnsupportedValue``). ``ResolvedRefs`` is reported beside ``Accepted``: a
route with a bad backend is still accepted, and that backend's share of
traffic is answered 500.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ._backends import EXTERNAL_NAME_SETTING, UNSUPPORTED_VALUE, read_backends
from ._hostnames import effective_hostnames
from ._kube import GROUP, KubeObject, creation_time, generation, key, meta, spec
from ._listeners import ListenerState
from ._matches import UnsupportedRule, read_filters, read_matches
from ._types import Condition, ParentRef, ResolvedRule, RouteParentStatus

__all__ = ["Attachment", "RouteContext", "RulesMemo", "attach_route"]


class RulesMemo:
    """
    The servable rules of each HTTPRoute, kept from one resolution to the
    next: reading a route's matches, filters and backends is most of what
    resolving it costs, and a change touches one route at a time.

    An entry is the route's ``(uid, resourceVersion)``; all entries are
    valid while the Services, ReferenceGrants and DNS suffix they were
    read against are unchanged (:meth:`begin` compares their
    ``(namespace/name, resourceVersion)`` and forgets everything when they
    changed). Objects without a ``resourceVersion`` (hand-built inputs)
    are never kept. The rules are frozen, so the same objects are handed
    out again, which lets later stages keep their work by identity.
    """

    def __init__(self) -> None:
        self._basis: tuple[object, ...] | None = None
        self._entries: dict[tuple[str, str], tuple[list[ResolvedRule], list[str]]] = {}
        self._used: dict[tuple[str, str], tuple[list[ResolvedRule], list[str]]] = {}
        self.hits = 0

    @staticmethod
    def _version(obj: KubeObject) -> tuple[str, str] | None:
        m = meta(obj)
        uid, rv = m.get("uid"), m.get("resourceVersion")
        return (uid, rv) if uid and rv else None

    def begin(
        self,
        services: Mapping[str, KubeObject],
        grants: Sequence[KubeObject],
        dns_suffix: str,
        allow_external_name: bool = False,
    ) -> None:
        """Start a resolution: keep the entries only if what they read is unchanged."""
        basis = (
            dns_suffix,
            allow_external_name,
            tuple(sorted((k, meta(s).get("resourceVersion")) for k, s in services.items())),
            tuple((key(g), meta(g).get("resourceVersion")) for g in grants),
        )
        if basis != self._basis or any(v is None for _, v in basis[2] + basis[3]):
            self._entries = {}
        else:
            # Only the routes of the last resolution: deleted ones go.
            self._entries = self._used
        self._basis = basis
        self._used = {}

    def rules(self, route: KubeObject, ctx: RouteContext) -> tuple[list[ResolvedRule], list[str]]:
        version = self._version(route)
        if version is None:
            return _rules(route, ctx)
        found = self._entries.get(version)
        if found is None:
            found = _rules(route, ctx)
        else:
            self.hits += 1
        self._used[version] = found
        return found


@dataclass(frozen=True)
class RouteContext:
    """What every route is resolved against (one input bundle, not a dozen parameters)."""

    gateways: Mapping[str, list[ListenerState]]
    namespace_labels: Mapping[str, Mapping[str, str]]
    services: Mapping[str, KubeObject]
    grants: Sequence[KubeObject]
    controller_name: str
    dns_suffix: str
    memo: RulesMemo | None = None
    allow_external_name: bool = False


@dataclass
class Attachment:
    """A route's result: its parent statuses and the rules it adds, per listener and host."""

    parents: list[RouteParentStatus] = field(default_factory=list)
    rules: list[tuple[ListenerState, str | None, ResolvedRule]] = field(default_factory=list)


def _rules(route: KubeObject, ctx: RouteContext) -> tuple[list[ResolvedRule], list[str]]:
    """The route's servable rules (flattened per match) and why the others are not."""
    namespace = meta(route).get("namespace", "")
    served: list[ResolvedRule] = []
    problems: list[str] = []
    for index, rule in enumerate(spec(route).get("rules") or ()):
        try:
            matches = read_matches(rule)
            filters = read_filters(rule, matches)
            for ref in rule.get("backendRefs") or ():
                if ref.get("filters"):
                    raise UnsupportedRule("filters on a backendRef are not supported")
        except UnsupportedRule as e:
            problems.append(f"rule {index}: {e}")
            continue
        backends = read_backends(
            rule.get("backendRefs") or (),
            namespace,
            ctx.services,
            ctx.grants,
            ctx.dns_suffix,
            ctx.allow_external_name,
        )
        for match_index, match in enumerate(matches):
            served.append(
                ResolvedRule(
                    key(route), index, match_index, match, filters, backends, creation_time(route)
                )
            )
    return served, problems


def _resolved_refs(rules: Sequence[ResolvedRule]) -> tuple[bool, str, str]:
    for rule in rules:
        for backend in rule.backends:
            if backend.problem == UNSUPPORTED_VALUE:
                why = f"ExternalName Services are not served (setting {EXTERNAL_NAME_SETTING})"
                return False, backend.problem, f"rule {rule.rule}: backend {backend.service}: {why}"
            if backend.problem is not None:
                return False, backend.problem, f"rule {rule.rule}: backend {backend.service}"
    return True, "ResolvedRefs", ""


def _attach(
    parent: ParentRef,
    listeners: Sequence[ListenerState],
    route: KubeObject,
    servable: bool,
    ctx: RouteContext,
) -> tuple[str, str, list[tuple[ListenerState, tuple[str | None, ...]]]]:
    """
    Where one parentRef attaches the route: the ``Accepted`` reason, its
    message, and the listeners with the hostnames served on each (empty
    unless the reason is ``Accepted``).
    """
    namespace = meta(route).get("namespace", "")
    named = [
        state
        for state in listeners
        if parent.section_name in (None, state.name) and parent.port in (None, state.port)
    ]
    if not named:
        return "NoMatchingParent", "no listener matches sectionName/port", []
    labels = ctx.namespace_labels.get(namespace)  # None: not known, no selector admits it
    # Whether a listener is programmed does not matter here: the spec
    # counts attachedRoutes "even if the Accepted condition of an
    # individual Listener is set to False" (GatewayWithAttachedRoutes: a
    # listener whose Secret is missing has its route attached). Only
    # programmed listeners serve the rules (attach_route).
    allowed = [
        state
        for state in named
        if state.serves_http
        and state.admits_namespace(namespace, labels)
        and state.admits_kind("HTTPRoute")
    ]
    if not allowed:
        return "NotAllowedByListeners", "no listener allows routes from this namespace", []
    hostnames = spec(route).get("hostnames") or ()
    hosts = [(state, effective_hostnames(state.hostname, hostnames)) for state in allowed]
    hosts = [(state, found) for state, found in hosts if found]
    if not hosts:
        return "NoMatchingListenerHostname", "no hostname intersects a listener's", []
    if not servable:
        return "UnsupportedValue", "no rule can be served", []
    return "Accepted", "", hosts


def attach_route(route: KubeObject, ctx: RouteContext) -> Attachment:
    """Resolve one HTTPRoute against every one of its parentRefs that names a Gateway of ours."""
    namespace = meta(route).get("namespace", "")
    observed = generation(route)
    rules, problems = _rules(route, ctx) if ctx.memo is None else ctx.memo.rules(route, ctx)
    refs_ok, refs_reason, refs_message = _resolved_refs(rules)
    result = Attachment()
    served: set[tuple[int, str | None]] = set()
    for raw in spec(route).get("parentRefs") or ():
        if (raw.get("group", GROUP), raw.get("kind", "Gateway")) != (GROUP, "Gateway"):
            continue
        parent = ParentRef(
            raw.get("name", ""),
            raw.get("namespace") or namespace,
            raw.get("sectionName"),
            raw.get("port"),
        )
        listeners = ctx.gateways.get(f"{parent.namespace}/{parent.name}")
        if listeners is None:
            continue  # not a Gateway of ours: its controller reports on it
        reason, message, hosts = _attach(parent, listeners, route, bool(rules), ctx)
        if reason == "UnsupportedValue":
            message = "; ".join(problems) or message
        ok = reason == "Accepted"
        conditions = [
            Condition("Accepted", ok, reason, message, observed),
            Condition("ResolvedRefs", refs_ok, refs_reason, refs_message, observed),
        ]
        if ok and problems:
            conditions.append(
                Condition(
                    "PartiallyInvalid", True, "UnsupportedValue", "; ".join(problems), observed
                )
            )
        result.parents.append(RouteParentStatus(parent, ctx.controller_name, tuple(conditions)))
        for state, found in hosts:
            state.attached.add(key(route))
            if not state.programmed:
                continue  # counted and accepted, not served
            for host in found:
                # Two parentRefs reaching one listener (by name and by
                # sectionName, say) serve its rules once.
                if (id(state), host) not in served:
                    served.add((id(state), host))
                    result.rules.extend((state, host, rule) for rule in rules)
    return result
