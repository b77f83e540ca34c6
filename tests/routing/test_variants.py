"""
Tests for the Gateway API side of :class:`gateway.routing.RouteTable`:
entries with variants (method, header, query and scheme conditions, in
order), REGEX paths, Gateway API wildcards (``**.suffix``: any number of
labels) beside Ingress ones (one label), fallback when no variant holds,
and listener claims (isolation).

Each test is a table of lookups: request → the label of what serves it
(a variant's label, a plain entry's label) or ``None`` (404).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from gateway.model import ObjectRef
from gateway.routing import RouteTable
from gateway.translate import (
    EXACT,
    KIND_API,
    KIND_ROUTE,
    PREFIX,
    REGEX,
    ListenerClaim,
    OperationSpec,
    RouteEntry,
    ValueMatch,
    Variant,
    WeightedBackend,
    parse_backend,
)

_BACKEND = parse_backend("http://127.0.0.1:9000")
_REF = ObjectRef("gatewayapi", "gatewayroutes", "ns/gw")


def variant(
    label: str,
    *,
    method: str | None = None,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    schemes: frozenset[bytes] | None = None,
) -> Variant:
    """A variant; a header or query value starting with ``~`` is a regular expression."""

    def values(items: dict[str, str] | None) -> tuple[ValueMatch, ...]:
        return tuple(
            ValueMatch(n, v[1:], re.compile(v[1:])) if v.startswith("~") else ValueMatch(n, v)
            for n, v in (items or {}).items()
        )

    return Variant(
        label=label,
        origin=_REF,
        schemes=schemes,
        method=method,
        headers=values(headers),
        query=values(query),
        backends=(WeightedBackend(_BACKEND, 1),),
    )


def gw(host: str, match: str, path: str, *variants: Variant) -> RouteEntry:
    """A Gateway API entry (what translate gives): a route with variants."""
    return RouteEntry(host, path, match, KIND_ROUTE, _BACKEND, _REF, 1.0,
                      f"gw:{host}{path}", variants=variants)


def plain(host: str, match: str, path: str, label: str) -> RouteEntry:
    """An Ingress-like plain entry."""
    return RouteEntry(host, path, match, KIND_ROUTE, _BACKEND,
                      ObjectRef("ingress", "routes", label), 1.0, label)


class Facts:
    def __init__(self, headers: dict[str, str] | None = None, query: dict[str, str] | None = None) -> None:
        self.headers = {k.lower().encode(): v for k, v in (headers or {}).items()}
        self.params = query or {}
        self.asked: list[object] = []

    def header(self, name: bytes) -> str | None:
        self.asked.append(name)
        return self.headers.get(name)

    def query(self, name: str) -> str | None:
        self.asked.append(name)
        return self.params.get(name)


def served(
    table: RouteTable,
    host: str,
    path: str,
    method: str = "GET",
    scheme: bytes = b"http",
    facts: Facts | None = None,
) -> str | None:
    found = table.lookup(host, path, method, scheme, facts if facts is not None else Facts())
    if found is None:
        return None
    if found.variant is not None:
        return found.variant.label
    return found.entry.label


class PrecedenceTests(SynchronousTestCase):
    def test_exact_then_regex_then_longer_prefix(self) -> None:
        """Exact beats a pattern, a pattern beats any prefix, a longer prefix a shorter one."""
        table = RouteTable.build([
            gw("", EXACT, "/a/b", variant("exact")),
            gw("", REGEX, "/a/[a-z]+", variant("regex")),
            gw("", PREFIX, "/a", variant("prefix /a")),
            gw("", PREFIX, "/", variant("prefix /")),
        ])
        for path, expected in [
            ("/a/b", "exact"),
            ("/a/bc", "regex"),
            ("/a/b/c", "prefix /a"),   # the pattern is matched against the whole path
            ("/a/1", "prefix /a"),
            ("/ab", "prefix /"),       # whole segments only
            ("/", "prefix /"),
        ]:
            self.assertEqual(served(table, "x", path), expected, path)

    def test_longer_pattern_first(self) -> None:
        """Of two patterns that both match, the longer one wins whatever the order given."""
        table = RouteTable.build([
            gw("", REGEX, "/.*", variant("short")),
            gw("", REGEX, "/v[0-9]+/.*", variant("long")),
        ])
        self.assertEqual(served(table, "x", "/v2/x"), "long")
        self.assertEqual(served(table, "x", "/other"), "short")

    def test_variants_in_order_first_that_holds(self) -> None:
        """Within one entry the first variant whose method, headers and query hold wins."""
        table = RouteTable.build([
            gw("", PREFIX, "/",
               variant("post", method="POST"),
               variant("two headers", headers={"version": "two", "color": "~bl.e"}),
               variant("one header", headers={"version": "two"}),
               variant("query", query={"animal": "whale"}),
               variant("rest")),
        ])
        for method, facts, expected in [
            ("POST", Facts(), "post"),
            ("GET", Facts({"Version": "two", "Color": "blue"}), "two headers"),
            ("GET", Facts({"Version": "two", "Color": "bluex"}), "one header"),  # fullmatch
            ("GET", Facts({"Version": "TWO"}), "rest"),  # values are case-sensitive
            ("GET", Facts(query={"animal": "whale"}), "query"),
            ("GET", Facts(query={"Animal": "whale"}), "rest"),  # names too, for query
            ("HEAD", Facts(), "rest"),
        ]:
            self.assertEqual(served(table, "x", "/p", method, facts=facts), expected)

    def test_without_facts_conditional_variants_do_not_hold(self) -> None:
        """A lookup without facts never satisfies a header or query condition."""
        table = RouteTable.build([
            gw("", PREFIX, "/", variant("header", headers={"a": "1"}), variant("rest")),
        ])
        found = table.lookup("x", "/", "GET")
        assert found is not None and found.variant is not None
        self.assertEqual(found.variant.label, "rest")

    def test_schemes(self) -> None:
        """A variant served on HTTPS listeners only is skipped for an HTTP request."""
        table = RouteTable.build([
            gw("", PREFIX, "/",
               variant("https", schemes=frozenset({b"https"})),
               variant("http", schemes=frozenset({b"http"}))),
        ])
        self.assertEqual(served(table, "x", "/", scheme=b"https"), "https")
        self.assertEqual(served(table, "x", "/", scheme=b"http"), "http")


class FallbackTests(SynchronousTestCase):
    def test_failed_conditions_fall_back_within_the_tier(self) -> None:
        """No variant of the exact entry holds: the pattern, then shorter prefixes, then a plain entry."""
        table = RouteTable.build([
            gw("h.com", EXACT, "/a/b", variant("exact", headers={"x": "1"})),
            gw("h.com", REGEX, "/a/.*", variant("regex", method="PUT")),
            gw("h.com", PREFIX, "/a/b", variant("prefix /a/b", query={"q": "1"})),
            gw("h.com", PREFIX, "/a", variant("prefix /a", method="DELETE")),
            plain("h.com", PREFIX, "/", "ingress /"),
        ])
        for method, facts, expected in [
            ("GET", Facts({"x": "1"}), "exact"),
            ("PUT", Facts(), "regex"),
            ("GET", Facts(query={"q": "1"}), "prefix /a/b"),
            ("DELETE", Facts(), "prefix /a"),
            ("GET", Facts(), "ingress /"),
        ]:
            self.assertEqual(served(table, "h.com", "/a/b", method, facts=facts), expected)

    def test_failed_conditions_fall_back_to_the_next_host_tier(self) -> None:
        """No candidate of the host's tier holds: the wildcard tiers, then any host."""
        table = RouteTable.build([
            gw("a.h.com", PREFIX, "/", variant("exact host", method="POST")),
            gw("**.h.com", PREFIX, "/", variant("wildcard", method="PUT")),
            gw("", PREFIX, "/", variant("any")),
        ])
        self.assertEqual(served(table, "a.h.com", "/", "POST"), "exact host")
        self.assertEqual(served(table, "a.h.com", "/", "PUT"), "wildcard")
        self.assertEqual(served(table, "a.h.com", "/", "GET"), "any")

    def test_plain_entry_still_decides(self) -> None:
        """A plain entry (an API with operations) that matched the path still answers 404 itself."""
        api = RouteEntry("", "/api", PREFIX, KIND_API, _BACKEND, ObjectRef("cloud", "api", "a"),
                         1.0, "api:a", operations=(OperationSpec("get", "GET", "/x", ("x",)),))
        table = RouteTable.build([api, gw("", PREFIX, "/", variant("gw"))])
        self.assertEqual(served(table, "h", "/api/x"), "api:a")
        self.assertIsNone(served(table, "h", "/api/y"))
        self.assertEqual(served(table, "h", "/other"), "gw")


