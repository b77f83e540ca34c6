"""
The store: the current set of source objects, keyed by :class:`ObjectRef`.

Sources write to it (upsert, delete, or replace everything a source holds);
the reconciler reads a snapshot of it. Listeners are told *that* something
changed, not what: the reconciler coalesces bursts into one rebuild anyway.
"""

from __future__ import annotations

from typing import Callable, Iterable

from ._objects import ObjectRef, SourceObject


class Store:
    """
    A mutable map of source objects with change notification.

    Writes that change nothing (the same object upserted again) do not
    notify, so a source may re-push its whole state after a reconnect
    without causing a rebuild.
    """

    def __init__(self) -> None:
        #: The objects, per source: a source replaces its own part without
        #: scanning the others'.
        self._sources: dict[str, dict[ObjectRef, SourceObject]] = {}
        self._listeners: list[Callable[[], None]] = []
        #: Incremented on every effective change.
        self.version = 0

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every effective change."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        self.version += 1
        for listener in list(self._listeners):
            listener()

    def upsert(self, obj: SourceObject) -> None:
        """Insert or replace one object."""
        held = self._sources.setdefault(obj.ref.source, {})
        if held.get(obj.ref) == obj:
            return
        held[obj.ref] = obj
        self._changed()

    def delete(self, ref: ObjectRef) -> None:
        """Remove one object; removing an absent object is a no-op."""
        if self._sources.get(ref.source, {}).pop(ref, None) is not None:
            self._changed()

    def replace_source(self, source: str, objects: Iterable[SourceObject]) -> None:
        """
        Make ``objects`` the complete set held for ``source``: objects of that
        source not listed are deleted. One notification at most.
        """
        old = self._sources.get(source, {})
        new = {}
        changed = False
        for obj in objects:
            ref = obj.ref
            if ref.source != source:
                raise ValueError(f"{ref} does not belong to source {source!r}")
            held = old.get(ref)
            if held is not None and (held is obj or held == obj):
                # An unchanged object stays the *same* object, so builds
                # can reuse what they derived from it (gateway.memo).
                new[ref] = held
            else:
                new[ref] = obj
                changed = True
        if not changed and len(new) == len(old):
            return
        self._sources[source] = new
        self._changed()

    def objects(self, source: str | None = None) -> tuple[SourceObject, ...]:
        """A snapshot of the held objects (of one source, or all), sorted by ref."""
        if source is not None:
            chosen: Iterable[SourceObject] = self._sources.get(source, {}).values()
        else:
            chosen = (obj for held in self._sources.values() for obj in held.values())
        return tuple(sorted(chosen, key=_order))


def _order(obj: SourceObject) -> tuple[str, str, str]:
    return obj.ref.order
