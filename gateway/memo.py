"""
A memo table that lives from one configuration build to the next.

Rebuilding a generation translates every source object and compiles every
route, although a change usually touches one object among thousands (one
Ingress, one API). The per-object work is pure, so its result can be
reused when the same (equal) input comes again. :class:`BuildMemo` keeps
the results used by the last build only: :meth:`BuildMemo.rotate` after a
build drops everything that build did not ask for, so the table never
holds more than one configuration's worth of results, and a removed
object's results go with it.

Used from the reactor thread only (no locking).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["BuildMemo", "remembered"]


class BuildMemo:
    """
    ``get(key, compute)``: the result of ``compute()`` for an equal key in
    this or the previous build, else ``compute()`` now.

    :ivar hits: results reused since construction (for tests and the bench).
    :ivar misses: results computed.
    """

    __slots__ = ("_previous", "_current", "hits", "misses")

    def __init__(self) -> None:
        self._previous: dict[Hashable, Any] = {}
        self._current: dict[Hashable, Any] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        current = self._current
        if key in current:
            self.hits += 1
            return current[key]  # type: ignore[no-any-return]
        previous = self._previous
        if key in previous:
            value = previous[key]
            self.hits += 1
        else:
            value = compute()
            self.misses += 1
        current[key] = value
        return value  # type: ignore[no-any-return]

    def get_for(self, obj: object, tag: str, compute: Callable[[], T]) -> T:
        """
        As :meth:`get`, keyed by ``obj``'s identity instead of its value:
        no hashing of deep frozen structures (a dataclass recomputes its hash
        on every call). The object is kept with the result, so its id stays
        unique while the entry lives. Sources keep unchanged objects
        identical across updates (:meth:`gateway.model.Store.replace_source`).
        """
        key = (tag, id(obj))
        current = self._current
        found = current.get(key)
        if found is None:
            found = self._previous.get(key)
        if found is not None and found[0] is obj:
            self.hits += 1
        else:
            found = (obj, compute())
            self.misses += 1
        current[key] = found
        return found[1]  # type: ignore[no-any-return]

    def rotate(self) -> None:
        """A build finished: keep what it used, forget the rest."""
        self._previous, self._current = self._current, {}

    def discard(self) -> None:
        """A build failed: forget what it computed, keep the last good build's results."""
        self._current = {}

    def __len__(self) -> int:
        return len(self._previous)


def remembered(
    memo: BuildMemo | None,
    obj: object,
    tag: str,
    compute: Callable[[], T],
    errors: tuple[type[Exception], ...] = (),
) -> T:
    """
    ``compute()``, reused through ``memo`` (keyed by ``obj``'s identity)
    when there is one. An exception of one of ``errors`` is the result too:
    it is remembered and raised again for the same object, so an invalid
    object is not validated again on every build.
    """
    if memo is None:
        return compute()

    def outcome() -> Any:
        try:
            return compute()
        except errors as e:
            return _Raised(e)

    result = memo.get_for(obj, tag, outcome)
    if isinstance(result, _Raised):
        raise result.error
    return result  # type: ignore[no-any-return]


class _Raised:
    """A remembered exception (distinct from any result a computation returns)."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error
