"""
Unit tests of the Gateway API resolver's tricky rules: hostname
intersection with wildcards, the precedence order, ReferenceGrant matching,
``allowedRoutes`` selectors, and the route conditions the golden files do
not reach.
"""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Any, ClassVar

from twisted.trial.unittest import SynchronousTestCase

from gateway.sources.gatewayapi import (
    GatewayApiInputs,
    GatewayApiSettings,
    HostRoutes,
    InvalidSelector,
    Match,
    Reference,
    ResolvedRule,
    RuleFilters,
    RulesMemo,
    SecretChecks,
    effective_hostnames,
    host_matches,
    intersect,
    permitted,
    precedence,
    resolve,
    selector_matches,
    specificity,
)
from gateway.testing.certs import self_signed

GROUP = "gateway.networking.k8s.io"


class HostnameTests(SynchronousTestCase):
    def test_wildcard_matches_one_or_more_labels_but_not_the_suffix(self) -> None:
        """``*.example.com`` matches ``a.example.com`` and ``a.b.example.com``, not ``example.com``."""
        self.assertTrue(host_matches("*.example.com", "a.example.com"))
        self.assertTrue(host_matches("*.example.com", "a.b.example.com"))
        self.assertFalse(host_matches("*.example.com", "example.com"))
        self.assertFalse(host_matches("*.example.com", "aexample.com"))
        self.assertTrue(host_matches(None, "anything.test"))

    def test_intersection_keeps_the_more_specific_name(self) -> None:
        """Exact beats wildcard, the longer wildcard beats the shorter, in either position."""
        self.assertEqual(intersect("*.wildcard.io", "foo.bar.wildcard.io"), "foo.bar.wildcard.io")
        self.assertEqual(intersect("very.specific.com", "*.specific.com"), "very.specific.com")
        self.assertEqual(intersect("*.foo.example.com", "*.example.com"), "*.foo.example.com")
        self.assertEqual(intersect("*.example.com", "*.foo.example.com"), "*.foo.example.com")
        self.assertEqual(intersect(None, "*.example.com"), "*.example.com")
        self.assertEqual(intersect("a.example.com", "a.example.com"), "a.example.com")

    def test_no_intersection(self) -> None:
        """Disjoint names, a wildcard's bare suffix, and unrelated wildcards do not intersect."""
        self.assertIsNone(intersect("*.wildcard.io", "wildcard.io"))
        self.assertIsNone(intersect("very.specific.com", "*.other.com"))
        self.assertIsNone(intersect("*.a.com", "*.b.com"))
        self.assertIsNone(intersect("a.com", "b.com"))

    def test_route_without_hostnames_takes_the_listeners(self) -> None:
        """No route hostnames: the listener's hostname (or any host) is served."""
        self.assertEqual(effective_hostnames("*.example.com", []), ("*.example.com",))
        self.assertEqual(effective_hostnames(None, []), (None,))

    def test_intersections_are_deduplicated_in_order(self) -> None:
        """Several route names narrowing to the same listener name give it once."""
        got = effective_hostnames(
            "abc.foo.example.com", ["bar.com", "*.example.com", "*.foo.example.com"]
        )
        self.assertEqual(got, ("abc.foo.example.com",))

    def test_specificity_order(self) -> None:
        """Exact names first (longest first), then wildcards (longest first), then any host."""
        names = [None, "*.example.com", "a.example.com", "*.foo.example.com", "bb.example.com"]
        self.assertEqual(
            sorted(names, key=specificity),
            ["bb.example.com", "a.example.com", "*.foo.example.com", "*.example.com", None],
        )


def _rule(
    match: Match, route: str = "ns/r", rule: int = 0, index: int = 0, created: float = 0.0
) -> ResolvedRule:
    return ResolvedRule(route, rule, index, match, RuleFilters(), (), created)


class PrecedenceTests(SynchronousTestCase):
    def _order(self, *rules: ResolvedRule) -> list[ResolvedRule]:
        return sorted(rules, key=precedence)

    def test_exact_before_regex_before_longer_prefix_before_shorter(self) -> None:
        """Exact, then RegularExpression, then the longest prefix."""
        exact = _rule(Match("Exact", "/a"))
        regex = _rule(Match("RegularExpression", "/a.*"))
        long = _rule(Match("PathPrefix", "/a/b"))
        short = _rule(Match("PathPrefix", "/"))
        self.assertEqual(self._order(short, long, regex, exact), [exact, regex, long, short])

    def test_method_then_headers_then_query(self) -> None:
        """On the same path: a method, then more headers, then more query parameters."""
        from gateway.sources.gatewayapi import HeaderMatch, QueryMatch

        plain = _rule(Match())
        method = _rule(Match(method="GET"))
        headers = _rule(Match(headers=(HeaderMatch("a", "1"), HeaderMatch("b", "2"))))
        one_header = _rule(Match(headers=(HeaderMatch("a", "1"),)))
        query = _rule(Match(query=(QueryMatch("q", "1"),)))
        self.assertEqual(
            self._order(plain, query, one_header, headers, method),
            [method, headers, one_header, query, plain],
        )

    def test_ties_go_to_the_oldest_route_then_name_then_rule_order(self) -> None:
        """Oldest creationTimestamp, then namespace/name, then rule and match order."""
        old = _rule(Match(), route="z/old", created=1.0)
        new_a = _rule(Match(), route="a/new", created=2.0)
        new_b = _rule(Match(), route="b/new", created=2.0)
        new_b_later = _rule(Match(), route="b/new", rule=1, created=2.0)
        self.assertEqual(
            self._order(new_b_later, new_b, new_a, old), [old, new_a, new_b, new_b_later]
        )

    def test_host_routes_are_grouped_most_specific_first(self) -> None:
        """A resolution lists a listener's hostnames exact first, then wildcards, then any."""
        result = resolve(
            _inputs(
                _route("r1", hostnames=["*.example.com"]),
                _route("r2", hostnames=["a.example.com"]),
                _route("r3"),
            )
        )
        hosts: tuple[HostRoutes, ...] = result.listeners[0].hosts
        self.assertEqual([h.host for h in hosts], ["a.example.com", "*.example.com", None])


