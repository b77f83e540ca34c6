"""
Tests for :mod:`gateway.translate`: validation, problems per object, and
the "last one wins" merge that must not depend on arrival order.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from gateway.model import Api, ObjectRef, Operation, Problem, Route, RouteSet, SourceObject, Store
from gateway.translate import EXACT, KIND_API, KIND_ROUTE, PREFIX, InvalidObject, parse_backend, translate


def api(name: str, path: str, url: str = "http://127.0.0.1:9000/api", *, source: str = "cloud",
        modified: float = 1.0, **kw: object) -> SourceObject:
    return SourceObject(ObjectRef(source, "api", name), modified, Api(name, path, url, **kw))


def routes(name: str, *items: Route, source: str = "ingress", modified: float = 1.0) -> SourceObject:
    return SourceObject(ObjectRef(source, "routes", name), modified, RouteSet(tuple(items)))


class BackendTests(SynchronousTestCase):
    def test_parses_authority_and_base_path(self) -> None:
        """A backend URL keeps its base path without a trailing slash and omits default ports."""
        b = parse_backend("http://Svc.ns.svc.cluster.local:80/api/")
        self.assertEqual((b.scheme, b.host, b.port, b.base_path, b.authority),
                         ("http", "svc.ns.svc.cluster.local", 80, "/api", "svc.ns.svc.cluster.local"))
        b = parse_backend("https://10.0.0.1:8443")
        self.assertEqual((b.port, b.base_path, b.authority), (8443, "", "10.0.0.1:8443"))

    def test_ipv6_authority_has_brackets(self) -> None:
        """An IPv6 backend is connected to by address but sent as [addr]:port in Host."""
        b = parse_backend("http://[::1]:9000")
        self.assertEqual((b.host, b.authority), ("::1", "[::1]:9000"))

    def test_rejects_bad_urls(self) -> None:
        """Non-http schemes, missing hosts, bad ports and queries are invalid."""
        for url in ("ftp://x", "http://", "http://x:99999", "http://x/?q=1", "x"):
            self.assertRaises(InvalidObject, parse_backend, url)


class TranslateTests(SynchronousTestCase):
    def test_api_becomes_prefix_route_with_operations(self) -> None:
        """An API is a Prefix route at /<path> that strips the path, with compiled operations."""
        config = translate([api("echo", "echo/", operations=(Operation("u", "get", "/users/{id}"),))])
        (entry,) = config.routes
        self.assertEqual((entry.host, entry.path, entry.match, entry.kind), ("", "/echo", PREFIX, KIND_API))
        (op,) = entry.operations
        self.assertEqual((op.method, op.segments), ("GET", ("users", "{id}")))
        self.assertEqual(config.problems, ())

    def test_api_per_hostname(self) -> None:
        """An API with hostnames yields one route per (lower-cased) hostname."""
        config = translate([api("a", "a", hostnames=("B.example.com", "*.example.com"))])
        self.assertEqual(sorted(e.host for e in config.routes), ["*.example.com", "b.example.com"])

    def test_route_path_types(self) -> None:
        """Exact keeps its path verbatim; Prefix and ImplementationSpecific drop a trailing slash."""
        config = translate([routes("r",
                                   Route("/a/", "http://b:1", path_type="Exact"),
                                   Route("/b/", "http://b:1", path_type="Prefix"),
                                   Route("/c/", "http://b:1", path_type="ImplementationSpecific"))])
        got = sorted((e.path, e.match, e.kind) for e in config.routes)
        self.assertEqual(got, [("/a/", EXACT, KIND_ROUTE), ("/b", PREFIX, KIND_ROUTE), ("/c", PREFIX, KIND_ROUTE)])

    def test_invalid_object_is_a_problem_and_the_rest_serves(self) -> None:
        """A bad API is reported with its ref and left out; other objects still translate."""
        config = translate([api("bad", "x", "gopher://nope"), api("good", "y")])
        self.assertEqual([e.label for e in config.routes], ["api:good"])
        (problem,) = config.problems
        self.assertEqual(problem.ref, ObjectRef("cloud", "api", "bad"))
        self.assertIn("gopher://nope", problem.message)

    def test_invalid_route_in_a_set_leaves_the_others(self) -> None:
        """One bad rule of a route set is a problem; its good rules are served."""
        config = translate([routes("r", Route("nopath", "http://b:1"), Route("/ok", "http://b:1"),
                                   Route("/h", "http://b:1", host="bad_host!"))])
        self.assertEqual([e.path for e in config.routes], ["/ok"])
        self.assertEqual(len(config.problems), 2)
        self.assertTrue(all(p.ref.name == "r" for p in config.problems))

    def test_bad_template_and_duplicate_operation(self) -> None:
        """A malformed {param} or a duplicated operation shape makes the API a problem."""
        bad = translate([api("a", "a", operations=(Operation("x", "GET", "/u/{id"),))])
        dup = translate([api("a", "a", operations=(Operation("x", "GET", "/u/{id}"),
                                                    Operation("y", "GET", "/u/{other}")))])
        self.assertEqual((bad.routes, dup.routes), ((), ()))
        self.assertIn("parameter", bad.problems[0].message)
        self.assertIn("duplicates", dup.problems[0].message)


class MergeTests(SynchronousTestCase):
    def test_newest_object_wins_and_records_what_it_shadows(self) -> None:
        """Same route key from two sources: the newer modification time wins, the older is shadowed."""
        cloud = api("users", "users", "http://cloud:80", modified=100.0)
        ingress = routes("default/users", Route("/users", "http://ingress:80"), modified=200.0)
        config = translate([cloud, ingress])
        (entry,) = config.routes
        self.assertEqual(entry.origin, ingress.ref)
        self.assertEqual(entry.shadows, (cloud.ref,))
        (shadow,) = config.shadowed
        self.assertEqual((shadow.winner, shadow.loser), (ingress.ref, cloud.ref))

    def test_older_object_loses_even_when_loaded_last(self) -> None:
        """Arrival order does not matter: the cloud API modified later wins although listed first."""
        cloud = api("users", "users", "http://cloud:80", modified=300.0)
        ingress = routes("default/users", Route("/users", "http://ingress:80"), modified=200.0)
        self.assertEqual(translate([cloud, ingress]).routes[0].origin, cloud.ref)
        self.assertEqual(translate([ingress, cloud]).routes[0].origin, cloud.ref)

    def test_tie_is_broken_by_ref(self) -> None:
        """Equal modification times fall back to the smallest object ref, deterministically."""
        a = routes("a", Route("/x", "http://a:1"), modified=5.0)
        b = routes("b", Route("/x", "http://b:1"), modified=5.0)
        self.assertEqual(translate([b, a]).routes[0].origin, a.ref)

    def test_different_match_kinds_do_not_conflict(self) -> None:
        """Exact /x and Prefix /x are different keys and are both served."""
        a = routes("a", Route("/x", "http://a:1", path_type="Exact"))
        b = routes("b", Route("/x", "http://b:1"))
        self.assertEqual(len(translate([a, b]).routes), 2)

    @settings(max_examples=200, deadline=None)
    @given(st.data())
    def test_result_independent_of_arrival_order(self, data: st.DataObject) -> None:
        """The same set of objects, pushed into a store in any order, translates identically."""
        paths = st.sampled_from(["/", "/a", "/a/", "/b", "/a/b"])
        objects = []
        for i in range(data.draw(st.integers(1, 8))):
            t = data.draw(st.sampled_from([1.0, 2.0, 3.0]))
            source = data.draw(st.sampled_from(["cloud", "ingress", "file"]))
            if data.draw(st.booleans()):
                objects.append(api(f"api{i}", data.draw(paths), f"http://a{i}:1", source=source, modified=t))
            else:
                path_type = data.draw(st.sampled_from(["Exact", "Prefix"]))
                objects.append(routes(f"r{i}", Route(data.draw(paths), f"http://r{i}:1", path_type=path_type),
                                      source=source, modified=t))
        order = data.draw(st.permutations(objects))
        first, second = Store(), Store()
        for o in objects:
            first.upsert(o)
        for o in order:
            second.upsert(o)
        self.assertEqual(translate(first.objects()), translate(second.objects()))
        self.assertEqual(translate(objects), translate(list(reversed(objects))))


class ProtocolsTests(SynchronousTestCase):
    def test_api_protocols_become_schemes(self) -> None:
        """Both protocols: no restriction; one: that scheme only; anything else is a problem of the API."""
        from gateway.model import Api, ObjectRef, SourceObject

        def api(name: str, protocols: tuple[str, ...]) -> SourceObject:
            return SourceObject(
                ObjectRef("cloud", "api", name), 1.0, Api(name, name, "http://b:1", protocols=protocols)
            )

        config = translate(
            [api("both", ("http", "https")), api("tls", ("HTTPS",)), api("bad", ("ftp",)), api("none", ())]
        )
        schemes = {e.label: e.schemes for e in config.routes}
        self.assertEqual(schemes, {"api:both": None, "api:tls": frozenset({b"https"})})
        self.assertEqual(
            sorted(p.ref.name for p in config.problems if "protocols" in p.message), ["bad", "none"]
        )


class DecodeProblemTests(SynchronousTestCase):
    """Problems found by the sources' decoders are reported with translation's own."""

    def test_decoder_problems_come_first(self) -> None:
        """translate(problems=...) lists the decoders' problems, then its own."""
        bad = ObjectRef("ingress", "routes", "ns/broken")
        decoded = (Problem(bad, "spec.rules[0].http: must be an object"),)
        config = translate(
            [SourceObject(ObjectRef("file", "api", "x"), 1.0, Api("x", "x", "ftp://nope"))],
            problems=decoded,
        )
        self.assertEqual(config.problems[0], decoded[0])
        self.assertEqual(len(config.problems), 2)
        self.assertIn("http://", config.problems[1].message)


