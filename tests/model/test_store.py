"""Tests for :class:`gateway.model.Store`: upserts, deletes, replacement and notification."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gateway.model import Api, ObjectRef, Problem, SourceObject, Store


def obj(source: str, name: str, url: str = "http://a:1") -> SourceObject:
    return SourceObject(ObjectRef(source, "api", name), 1.0, Api(name, name, url))


class StoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.store = Store()
        self.changes = 0

        def changed() -> None:
            self.changes += 1

        self.store.subscribe(changed)

    def test_upsert_replaces_and_notifies_only_on_change(self) -> None:
        """Upserting an equal object again does not notify; a different body does."""
        self.store.upsert(obj("file", "a"))
        self.store.upsert(obj("file", "a"))
        self.store.upsert(obj("file", "a", "http://b:2"))
        self.assertEqual(self.changes, 2)
        self.assertEqual(self.store.objects()[0].body.service_url, "http://b:2")

    def test_delete(self) -> None:
        """Deleting removes the object; deleting an absent one does not notify."""
        self.store.upsert(obj("file", "a"))
        self.store.delete(ObjectRef("file", "api", "a"))
        self.store.delete(ObjectRef("file", "api", "a"))
        self.assertEqual((self.store.objects(), self.changes), ((), 2))

    def test_replace_source_touches_only_that_source(self) -> None:
        """replace_source drops unlisted objects of that source and keeps other sources'."""
        self.store.upsert(obj("cloud", "c"))
        self.store.replace_source("file", [obj("file", "a"), obj("file", "b")])
        self.store.replace_source("file", [obj("file", "b")])
        self.assertEqual([o.ref.name for o in self.store.objects()], ["c", "b"])
        self.assertEqual(self.changes, 3)

    def test_replace_source_rejects_foreign_objects(self) -> None:
        """An object of another source cannot be slipped in through replace_source."""
        self.assertRaises(ValueError, self.store.replace_source, "file", [obj("cloud", "x")])


class StoreProblemTests(SynchronousTestCase):
    """Decoding problems travel through the store beside the objects."""

    def setUp(self) -> None:
        self.store = Store()
        self.changes = 0

        def changed() -> None:
            self.changes += 1

        self.store.subscribe(changed)

    def test_replace_source_sets_and_clears_problems(self) -> None:
        """replace_source replaces a source's problems; an unchanged list does not notify."""
        bad = ObjectRef("ingress", "routes", "ns/bad")
        self.store.replace_source("ingress", [], [Problem(bad, "spec.rules[0]: no backend")])
        self.store.replace_source("ingress", [], [Problem(bad, "spec.rules[0]: no backend")])
        self.assertEqual(self.store.problems(), (Problem(bad, "spec.rules[0]: no backend"),))
        self.assertEqual(self.changes, 1)
        self.store.replace_source("ingress", [])
        self.assertEqual((self.store.problems(), self.changes), ((), 2))

    def test_problems_are_per_source(self) -> None:
        """One source's replacement leaves another source's problems alone."""
        cloud = ObjectRef("cloud", "api", "x")
        self.store.report(cloud, [Problem(cloud, "serviceUrl missing")])
        self.store.replace_source("ingress", [obj("ingress", "a")])
        self.assertEqual(self.store.problems("cloud"), (Problem(cloud, "serviceUrl missing"),))
        self.assertEqual(self.store.problems("ingress"), ())

    def test_report_replaces_the_held_object(self) -> None:
        """An object that no longer decodes is removed and its problem held instead."""
        self.store.upsert(obj("cloud", "a"))
        ref = ObjectRef("cloud", "api", "a")
        self.store.report(ref, [Problem(ref, "path must be a string")])
        self.assertEqual(self.store.objects(), ())
        self.assertEqual([p.message for p in self.store.problems()], ["path must be a string"])
        self.store.upsert(obj("cloud", "a"))
        self.assertEqual((len(self.store.objects()), self.store.problems()), (1, ()))

    def test_delete_clears_problems(self) -> None:
        """Deleting an object also forgets what was wrong with it."""
        ref = ObjectRef("cloud", "api", "a")
        self.store.upsert(obj("cloud", "a"), [Problem(ref, "operation 2 ignored")])
        self.store.delete(ref)
        self.assertEqual((self.store.problems(), self.changes), ((), 2))

    def test_foreign_problem_refused(self) -> None:
        """A problem naming another source's object is a programming error."""
        with self.assertRaises(ValueError):
            self.store.replace_source("file", [], [Problem(ObjectRef("cloud", "api", "a"), "x")])
