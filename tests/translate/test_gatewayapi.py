"""
Tests for the translation of Gateway API bodies
(:class:`~gateway.model.GatewayRoutes`) into route entries with variants:
grouping per key across Gateways in precedence order, hosts and paths,
compiled conditions, problems, "newest wins" against other sources,
listener claims and the isolation pruning.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gateway.memo import BuildMemo
from gateway.model import (
    GatewayBackend,
    GatewayClaim,
    GatewayHeaderEdits,
    GatewayPathChange,
    GatewayRewrite,
    GatewayRoutes,
    GatewayRule,
    GatewayValueMatch,
    ObjectRef,
    Route,
    RouteSet,
    SourceObject,
)
from gateway.routing import RouteTable
from gateway.translate import (
    EXACT,
    PREFIX,
    REGEX,
    HeaderEdits,
    ListenerClaim,
    RouteEntry,
    Shadowing,
    translate,
)

_URL = "http://infra-backend-v1.ns.svc.cluster.local:8080"


def rule(
    path: str = "/",
    *,
    path_type: str = "PathPrefix",
    host: str | None = None,
    listener: str | None = None,
    protocol: str = "HTTP",
    route: str = "ns/r",
    index: int = 0,
    order: tuple[int | float | str | bool, ...] = (0,),
    backends: tuple[GatewayBackend, ...] = (GatewayBackend("ns/v1:8080", _URL),),
    **kw: object,
) -> GatewayRule:
    return GatewayRule(
        listener=listener, protocol=protocol, host=host, path_type=path_type, path=path,
        route=route, rule=index, match_index=0, order=order, backends=backends, **kw,  # type: ignore[arg-type]
    )


def gateway(name: str, *rules: GatewayRule, claims: tuple[GatewayClaim, ...] = (),
            modified: float = 1.0) -> SourceObject:
    body = GatewayRoutes(rules, claims or (GatewayClaim(None, "HTTP"),))
    return SourceObject(ObjectRef("gatewayapi", "gatewayroutes", name), modified, body)


def by_key(entries: tuple[RouteEntry, ...]) -> dict[tuple[str, str, str], RouteEntry]:
    return {e.key: e for e in entries}


class GroupingTests(SynchronousTestCase):
    def test_rules_of_several_gateways_merge_in_precedence_order(self) -> None:
        """One entry per key; its variants ordered by the resolver's key, then the Gateway."""
        config = translate([
            gateway("ns/b", rule(route="ns/late", order=(2,)), rule(route="ns/tie-b", order=(1,)),
                    modified=5.0),
            gateway("ns/a", rule(route="ns/early", order=(0,)), rule(route="ns/tie-a", order=(1,))),
        ])
        self.assertEqual(config.problems, ())
        (entry,) = config.routes
        assert entry.variants is not None
        self.assertEqual(
            [v.label for v in entry.variants],
            ["ns/early rule 0 match 0", "ns/tie-a rule 0 match 0", "ns/tie-b rule 0 match 0",
             "ns/late rule 0 match 0"],
        )
        self.assertEqual((entry.origin.name, entry.modified), ("ns/a", 5.0))
        self.assertEqual(entry.backend.url, _URL)

    def test_hosts_and_paths(self) -> None:
        """Gateway API wildcards get the ** marker; None is any host; prefixes lose a trailing slash."""
        config = translate([gateway(
            "ns/gw",
            rule("/a/", host="*.Example.com"),
            rule("/x", path_type="Exact", host="Www.example.com"),
            rule("/v[0-9]+", path_type="RegularExpression"),
        )])
        self.assertEqual(
            sorted(by_key(config.routes)),
            [("", REGEX, "/v[0-9]+"), ("**.example.com", PREFIX, "/a"),
             ("www.example.com", EXACT, "/x")],
        )

    def test_conditions_and_filters_compiled(self) -> None:
        """Methods upper case, header names lower case, regexes compiled, edits as bytes."""
        config = translate([gateway("ns/gw", rule(
            method="post",
            headers=(GatewayValueMatch("Version", "v[12]", regex=True),),
            query=(GatewayValueMatch("Animal", "whale"),),
            request_headers=GatewayHeaderEdits(set=(("X-A", "1"),), remove=("X-Gone",)),
        ))])
        ((variant,),) = [e.variants or () for e in config.routes]
        self.assertEqual(variant.method, "POST")
        (header,) = variant.headers
        self.assertEqual(header.name, "version")
        self.assertTrue(header.holds("v2"))
        self.assertFalse(header.holds("v22"))
        (query,) = variant.query
        self.assertEqual((query.name, query.pattern), ("Animal", None))
        self.assertEqual(variant.request_headers, HeaderEdits(set=((b"X-A", b"1"),), remove=(b"x-gone",)))
        self.assertEqual(variant.schemes, frozenset({b"http"}))


