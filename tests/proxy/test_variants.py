"""
The pure parts of serving a Gateway API rule (:mod:`gateway.proxy._variants`):
paths, redirect locations, header modifiers, the weighted split and the
request facts routing reads. Tables come from the spec's own examples and
from the conformance tests (kubernetes-sigs/gateway-api
``conformance/tests/httproute-*.go``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from twisted.trial.unittest import TestCase
from twisted.web.http_headers import Headers

from gateway.model import ObjectRef
from gateway.proxy._variants import (
    BackendChooser,
    RequestFacts,
    change_path,
    edit_headers,
    parse_query,
    redirect_location,
    split_host,
)
from gateway.translate import (
    HeaderEdits,
    PathChange,
    Redirect,
    Variant,
    WeightedBackend,
    parse_backend,
)

_ORIGIN = ObjectRef("gateway-api", "httproutes", "ns/route")


def _prefix(value: str) -> PathChange:
    return PathChange("prefix", value)


def _full(value: str) -> PathChange:
    return PathChange("full", value)


class ChangePathTests(TestCase):
    def test_replace_prefix_match_table_of_the_spec(self) -> None:
        """ReplacePrefixMatch gives the results of the spec's HTTPPathModifier table."""
        table = [
            # request path, matched prefix, replacement, result
            ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
            ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
            ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
            ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
            ("/foo", "/foo", "/xyz", "/xyz"),
            ("/foo/", "/foo", "/xyz", "/xyz/"),
            ("/foo/bar", "/foo", "", "/bar"),
            ("/foo/", "/foo", "", "/"),
            ("/foo", "/foo", "", "/"),
            ("/foo/", "/foo", "/", "/"),
            ("/foo", "/foo", "/", "/"),
        ]
        for path, prefix, replacement, expected in table:
            self.assertEqual(
                change_path(path, _prefix(replacement), prefix),
                expected,
                (path, prefix, replacement),
            )

    def test_conformance_rewrite_path(self) -> None:
        """The HTTPRouteRewritePath cases: prefix replaced, prefix stripped to '/', full path replaced."""
        self.assertEqual(change_path("/prefix/one/two", _prefix("/one"), "/prefix/one"), "/one/two")
        self.assertEqual(
            change_path("/strip-prefix/three", _prefix("/"), "/strip-prefix"), "/three"
        )
        self.assertEqual(change_path("/strip-prefix", _prefix("/"), "/strip-prefix"), "/")
        self.assertEqual(change_path("/full/one/two", _full("/one"), "/full/one"), "/one")
        self.assertEqual(
            change_path(
                "/prefix/rewrite-path-and-modify-headers/one",
                _prefix("/prefix"),
                "/prefix/rewrite-path-and-modify-headers",
            ),
            "/prefix/one",
        )

    def test_root_prefix(self) -> None:
        """A Prefix match on '/' keeps the whole path after the replacement, one '/' at the join."""
        self.assertEqual(change_path("/a/b", _prefix("/v2"), "/"), "/v2/a/b")
        self.assertEqual(change_path("/a/b", _prefix("/v2/"), "/"), "/v2/a/b")
        self.assertEqual(change_path("/", _prefix("/v2"), "/"), "/v2/")
        self.assertEqual(change_path("/a", _prefix("/"), "/"), "/a")

    def test_trailing_slash_and_empty_segments_kept(self) -> None:
        """What follows the prefix is kept as sent: a trailing slash, an empty segment, percent escapes."""
        self.assertEqual(change_path("/api/x/", _prefix("/v1"), "/api"), "/v1/x/")
        self.assertEqual(change_path("/api//x", _prefix("/v1"), "/api"), "/v1//x")
        self.assertEqual(change_path("/api/a%2Fb", _prefix("/v1"), "/api"), "/v1/a%2Fb")

    def test_prefix_not_matching_leaves_path(self) -> None:
        """A path outside the prefix (a hand-built route) is left unchanged, never cut mid-segment."""
        self.assertEqual(change_path("/foobar", _prefix("/x"), "/foo"), "/foobar")


class SplitHostTests(TestCase):
    def test_forms(self) -> None:
        """Host names, IPv4 and bracketed IPv6, with and without a port."""
        self.assertEqual(split_host("example.com"), ("example.com", None))
        self.assertEqual(split_host("example.com:8080"), ("example.com", 8080))
        self.assertEqual(split_host("127.0.0.1:80"), ("127.0.0.1", 80))
        self.assertEqual(split_host("[::1]"), ("[::1]", None))
        self.assertEqual(split_host("[::1]:8443"), ("[::1]", 8443))
        self.assertEqual(split_host("example.com:x"), ("example.com", None))


