"""
End to end in process: the conformance manifests resolved
(:func:`~gateway.sources.gatewayapi.resolve`), turned into model bodies
(:func:`~gateway.sources.gatewayapi.bodies`), translated and compiled into
a :class:`~gateway.routing.RouteTable`; each request of the conformance
test's Go table (``conformance/tests/<name>.go`` at the commit the
manifests were copied from) is looked up and must reach the backend that
test expects, or no route (the gateway's 404).

What is checked is the routing decision: the variant served and its
backends. Sending the requests over sockets is the proxy's test.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gateway.model import GatewayRoutes, GatewayRule, ObjectRef, SourceObject
from gateway.routing import Match, RouteTable
from gateway.sources.gatewayapi import bodies, resolve
from gateway.translate import translate

from .test_golden import TESTDATA, load_inputs

#: ``None``: 404 (no route). Otherwise the backend, ``v1`` for
#: ``infra-backend-v1``.
Expected = str | None


class Facts:
    """The request's headers and query string, as the proxy's adapter gives them."""

    def __init__(self, headers: dict[str, str], query: str) -> None:
        self._headers = {k.lower().encode(): v for k, v in headers.items()}
        self._query: dict[str, str] = {}
        for part in query.split("&") if query else ():
            name, _, value = part.partition("=")
            self._query.setdefault(name, value)

    def header(self, name: bytes) -> str | None:
        return self._headers.get(name)

    def query(self, name: str) -> str | None:
        return self._query.get(name)


def served(case: str, gateway: str | None = None) -> RouteTable:
    """The route table of one golden case (of one Gateway of it, whose
    name is ``namespace/name``, when the case has several that would share
    an address)."""
    found = bodies(resolve(load_inputs(TESTDATA / f"{case}.in.yaml")))
    objects = [
        SourceObject(ObjectRef("gatewayapi", "gatewayroutes", name), 1.0, body)
        for name, body in found.items()
        if gateway is None or name == gateway
    ]
    config = translate(objects)
    assert not config.problems, config.problems
    return RouteTable.build(config.routes, claims=config.claims)


def backend_of(match: Match | None) -> Expected:
    """``v1`` for a match served by ``infra-backend-v1`` only; ``None`` for no match."""
    if match is None:
        return None
    assert match.variant is not None, match
    names = {
        b.backend.host.split(".")[0].removeprefix("infra-backend-")
        for b in match.variant.backends
        if b.backend is not None and b.weight > 0
    }
    assert len(names) == 1, names
    return names.pop()


def lookup(
    table: RouteTable,
    target: str,
    *,
    host: str = "example.com",
    method: str = "GET",
    headers: dict[str, str] | None = None,
    scheme: bytes = b"http",
) -> Expected:
    path, _, query = target.partition("?")
    return backend_of(table.lookup(host, path, method, scheme, Facts(headers or {}, query)))


class ConformanceRequestTests(SynchronousTestCase):
    def check(self, table: RouteTable, cases: list[tuple[dict[str, object], Expected]]) -> None:
        for request, expected in cases:
            got = lookup(table, **request)  # type: ignore[arg-type]
            self.assertEqual(got, expected, f"{request} gave {got}, expected {expected}")

    def test_matching(self) -> None:
        """HTTPRouteMatching: path prefix by whole segments, a header match."""
        self.check(
            served("matching"),
            [
                ({"target": "/"}, "v1"),
                ({"target": "/example"}, "v1"),
                ({"target": "/", "headers": {"Version": "one"}}, "v1"),
                ({"target": "/v2"}, "v2"),
                ({"target": "/v2/example"}, "v2"),
                ({"target": "/", "headers": {"Version": "two"}}, "v2"),
                ({"target": "/v2/"}, "v2"),
                ({"target": "/v2example"}, "v1"),
                ({"target": "/foo/v2/example"}, "v1"),
            ],
        )

    def test_matching_across_routes(self) -> None:
        """HTTPRouteMatchingAcrossRoutes: rules of two routes on one host merge in precedence order."""
        self.check(
            served("matching-across-routes"),
            [
                ({"host": "example.com", "target": "/"}, "v1"),
                ({"host": "example.com", "target": "/example"}, "v1"),
                ({"host": "example.net", "target": "/example"}, "v1"),
                (
                    {"host": "example.com", "target": "/example", "headers": {"Version": "one"}},
                    "v1",
                ),
                ({"host": "example.com", "target": "/v2"}, "v2"),
                ({"host": "example.net", "target": "/v2"}, "v1"),
                ({"host": "example.com", "target": "/v2/example"}, "v2"),
                ({"host": "example.com", "target": "/", "headers": {"Version": "two"}}, "v2"),
            ],
        )

    def test_header_matching(self) -> None:
        """HTTPRouteHeaderMatching: more header matches first; no match is 404."""
        cases: list[tuple[dict[str, str], Expected]] = [
            ({"Version": "one"}, "v1"),
            ({"Version": "two"}, "v2"),
            ({"Version": "two", "Color": "orange"}, "v1"),
            ({"Version": "two", "Color": "blue"}, "v2"),
            ({"Color": "orange"}, None),
            ({"Some-Other-Header": "one"}, None),
            ({"Color": "blue"}, "v1"),
            ({"Color": "green"}, "v1"),
            ({"Color": "red"}, "v2"),
            ({"Color": "yellow"}, "v2"),
            ({"Color": "purple"}, None),
        ]
        self.check(
            served("header-matching"),
            [({"target": "/", "headers": h}, e) for h, e in cases],
        )

    def test_query_param_matching(self) -> None:
        """HTTPRouteQueryParamMatching: names and values exact, AND within a match, OR across."""
        self.check(
            served("query-param-matching"),
            [
                ({"target": "/?animal=whale"}, "v1"),
                ({"target": "/?animal=dolphin"}, "v2"),
                ({"target": "/?animal=dolphin&color=blue"}, "v3"),
                ({"target": "/?ANIMAL=Whale"}, "v3"),
                ({"target": "/?animal=whale&otherparam=irrelevant"}, "v1"),
                ({"target": "/?animal=dolphin&color=yellow"}, "v2"),
                ({"target": "/?color=blue"}, None),
                ({"target": "/?animal=dog"}, None),
                ({"target": "/?animal=whaledolphin"}, None),
                ({"target": "/"}, None),
                ({"target": "/path1?animal=whale"}, "v1"),
                ({"target": "/?animal=whale", "headers": {"version": "one"}}, "v2"),
                ({"target": "/path2?animal=whale", "headers": {"version": "two"}}, "v3"),
                ({"target": "/path3?animal=shark"}, "v1"),
                ({"target": "/path4?animal=kraken", "headers": {"version": "three"}}, "v1"),
                ({"target": "/?animal=shark"}, None),
                ({"target": "/path4?animal=kraken"}, None),
                ({"target": "/path5?animal=hydra"}, "v1"),
                ({"target": "/?animal=hydra", "headers": {"version": "four"}}, "v3"),
            ],
        )

    def test_method_matching(self) -> None:
        """HTTPRouteMethodMatching: method matches are exact (HEAD is not GET)."""
        self.check(
            served("method-matching"),
            [
                ({"target": "/", "method": "POST"}, "v1"),
                ({"target": "/", "method": "GET"}, "v2"),
                ({"target": "/", "method": "HEAD"}, None),
            ],
        )

    def test_path_match_order(self) -> None:
        """HTTPRoutePathMatchOrder: Exact over prefixes, longer prefixes first, one route's rules."""
        self.check(
            served("path-match-order"),
            [
                ({"target": "/match/exact/one"}, "v3"),
                ({"target": "/match/exact"}, "v2"),
                ({"target": "/match"}, "v1"),
                ({"target": "/match/prefix/one/any"}, "v2"),
                ({"target": "/match/prefix/any"}, "v1"),
                ({"target": "/match/any"}, "v3"),
            ],
        )

    def test_https_listener_serves_https_only(self) -> None:
        """HTTPRouteHTTPSListener: the rules of HTTPS listeners answer HTTPS requests, not plain HTTP."""
        table = served("https-listener")
        for host, expected in [("example.org", "v1"), ("second-example.org", "v2")]:
            self.check(
                table,
                [
                    ({"host": host, "target": "/", "scheme": b"https"}, expected),
                    ({"host": host, "target": "/", "scheme": b"http"}, None),
                ],
            )

    def test_hostname_intersection(self) -> None:
        """HTTPRouteHostnameIntersection: route ∩ listener hostnames, Gateway API wildcards."""
        table = served(
            "hostname-intersection", "gateway-conformance-infra/httproute-hostname-intersection"
        )
        cases: list[tuple[str, str, Expected]] = [
            ("very.specific.com", "/s1", "v1"),
            ("very.specific.com:1234", "/s1", "v1"),
            ("non.matching.com", "/s1", None),
            ("foo.nonmatchingwildcard.io", "/s1", None),
            ("foo.wildcard.io", "/s1", None),
            ("very.specific.com", "/non-matching-prefix", None),
            ("foo.wildcard.io", "/s2", "v2"),
            ("bar.wildcard.io", "/s2", "v2"),
            ("foo.bar.wildcard.io", "/s2", "v2"),
            ("non.matching.com", "/s2", None),
            ("wildcard.io", "/s2", None),
            ("very.specific.com", "/s2", None),
            ("foo.wildcard.io", "/non-matching-prefix", None),
            ("very.specific.com", "/s3", "v3"),
            ("non.matching.com", "/s3", None),
            ("foo.specific.com", "/s3", None),
            ("foo.wildcard.io", "/s3", None),
            ("very.specific.com", "/non-matching-prefix", None),
            ("foo.anotherwildcard.io", "/s4", "v1"),
            ("bar.anotherwildcard.io", "/s4", "v1"),
            ("foo.bar.anotherwildcard.io", "/s4", "v1"),
            ("anotherwildcard.io", "/s4", None),
            ("foo.wildcard.io", "/s4", None),
            ("very.specific.com", "/s4", None),
            ("foo.anotherwildcard.io", "/non-matching-prefix", None),
            ("specific.but.wrong.com", "/s5", None),
            ("wildcard.io", "/s5", None),
        ]
        self.check(table, [({"host": h, "target": p}, e) for h, p, e in cases])

    def test_hostname_intersection_all(self) -> None:
        """HTTPRouteHostnameIntersection, an unspecified-hostname listener: the route's own hostnames."""
        table = served(
            "hostname-intersection", "gateway-conformance-infra/httproute-hostname-intersection-all"
        )
        cases: list[tuple[str, Expected]] = [
            ("first.com", "v2"),
            ("sub.first.com", "v2"),
            ("second.com", "v2"),
            ("sub.second.com", "v2"),
            ("third.com", None),
            ("sub.third.com", None),
        ]
        self.check(table, [({"host": h, "target": "/"}, e) for h, e in cases])

    def test_listener_isolation(self) -> None:
        """GatewayHTTPListenerIsolation: only the most specific listener's routes serve a host,
        for both Gateways of the case (with and without route hostnames)."""
        paths = (
            "/empty-hostname",
            "/wildcard-example-com",
            "/wildcard-foo-example-com",
            "/abc-foo-example-com",
        )
        owner = {
            "bar.com": "/empty-hostname",
            "bar.example.com": "/wildcard-example-com",
            "bar.foo.example.com": "/wildcard-foo-example-com",
            "abc.foo.example.com": "/abc-foo-example-com",
        }
        for case in ("listener-isolation", "listener-isolation-with-hostname-intersection"):
            table = served(case)
            self.check(
                table,
                [
                    ({"host": host, "target": path}, "v1" if owner[host] == path else None)
                    for host in owner
                    for path in paths
                ],
            )


