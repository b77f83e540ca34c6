"""
An in-memory source: the second live source of the foundation's tests
(Ingress and cloud sources arrive later and behave the same way towards the
store: whole-object upserts and deletes with the object's own time).
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred

from gateway.model import Body, ObjectRef, SourceObject, Store, kind_of
from gateway.ready import OneShot


class MemorySource(Service):
    """
    A source whose objects a test sets directly. It is synced as soon as it
    starts (or when :meth:`mark_synced` is called, with ``auto_sync=False``,
    to test readiness waiting on a slow source).
    """

    def __init__(self, store: Store, name: str = "memory", *, auto_sync: bool = True) -> None:
        self.store = store
        self.source = name
        self._auto_sync = auto_sync
        self._synced: OneShot[None] = OneShot()

    def when_synced(self) -> Deferred[None]:
        """A new Deferred that fires once the source counts as synced."""
        return self._synced.when()

    def startService(self) -> None:
        super().startService()
        if self._auto_sync:
            self.mark_synced()

    def mark_synced(self) -> None:
        self._synced.fire(None)

    def ref(self, body: Body, name: str) -> ObjectRef:
        return ObjectRef(self.source, kind_of(body), name)

    def put(self, name: str, body: Body, modified: float) -> SourceObject:
        """Upsert ``body`` under ``name`` with the given modification time."""
        obj = SourceObject(self.ref(body, name), modified, body)
        self.store.upsert(obj)
        return obj

    def remove(self, kind: str, name: str) -> None:
        self.store.delete(ObjectRef(self.source, kind, name))
