"""
One-shot readiness: "tell me when this has happened", for any number of
callers, before or after it happened.

Sources (``when_synced``), the reconciler (``when_live``), the echo backend
(``when_listening``) and the proxy (``when_idle``) all answer the same
question; :class:`OneShot` is the one place that answers it, so that none
of them keeps its own list of waiting Deferreds.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

__all__ = ["OneShot"]

T = TypeVar("T")


class OneShot(Generic[T]):
    """
    A result that arrives once (a value or a failure); :meth:`when` gives
    each caller its own Deferred for it.

    Each caller gets a *new* Deferred, so one caller's callbacks never
    change what another one receives, and cancelling one only stops waiting
    for that caller. The first :meth:`fire` or :meth:`fail` decides; later
    ones are ignored until :meth:`reset` (a service that stops and starts
    again waits anew).
    """

    def __init__(self) -> None:
        self._waiting: list[Deferred[T]] = []
        self._done = False
        self._value: T | None = None
        self._failure: Failure | None = None

    @property
    def done(self) -> bool:
        """Whether the result has arrived."""
        return self._done

    def when(self) -> Deferred[T]:
        """
        A new Deferred that fires with the result: at once if it has
        arrived, else when it does. Cancelling it removes only this waiter.
        """
        if self._done:
            if self._failure is not None:
                return fail(self._failure)
            return succeed(self._value)  # type: ignore[arg-type]
        waiting: Deferred[T] = Deferred(self._waiting.remove)
        self._waiting.append(waiting)
        return waiting

    def fire(self, value: T) -> None:
        """Deliver ``value`` to every waiter (the first result only counts)."""
        if self._done:
            return
        self._done, self._value = True, value
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(value)

    def fail(self, failure: Failure | BaseException) -> None:
        """Deliver a failure to every waiter (the first result only counts)."""
        if self._done:
            return
        reason = failure if isinstance(failure, Failure) else Failure(failure)
        self._done, self._failure = True, reason
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(reason)

    def reset(self) -> None:
        """Forget the result: later callers wait for the next one."""
        self._done, self._value, self._failure = False, None, None
