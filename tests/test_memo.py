"""Tests for the build memo: reuse across builds, bounded, and invisible in results."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gateway.memo import BuildMemo
from gateway.model import Api, ObjectRef, Operation, Route, RouteSet, SourceObject, Store
from gateway.reconcile import Reconciler
from gateway.translate import translate


def _api(i: int, modified: float = 1.0, path: str | None = None) -> SourceObject:
    ops = (Operation("get", "GET", "/items/{id}"), Operation("post", "POST", "/items"))
    return SourceObject(
        ObjectRef("cloud", "api", f"api{i}"),
        modified,
        Api(f"api{i}", path or f"api{i}", "http://backend:8080/base", operations=ops),
    )


class BuildMemoTests(SynchronousTestCase):
    def test_reuse_and_rotation(self) -> None:
        """A result is reused in the next build; one unused in a build is forgotten after it."""
        memo = BuildMemo()
        calls: list[str] = []
        a, b = object(), object()
        memo.get_for(a, "t", lambda: calls.append("a") or "A")
        memo.get_for(b, "t", lambda: calls.append("b") or "B")
        memo.rotate()
        self.assertEqual(memo.get_for(a, "t", lambda: calls.append("a2") or "A2"), "A")
        memo.rotate()  # b was not used in this build
        self.assertEqual(memo.get_for(b, "t", lambda: calls.append("b2") or "B2"), "B2")
        self.assertEqual(calls, ["a", "b", "b2"])
        self.assertEqual((memo.hits, memo.misses), (1, 3))

    def test_identity_not_equality(self) -> None:
        """get_for keys on the object itself: an equal but distinct object is computed again."""
        memo = BuildMemo()
        first, second = [1, 2], [1, 2]
        memo.get_for(first, "t", lambda: "first")
        self.assertEqual(memo.get_for(second, "t", lambda: "second"), "second")

    def test_discard_keeps_the_last_good_build(self) -> None:
        memo = BuildMemo()
        a = object()
        memo.get_for(a, "t", lambda: "A")
        memo.rotate()
        memo.get_for(object(), "t", lambda: "failed build")
        memo.discard()
        self.assertEqual(memo.get_for(a, "t", lambda: "again"), "A")


class MemoizedTranslationTests(SynchronousTestCase):
    def test_same_result_with_and_without_memo(self) -> None:
        """Translation through the memo equals plain translation, also for invalid objects and after changes."""
        memo = BuildMemo()
        bad = SourceObject(ObjectRef("file", "routes", "bad"), 1.0, RouteSet((Route("nope", "x"),)))
        invalid_api = SourceObject(
            ObjectRef("cloud", "api", "broken"), 1.0, Api("broken", "b", "ftp://x")
        )
        objects = [_api(i) for i in range(20)] + [bad, invalid_api]
        for _ in range(2):
            self.assertEqual(translate(objects, memo=memo), translate(objects))
            memo.rotate()
        objects[3] = _api(3, modified=2.0, path="moved")
        self.assertEqual(translate(objects, memo=memo), translate(objects))

    def test_store_keeps_unchanged_objects_identical(self) -> None:
        """replace_source with equal objects keeps the held instances, so the memo hits."""
        store = Store()
        store.replace_source("cloud", [_api(1), _api(2)])
        held = store.objects("cloud")
        store.replace_source("cloud", [_api(1), _api(2, path="changed")])
        now = store.objects("cloud")
        self.assertIs(now[0], held[0])
        self.assertIsNot(now[1], held[1])

    def test_reconciler_reuses_unchanged_objects(self) -> None:
        """After one API changes among many, only that API is translated and compiled again."""
        store = Store()
        store.replace_source("cloud", [_api(i) for i in range(50)])
        reconciler = Reconciler(store, Clock())
        reconciler.startService()
        memo = reconciler._memo
        misses = memo.misses
        store.replace_source("cloud", [_api(i) for i in range(49)] + [_api(49, 2.0, "moved")])
        generation = reconciler.rebuild()
        assert generation is not None
        # One object's entries, one API's operations and the one host tier
        # (all 50 APIs are on any host) computed again.
        self.assertEqual(memo.misses - misses, 3)
        match = generation.table.lookup("any", "/moved/items/7", "GET")
        assert match is not None
        self.assertEqual(match.params, {"id": "7"})

    def test_certificates_memoized_but_expiry_checked_every_build(self) -> None:
        """A memoized certificate is still refused once it has expired at the build's time."""
        import time

        from gateway.model import Certificate
        from gateway.testing.certs import self_signed

        issued = self_signed("a.example.com", not_after=time.time() + 3600)
        cert = SourceObject(
            ObjectRef("file", "certificate", "a"),
            1.0,
            Certificate(("a.example.com",), issued.chain_pem, issued.key_pem),
        )
        memo = BuildMemo()
        now = time.time()
        fresh = translate([cert], now=now, memo=memo)
        memo.rotate()
        self.assertEqual(fresh, translate([cert], now=now))
        self.assertEqual(len(fresh.certificates), 1)
        later = translate([cert], now=now + 7200, memo=memo)
        self.assertEqual(later, translate([cert], now=now + 7200))
        self.assertEqual(later.certificates, ())
        self.assertIn("expired", later.problems[0].message)


    def test_unchanged_host_tiers_are_reused(self) -> None:
        """A change on one host rebuilds that host's tier only; lookups on every host still work."""
        def on_host(i: int, path: str | None = None) -> SourceObject:
            body = Api(f"api{i}", path or f"api{i}", "http://backend:8080", hostnames=(f"h{i}.example.com",))
            return SourceObject(ObjectRef("cloud", "api", f"api{i}"), 1.0, body)

        store = Store()
        store.replace_source("cloud", [on_host(i) for i in range(10)])
        reconciler = Reconciler(store, Clock())
        reconciler.startService()
        memo = reconciler._memo
        misses = memo.misses
        store.replace_source("cloud", [on_host(i) for i in range(9)] + [on_host(9, "moved")])
        generation = reconciler.rebuild()
        assert generation is not None
        self.assertEqual(memo.misses - misses, 2)  # api9's entries and the h9 tier
        self.assertIsNotNone(generation.table.lookup("h3.example.com", "/api3/x", "GET"))
        self.assertIsNotNone(generation.table.lookup("h9.example.com", "/moved/x", "GET"))
        self.assertIsNone(generation.table.lookup("h9.example.com", "/api9/x", "GET"))
