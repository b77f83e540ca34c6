"""
Tests for host and path matching in :class:`gateway.routing.RouteTable`:
the Kubernetes Ingress path table row by row, the host tiers, and a
property-based comparison with a brute-force matcher that applies the rules
literally, entry by entry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from gateway.model import ObjectRef, Route
from gateway.routing import Match, RouteTable
from gateway.routing._trie import _RECENT_KEY, _RECENT_SIZE
from gateway.translate import EXACT, KIND_ROUTE, PREFIX, RouteEntry, parse_backend

from . import BACKEND, api, build, entries, matched_name, route_name


@dataclass(frozen=True)
class _Row:
    """One row of the path matching table in the Kubernetes Ingress docs."""

    name: str
    says: str
    paths: tuple[tuple[str, str], ...]
    requests: tuple[str, ...]
    winner: tuple[str, str] | None


_INGRESS_TABLE = (
    _Row(
        "prefix_root_matches_all",
        "Prefix / matches every path.",
        (("Prefix", "/"),),
        ("/", "/foo", "/foo/", "/aaa/bbb/ccc", "//", "/a//b/"),
        ("Prefix", "/"),
    ),
    _Row(
        "exact_matches_same_path",
        "Exact /foo matches /foo.",
        (("Exact", "/foo"),),
        ("/foo",),
        ("Exact", "/foo"),
    ),
    _Row(
        "exact_rejects_other_path",
        "Exact /foo does not match /bar.",
        (("Exact", "/foo"),),
        ("/bar",),
        None,
    ),
    _Row(
        "exact_rejects_added_trailing_slash",
        "Exact /foo does not match /foo/.",
        (("Exact", "/foo"),),
        ("/foo/",),
        None,
    ),
    _Row(
        "exact_rejects_missing_trailing_slash",
        "Exact /foo/ does not match /foo.",
        (("Exact", "/foo/"),),
        ("/foo",),
        None,
    ),
    _Row(
        "prefix_matches_with_and_without_slash",
        "Prefix /foo matches /foo and /foo/.",
        (("Prefix", "/foo"),),
        ("/foo", "/foo/"),
        ("Prefix", "/foo"),
    ),
    _Row(
        "prefix_with_slash_matches_with_and_without_slash",
        "Prefix /foo/ matches /foo and /foo/.",
        (("Prefix", "/foo/"),),
        ("/foo", "/foo/"),
        ("Prefix", "/foo/"),
    ),
    _Row(
        "prefix_rejects_longer_last_segment",
        "Prefix /aaa/bb does not match /aaa/bbb.",
        (("Prefix", "/aaa/bb"),),
        ("/aaa/bbb",),
        None,
    ),
    _Row(
        "prefix_matches_same_path",
        "Prefix /aaa/bbb matches /aaa/bbb.",
        (("Prefix", "/aaa/bbb"),),
        ("/aaa/bbb",),
        ("Prefix", "/aaa/bbb"),
    ),
    _Row(
        "prefix_ignores_its_trailing_slash",
        "Prefix /aaa/bbb/ matches /aaa/bbb: the trailing slash is ignored.",
        (("Prefix", "/aaa/bbb/"),),
        ("/aaa/bbb",),
        ("Prefix", "/aaa/bbb/"),
    ),
    _Row(
        "prefix_matches_request_trailing_slash",
        "Prefix /aaa/bbb matches /aaa/bbb/: it matches the trailing slash.",
        (("Prefix", "/aaa/bbb"),),
        ("/aaa/bbb/",),
        ("Prefix", "/aaa/bbb"),
    ),
    _Row(
        "prefix_matches_subpath",
        "Prefix /aaa/bbb matches the subpath /aaa/bbb/ccc.",
        (("Prefix", "/aaa/bbb"),),
        ("/aaa/bbb/ccc",),
        ("Prefix", "/aaa/bbb"),
    ),
    _Row(
        "prefix_rejects_string_prefix",
        "Prefix /aaa/bbb does not match /aaa/bbbxyz: it is no string prefix.",
        (("Prefix", "/aaa/bbb"),),
        ("/aaa/bbbxyz",),
        None,
    ),
    _Row(
        "longer_prefix_beats_root",
        "With Prefix / and /aaa, /aaa/ccc matches the /aaa prefix.",
        (("Prefix", "/"), ("Prefix", "/aaa")),
        ("/aaa/ccc",),
        ("Prefix", "/aaa"),
    ),
    _Row(
        "longest_of_three_prefixes_wins",
        "With Prefix /, /aaa and /aaa/bbb, /aaa/bbb matches the /aaa/bbb prefix.",
        (("Prefix", "/"), ("Prefix", "/aaa"), ("Prefix", "/aaa/bbb")),
        ("/aaa/bbb",),
        ("Prefix", "/aaa/bbb"),
    ),
    _Row(
        "root_prefix_catches_the_rest",
        "With Prefix /, /aaa and /aaa/bbb, /ccc matches the / prefix.",
        (("Prefix", "/"), ("Prefix", "/aaa"), ("Prefix", "/aaa/bbb")),
        ("/ccc",),
        ("Prefix", "/"),
    ),
    _Row(
        "unmatched_path_uses_default_backend",
        "Prefix /aaa does not match /ccc (the default backend's job).",
        (("Prefix", "/aaa"),),
        ("/ccc",),
        None,
    ),
    _Row(
        "exact_beats_prefix_for_same_path",
        "With Prefix /foo and Exact /foo, /foo matches the Exact path.",
        (("Prefix", "/foo"), ("Exact", "/foo")),
        ("/foo",),
        ("Exact", "/foo"),
    ),
)


class IngressTableTests(SynchronousTestCase):
    """
    One generated test method per row of the Kubernetes Ingress path
    matching table (trial reports each separately; ``subTest`` it would
    not).
    """


def _row_test(row: _Row) -> Callable[[IngressTableTests], None]:
    def test(self: IngressTableTests) -> None:
        table = build(*(Route(path, BACKEND, path_type=kind) for kind, path in row.paths))
        expected = None
        if row.winner is not None:
            kind, path = row.winner
            expected = route_name(Route(path, BACKEND, path_type=kind))
        for request in row.requests:
            self.assertEqual(
                matched_name(table, "example.com", request),
                expected,
                f"row {row.name!r}: {row.paths} with request {request!r}",
            )

    test.__doc__ = row.says
    test.__name__ = f"test_{row.name}"
    return test


for _number, _row in enumerate(_INGRESS_TABLE, 1):
    setattr(IngressTableTests, f"test_{_number:02d}_{_row.name}", _row_test(_row))


class PathTests(SynchronousTestCase):
    """Path matching beyond the Ingress table."""

    def test_exact_trailing_slash_matches_itself(self) -> None:
        """An Exact path with a trailing slash matches exactly that path."""
        table = build(Route("/foo/", BACKEND, path_type="Exact"))
        self.assertEqual(matched_name(table, "h", "/foo/"), "* Exact /foo/")

    def test_exact_beats_longer_prefix(self) -> None:
        """An Exact path beats a Prefix path even when the prefix is longer."""
        table = build(
            Route("/aaa", BACKEND, path_type="Exact"),
            Route("/aaa", BACKEND, path_type="Prefix"),
            Route("/aaa/bbb", BACKEND, path_type="Prefix"),
        )
        self.assertEqual(matched_name(table, "h", "/aaa"), "* Exact /aaa")
        self.assertEqual(matched_name(table, "h", "/aaa/"), "* Prefix /aaa")

    def test_implementation_specific_is_prefix(self) -> None:
        """An ImplementationSpecific path matches like a Prefix path."""
        table = build(Route("/app", BACKEND, path_type="ImplementationSpecific"))
        self.assertEqual(matched_name(table, "h", "/app/x"), "* ImplementationSpecific /app")
        self.assertIsNone(matched_name(table, "h", "/apps"))

    def test_empty_segments_are_segments(self) -> None:
        """An empty segment (``//``) is matched as a segment, not collapsed."""
        table = build(Route("/", BACKEND), Route("/a/b", BACKEND))
        self.assertEqual(matched_name(table, "h", "/a/b//c"), "* Prefix /a/b")
        self.assertEqual(matched_name(table, "h", "/a//b"), "* Prefix /")

    def test_no_percent_decoding(self) -> None:
        """An encoded slash does not split a segment."""
        table = build(Route("/a", BACKEND))
        self.assertIsNone(matched_name(table, "h", "/a%2Fb"))
        self.assertEqual(matched_name(table, "h", "/a/%2F"), "* Prefix /a")

    def test_path_without_leading_slash(self) -> None:
        """A request target that is not an absolute path matches nothing."""
        table = build(Route("/", BACKEND))
        self.assertIsNone(table.lookup("h", "*", "OPTIONS"))
        self.assertIsNone(table.lookup("h", "", "GET"))
        self.assertIsNone(table.lookup("h", "http://h/", "GET"))

    def test_hand_built_prefix_with_trailing_slash(self) -> None:
        """A Prefix entry built without translation still ignores its
        trailing slash and reports the rest of the path after it."""
        entry = _entry("", "/echo/", PREFIX, kind="api")
        table = RouteTable.build([entry])
        match = table.lookup("h", "/echo", "GET")
        self.assertEqual(match, Match(entry, "", None, {}))
        self.assertIsNone(table.lookup("h", "/echoes", "GET"))

    def test_route_rest_is_whole_path(self) -> None:
        """A plain route's ``rest`` is the whole request path, unchanged."""
        table = build(Route("/app", BACKEND))
        match = table.lookup("h", "/app/x/", "GET")
        assert match is not None
        self.assertEqual(match.entry.kind, KIND_ROUTE)
        self.assertEqual((match.rest, match.operation, dict(match.params)), ("/app/x/", None, {}))

    def test_empty_table(self) -> None:
        """An empty table has no routes and matches nothing."""
        table = RouteTable.build([])
        self.assertEqual(len(table), 0)
        self.assertIsNone(table.lookup("h", "/", "GET"))

    def test_len_counts_entries(self) -> None:
        """``len`` is the number of route entries, one per API host."""
        from . import api

        table = build(
            Route("/", BACKEND),
            Route("/a", BACKEND, path_type="Exact"),
            Route("/a", BACKEND, host="*.example.com"),
            api("echo", "echo", hostnames=("a.example.com", "b.example.com")),
        )
        self.assertEqual(len(table), 5)

    def test_duplicate_key_rejected(self) -> None:
        """Two entries with one host, match kind and (normalised) path are
        rejected: translation never produces them, so they are a bug."""
        first = _entry("", "/a", PREFIX)
        self.assertRaises(ValueError, RouteTable.build, [first, _entry("", "/a/", PREFIX)])
        exact = _entry("h", "/a", EXACT)
        self.assertRaises(ValueError, RouteTable.build, [exact, exact])

    def test_match_is_frozen(self) -> None:
        """A match cannot be changed after the lookup returned it."""
        match = build(Route("/", BACKEND)).lookup("h", "/", "GET")
        assert match is not None
        with self.assertRaises(AttributeError):
            match.rest = "/other"  # type: ignore[misc]


class HostTests(SynchronousTestCase):
    """Host normalisation and the exact → wildcard → any tiers."""

    def setUp(self) -> None:
        self.table = build(
            Route("/", BACKEND, host="www.example.com"),
            Route("/", BACKEND, host="*.example.com"),
            Route("/", BACKEND),
        )

    def test_case_insensitive(self) -> None:
        """Host names match whatever their case in the request."""
        self.assertEqual(
            matched_name(self.table, "WWW.Example.COM", "/"), "www.example.com Prefix /"
        )

    def test_configured_host_case(self) -> None:
        """A host configured in upper case matches (translation lowers it)."""
        table = build(Route("/", BACKEND, host="API.Example.com"))
        self.assertEqual(matched_name(table, "api.example.COM", "/"), "API.Example.com Prefix /")

    def test_port_stripped(self) -> None:
        """A port in the Host header is ignored."""
        self.assertEqual(
            matched_name(self.table, "www.example.com:8080", "/"), "www.example.com Prefix /"
        )
        self.assertEqual(
            matched_name(self.table, "x.example.com:443", "/"), "*.example.com Prefix /"
        )

    def test_trailing_dot_stripped(self) -> None:
        """A fully qualified Host with a trailing dot matches the name."""
        self.assertEqual(
            matched_name(self.table, "www.example.com.", "/"), "www.example.com Prefix /"
        )
        self.assertEqual(
            matched_name(self.table, "www.example.com.:8080", "/"), "www.example.com Prefix /"
        )

    def test_ipv6_literal(self) -> None:
        """An IPv6 literal, with or without a port, reaches the any-host tier
        and never a name or wildcard."""
        self.assertEqual(matched_name(self.table, "[::1]:8080", "/"), "* Prefix /")
        self.assertEqual(matched_name(self.table, "[::1]", "/"), "* Prefix /")
        table = build(Route("/", BACKEND, host="*.3.4"), Route("/", BACKEND, host="example.com"))
        self.assertIsNone(matched_name(table, "[::FFFF:1.2.3.4]:80", "/"))

    def test_ipv6_literal_normalised(self) -> None:
        """An IPv6 literal is looked up in lower case with its brackets and
        without its port (translation accepts no IP literal today; an entry
        built by hand shows the key)."""
        table = RouteTable.build([_entry("[::ab]", "/", PREFIX)])
        self.assertIsNotNone(table.lookup("[::AB]:8080", "/", "GET"))
        self.assertIsNotNone(table.lookup("[::ab]", "/", "GET"))
        self.assertIsNone(table.lookup("[::ab:1]", "/", "GET"))

    def test_missing_host(self) -> None:
        """An empty Host value matches only the any-host routes."""
        self.assertEqual(matched_name(self.table, "", "/"), "* Prefix /")
        self.assertIsNone(matched_name(build(Route("/", BACKEND, host="a.b")), "", "/"))

    def test_wildcard_one_label(self) -> None:
        """``*.example.com`` matches one extra label: not two, not none."""
        table = build(Route("/", BACKEND, host="*.example.com"))
        self.assertEqual(matched_name(table, "a.example.com", "/"), "*.example.com Prefix /")
        self.assertEqual(matched_name(table, "A.Example.Com:80", "/"), "*.example.com Prefix /")
        self.assertIsNone(matched_name(table, "a.b.example.com", "/"))
        self.assertIsNone(matched_name(table, "example.com", "/"))
        self.assertIsNone(matched_name(table, ".example.com", "/"))
        self.assertIsNone(matched_name(table, "aexample.com", "/"))

    def test_exact_host_beats_wildcard(self) -> None:
        """An exact host name beats a wildcard that also covers it, and the
        wildcard beats the any-host routes."""
        self.assertEqual(
            matched_name(self.table, "www.example.com", "/"), "www.example.com Prefix /"
        )
        self.assertEqual(matched_name(self.table, "api.example.com", "/"), "*.example.com Prefix /")
        self.assertEqual(matched_name(self.table, "other.org", "/"), "* Prefix /")

    def test_tier_fallback(self) -> None:
        """A tier without a matching path falls through to the next tier."""
        table = build(
            Route("/a", BACKEND, host="www.example.com"),
            Route("/b", BACKEND, host="*.example.com"),
            Route("/c", BACKEND),
        )
        self.assertEqual(
            matched_name(table, "www.example.com", "/a/x"), "www.example.com Prefix /a"
        )
        self.assertEqual(matched_name(table, "www.example.com", "/b/x"), "*.example.com Prefix /b")
        self.assertEqual(matched_name(table, "www.example.com", "/c/x"), "* Prefix /c")
        self.assertIsNone(matched_name(table, "www.example.com", "/d"))
        self.assertIsNone(matched_name(table, "other.org", "/a"))

    def test_first_matching_tier_decides(self) -> None:
        """The first tier with any matching path decides, even when a later
        tier has an Exact or a longer path."""
        table = build(
            Route("/", BACKEND, host="www.example.com"),
            Route("/foo", BACKEND, host="*.example.com", path_type="Exact"),
            Route("/foo/bar", BACKEND),
        )
        self.assertEqual(matched_name(table, "www.example.com", "/foo"), "www.example.com Prefix /")
        self.assertEqual(
            matched_name(table, "www.example.com", "/foo/bar"), "www.example.com Prefix /"
        )
        self.assertEqual(matched_name(table, "api.example.com", "/foo/bar"), "* Prefix /foo/bar")


# -- the property: the trie agrees with a literal reading of the rules --------

_SEGMENTS = st.sampled_from(["a", "b", "ab", ""])
_CONFIG_HOSTS = st.sampled_from(
    [
        None,
        "x.example.com",
        "y.example.com",
        "*.example.com",
        "*.x.example.com",
        "example.com",
        "*.com",
    ]
)
_REQUEST_HOSTS = st.sampled_from(
    [
        "x.example.com",
        "X.Example.COM.:8080",
        "y.example.com",
        "z.example.com",
        "a.x.example.com",
        "b.a.x.example.com",
        "example.com",
        "other.org",
        "[::1]:8080",
        "",
    ]
)


def _paths(max_segments: int) -> st.SearchStrategy[str]:
    """``/`` plus up to ``max_segments`` segments, empty ones included, so
    trailing slashes (``/a/``) and doubled slashes (``/a//b``) occur."""
    return st.lists(_SEGMENTS, max_size=max_segments).map(lambda s: "/" + "/".join(s))


_ROUTES = st.lists(
    st.tuples(_CONFIG_HOSTS, st.sampled_from(["Exact", "Prefix"]), _paths(3)),
    max_size=12,
    unique=True,
).map(lambda specs: [Route(p, BACKEND, host=h, path_type=t) for h, t, p in specs])


def _request_name(host: str) -> str:
    """The host name as an HTTP client library reads it from an authority."""
    return (urlsplit("//" + host).hostname or "").rstrip(".")


def _host_tiers(entries: Sequence[RouteEntry], name: str) -> list[list[RouteEntry]]:
    def wildcard(pattern: str) -> bool:
        suffix = pattern[1:]  # ".example.com"
        label = name[: -len(suffix)]
        return name.endswith(suffix) and bool(label) and "." not in label

    return [
        [e for e in entries if e.host == name],
        [e for e in entries if e.host.startswith("*.") and wildcard(e.host)],
        [e for e in entries if e.host == ""],
    ]


def _prefix_matches(prefix: str, path: str) -> bool:
    """Ingress: the prefix's ``/``-separated elements lead the path's."""
    prefix = prefix.rstrip("/")
    return prefix == "" or path == prefix or path.startswith(prefix + "/")


def _reference(entries: Sequence[RouteEntry], host: str, path: str) -> RouteEntry | None:
    """Every entry tried in turn; the rules as the module docstring states
    them, with no trie and no dictionaries."""
    for candidates in _host_tiers(entries, _request_name(host)):
        for entry in candidates:
            if entry.match == EXACT and entry.path == path:
                return entry
        prefixes = [e for e in candidates if e.match == PREFIX and _prefix_matches(e.path, path)]
        if prefixes:
            return max(prefixes, key=lambda e: len(e.path.rstrip("/")))
    return None


class ReferenceTests(SynchronousTestCase):
    """The trie picks what a brute-force reading of the rules picks."""

    @settings(max_examples=300, deadline=None)
    @given(routes=_ROUTES, host=_REQUEST_HOSTS, path=_paths(4))
    def test_agrees_with_reference(self, routes: list[Route], host: str, path: str) -> None:
        """For random routes and requests, the trie finds the same entry as
        the reference matcher, or neither finds one."""
        routed = entries(*routes)
        match = RouteTable.build(routed).lookup(host, path, "GET")
        expected = _reference(routed, host, path)
        self.assertEqual(None if match is None else match.entry, expected)
        if match is not None:
            self.assertEqual(match.rest, path)


def _entry(host: str, path: str, match: str, kind: str = KIND_ROUTE) -> RouteEntry:
    """A route entry built by hand, bypassing translation."""
    return RouteEntry(
        host=host,
        path=path,
        match=match,
        kind=kind,
        backend=parse_backend(BACKEND),
        origin=ObjectRef("memory", "routes", f"{host} {match} {path}"),
        modified=0.0,
        label=path,
    )


class RecentLookupTests(SynchronousTestCase):
    """
    A table remembers its recent answers (one lookup per request, and most
    requests repeat a path): what it remembers never changes an answer,
    and how much it remembers is bounded.
    """

    @settings(max_examples=200, deadline=None)
    @given(
        routes=_ROUTES,
        requests=st.lists(
            st.tuples(_REQUEST_HOSTS, _paths(3), st.sampled_from(["GET", "POST"])),
            min_size=1,
            max_size=12,
        ),
    )
    def test_answers_as_a_fresh_table(
        self, routes: list[Route], requests: list[tuple[str, str, str]]
    ) -> None:
        """Lookups on one table, repeated and interleaved, answer as a
        table that never looked anything up."""
        routed = entries(*routes)
        table = RouteTable.build(routed)
        for host, path, method in requests + requests:
            self.assertEqual(
                table.lookup(host, path, method),
                RouteTable.build(routed).lookup(host, path, method),
            )

    def test_host_and_method_are_part_of_the_question(self) -> None:
        """The same path asked for another host or method gets that host's
        or method's answer, not the one remembered."""
        table = build(
            Route("/a", BACKEND, host="one.example"),
            Route("/", BACKEND),
            api("echo", "echo", (("GET", "/users/{id}"),)),
        )
        self.assertEqual(matched_name(table, "one.example", "/a"), "one.example Prefix /a")
        self.assertEqual(matched_name(table, "two.example", "/a"), "* Prefix /")
        self.assertEqual(matched_name(table, "ONE.example", "/a"), "one.example Prefix /a")
        self.assertEqual(matched_name(table, "one.example", "/b"), "* Prefix /")
        match = table.lookup("h", "/echo/users/7", "GET")
        assert match is not None
        self.assertEqual((match.entry.origin.name, match.params), ("echo", {"id": "7"}))
        self.assertIsNone(table.lookup("h", "/echo/users/7", "DELETE"))
        match = table.lookup("h", "/echo/users/8", "GET")
        assert match is not None
        self.assertEqual(match.params, {"id": "8"})

    def test_bounded(self) -> None:
        """Past its size the table starts over; a long path or Host is not
        remembered at all, so a client sending unique paths cannot grow it."""
        table = build(Route("/", BACKEND))
        recent = table._recent
        for n in range(_RECENT_SIZE + 10):
            self.assertIsNotNone(table.lookup("h", f"/{n}", "GET"))
            self.assertLessEqual(len(recent), _RECENT_SIZE)
        self.assertEqual(len(recent), 10)
        recent.clear()
        self.assertIsNotNone(table.lookup("h", "/" + "x" * _RECENT_KEY, "GET"))
        self.assertIsNotNone(table.lookup("h" * _RECENT_KEY, "/", "GET"))
        self.assertEqual(recent, {})