class WildcardTests(SynchronousTestCase):
    def test_gateway_wildcards_take_any_number_of_labels(self) -> None:
        """**.example.com serves a.example.com and a.b.example.com, never example.com;
        the longer suffix first; an Ingress *.example.com still takes exactly one label."""
        table = RouteTable.build([
            gw("**.example.com", PREFIX, "/", variant("deep example.com")),
            gw("**.foo.example.com", PREFIX, "/", variant("deep foo.example.com")),
            plain("*.example.com", PREFIX, "/ingress", "ingress *.example.com"),
        ])
        for host, path, expected in [
            ("a.example.com", "/", "deep example.com"),
            ("a.b.example.com", "/", "deep example.com"),
            ("x.foo.example.com", "/", "deep foo.example.com"),
            ("x.y.foo.example.com", "/", "deep foo.example.com"),
            ("foo.example.com", "/", "deep example.com"),
            ("example.com", "/", None),
            ("a.example.com", "/ingress", "ingress *.example.com"),
            ("a.b.example.com", "/ingress", "deep example.com"),  # Ingress: one label only
            ("A.B.Example.COM.:8080", "/", "deep example.com"),
        ]:
            self.assertEqual(served(table, host, path), expected, (host, path))

    def test_ingress_single_label_first_for_the_same_suffix(self) -> None:
        """For one suffix the one-label wildcard (more specific) comes before the deep one."""
        table = RouteTable.build([
            plain("*.example.com", PREFIX, "/", "ingress"),
            gw("**.example.com", PREFIX, "/", variant("gateway")),
        ])
        self.assertEqual(served(table, "a.example.com", "/"), "ingress")
        self.assertEqual(served(table, "a.b.example.com", "/"), "gateway")


