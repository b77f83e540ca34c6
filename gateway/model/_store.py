"""
The store: the current set of source objects, keyed by :class:`ObjectRef`.

Sources write to it (upsert, delete, or replace everything a source holds);
the reconciler reads a snapshot of it. Listeners are told *that* something
changed, not what: the reconciler coalesces bursts into one rebuild anyway.

Beside the objects, the store holds the *problems* the sources' decoders
found (per object, possibly for an object that could not be decoded at
all), so translation can report them with its own.
"""

from __future__ import annotations

from typing import Callable, Iterable

from ._objects import ObjectRef, Problem, SourceObject


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
        #: Decoding problems, per source, then per object.
        self._problems: dict[str, dict[ObjectRef, tuple[Problem, ...]]] = {}
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

    def upsert(self, obj: SourceObject, problems: Iterable[Problem] = ()) -> None:
        """
        Insert or replace one object, with the problems its decoder found
        in it (replacing those reported before for the same ref).
        """
        held = self._sources.setdefault(obj.ref.source, {})
        changed = self._set_problems(obj.ref, problems)
        if held.get(obj.ref) != obj:
            held[obj.ref] = obj
            changed = True
        if changed:
            self._changed()

    def delete(self, ref: ObjectRef) -> None:
        """Remove one object and its problems; removing an absent object is a no-op."""
        changed = self._set_problems(ref, ())
        if self._sources.get(ref.source, {}).pop(ref, None) is not None or changed:
            self._changed()

    def report(self, ref: ObjectRef, problems: Iterable[Problem]) -> None:
        """
        Set the decoding problems of ``ref`` without holding an object for
        it: the object could not be decoded at all. Any object held under
        ``ref`` is removed (its source no longer has a valid version).
        An empty ``problems`` clears them.
        """
        changed = self._set_problems(ref, problems)
        if self._sources.get(ref.source, {}).pop(ref, None) is not None or changed:
            self._changed()

    def _set_problems(self, ref: ObjectRef, problems: Iterable[Problem]) -> bool:
        new = tuple(problems)
        for problem in new:
            if problem.ref.source != ref.source:
                raise ValueError(f"{problem} does not belong to source {ref.source!r}")
        held = self._problems.setdefault(ref.source, {})
        if held.get(ref, ()) == new:
            return False
        if new:
            held[ref] = new
        else:
            del held[ref]
        return True

    def replace_source(
        self, source: str, objects: Iterable[SourceObject], problems: Iterable[Problem] = ()
    ) -> None:
        """
        Make ``objects`` the complete set held for ``source``, and
        ``problems`` the complete list of its decoding problems: objects of
        that source not listed are deleted. One notification at most.
        """
        grouped: dict[ObjectRef, tuple[Problem, ...]] = {}
        for problem in problems:
            if problem.ref.source != source:
                raise ValueError(f"{problem} does not belong to source {source!r}")
            grouped[problem.ref] = grouped.get(problem.ref, ()) + (problem,)
        problems_changed = grouped != self._problems.get(source, {})
        if problems_changed:
            self._problems[source] = grouped
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
            if problems_changed:
                self._changed()
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


    def problems(self, source: str | None = None) -> tuple[Problem, ...]:
        """The decoding problems held (of one source, or all), sorted by ref then message."""
        if source is not None:
            chosen = [p for ps in self._problems.get(source, {}).values() for p in ps]
        else:
            chosen = [p for held in self._problems.values() for ps in held.values() for p in ps]
        return tuple(sorted(chosen, key=_problem_order))


def _problem_order(problem: Problem) -> tuple[str, str, str, str]:
    return (*problem.ref.order, problem.message)


def _order(obj: SourceObject) -> tuple[str, str, str]:
    return obj.ref.order