def _redirect(
    scheme: str | None = None,
    hostname: str | None = None,
    port: int | None = None,
    path: PathChange | None = None,
    status: int = 302,
) -> Redirect:
    return Redirect(scheme=scheme, hostname=hostname, port=port, path=path, status=status)


class RedirectLocationTests(TestCase):
    def test_port_and_scheme_conformance(self) -> None:
        """
        HTTPRouteRedirectPortAndScheme: the port follows the scheme when
        only the scheme is given, else the listener's (the client's Host
        port); a default port is left out.
        """
        host80 = "gw.example.com"  # a client on port 80 sends no port
        host8080 = "gw.example.com:8080"
        table = [
            # listener scheme, request host, filter, expected Location
            ("http", host80, _redirect(hostname="example.org"), "http://example.org/p"),
            ("http", host80, _redirect(hostname="example.org", port=80), "http://example.org/p"),
            (
                "http",
                host80,
                _redirect(hostname="example.org", port=8080),
                "http://example.org:8080/p",
            ),
            (
                "http",
                host80,
                _redirect(scheme="https", hostname="example.org"),
                "https://example.org/p",
            ),
            (
                "http",
                host80,
                _redirect(scheme="https", hostname="example.org", port=443),
                "https://example.org/p",
            ),
            (
                "http",
                host80,
                _redirect(scheme="https", hostname="example.org", port=8443),
                "https://example.org:8443/p",
            ),
            ("http", host8080, _redirect(hostname="example.org"), "http://example.org:8080/p"),
            ("http", host8080, _redirect(hostname="example.org", port=80), "http://example.org/p"),
            (
                "http",
                host8080,
                _redirect(scheme="https", hostname="example.org"),
                "https://example.org/p",
            ),
            ("https", "example.org", _redirect(), "https://example.org/p"),
            ("https", "example.org", _redirect(port=443), "https://example.org/p"),
            ("https", "example.org", _redirect(port=8443), "https://example.org:8443/p"),
            ("https", "example.org", _redirect(scheme="http"), "http://example.org/p"),
            ("https", "example.org", _redirect(scheme="http", port=80), "http://example.org/p"),
            (
                "https",
                "example.org",
                _redirect(scheme="http", port=8080),
                "http://example.org:8080/p",
            ),
        ]
        for scheme, host, redirect, expected in table:
            self.assertEqual(
                redirect_location(redirect, scheme, host, "/p", "", "/p"),
                expected,
                (scheme, host, redirect),
            )

    def test_host_and_status_conformance(self) -> None:
        """HTTPRouteRedirectHostAndStatus: only the host changes; the request's path stays."""
        location = redirect_location(
            _redirect(hostname="example.org", status=301), "http", "gw", "/host-and-status", "", "/"
        )
        self.assertEqual(location, "http://example.org/host-and-status")

    def test_path_conformance(self) -> None:
        """HTTPRouteRedirectPath: ReplacePrefixMatch keeps the rest, ReplaceFullPath replaces all."""
        prefix = _redirect(path=_prefix("/replacement-prefix"))
        self.assertEqual(
            redirect_location(
                prefix, "http", "gw", "/original-prefix/lemon", "", "/original-prefix"
            ),
            "http://gw/replacement-prefix/lemon",
        )
        full = _redirect(path=_full("/full-path-replacement"))
        self.assertEqual(
            redirect_location(full, "http", "gw", "/full/path/original", "", "/full/path/original"),
            "http://gw/full-path-replacement",
        )
        both = _redirect(hostname="example.org", path=_prefix("/replacement-prefix"))
        self.assertEqual(
            redirect_location(both, "http", "gw", "/path-and-host", "", "/path-and-host"),
            "http://example.org/replacement-prefix",
        )

    def test_query_kept(self) -> None:
        """The query string is kept as sent, after a changed path too."""
        redirect = _redirect(scheme="https", path=_prefix("/new"))
        self.assertEqual(
            redirect_location(redirect, "http", "a.example", "/old/x", "q=1&r=%20", "/old"),
            "https://a.example/new/x?q=1&r=%20",
        )

    def test_ipv6_host_kept_in_brackets(self) -> None:
        """A bracketed IPv6 Host keeps its brackets, and its port when the scheme stays."""
        self.assertEqual(
            redirect_location(_redirect(), "http", "[::1]:8080", "/a", "", "/"),
            "http://[::1]:8080/a",
        )
        self.assertEqual(
            redirect_location(_redirect(scheme="https"), "http", "[::1]:8080", "/a", "", "/"),
            "https://[::1]/a",
        )