class ReferenceGrantTests(SynchronousTestCase):
    grant: ClassVar[dict[str, Any]] = {
        "metadata": {"name": "g", "namespace": "backend"},
        "spec": {
            "from": [{"group": GROUP, "kind": "HTTPRoute", "namespace": "app"}],
            "to": [{"group": "", "kind": "Service", "name": "web"}],
        },
    }

    def _ref(self, **changes: str) -> Reference:
        values = {
            "from_group": GROUP,
            "from_kind": "HTTPRoute",
            "from_namespace": "app",
            "to_group": "",
            "to_kind": "Service",
            "to_namespace": "backend",
            "to_name": "web",
        }
        values.update(changes)
        return Reference(**values)

    def test_same_namespace_needs_no_grant(self) -> None:
        """A reference inside one namespace is always allowed."""
        self.assertTrue(permitted(self._ref(from_namespace="backend"), []))

    def test_grant_allows_the_listed_reference(self) -> None:
        """From the listed namespace and kind, to the listed name: allowed."""
        self.assertTrue(permitted(self._ref(), [self.grant]))

    def test_grant_is_specific(self) -> None:
        """Another source namespace or kind, another target name or kind: refused."""
        for change in (
            {"from_namespace": "other"},
            {"from_kind": "GRPCRoute"},
            {"to_name": "db"},
            {"to_kind": "Secret"},
        ):
            self.assertFalse(permitted(self._ref(**change), [self.grant]), change)

    def test_grant_must_live_in_the_target_namespace(self) -> None:
        """A grant in the referring namespace grants nothing."""
        misplaced = {**self.grant, "metadata": {"name": "g", "namespace": "app"}}
        self.assertFalse(permitted(self._ref(), [misplaced]))

    def test_grant_without_a_name_covers_every_object_of_the_kind(self) -> None:
        """``to`` without ``name``: every Service of the namespace."""
        broad = {
            **self.grant,
            "spec": {**self.grant["spec"], "to": [{"group": "", "kind": "Service"}]},
        }
        self.assertTrue(permitted(self._ref(to_name="db"), [broad]))


class SelectorTests(SynchronousTestCase):
    def test_match_labels_and_expressions(self) -> None:
        """matchLabels and every matchExpressions operator are ANDed."""
        labels = {"team": "web", "env": "prod"}
        self.assertTrue(selector_matches({"matchLabels": {"team": "web"}}, labels))
        self.assertFalse(selector_matches({"matchLabels": {"team": "db"}}, labels))
        expressions = [
            ({"key": "env", "operator": "In", "values": ["prod", "qa"]}, True),
            ({"key": "env", "operator": "NotIn", "values": ["prod"]}, False),
            ({"key": "team", "operator": "Exists"}, True),
            ({"key": "missing", "operator": "DoesNotExist"}, True),
            ({"key": "missing", "operator": "Exists"}, False),
        ]
        for expression, expected in expressions:
            self.assertEqual(
                selector_matches({"matchExpressions": [expression]}, labels), expected, expression
            )

    def test_empty_selector_matches_everything(self) -> None:
        """As in Kubernetes, ``{}`` selects every namespace."""
        self.assertTrue(selector_matches({}, {}))

    def test_malformed_selector_is_refused(self) -> None:
        """An unknown operator raises rather than guessing."""
        self.assertRaises(
            InvalidSelector,
            selector_matches,
            {"matchExpressions": [{"key": "a", "operator": "Near"}]},
            {},
        )

    def test_selector_listener_admits_labelled_namespaces_only(self) -> None:
        """``from: Selector``: a route in a namespace without the label is NotAllowedByListeners."""
        gateway = _gateway(
            allowed={"namespaces": {"from": "Selector", "selector": {"matchLabels": {"ok": "yes"}}}}
        )
        inputs = _inputs(
            _route("in", namespace="labelled"),
            _route("out", namespace="plain"),
            gateway=gateway,
            namespaces=(_namespace("labelled", {"ok": "yes"}), _namespace("plain", {})),
        )
        statuses = {r.route: r.parents[0].conditions[0] for r in resolve(inputs).routes}
        self.assertEqual(statuses["labelled/in"].reason, "Accepted")
        self.assertEqual(statuses["plain/out"].reason, "NotAllowedByListeners")

    def test_selector_fails_closed_for_an_unknown_namespace(self) -> None:
        """
        A route whose Namespace is not in the cache (yet) is not admitted
        by a selector, even one that admits every namespace without a
        label (``DoesNotExist``, ``NotIn``); once the Namespace is known
        without the label, it is.
        """
        for expression in (
            {"key": "restricted", "operator": "DoesNotExist"},
            {"key": "tier", "operator": "NotIn", "values": ["internal"]},
        ):
            gateway = _gateway(
                allowed={
                    "namespaces": {
                        "from": "Selector",
                        "selector": {"matchExpressions": [expression]},
                    }
                }
            )
            with self.subTest(expression=expression):
                unknown = resolve(_inputs(_route("r", namespace="plain"), gateway=gateway))
                self.assertEqual(
                    unknown.routes[0].parents[0].conditions[0].reason, "NotAllowedByListeners"
                )
                self.assertEqual(unknown.listeners[0].hosts, ())
                known = resolve(
                    _inputs(
                        _route("r", namespace="plain"),
                        gateway=gateway,
                        namespaces=(_namespace("plain", {}),),
                    )
                )
                self.assertEqual(known.routes[0].parents[0].conditions[0].reason, "Accepted")