class ProblemTests(SynchronousTestCase):
    def test_invalid_regex_drops_the_rule_only(self) -> None:
        """A pattern that does not compile is a problem naming the rule; the others are served."""
        config = translate([gateway(
            "ns/gw",
            rule("/(", path_type="RegularExpression", index=0),
            rule("/ok", index=1, headers=(GatewayValueMatch("h", "[", regex=True),)),
            rule("/fine", index=2),
        )])
        self.assertEqual([k[2] for k in by_key(config.routes)], ["/fine"])
        messages = [p.message for p in config.problems]
        self.assertEqual(len(messages), 2)
        self.assertIn("ns/r rule 0 match 0: invalid regular expression '/('", messages[0])
        self.assertIn("ns/r rule 1 match 0: invalid regular expression '['", messages[1])
        self.assertEqual({p.ref.name for p in config.problems}, {"ns/gw"})

    def test_regex_is_re2(self) -> None:
        """
        Patterns are compiled with RE2 (linear time): Python-only syntax
        such as a backreference is a problem, and a pattern that
        backtracks exponentially in Python's ``re`` answers at once.
        """
        config = translate([gateway(
            "ns/gw",
            rule(r"/(a)\1", path_type="RegularExpression", index=0),
            rule("/(a+)+b", path_type="RegularExpression", index=1),
        )])
        [problem] = config.problems
        self.assertIn("RE2 syntax", problem.message)
        table = RouteTable.build(config.routes, None, config.claims)
        self.assertIsNone(table.lookup("h", "/" + "a" * 64, "GET"))
        self.assertIsNotNone(table.lookup("h", "/aab", "GET"))

    def test_filter_text_that_would_split_the_request_is_refused(self) -> None:
        """
        Header names that are not tokens, values with CR/LF, paths with a
        space or CR/LF, and host names that are not DNS names are problems:
        they would be written into the request to the backend.
        """
        bad = [
            rule("/a", index=0, request_headers=GatewayHeaderEdits(set=(("X-A", "v\r\nX-Injected: 1"),))),
            rule("/b", index=1, response_headers=GatewayHeaderEdits(add=(("X A", "v"),))),
            rule("/c", index=2, rewrite=GatewayRewrite(None, GatewayPathChange("full", "/x HTTP/1.1\r\nHost: evil"))),
            rule("/d", index=3, rewrite=GatewayRewrite("evil\r\nX: 1", None)),
            rule("/e", index=4, rewrite=GatewayRewrite(None, GatewayPathChange("prefix", "/p?q=1"))),
        ]
        config = translate([gateway("ns/gw", *bad, rule("/fine", index=5,
                           request_headers=GatewayHeaderEdits(set=(("X-A", "v\tw"),))))])
        self.assertEqual([k[2] for k in by_key(config.routes)], ["/fine"])
        self.assertEqual(len(config.problems), 5)
        for problem, what in zip(config.problems, ("control", "token", "path", "DNS", "path"), strict=True):
            self.assertIn(what, problem.message)

    def test_invalid_backends_answer_500(self) -> None:
        """A backend without a URL keeps its reason; a URL that does not parse is a problem too."""
        config = translate([gateway("ns/gw", rule(backends=(
            GatewayBackend("ns/missing:80", None, 1, "BackendNotFound"),
            GatewayBackend("ns/bad:80", "ftp://x", 2),
        )))])
        ((variant,),) = [e.variants or () for e in config.routes]
        missing, bad = variant.backends
        self.assertEqual((missing.backend, missing.weight, missing.problem), (None, 1, "BackendNotFound"))
        self.assertIsNone(bad.backend)
        self.assertIn("http:// or https://", bad.problem or "")
        self.assertEqual(len(config.problems), 1)
        (entry,) = config.routes
        self.assertEqual(entry.backend.host, "gatewayapi.invalid")  # a label only, never used


