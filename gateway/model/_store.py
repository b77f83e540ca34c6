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
        self._objects: dict[ObjectRef, SourceObject] = {}
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
        if self._objects.get(obj.ref) == obj:
            return
        self._objects[obj.ref] = obj
        self._changed()

    def delete(self, ref: ObjectRef) -> None:
        """Remove one object; removing an absent object is a no-op."""
        if self._objects.pop(ref, None) is not None:
            self._changed()

    def replace_source(self, source: str, objects: Iterable[SourceObject]) -> None:
        """
        Make ``objects`` the complete set held for ``source``: objects of that
        source not listed are deleted. One notification at most.
        """
        old = {r: o for r, o in self._objects.items() if r.source == source}
        new = {}
        for obj in objects:
            if obj.ref.source != source:
                raise ValueError(f"{obj.ref} does not belong to source {source!r}")
            held = old.get(obj.ref)
            # An unchanged object stays the *same* object, so builds can
            # reuse what they derived from it (gateway.memo).
            new[obj.ref] = held if held is not None and (held is obj or held == obj) else obj
        if old == new:
            return
        for ref in old:
            del self._objects[ref]
        self._objects.update(new)
        self._changed()

    def objects(self, source: str | None = None) -> tuple[SourceObject, ...]:
        """A snapshot of the held objects (of one source, or all), sorted by ref."""
        return tuple(
            sorted(
                (obj for ref, obj in self._objects.items() if source is None or ref.source == source),
                key=_order,
            )
        )


def _order(obj: SourceObject) -> tuple[str, str, str]:
    return obj.ref.order