class BodiesTests(SynchronousTestCase):
    def test_one_body_per_gateway_with_claims(self) -> None:
        """bodies() gives one GatewayRoutes per Gateway, named namespace/name, with every listener's claim."""
        found = bodies(resolve(load_inputs(TESTDATA / "hostname-intersection.in.yaml")))
        self.assertEqual(
            sorted(found),
            [
                "gateway-conformance-infra/httproute-hostname-intersection",
                "gateway-conformance-infra/httproute-hostname-intersection-all",
            ],
        )
        body = found["gateway-conformance-infra/httproute-hostname-intersection"]
        self.assertIsInstance(body, GatewayRoutes)
        self.assertEqual(
            sorted((c.hostname or "", c.protocol) for c in body.claims),
            [
                ("*.anotherwildcard.io", "HTTP"),
                ("*.wildcard.io", "HTTP"),
                ("very.specific.com", "HTTP"),
            ],
        )
        body = found["gateway-conformance-infra/httproute-hostname-intersection-all"]
        self.assertEqual([(c.hostname, c.protocol) for c in body.claims], [(None, "HTTP")])

    def test_rules_keep_matches_filters_and_backends(self) -> None:
        """A rule carries its listener, host, match, filters and backends as plain data."""
        found = bodies(resolve(load_inputs(TESTDATA / "redirect.in.yaml")))
        rules = [r for body in found.values() for r in body.rules]
        by_path = {r.path: r for r in rules}
        rule: GatewayRule = by_path["/full-path-and-status"]
        self.assertEqual((rule.path_type, rule.backends), ("PathPrefix", ()))
        assert rule.redirect is not None and rule.redirect.path is not None
        self.assertEqual(
            (rule.redirect.path.kind, rule.redirect.path.value, rule.redirect.status),
            ("full", "/replacement-full", 301),
        )
        prefix = by_path["/original-prefix"]
        assert prefix.redirect is not None and prefix.redirect.path is not None
        self.assertEqual(prefix.redirect.path.kind, "prefix")
        found = bodies(resolve(load_inputs(TESTDATA / "header-matching.in.yaml")))
        (body,) = found.values()
        headers = {(h.name, h.value, h.regex) for r in body.rules for h in r.headers}
        self.assertIn(("version", "two", False), headers)
        backends = {b.url for r in body.rules for b in r.backends}
        self.assertIn(
            "http://infra-backend-v1.gateway-conformance-infra.svc.cluster.local:8080", backends
        )

    def test_invalid_backend_keeps_its_problem(self) -> None:
        """An invalid backendRef stays in the body with no URL and its reason (answered 500)."""
        found = bodies(resolve(load_inputs(TESTDATA / "invalid-nonexistent-backendref.in.yaml")))
        problems = {
            b.problem
            for body in found.values()
            for r in body.rules
            for b in r.backends
            if b.url is None
        }
        self.assertEqual(problems, {"BackendNotFound"})
