"""
Gateway API rules served end to end: a real gateway on loopback, two real
backends (A and B, each naming itself in an ``X-Backend`` response header),
real HTTP.

The route entries with variants are built by hand and installed as the
live generation (what the reconciler swaps in after translating HTTPRoute
objects), so these tests pin the proxy's and routing's behaviour without
depending on the Gateway API source: matches on headers, method and query
select a variant, a variant whose conditions fail falls back to a shorter
prefix, and the selected variant redirects, rewrites, edits headers or
splits traffic by weight.
"""

from __future__ import annotations

import http.client
import random
import re
from collections import Counter
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.threads import deferToThread

from gateway.echo import _EchoRequest
from gateway.model import ObjectRef
from gateway.proxy._variants import BackendChooser
from gateway.testing.backends import CountingSite, ScenarioResource
from gateway.translate import (
    KIND_ROUTE,
    PREFIX,
    Backend,
    HeaderEdits,
    PathChange,
    Redirect,
    Rewrite,
    RouteEntry,
    ValueMatch,
    Variant,
    WeightedBackend,
    parse_backend,
)

from .harness import GatewayTestCase, Response, request_sync
from .tlsclient import tls_connect

_ORIGIN = ObjectRef("gateway-api", "httproutes", "ns/route")


class _NamedBackend(ScenarioResource):
    """The scenario backend, naming itself in an ``X-Backend`` response header."""

    def __init__(self, name: str) -> None:
        super().__init__(reactor)
        self.name = name.encode()

    def render(self, request: Any) -> Any:
        request.setHeader(b"x-backend", self.name)
        return super().render(request)


def _variant(
    name: str,
    *backends: WeightedBackend,
    method: str | None = None,
    headers: tuple[ValueMatch, ...] = (),
    query: tuple[ValueMatch, ...] = (),
    **filters: Any,
) -> Variant:
    return Variant(
        label=f"ns/route {name}",
        origin=_ORIGIN,
        schemes=None,
        method=method,
        headers=headers,
        query=query,
        backends=backends,
        **filters,
    )


def _entry(path: str, backend: Backend, *variants: Variant) -> RouteEntry:
    return RouteEntry(
        host="",
        path=path,
        match=PREFIX,
        kind=KIND_ROUTE,
        backend=backend,
        origin=_ORIGIN,
        modified=0.0,
        label=f"ns/route {path}",
        variants=variants,
    )