class RouteStatusTests(SynchronousTestCase):
    def _accepted(self, route: dict[str, Any], **extra: Any) -> tuple[str, str]:
        result = resolve(_inputs(route, **extra))
        conditions = result.routes[0].parents[0].conditions
        return conditions[0].reason, conditions[1].reason

    def test_unknown_section_name_is_no_matching_parent(self) -> None:
        """A sectionName naming no listener: Accepted=False NoMatchingParent."""
        route = _route("r", parent={"name": "gw", "sectionName": "nope"})
        self.assertEqual(self._accepted(route)[0], "NoMatchingParent")

    def test_port_mismatch_is_no_matching_parent(self) -> None:
        """A port no listener has: Accepted=False NoMatchingParent."""
        route = _route("r", parent={"name": "gw", "port": 8080})
        self.assertEqual(self._accepted(route)[0], "NoMatchingParent")

    def test_missing_service_is_backend_not_found(self) -> None:
        """The route is accepted; ResolvedRefs=False BackendNotFound; the backend has no URL."""
        route = _route("r", backend="missing")
        self.assertEqual(self._accepted(route), ("Accepted", "BackendNotFound"))
        backend = resolve(_inputs(route)).listeners[0].hosts[0].rules[0].backends[0]
        self.assertIsNone(backend.url)

    def test_other_backend_kind_is_invalid_kind(self) -> None:
        """A backendRef to another kind: ResolvedRefs=False InvalidKind."""
        route = _route("r")
        route["spec"]["rules"][0]["backendRefs"][0]["kind"] = "Pod"
        self.assertEqual(self._accepted(route)[1], "InvalidKind")

    def test_external_name_service_is_refused_by_default(self) -> None:
        """
        A backendRef to an ExternalName Service (a tenant could name
        localhost or a metadata endpoint) has no URL and the problem
        UnsupportedValue; the route is Accepted with ResolvedRefs=False
        UnsupportedValue naming the setting. With the setting on, it is
        served at the external name.
        """
        route = _route("r", backend="ext")
        external = {
            "metadata": {"name": "ext", "namespace": "ns"},
            "spec": {"type": "ExternalName", "externalName": "169.254.169.254"},
        }
        inputs = _inputs(route)
        inputs = replace(inputs, services=(*inputs.services, external))
        result = resolve(inputs)
        accepted, refs = result.routes[0].parents[0].conditions
        self.assertEqual((accepted.status, accepted.reason), (True, "Accepted"))
        self.assertEqual((refs.status, refs.reason), (False, "UnsupportedValue"))
        self.assertIn("k8s.gateway.allow-external-name", refs.message)
        (backend,) = result.listeners[0].hosts[0].rules[0].backends
        self.assertEqual((backend.url, backend.problem), (None, "UnsupportedValue"))

        allowed = resolve(replace(inputs, settings=GatewayApiSettings(allow_external_name=True)))
        (backend,) = allowed.listeners[0].hosts[0].rules[0].backends
        self.assertEqual((backend.url, backend.problem), ("http://169.254.169.254:80", None))
        self.assertTrue(allowed.routes[0].parents[0].conditions[1].status)

    def test_external_name_setting_invalidates_the_memo(self) -> None:
        """A RulesMemo does not hand out rules read under the other setting."""
        route = _route("r", backend="ext")
        route["metadata"].update(uid="u", resourceVersion="1")
        external = {
            "metadata": {"name": "ext", "namespace": "ns", "resourceVersion": "1"},
            "spec": {"type": "ExternalName", "externalName": "example.net"},
        }
        inputs = _inputs(route)
        inputs = replace(inputs, services=(external,))
        memo = RulesMemo()
        refused = resolve(inputs, memo)
        allowed = resolve(
            replace(inputs, settings=GatewayApiSettings(allow_external_name=True)), memo
        )
        self.assertIsNone(refused.listeners[0].hosts[0].rules[0].backends[0].url)
        self.assertEqual(
            allowed.listeners[0].hosts[0].rules[0].backends[0].url, "http://example.net:80"
        )

    def test_unsupported_filter_drops_the_rule(self) -> None:
        """An unsupported filter drops its rule: PartiallyInvalid, or not Accepted when none is left."""
        route = _route("r")
        route["spec"]["rules"].append(
            {"filters": [{"type": "RequestMirror"}], "backendRefs": [{"name": "svc", "port": 80}]}
        )
        result = resolve(_inputs(route))
        conditions = result.routes[0].parents[0].conditions
        self.assertEqual(
            [c.type for c in conditions], ["Accepted", "ResolvedRefs", "PartiallyInvalid"]
        )
        self.assertEqual(len(result.listeners[0].hosts[0].rules), 1)
        route["spec"]["rules"].pop(0)
        self.assertEqual(self._accepted(route)[0], "UnsupportedValue")

    def test_two_parent_refs_to_one_listener_serve_the_rules_once(self) -> None:
        """A parentRef by Gateway and one by sectionName: two statuses, one copy of the rules."""
        route = _route("r")
        route["spec"]["parentRefs"].append({"name": "gw", "sectionName": "http"})
        result = resolve(_inputs(route))
        self.assertEqual(len(result.routes[0].parents), 2)
        self.assertEqual(len(result.listeners[0].hosts[0].rules), 1)
        self.assertEqual(result.gateways[0].listeners[0].attached_routes, 1)

    def test_observed_generation_is_reported(self) -> None:
        """Every condition carries the object's metadata.generation."""
        route = _route("r")
        route["metadata"]["generation"] = 7
        result = resolve(_inputs(route))
        self.assertEqual(
            {c.observed_generation for c in result.routes[0].parents[0].conditions}, {7}
        )

    def test_foreign_class_is_ignored(self) -> None:
        """A Gateway of another controller's class is neither resolved nor reported."""
        gateway = _gateway()
        gateway["spec"]["gatewayClassName"] = "theirs"
        result = resolve(_inputs(_route("r"), gateway=gateway))
        self.assertEqual((result.listeners, result.gateways, result.routes), ((), (), ()))