class ClaimTests(SynchronousTestCase):
    #: GatewayHTTPListenerIsolation's listeners, each with one route.
    ENTRIES = (
        gw("", PREFIX, "/empty-hostname", variant("empty")),
        gw("**.example.com", PREFIX, "/wildcard-example-com", variant("wildcard")),
        gw("**.foo.example.com", PREFIX, "/wildcard-foo-example-com", variant("foo wildcard")),
        gw("abc.foo.example.com", PREFIX, "/abc-foo-example-com", variant("abc")),
    )
    CLAIMS = tuple(
        ListenerClaim(h, b"http") for h in (None, "*.example.com", "*.foo.example.com", "abc.foo.example.com")
    )

    def test_listener_isolation(self) -> None:
        """A host is served by its most specific listener's tier (or more specific ones) only."""
        table = RouteTable.build(self.ENTRIES, claims=self.CLAIMS)
        owner = {
            "bar.com": ("/empty-hostname", "empty"),
            "bar.example.com": ("/wildcard-example-com", "wildcard"),
            "bar.foo.example.com": ("/wildcard-foo-example-com", "foo wildcard"),
            "abc.foo.example.com": ("/abc-foo-example-com", "abc"),
        }
        paths = [path for path, _ in owner.values()]
        for host, (own, label) in owner.items():
            for path in paths:
                self.assertEqual(served(table, host, path), label if path == own else None, (host, path))

    def test_without_claims_hosts_fall_through(self) -> None:
        """The same entries without claims: the ordinary tier fallthrough."""
        table = RouteTable.build(self.ENTRIES)
        self.assertEqual(served(table, "abc.foo.example.com", "/wildcard-example-com"), "wildcard")
        self.assertEqual(served(table, "bar.example.com", "/empty-hostname"), "empty")

    def test_claims_are_per_scheme(self) -> None:
        """A claim on HTTPS listeners does not stop an HTTP request's fallthrough."""
        claims = [ListenerClaim("*.example.com", b"https")]
        table = RouteTable.build(self.ENTRIES, claims=claims)
        self.assertEqual(served(table, "bar.example.com", "/empty-hostname", scheme=b"http"), "empty")
        self.assertIsNone(served(table, "bar.example.com", "/empty-hostname", scheme=b"https"))

    def test_claim_without_routes_isolates(self) -> None:
        """A listener with no routes still claims its host: 404, not a less specific listener's route."""
        claims = [ListenerClaim("quiet.example.com", b"http"), ListenerClaim("*.example.com", b"http")]
        table = RouteTable.build(self.ENTRIES, claims=claims)
        self.assertIsNone(served(table, "quiet.example.com", "/wildcard-example-com"))
        self.assertEqual(served(table, "loud.example.com", "/wildcard-example-com"), "wildcard")

    def test_claim_stops_plain_entries_too(self) -> None:
        """An Ingress any-host route does not answer a host a Gateway listener claims."""
        table = RouteTable.build(
            [*self.ENTRIES, plain("", PREFIX, "/", "ingress default")], claims=self.CLAIMS[1:]
        )
        self.assertIsNone(served(table, "bar.example.com", "/elsewhere"))
        self.assertEqual(served(table, "bar.com", "/elsewhere"), "ingress default")


class FactsTests(SynchronousTestCase):
    def test_facts_are_asked_only_for_conditions(self) -> None:
        """Plain entries and condition-free variants never ask for headers or query."""
        table = RouteTable.build([
            plain("plain.com", PREFIX, "/", "plain"),
            gw("gw.com", PREFIX, "/", variant("method", method="POST"), variant("rest")),
        ])
        facts = Facts()
        self.assertEqual(served(table, "plain.com", "/", facts=facts), "plain")
        self.assertEqual(served(table, "gw.com", "/", facts=facts), "rest")
        self.assertEqual(facts.asked, [])


# -- properties: the general path against literal readings of the rules ------