class EditHeadersTests(TestCase):
    def test_request_header_modifier_conformance(self) -> None:
        """
        HTTPRouteRequestHeaderModifier: set overwrites, add appends to the
        existing value comma-separated (the Go test expects
        ``some-other-value,add-appends-values``), remove drops.
        """
        edits = HeaderEdits(
            set=((b"X-Header-Set", b"set-overwrites-values"),),
            add=((b"X-Header-Add", b"add-appends-values"),),
            remove=(b"x-header-remove",),
        )
        headers = [
            (b"X-Header-Set", b"some-other-value"),
            (b"X-Header-Add", b"some-other-value"),
            (b"X-Header-Remove", b"val"),
            (b"Other", b"kept"),
        ]
        self.assertEqual(
            edit_headers(headers, edits),
            [
                (b"X-Header-Add", b"some-other-value,add-appends-values"),
                (b"Other", b"kept"),
                (b"X-Header-Set", b"set-overwrites-values"),
            ],
        )

    def test_names_case_insensitive(self) -> None:
        """A modifier's names match headers of any case, and every repeated value."""
        edits = HeaderEdits(set=((b"X-Set", b"new"),), remove=(b"x-gone",))
        headers = [(b"x-set", b"1"), (b"X-SET", b"2"), (b"X-Gone", b"a"), (b"x-gone", b"b")]
        self.assertEqual(edit_headers(headers, edits), [(b"X-Set", b"new")])

    def test_set_then_add_then_remove(self) -> None:
        """
        set and add of one name give both values on one line; remove drops
        what set and add gave too; add to an absent header is a new line,
        and Set-Cookie is never folded.
        """
        both = HeaderEdits(set=((b"X-A", b"set"),), add=((b"X-A", b"added"),))
        self.assertEqual(edit_headers([(b"X-A", b"old")], both), [(b"X-A", b"set,added")])
        new = HeaderEdits(add=((b"X-New", b"1"),))
        self.assertEqual(edit_headers([(b"C", b"c")], new), [(b"C", b"c"), (b"X-New", b"1")])
        cookie = HeaderEdits(add=((b"Set-Cookie", b"b=2"),))
        self.assertEqual(
            edit_headers([(b"Set-Cookie", b"a=1")], cookie),
            [(b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2")],
        )
        removed = HeaderEdits(
            set=((b"X-A", b"set"),), add=((b"X-B", b"b"),), remove=(b"x-a", b"x-b")
        )
        self.assertEqual(edit_headers([(b"X-A", b"old"), (b"C", b"c")], removed), [(b"C", b"c")])

    def test_framing_headers_protected(self) -> None:
        """A modifier never changes hop-by-hop headers or Content-Length (the message's framing)."""
        edits = HeaderEdits(
            set=((b"Content-Length", b"0"),),
            add=((b"Transfer-Encoding", b"chunked"),),
            remove=(b"connection",),
        )
        headers = [(b"Content-Length", b"5"), (b"Connection", b"close")]
        self.assertEqual(edit_headers(list(headers), edits), headers)

    def test_no_edits_keeps_headers(self) -> None:
        """Empty modifiers leave the list as it was."""
        headers = [(b"A", b"1"), (b"a", b"2")]
        self.assertEqual(edit_headers(list(headers), HeaderEdits()), headers)


def _variant(*backends: WeightedBackend) -> Variant:
    return Variant(
        label="ns/route rule 0 match 0",
        origin=_ORIGIN,
        schemes=None,
        method=None,
        backends=backends,
    )


def _evenly(n: int) -> Iterator[float]:
    """``n`` values spread evenly over [0, 1): a deterministic stand-in for random()."""
    return iter([(i + 0.5) / n for i in range(n)])


_V1 = parse_backend("http://v1.ns.svc.cluster.local:8080")
_V2 = parse_backend("http://v2.ns.svc.cluster.local:8080")
_V3 = parse_backend("http://v3.ns.svc.cluster.local:8080")


class BackendChooserTests(TestCase):
    def test_split_follows_weights(self) -> None:
        """Over values spread evenly, each backend gets exactly its share of the weights."""
        variant = _variant(WeightedBackend(_V1, 1), WeightedBackend(_V2, 3))
        values = _evenly(400)
        chooser = BackendChooser(lambda: next(values))
        counts = Counter(chooser.choose(variant).backend.url for _ in range(400))  # type: ignore[union-attr]
        self.assertEqual(counts, {_V1.url: 100, _V2.url: 300})

    def test_weight_zero_never_chosen(self) -> None:
        """A backend of weight 0 is never chosen, whatever the random value."""
        variant = _variant(
            WeightedBackend(_V1, 0), WeightedBackend(_V2, 1), WeightedBackend(_V3, 1)
        )
        values = iter([0.0, 0.25, 0.5, 0.75, 0.999999])
        chooser = BackendChooser(lambda: next(values))
        chosen = [chooser.choose(variant) for _ in range(5)]
        self.assertEqual(
            [c.backend for c in chosen],  # type: ignore[union-attr]
            [_V2, _V2, _V3, _V3, _V3],
        )

    def test_invalid_backend_keeps_its_share(self) -> None:
        """An invalid backendRef is chosen for its share (answered 500), not dropped."""
        invalid = WeightedBackend(None, 1, "BackendNotFound: service ns/missing not found")
        variant = _variant(invalid, WeightedBackend(_V1, 1))
        values = _evenly(10)
        chooser = BackendChooser(lambda: next(values))
        chosen = [chooser.choose(variant) for _ in range(10)]
        self.assertEqual(sum(1 for c in chosen if c is invalid), 5)

    def test_nothing_to_choose(self) -> None:
        """No backends, or every weight 0: nothing is chosen (the spec answers 500)."""
        chooser = BackendChooser(lambda: 0.5)
        self.assertIsNone(chooser.choose(_variant()))
        self.assertIsNone(
            chooser.choose(_variant(WeightedBackend(_V1, 0), WeightedBackend(_V2, 0)))
        )

    def test_single_backend_uses_no_randomness(self) -> None:
        """One backend with a weight is always chosen, without drawing a random value."""

        def no_draw() -> float:
            raise AssertionError("drew a random value")

        chooser = BackendChooser(no_draw)
        only = WeightedBackend(_V1, 5)
        self.assertIs(chooser.choose(_variant(only, WeightedBackend(_V2, 0))), only)

    def test_new_generation_same_answers(self) -> None:
        """Choosing across generation numbers and equal variants gives the same split."""
        first = _variant(WeightedBackend(_V1, 1), WeightedBackend(_V2, 1))
        second = _variant(WeightedBackend(_V1, 1), WeightedBackend(_V2, 1))
        chooser = BackendChooser(lambda: 0.75)
        self.assertEqual(chooser.choose(first, 1).backend, _V2)  # type: ignore[union-attr]
        self.assertEqual(chooser.choose(second, 2).backend, _V2)  # type: ignore[union-attr]
        self.assertEqual(chooser.choose(first, 2).backend, _V2)  # type: ignore[union-attr]


class RequestFactsTests(TestCase):
    def test_header_values_joined(self) -> None:
        """
        header() gives a repeated header's values joined with ", " (RFC
        9110 §5.3), any case; a single value as it is; None when absent.
        """
        headers = Headers()
        headers.addRawHeader(b"X-Version", b"two")
        headers.addRawHeader(b"x-version", b"three")
        headers.addRawHeader(b"X-One", b"1")
        facts = RequestFacts(headers, b"")
        self.assertEqual(facts.header(b"x-version"), "two, three")
        self.assertEqual(facts.header(b"x-one"), "1")
        self.assertIsNone(facts.header(b"x-absent"))

    def test_query_as_sent(self) -> None:
        """query() gives the first value as sent (no percent-decoding); a bare name has ''."""
        facts = RequestFacts(Headers(), b"animal=whale&animal=dolphin&color=%20blue&flag&=x")
        self.assertEqual(facts.query("animal"), "whale")
        self.assertEqual(facts.query("color"), "%20blue")
        self.assertEqual(facts.query("flag"), "")
        self.assertIsNone(facts.query("Animal"))
        self.assertIsNone(RequestFacts(Headers(), b"").query("animal"))

    def test_parse_query(self) -> None:
        """Empty parts are skipped; names are case-sensitive."""
        self.assertEqual(parse_query(b"a=1&&A=2&a=3"), {"a": "1", "A": "2"})
