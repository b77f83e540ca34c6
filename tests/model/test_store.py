"""Tests for :class:`gateway.model.Store`: upserts, deletes, replacement and notification."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gateway.model import Api, ObjectRef, SourceObject, Store


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