_SEGMENTS = st.sampled_from(["a", "b", "ab", ""])
_HOSTS = st.sampled_from(
    [None, "x.example.com", "*.example.com", "**.example.com", "**.x.example.com", "*.x.example.com"]
)
_REQUEST_HOSTS = st.sampled_from(
    ["x.example.com", "X.Example.COM.:8080", "y.example.com", "a.x.example.com",
     "b.a.x.example.com", "example.com", "other.org"]
)
_CLAIMS = st.lists(
    st.sampled_from(["x.example.com", "*.example.com", "*.x.example.com"]), unique=True, max_size=2
)


def _paths(max_segments: int) -> st.SearchStrategy[str]:
    return st.lists(_SEGMENTS, max_size=max_segments).map(lambda s: "/" + "/".join(s))


#: (host, match, path, methods of its variants; () for a plain entry)
_SPECS = st.lists(
    st.tuples(
        _HOSTS,
        st.sampled_from([EXACT, PREFIX]),
        _paths(3),
        st.lists(st.sampled_from([None, "GET", "POST"]), max_size=2),
    ),
    max_size=10,
    unique_by=lambda spec: (spec[0], spec[1], spec[2].rstrip("/") if spec[1] == PREFIX else spec[2]),
)


def _build(specs: list[tuple[str | None, str, str, list[str | None]]]) -> list[RouteEntry]:
    out = []
    for index, (host, match, path, methods) in enumerate(specs):
        host = host or ""
        path = (path.rstrip("/") or "/") if match == PREFIX else path
        if methods:
            variants = [variant(f"{index}.{n}", method=m) for n, m in enumerate(methods)]
            out.append(gw(host, match, path, *variants))
        else:
            out.append(plain(host, match, path, f"{index}"))
    return out


def _name(host: str) -> str:
    return (urlsplit("//" + host).hostname or "").rstrip(".")


def _tiers(entries: list[RouteEntry], name: str, claims: list[str]) -> list[list[RouteEntry]]:
    """The host tiers for ``name``, in order, cut after the most specific claim's tier."""
    labels = name.split(".")
    suffixes = [".".join(labels[i:]) for i in range(1, len(labels))]
    tiers = [[e for e in entries if e.host == name]]
    if name in claims:
        return tiers
    if suffixes:
        tiers.append([e for e in entries if e.host == "*." + suffixes[0]])
    for suffix in suffixes:
        tiers.append([e for e in entries if e.host == "**." + suffix])
        if "*." + suffix in claims:
            return tiers
    tiers.append([e for e in entries if e.host == ""])
    return tiers


def _covers(prefix: str, path: str) -> bool:
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


def _reference(entries: list[RouteEntry], claims: list[str], host: str, path: str,
               method: str) -> str | None:
    """Every candidate in turn: exact, then prefixes longest first; a plain
    one decides, one with variants serves its first variant that holds."""
    for tier in _tiers(entries, _name(host), claims):
        candidates = [e for e in tier if e.match == EXACT and e.path == path]
        candidates += sorted(
            (e for e in tier if e.match == PREFIX and _covers(e.path, path)),
            key=lambda e: -len(e.path),
        )
        for entry in candidates:
            if entry.variants is None:
                return entry.label
            for v in entry.variants:
                if v.method is None or v.method == method:
                    return v.label
    return None


class PropertyTests(SynchronousTestCase):
    @settings(max_examples=400, deadline=None)
    @given(specs=_SPECS, claims=_CLAIMS, host=_REQUEST_HOSTS, path=_paths(4),
           method=st.sampled_from(["GET", "POST", "PUT"]))
    def test_agrees_with_reference(self, specs: list[tuple[str | None, str, str, list[str | None]]],
                                   claims: list[str], host: str, path: str, method: str) -> None:
        """Random plain and conditional entries, wildcards of both kinds and
        claims: the table serves what the literal reading serves."""
        entries = _build(specs)
        table = RouteTable.build(entries, claims=[ListenerClaim(c, b"http") for c in claims])
        self.assertEqual(served(table, host, path, method), _reference(entries, claims, host, path, method))

    @settings(max_examples=200, deadline=None)
    @given(specs=_SPECS, host=_REQUEST_HOSTS, path=_paths(4))
    def test_plain_entries_unchanged_by_gateway_entries_elsewhere(
        self, specs: list[tuple[str | None, str, str, list[str | None]]], host: str, path: str
    ) -> None:
        """Ingress entries answer the same whether or not the table also
        holds Gateway API entries (on a host no request names)."""
        entries = [e for e in _build(specs) if e.variants is None and not e.host.startswith("**.")]
        alone = RouteTable.build(entries)
        mixed = RouteTable.build([*entries, gw("**.unrelated.test", PREFIX, "/", variant("gw"))])
        self.assertEqual(served(mixed, host, path), served(alone, host, path))