class GatewayVariantTests(GatewayTestCase):
    """Requests against hand-built Gateway API entries."""

    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        self.a = yield self._backend("A")
        self.b = yield self._backend("B")
        a, b = WeightedBackend(self.a, 1), WeightedBackend(self.b, 1)
        plain = parse_backend(self.backend_url)
        entries = [
            # The shorter prefix a conditional route falls back to.
            RouteEntry(
                host="",
                path="/",
                match=PREFIX,
                kind=KIND_ROUTE,
                backend=plain,
                origin=ObjectRef("file", "routes", "root"),
                modified=0.0,
                label="root",
            ),
            _entry(
                "/hdr",
                self.a,
                _variant("hdr-two", b, headers=(ValueMatch("version", "two"),)),
                _variant("hdr-any", a),
            ),
            _entry("/method", self.a, _variant("post", b, method="POST"), _variant("other", a)),
            _entry(
                "/query",
                self.a,
                _variant("whale", b, query=(ValueMatch("animal", "whale"),)),
                _variant(
                    "dolphin-re",
                    a,
                    query=(ValueMatch("animal", "dol.*", re.compile("dol.*")),),
                ),
            ),
            _entry("/only-v2", self.a, _variant("v2", b, headers=(ValueMatch("version", "two"),))),
            _entry(
                "/redirect",
                self.a,
                _variant(
                    "redirect",
                    redirect=Redirect(
                        scheme=None,
                        hostname="example.org",
                        port=None,
                        path=PathChange("prefix", "/new"),
                        status=301,
                    ),
                ),
            ),
            _entry(
                "/to-https",
                self.a,
                _variant(
                    "to-https",
                    redirect=Redirect("https", None, None, None, 302),
                    response_headers=HeaderEdits(set=((b"Cache-Control", b"no-store"),)),
                ),
            ),
            _entry(
                "/rewrite",
                self.a,
                _variant(
                    "rewrite",
                    a,
                    rewrite=Rewrite("rewritten.example", PathChange("prefix", "/v2")),
                ),
            ),
            _entry(
                "/full",
                self.a,
                _variant("full", a, rewrite=Rewrite(None, PathChange("full", "/replaced"))),
            ),
            _entry(
                "/modify",
                self.a,
                _variant(
                    "modify",
                    a,
                    request_headers=HeaderEdits(
                        set=((b"X-Header-Set", b"set-overwrites-values"),),
                        add=((b"X-Header-Add", b"header-val-1"),),
                        remove=(b"x-header-remove",),
                    ),
                    response_headers=HeaderEdits(
                        set=((b"X-Backend", b"edited"),),
                        add=((b"X-Added", b"1"),),
                        remove=(b"set-cookie",),
                    ),
                ),
            ),
            _entry(
                "/weights",
                self.a,
                _variant("weights", WeightedBackend(self.a, 1), WeightedBackend(self.b, 3)),
            ),
            _entry(
                "/invalid",
                self.a,
                _variant(
                    "invalid",
                    WeightedBackend(None, 1, "BackendNotFound: service ns/missing not found"),
                    WeightedBackend(self.b, 1),
                ),
            ),
            _entry("/none", self.a, _variant("none")),
            _entry(
                "/same-scheme",
                self.a,
                _variant("same-scheme", redirect=Redirect(None, "new.example", None, None, 302)),
            ),
            _entry(
                "/dead",
                self.a,
                _variant(
                    "dead",
                    WeightedBackend(parse_backend(f"http://127.0.0.1:{self.dead_port}"), 1),
                ),
            ),
            _entry("/stream", self.a, _variant("stream", a)),
        ]
        self._install(entries)
        # A seeded split: the weight tests are deterministic.
        seeded = random.Random(13)
        self.gateway.listeners["http"].resource._chooser = BackendChooser(seeded.random)

    @inlineCallbacks
    def _backend(self, name: str) -> Any:
        site = CountingSite(_NamedBackend(name), requestFactory=_EchoRequest)
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        self.addCleanup(port.stopListening)
        return parse_backend(f"http://127.0.0.1:{port.getHost().port}")

    def _install(self, entries: list[RouteEntry]) -> None:
        """Make ``entries`` the live route table, as a reconciler swap would."""
        self.install_routes(*entries, keep=False)

    def _many(self, path: str, count: int) -> Any:
        """``count`` GETs of ``path`` over one keep-alive connection, in a thread."""

        def run() -> list[Response]:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                return [request_sync(self.port, "GET", path, conn=conn) for _ in range(count)]
            finally:
                conn.close()

        return deferToThread(run)

    @inlineCallbacks
    def test_header_match_selects_backend(self) -> Any:
        """A header condition picks its variant's backend; without the header the next variant serves."""
        r = yield self.get("/hdr/x", headers=[("Version", "two")])
        self.assertEqual((r.status, r.header("x-backend")), (200, "B"))
        r = yield self.get("/hdr/x", headers=[("Version", "three")])
        self.assertEqual((r.status, r.header("x-backend")), (200, "A"))
        r = yield self.get("/hdr/x")
        self.assertEqual(r.header("x-backend"), "A")

    @inlineCallbacks
    def test_method_match(self) -> Any:
        """A method condition: POST goes to B, GET to A."""
        r = yield self.request("POST", "/method", body=b"x")
        self.assertEqual((r.status, r.header("x-backend")), (200, "B"))
        r = yield self.get("/method")
        self.assertEqual((r.status, r.header("x-backend")), (200, "A"))

    @inlineCallbacks
    def test_query_match(self) -> Any:
        """Exact and regular-expression query conditions; the first value of a name counts."""
        r = yield self.get("/query?animal=whale")
        self.assertEqual(r.header("x-backend"), "B")
        r = yield self.get("/query?animal=dolphin&animal=whale")
        self.assertEqual(r.header("x-backend"), "A")
        r = yield self.get("/query?animal=Whale")
        # No variant holds: the shorter prefix "/" (the plain backend) answers.
        self.assertEqual((r.status, r.header("x-backend")), (200, None))
        self.assertEqual(r.json()["path"], "/query")

    @inlineCallbacks
    def test_fallback_to_shorter_prefix(self) -> Any:
        """When no variant's conditions hold, a shorter prefix route serves the request."""
        r = yield self.get("/only-v2/page", headers=[("version", "two")])
        self.assertEqual(r.header("x-backend"), "B")
        r = yield self.get("/only-v2/page")
        self.assertEqual((r.status, r.header("x-backend")), (200, None))
        self.assertEqual(r.json()["path"], "/only-v2/page")

    @inlineCallbacks
    def test_redirect(self) -> Any:
        """RequestRedirect: its status, and a Location with the new host, the replaced prefix and the query."""
        r = yield self.get("/redirect/lemon?x=1", headers=[("Host", "gw.example.com")])
        self.assertEqual(r.status, 301)
        self.assertEqual(r.header("location"), "http://example.org/new/lemon?x=1")
        self.assertEqual(r.body, b"")

    @inlineCallbacks
    def test_redirect_scheme_only_drops_port(self) -> Any:
        """
        A scheme-only redirect points at the new scheme's default port, left
        out of Location; the response header modifier applies to the redirect.
        """
        r = yield self.get("/to-https/a", headers=[("Host", f"gw.example.com:{self.port}")])
        self.assertEqual(r.status, 302)
        self.assertEqual(r.header("location"), "https://gw.example.com/to-https/a")
        self.assertEqual(r.header("cache-control"), "no-store")

    @inlineCallbacks
    def test_over_https(self) -> Any:
        """
        On the HTTPS listener: a redirect keeps the https scheme (443 left
        out), and a forwarded variant request says X-Forwarded-Proto https.
        """
        session = yield deferToThread(tls_connect, self.https_port, "gw.example.com")
        self.addCleanup(session.close)
        r = yield deferToThread(session.request, "GET", "/same-scheme/x?y=1", "gw.example.com")
        self.assertEqual(
            (r.status, r.header("location")), (302, "https://new.example/same-scheme/x?y=1")
        )
        r = yield deferToThread(
            session.request, "GET", "/hdr/x", "gw.example.com", [("Version", "two")]
        )
        self.assertEqual(r.header("x-backend"), "B")
        headers = {k.lower(): v for k, v in r.json()["headers"]}
        self.assertEqual(headers["x-forwarded-proto"], "https")

    @inlineCallbacks
    def test_rewrite_seen_by_backend(self) -> Any:
        """URLRewrite: the backend receives the rewritten path, the query and the rewritten Host."""
        r = yield self.get("/rewrite/one/two?q=1", headers=[("Host", "client.example")])
        echo = r.json()
        self.assertEqual((echo["path"], echo["query"]), ("/v2/one/two", "q=1"))
        headers = {k.lower(): v for k, v in echo["headers"]}
        self.assertEqual(headers["host"], "rewritten.example")
        self.assertEqual(headers["x-forwarded-host"], "client.example")
        r = yield self.get("/full/deep/path")
        self.assertEqual(r.json()["path"], "/replaced")

    @inlineCallbacks
    def test_client_host_kept_without_rewrite(self) -> Any:
        """Without a hostname rewrite the backend gets the client's Host, as the Gateway API requires."""
        r = yield self.get("/stream", headers=[("Host", "client.example:8080")])
        headers = {k.lower(): v for k, v in r.json()["headers"]}
        self.assertEqual(headers["host"], "client.example:8080")

    @inlineCallbacks
    def test_request_header_modifier_seen_by_backend(self) -> Any:
        """RequestHeaderModifier: set replaces, add appends, remove drops, as the backend sees them."""
        r = yield self.get(
            "/modify",
            headers=[
                ("X-Header-Set", "set-val"),
                ("X-Header-Add", "client-val"),
                ("X-Header-Remove", "remove-val"),
            ],
        )
        pairs = [(k.lower(), v) for k, v in r.json()["headers"]]
        self.assertEqual([v for k, v in pairs if k == "x-header-set"], ["set-overwrites-values"])
        self.assertEqual(
            [v for k, v in pairs if k == "x-header-add"], ["client-val,header-val-1"]
        )
        self.assertNotIn("x-header-remove", [k for k, _ in pairs])

    @inlineCallbacks
    def test_response_header_modifier_seen_by_client(self) -> Any:
        """ResponseHeaderModifier: the client sees the set and added values, not the removed ones."""
        r = yield self.get("/modify?headers=1")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("x-backend"), "edited")
        self.assertEqual(r.header("x-added"), "1")
        self.assertIsNone(r.header("set-cookie"))
        # The backend's other headers are still forwarded.
        self.assertEqual(r.header("content-type"), "application/json; charset=utf-8")

    @inlineCallbacks
    def test_weights_split(self) -> Any:
        """Weights 1:3 over 400 requests: A gets about a quarter, B the rest."""
        responses = yield self._many("/weights", 400)
        self.assertEqual({r.status for r in responses}, {200})
        counts = Counter(r.header("x-backend") for r in responses)
        self.assertEqual(set(counts), {"A", "B"})
        self.assertTrue(70 <= counts["A"] <= 130, counts)

    @inlineCallbacks
    def test_invalid_backend_answers_its_share_500(self) -> Any:
        """An invalid backendRef's share is 500 (logged with the route and the reason); its sibling serves."""
        responses = yield self._many("/invalid", 40)
        statuses = Counter(r.status for r in responses)
        self.assertEqual(set(statuses), {200, 500})
        self.assertTrue(10 <= statuses[500] <= 30, statuses)
        failed = next(r for r in responses if r.status == 500)
        self.assertEqual(failed.json()["message"], "Internal server error")
        self.assertEqual({r.header("x-backend") for r in responses if r.status == 200}, {"B"})
        logged = self.logged(
            "ns/route invalid: answered 500, its backend is invalid: BackendNotFound"
        )
        self.assertEqual(len(logged), statuses[500])
        self.assertFalse([e for e in self.events if e.get("log_failure") is not None])

    @inlineCallbacks
    def test_no_backend_is_500(self) -> Any:
        """A rule with no backends and no redirect answers 500, naming the route in the log."""
        r = yield self.get("/none")
        self.assertEqual(r.status, 500)
        self.assertTrue(self.logged("ns/route none: answered 500, it has no backend"))

    @inlineCallbacks
    def test_unreachable_backend(self) -> Any:
        """A chosen backend that refuses connections: the usual 500 envelope, credited to the variant."""
        r = yield self.get("/dead")
        self.assertEqual(r.status, 500)
        body = r.json()
        self.assertEqual(body["message"], "Internal server error")
        self.assertTrue(self.logged(f"Backend http://127.0.0.1:{self.dead_port} failed"))
        self.assertTrue(self.logged("ns/route dead"))

    @inlineCallbacks
    def test_streaming_unchanged(self) -> Any:
        """A large backend body streams through a variant whole."""
        size = 5 * 1024 * 1024
        r = yield self.get(f"/stream?size={size}")
        self.assertEqual((r.status, len(r.body)), (200, size))
        self.assertEqual(r.header("x-backend"), "A")

    @inlineCallbacks
    def test_access_log_names_variant(self) -> Any:
        """The access log line carries the variant's label as the route."""
        yield self.get("/hdr/x", headers=[("Version", "two")])
        self.assertTrue(self.logged("ns/route hdr-two"))