class ManagementObjectTests(SynchronousTestCase):
    """Products, subscriptions, named values and policies in a translation's input."""

    def test_managementObjectsGiveNoRoutesOfTheirOwn(self) -> None:
        """
        Products, subscriptions, named values and policies give no route and
        no "unsupported object type" problem: the API's route is the same
        one, now carrying its products, its pipelines and the key index.
        """
        from gateway.model import (
            Body,
            NamedValue,
            Policy,
            PolicyScope,
            Product,
            Subscription,
            SubscriptionScope,
            kind_of,
        )

        bodies: list[Body] = [
            Product("starter", api_ids=("users",)),
            Subscription("s", SubscriptionScope("product", "starter"), "key-1", "key-2"),
            NamedValue("secret", "v", secret=True),
            Policy(PolicyScope("api", api_id="users"), "<policies><inbound/></policies>"),
        ]
        managed = [SourceObject(ObjectRef("cloud", kind_of(b), f"n{i}"), 1.0, b)
                   for i, b in enumerate(bodies)]
        alone = translate([api("users", "users")])
        config = translate([api("users", "users"), *managed])
        self.assertEqual(config.problems, ())
        self.assertEqual([r.key for r in config.routes], [r.key for r in alone.routes])
        (entry,) = config.routes
        assert entry.access is not None and entry.pipelines is not None
        self.assertEqual(entry.access.products, ("starter",))
        self.assertEqual(sorted(entry.pipelines, key=str), [None, "starter"])
        self.assertIsNone(alone.routes[0].pipelines)
        self.assertEqual(len(config.subscriptions), 2)
        self.assertEqual(translate(managed).routes, ())