class OtherSourcesTests(SynchronousTestCase):
    def test_same_key_newest_wins(self) -> None:
        """A Gateway API entry and an Ingress route on one key: the newer wins, the other is shadowed."""
        ingress = SourceObject(ObjectRef("ingress", "routes", "ns/ing"), 2.0,
                               RouteSet((Route("/", "http://127.0.0.1:1", host="a.example.com"),)))
        config = translate([gateway("ns/gw", rule(host="a.example.com"), modified=3.0), ingress])
        (entry,) = config.routes
        self.assertIsNotNone(entry.variants)
        self.assertEqual(config.shadowed, (Shadowing(entry.key, entry.origin, ingress.ref),))
        config = translate([gateway("ns/gw", rule(host="a.example.com"), modified=1.0), ingress])
        (entry,) = config.routes
        self.assertIsNone(entry.variants)

    def test_wildcards_of_both_kinds_do_not_collide(self) -> None:
        """An Ingress *.example.com and a Gateway API *.example.com are different host patterns."""
        ingress = SourceObject(ObjectRef("ingress", "routes", "ns/ing"), 2.0,
                               RouteSet((Route("/", "http://127.0.0.1:1", host="*.example.com"),)))
        config = translate([gateway("ns/gw", rule(host="*.example.com")), ingress])
        self.assertEqual(sorted(e.host for e in config.routes), ["**.example.com", "*.example.com"])
        self.assertEqual(config.shadowed, ())


class ClaimTests(SynchronousTestCase):
    def test_claims_per_scheme(self) -> None:
        """Every listener's hostname and protocol, from every Gateway, once."""
        config = translate([
            gateway("ns/a", claims=(GatewayClaim(None, "HTTP"), GatewayClaim("*.Example.com", "HTTPS"))),
            gateway("ns/b", claims=(GatewayClaim(None, "HTTP"),)),
        ])
        self.assertEqual(config.claims, (ListenerClaim(None, b"http"), ListenerClaim("*.example.com", b"https")))

    def test_host_claimed_by_a_more_specific_listener_is_left_out(self) -> None:
        """foo.example.com served on an any-host listener is unreachable when a *.example.com
        listener exists on the same protocol; on another protocol it stays."""
        claims = (GatewayClaim(None, "HTTP"), GatewayClaim("*.example.com", "HTTP"),
                  GatewayClaim(None, "HTTPS"))
        config = translate([gateway(
            "ns/gw",
            rule("/http", host="foo.example.com", listener=None, protocol="HTTP"),
            rule("/https", host="foo.example.com", listener=None, protocol="HTTPS"),
            rule("/own", host="foo.example.com", listener="*.example.com", protocol="HTTP"),
            rule("/other", host="foo.other.com", listener=None, protocol="HTTP"),
            claims=claims,
        )])
        self.assertEqual(sorted(k[2] for k in by_key(config.routes)), ["/https", "/other", "/own"])

    def test_memo_reuses_entries(self) -> None:
        """Unchanged Gateway bodies give the very same entries (the route table reuses their tiers)."""
        objects = [gateway("ns/a", rule()), gateway("ns/b", rule("/b"))]
        memo = BuildMemo()
        first = translate(objects, memo=memo)
        memo.rotate()
        second = translate(objects, memo=memo)
        self.assertTrue(all(a is b for a, b in zip(first.routes, second.routes, strict=True)))

    def test_memo_recompiles_only_changed_rules(self) -> None:
        """
        One Gateway's body changes (one rule replaced, the others the same
        objects, the body newer): only the new rule is compiled; the entry
        of an untouched key in another Gateway is the same object, and
        entries of the changed Gateway carry its new time.
        """
        kept, other = rule("/kept"), rule("/other", route="ns/o")
        memo = BuildMemo()
        objects = [gateway("ns/a", kept, rule("/old")), gateway("ns/b", other)]
        first = by_key(translate(objects, memo=memo).routes)
        memo.rotate()
        misses = memo.misses
        changed = [gateway("ns/a", kept, rule("/new"), modified=2.0), gateway("ns/b", other)]
        second = by_key(translate(changed, memo=memo).routes)
        self.assertEqual(sorted(k[2] for k in second), ["/kept", "/new", "/other"])
        self.assertIs(second[("", PREFIX, "/other")], first[("", PREFIX, "/other")])
        self.assertEqual(second[("", PREFIX, "/kept")].modified, 2.0)
        # Compiled again: /new only, plus the entries of the changed
        # Gateway's keys (their time moved); /other and its entry are reused.
        self.assertEqual(memo.misses - misses, 3)