def _rule_with(**fields: Any) -> dict[str, Any]:
    """One rule (with a backend unless a redirect is given) of the given matches and filters."""
    rule: dict[str, Any] = {"backendRefs": [{"name": "svc", "port": 80}], **fields}
    if any(f.get("type") == "RequestRedirect" for f in rule.get("filters", ())):
        del rule["backendRefs"]
    return rule


class UnsafeValueTests(SynchronousTestCase):
    """
    Values that reach the backend request or a redirect are checked: a
    rule carrying one that would inject (CR/LF in a header, a space or
    ``?`` in a path, a non-DNS hostname) is dropped as unsupported, and
    the route says so, while its other rules are served.
    """

    def _verdict(self, rule: dict[str, Any]) -> tuple[int, list[tuple[str, bool, str, str]]]:
        route = _route("r")
        route["spec"]["rules"].append(rule)
        result = resolve(_inputs(route))
        conditions = result.routes[0].parents[0].conditions
        served = sum(len(h.rules) for h in result.listeners[0].hosts)
        return served, [(c.type, c.status, c.reason, c.message) for c in conditions]

    def assertDropped(self, rule: dict[str, Any], words: str) -> None:
        served, conditions = self._verdict(rule)
        self.assertEqual(served, 1, conditions)  # only the plain rule 0
        (partial,) = [c for c in conditions if c[0] == "PartiallyInvalid"]
        self.assertEqual(partial[1:3], (True, "UnsupportedValue"))
        self.assertIn("rule 1: ", partial[3])
        self.assertIn(words, partial[3])

    def assertServed(self, rule: dict[str, Any]) -> None:
        served, conditions = self._verdict(rule)
        self.assertEqual(served, 2, conditions)
        self.assertNotIn("PartiallyInvalid", [c[0] for c in conditions])

    def _modifier(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        field = kind[0].lower() + kind[1:]
        return _rule_with(filters=[{"type": kind, field: body}])

    def test_header_value_with_cr_lf_or_nul(self) -> None:
        """CR, LF, NUL or DEL in a set/add value: dropped, for request and response modifiers."""
        for kind in ("RequestHeaderModifier", "ResponseHeaderModifier"):
            for op in ("set", "add"):
                for value in ("v\r\nX-Injected: 1", "v\nx", "a\x00b", "a\x7fb"):
                    with self.subTest(kind=kind, op=op, value=value):
                        self.assertDropped(
                            self._modifier(kind, {op: [{"name": "X-A", "value": value}]}),
                            "control character",
                        )

    def test_header_value_with_tab_is_served(self) -> None:
        """HTAB is allowed in a field value (RFC 7230), as is any printable text."""
        self.assertServed(
            self._modifier(
                "RequestHeaderModifier", {"set": [{"name": "X-A", "value": 'a\tb ;="x"'}]}
            )
        )

    def test_header_name_must_be_a_token(self) -> None:
        """A name with a space, colon, CR/LF or empty: dropped, in set, add, remove and matches."""
        for name in ("X A", "X-A:", "X\r\nB", "", "Ä"):
            with self.subTest(name=name):
                for body in (
                    {"set": [{"name": name, "value": "v"}]},
                    {"add": [{"name": name, "value": "v"}]},
                    {"remove": [name]},
                ):
                    self.assertDropped(self._modifier("RequestHeaderModifier", body), "HTTP token")
                self.assertDropped(
                    _rule_with(matches=[{"headers": [{"name": name, "value": "v"}]}]), "HTTP token"
                )
        self.assertServed(
            self._modifier("RequestHeaderModifier", {"set": [{"name": "X-Ok_1.~!", "value": "v"}]})
        )

    def test_path_replacements(self) -> None:
        """ReplaceFullPath/ReplacePrefixMatch, rewrite or redirect: absolute, no space, ?, # or controls."""
        bad = ("/x HTTP/1.1\r\nHost: evil", "/a b", "/a?b=1", "/a#f", "relative", "/a\x00")
        for filter_kind, field in (
            ("URLRewrite", "urlRewrite"),
            ("RequestRedirect", "requestRedirect"),
        ):
            for kind, key in (
                ("ReplaceFullPath", "replaceFullPath"),
                ("ReplacePrefixMatch", "replacePrefixMatch"),
            ):
                for value in bad:
                    with self.subTest(filter=filter_kind, kind=kind, value=value):
                        self.assertDropped(
                            _rule_with(
                                filters=[
                                    {
                                        "type": filter_kind,
                                        field: {"path": {"type": kind, key: value}},
                                    }
                                ]
                            ),
                            "absolute path",
                        )
                self.assertServed(
                    _rule_with(
                        filters=[
                            {
                                "type": filter_kind,
                                field: {"path": {"type": kind, key: "/ok/%20-_.~"}},
                            }
                        ]
                    )
                )

    def test_hostnames_must_be_dns_names(self) -> None:
        """A rewrite or redirect hostname that is not a DNS name: dropped; any case is served."""
        for filter_kind, field in (
            ("URLRewrite", "urlRewrite"),
            ("RequestRedirect", "requestRedirect"),
        ):
            for host in ("evil.com\r\nX: 1", "a b.com", "a.com:80", "-a.com", "a..com", "", "a/b"):
                with self.subTest(filter=filter_kind, host=host):
                    self.assertDropped(
                        _rule_with(filters=[{"type": filter_kind, field: {"hostname": host}}]),
                        "DNS name",
                    )
            self.assertServed(
                _rule_with(filters=[{"type": filter_kind, field: {"hostname": "Ex-1.Example.com"}}])
            )


class RegexTests(SynchronousTestCase):
    """Regular expressions are RE2's: what RE2 refuses is an unsupported rule, saying so."""

    def _partial(self, match: dict[str, Any]) -> str | None:
        route = _route("r")
        route["spec"]["rules"].append(_rule_with(matches=[match]))
        conditions = resolve(_inputs(route)).routes[0].parents[0].conditions
        return next((c.message for c in conditions if c.type == "PartiallyInvalid"), None)

    def _matches(self, pattern: str) -> list[dict[str, Any]]:
        return [
            {"path": {"type": "RegularExpression", "value": pattern}},
            {"headers": [{"name": "x-id", "type": "RegularExpression", "value": pattern}]},
            {"queryParams": [{"name": "q", "type": "RegularExpression", "value": pattern}]},
        ]

    def test_backreferences_and_lookarounds_are_refused(self) -> None:
        """Valid Python ``re`` but not RE2: path, header and query matches all dropped, naming RE2."""
        for pattern in (r"/(\w+)/\1", "/(?=a)b", "/(?<!x)y", "/["):
            for match in self._matches(pattern):
                with self.subTest(match=match):
                    message = self._partial(match)
                    self.assertIsNotNone(message)
                    self.assertIn("RE2 syntax", message or "")

    def test_re2_patterns_are_served(self) -> None:
        """Nested quantifiers (catastrophic in backtracking engines) are linear in RE2: served."""
        for pattern in ("/(a+)+b", r"/v[0-9]+/.*", "(a|aa)+"):
            for match in self._matches(pattern):
                with self.subTest(match=match):
                    self.assertIsNone(self._partial(match))

    def test_refused_pattern_prints_nothing(self) -> None:
        """RE2's own error log is off: the route's condition is the only report."""
        import os
        import sys
        import tempfile

        with tempfile.TemporaryFile() as capture:
            saved = os.dup(2)
            sys.stderr.flush()
            os.dup2(capture.fileno(), 2)
            try:
                self.assertIsNotNone(
                    self._partial({"path": {"type": "RegularExpression", "value": "/(?=a)"}})
                )
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            capture.seek(0)
            self.assertEqual(capture.read(), b"")


class ListenerTests(SynchronousTestCase):
    def _listeners(
        self,
        *listeners: dict[str, Any],
        secrets: tuple[dict[str, Any], ...] = (),
        grants: tuple[dict[str, Any], ...] = (),
    ) -> Any:
        gateway = _gateway()
        gateway["spec"]["listeners"] = list(listeners)
        return resolve(_inputs(gateway=gateway, secrets=secrets, grants=grants)).gateways[0]

    def test_https_needs_a_usable_secret(self) -> None:
        """A missing Secret: ResolvedRefs=False InvalidCertificateRef, not programmed."""
        status = self._listeners(
            {
                "name": "https",
                "port": 443,
                "protocol": "HTTPS",
                "tls": {"certificateRefs": [{"name": "cert"}]},
            }
        )
        conditions = {c.type: c for c in status.listeners[0].conditions}
        self.assertEqual(conditions["ResolvedRefs"].reason, "InvalidCertificateRef")
        self.assertFalse(conditions["Programmed"].status)

    def test_cross_namespace_secret_needs_a_grant(self) -> None:
        """A Secret of another namespace: RefNotPermitted without a grant, used with one."""
        listener = {
            "name": "https",
            "port": 443,
            "protocol": "HTTPS",
            "tls": {"certificateRefs": [{"name": "cert", "namespace": "certs"}]},
        }
        secret = _tls_secret("cert", "certs")
        status = self._listeners(listener, secrets=(secret,))
        self.assertEqual(
            {c.type: c for c in status.listeners[0].conditions}["ResolvedRefs"].reason,
            "RefNotPermitted",
        )
        grant = {
            "metadata": {"name": "g", "namespace": "certs"},
            "spec": {
                "from": [{"group": GROUP, "kind": "Gateway", "namespace": "ns"}],
                "to": [{"group": "", "kind": "Secret"}],
            },
        }
        status = self._listeners(listener, secrets=(secret,), grants=(grant,))
        self.assertTrue({c.type: c for c in status.listeners[0].conditions}["Programmed"].status)

    def test_malformed_secret_is_an_invalid_certificate_ref(self) -> None:
        """
        A Secret whose items are base64 but not PEM (the conformance
        manifest's "Hello world"), a key that is not a private key, or a
        certificate that is a key: ResolvedRefs=False InvalidCertificateRef,
        not programmed; a real certificate and key: programmed.
        """
        listener = {
            "name": "https",
            "port": 443,
            "protocol": "HTTPS",
            "tls": {"certificateRefs": [{"name": "cert"}]},
        }
        good = _tls_secret("cert", "ns")
        hello = base64.b64encode(b"Hello world\n").decode()
        cases = {
            "hello world": {"tls.crt": hello, "tls.key": hello},
            "key is not a key": {**good["data"], "tls.key": good["data"]["tls.crt"]},
            "certificate is a key": {**good["data"], "tls.crt": good["data"]["tls.key"]},
        }
        for name, data in cases.items():
            with self.subTest(name):
                status = self._listeners(listener, secrets=({**good, "data": data},))
                conditions = {c.type: c for c in status.listeners[0].conditions}
                self.assertEqual(
                    (conditions["ResolvedRefs"].status, conditions["ResolvedRefs"].reason),
                    (False, "InvalidCertificateRef"),
                )
                self.assertIn("ns/cert", conditions["ResolvedRefs"].message)
                self.assertFalse(conditions["Programmed"].status)
        status = self._listeners(listener, secrets=(good,))
        self.assertTrue({c.type: c for c in status.listeners[0].conditions}["Programmed"].status)

    def test_secret_verdicts_are_kept_by_version(self) -> None:
        """
        With a :class:`SecretChecks`, an unchanged Secret (same uid and
        resourceVersion) is not parsed again, and the verdict is the same;
        a new resourceVersion is checked again.
        """
        gateway = _gateway()
        gateway["spec"]["listeners"] = [
            {
                "name": "https",
                "port": 443,
                "protocol": "HTTPS",
                "tls": {"certificateRefs": [{"name": "cert"}]},
            }
        ]
        secret = _tls_secret("cert", "ns")
        secret["metadata"].update(uid="u1", resourceVersion="1")
        checks = SecretChecks()
        first = resolve(_inputs(gateway=gateway, secrets=(secret,)), secret_checks=checks)
        self.assertEqual(checks.hits, 0)
        again = resolve(_inputs(gateway=gateway, secrets=(secret,)), secret_checks=checks)
        self.assertEqual(checks.hits, 1)
        self.assertEqual(again, first)
        self.assertEqual(len(again.listeners), 1)
        broken = {
            **secret,
            "metadata": {**secret["metadata"], "resourceVersion": "2"},
            "data": {"tls.crt": secret["data"]["tls.key"], "tls.key": secret["data"]["tls.key"]},
        }
        changed = resolve(_inputs(gateway=gateway, secrets=(broken,)), secret_checks=checks)
        self.assertEqual(checks.hits, 1)
        self.assertEqual(changed.listeners, ())

    def test_unsupported_protocol_and_conflicts(self) -> None:
        """TCP is UnsupportedProtocol; two listeners on one port and hostname conflict."""
        status = self._listeners(
            {"name": "tcp", "port": 9000, "protocol": "TCP"},
            {"name": "a", "port": 80, "protocol": "HTTP"},
            {"name": "b", "port": 80, "protocol": "HTTP"},
        )
        by_name = {s.name: {c.type: c for c in s.conditions} for s in status.listeners}
        self.assertEqual(by_name["tcp"]["Accepted"].reason, "UnsupportedProtocol")
        self.assertEqual(by_name["a"]["Conflicted"].reason, "HostnameConflict")
        self.assertEqual(status.conditions[0].reason, "ListenersNotValid")
        self.assertFalse(status.conditions[0].status)

    def test_unsupported_route_kind(self) -> None:
        """allowedRoutes.kinds with a kind we do not serve: InvalidRouteKinds, left out of supportedKinds."""
        status = self._listeners(
            {
                "name": "http",
                "port": 80,
                "protocol": "HTTP",
                "allowedRoutes": {"kinds": [{"kind": "HTTPRoute"}, {"kind": "TCPRoute"}]},
            }
        )
        self.assertEqual(status.listeners[0].supported_kinds, ("HTTPRoute",))
        self.assertEqual(
            {c.type: c for c in status.listeners[0].conditions}["ResolvedRefs"].reason,
            "InvalidRouteKinds",
        )


class SharedPortsTests(SynchronousTestCase):
    """
    All our Gateways share the gateway's two ports: a (hostname, protocol)
    goes to the oldest Gateway claiming it, and a listener on another
    port is not served, so neither another Gateway nor another port can
    bypass a listener's ``allowedRoutes`` (the reviewer's t5 and t6).
    """

    def _gateway(
        self, name: str, namespace: str, created: str, *listeners: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
            "spec": {"gatewayClassName": "ours", "listeners": list(listeners)},
        }

    def _listener(
        self, name: str, port: int = 80, hostname: str | None = None, allowed: str = "Same"
    ) -> dict[str, Any]:
        listener: dict[str, Any] = {
            "name": name,
            "port": port,
            "protocol": "HTTP",
            "allowedRoutes": {"namespaces": {"from": allowed}},
        }
        if hostname is not None:
            listener["hostname"] = hostname
        return listener

    def _resolve(
        self, gateways: list[dict[str, Any]], routes: list[dict[str, Any]], **settings: Any
    ) -> Any:
        inputs = replace(
            _inputs(*routes),
            gateways=tuple(gateways),
            services=tuple(
                {"metadata": {"name": "svc", "namespace": ns}, "spec": {"ports": [{"port": 80}]}}
                for ns in ("team-a", "evil", "infra")
            ),
            settings=GatewayApiSettings(**settings),
        )
        return resolve(inputs)

    def _conditions(self, result: Any, gateway: str, listener: str) -> dict[str, Any]:
        (status,) = [g for g in result.gateways if g.gateway == gateway]
        (found,) = [s for s in status.listeners if s.name == listener]
        return {c.type: c for c in found.conditions}

    def _served_routes(self, result: Any) -> set[str]:
        return {r.route for l in result.listeners for h in l.hosts for r in h.rules}

    def test_another_gateway_cannot_take_a_claimed_hostname(self) -> None:
        """
        t5: team-b's Gateway (newer, though first by name) also claims
        ``a.example.com`` HTTP, from All namespaces: its listener is
        Conflicted=True HostnameConflict and not programmed; the route of
        ``evil`` attached to it is counted but never served; team-a's
        Gateway, the older, keeps the host.
        """
        older = self._gateway(
            "gw-a",
            "team-a",
            "2026-01-01T00:00:00+00:00",
            self._listener("http", hostname="a.example.com"),
        )
        newer = self._gateway(
            "gw-0",
            "team-b",
            "2026-06-01T00:00:00+00:00",
            self._listener("http", hostname="a.example.com", allowed="All"),
        )
        app = _route("app", namespace="team-a", parent={"name": "gw-a"})
        steal = _route("steal", namespace="evil", parent={"name": "gw-0", "namespace": "team-b"})
        result = self._resolve([older, newer], [app, steal])
        lost = self._conditions(result, "team-b/gw-0", "http")
        self.assertEqual(
            (lost["Conflicted"].status, lost["Conflicted"].reason), (True, "HostnameConflict")
        )
        self.assertIn("team-a/gw-a", lost["Conflicted"].message)
        self.assertFalse(lost["Programmed"].status)
        kept = self._conditions(result, "team-a/gw-a", "http")
        self.assertEqual((kept["Conflicted"].status, kept["Programmed"].status), (False, True))
        self.assertEqual([l.gateway for l in result.listeners], ["team-a/gw-a"])
        self.assertEqual(self._served_routes(result), {"team-a/app"})
        # Attached (the spec counts routes on every listener), not served.
        (status,) = [g for g in result.gateways if g.gateway == "team-b/gw-0"]
        self.assertEqual(status.listeners[0].attached_routes, 1)

    def test_equal_age_goes_to_namespace_name_and_any_host_conflicts_too(self) -> None:
        """Same creationTimestamp: the first namespace/name keeps it; two any-host listeners conflict."""
        same = "2026-01-01T00:00:00+00:00"
        first = self._gateway("a", "infra", same, self._listener("http"))
        second = self._gateway(
            "b",
            "infra",
            same,
            self._listener("http"),
            self._listener("other", hostname="b.example.com"),
        )
        result = self._resolve([second, first], [])
        self.assertEqual(
            self._conditions(result, "infra/b", "http")["Conflicted"].reason, "HostnameConflict"
        )
        self.assertTrue(self._conditions(result, "infra/b", "other")["Programmed"].status)
        self.assertEqual(
            [(l.gateway, l.name) for l in result.listeners],
            [("infra/a", "http"), ("infra/b", "other")],
        )

    def test_listener_on_another_port_is_port_unavailable(self) -> None:
        """
        t6: a listener on 8080 taking routes from All namespaces, beside
        the Same-namespace listener on 80 the gateway serves: it is
        Accepted=False PortUnavailable and not programmed, so the route of
        ``evil`` attached to it never serves ``admin.corp.example/login``.
        """
        gateway = self._gateway(
            "gw",
            "infra",
            "2026-01-01T00:00:00+00:00",
            self._listener("internal", 80),
            self._listener("tenants", 8080, allowed="All"),
        )
        admin = _route(
            "admin",
            namespace="infra",
            hostnames=["admin.corp.example"],
            parent={"name": "gw", "sectionName": "internal"},
        )
        steal = _route(
            "steal",
            namespace="evil",
            hostnames=["admin.corp.example"],
            parent={"name": "gw", "namespace": "infra", "sectionName": "tenants"},
        )
        result = self._resolve([gateway], [admin, steal])
        tenants = self._conditions(result, "infra/gw", "tenants")
        self.assertEqual(
            (tenants["Accepted"].status, tenants["Accepted"].reason), (False, "PortUnavailable")
        )
        self.assertIn("k8s.gateway.http-port", tenants["Accepted"].message)
        self.assertFalse(tenants["Programmed"].status)
        self.assertEqual([l.name for l in result.listeners], ["internal"])
        self.assertEqual(self._served_routes(result), {"infra/admin"})
        # Served on the configured port instead, when the operator says so.
        moved = self._resolve([gateway], [admin, steal], http_port=8080)
        self.assertEqual([l.name for l in moved.listeners], ["tenants"])
        self.assertEqual(
            self._conditions(moved, "infra/gw", "internal")["Accepted"].reason, "PortUnavailable"
        )

    def test_https_port(self) -> None:
        """HTTPS listeners are checked against the HTTPS port."""
        listener = {
            "name": "https",
            "port": 8443,
            "protocol": "HTTPS",
            "tls": {"certificateRefs": [{"name": "cert"}]},
        }
        gateway = self._gateway("gw", "ns", "2026-01-01T00:00:00+00:00", listener)
        secret = _tls_secret("cert", "ns")
        for port, reason in ((443, "PortUnavailable"), (8443, "Accepted")):
            inputs = replace(
                _inputs(),
                gateways=(gateway,),
                secrets=(secret,),
                settings=GatewayApiSettings(https_port=port),
            )
            status = resolve(inputs).gateways[0].listeners[0]
            self.assertEqual({c.type: c for c in status.conditions}["Accepted"].reason, reason)


# --- builders --------------------------------------------------------------


def _tls_secret(name: str, namespace: str) -> dict[str, Any]:
    """A ``kubernetes.io/tls`` Secret holding a real self-signed certificate and key."""
    cert = self_signed("example.com")
    return {
        "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": base64.b64encode(cert.chain_pem.encode()).decode(),
            "tls.key": base64.b64encode(cert.key_pem.encode()).decode(),
        },
    }


def _namespace(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def _gateway(allowed: dict[str, Any] | None = None) -> dict[str, Any]:
    listener: dict[str, Any] = {"name": "http", "port": 80, "protocol": "HTTP"}
    if allowed is not None:
        listener["allowedRoutes"] = allowed
    return {
        "metadata": {"name": "gw", "namespace": "ns"},
        "spec": {"gatewayClassName": "ours", "listeners": [listener]},
    }


def _route(
    name: str,
    namespace: str = "ns",
    hostnames: list[str] | None = None,
    parent: dict[str, Any] | None = None,
    backend: str = "svc",
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "parentRefs": [parent or {"name": "gw", "namespace": "ns"}],
            "hostnames": hostnames or [],
            "rules": [{"backendRefs": [{"name": backend, "port": 80}]}],
        },
    }


def _inputs(
    *routes: dict[str, Any],
    gateway: dict[str, Any] | None = None,
    namespaces: tuple[dict[str, Any], ...] = (),
    secrets: tuple[dict[str, Any], ...] = (),
    grants: tuple[dict[str, Any], ...] = (),
) -> GatewayApiInputs:
    gateway = gateway or _gateway(allowed={"namespaces": {"from": "All"}})
    return GatewayApiInputs(
        gateway_classes=(
            {
                "metadata": {"name": "ours"},
                "spec": {"controllerName": "apimgw.io/gateway-controller"},
            },
        ),
        gateways=(gateway,),
        http_routes=routes,
        services=tuple(
            {"metadata": {"name": "svc", "namespace": ns}, "spec": {"ports": [{"port": 80}]}}
            for ns in ("ns", "labelled", "plain")
        ),
        secrets=secrets,
        reference_grants=grants,
        namespaces=namespaces,
    )
