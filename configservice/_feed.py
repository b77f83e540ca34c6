"""
Waking long polls: a Deferred per waiting request, fired when a commit
concerns its gateway, or with ``False`` when its wait is over.

The feed knows nothing of the database: the store tells it, after each
commit, the new revision and who the events were for. A waiter states the
revision it has already seen, so a commit that slipped in between its read
and its wait is not missed.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall

from ._changes import Commit

__all__ = ["ChangeFeed"]


class _Waiter:
    def __init__(self, gateway_id: str, seen: int) -> None:
        self.gateway_id = gateway_id
        self.seen = seen
        self.deferred: Deferred[bool] = Deferred(self._cancel)
        self.timer: IDelayedCall | None = None
        self.feed: "ChangeFeed | None" = None

    def _cancel(self, _: Deferred[bool]) -> None:
        if self.feed is not None:
            self.feed._forget(self)

    def fire(self, woken: bool) -> None:
        if self.feed is not None:
            self.feed._forget(self)
        if not self.deferred.called:
            self.deferred.callback(woken)


class ChangeFeed:
    """
    :param clock: schedules the end of each wait (``callLater``).
    """

    def __init__(self, clock: Any) -> None:
        self._clock = clock
        self._waiters: dict[str, set[_Waiter]] = {}
        self._latest: dict[str, int] = {}
        self._latest_everyone = 0

    def waiting(self, gateway_id: str | None = None) -> int:
        """How many requests wait (for one gateway, or in all)."""
        if gateway_id is not None:
            return len(self._waiters.get(gateway_id, ()))
        return sum(len(waiters) for waiters in self._waiters.values())

    def _latest_for(self, gateway_id: str) -> int:
        return max(self._latest.get(gateway_id, 0), self._latest_everyone)

    def wait(self, gateway_id: str, seen: int, timeout: float) -> Deferred[bool]:
        """
        Fires with ``True`` once a commit after revision ``seen`` concerns
        ``gateway_id`` (at once if one already did), with ``False`` after
        ``timeout`` seconds. Cancelling it stops the wait (the client went
        away).
        """
        if self._latest_for(gateway_id) > seen:
            return succeed(True)
        if timeout <= 0:
            return succeed(False)
        waiter = _Waiter(gateway_id, seen)
        waiter.feed = self
        waiter.timer = self._clock.callLater(timeout, waiter.fire, False)
        self._waiters.setdefault(gateway_id, set()).add(waiter)
        return waiter.deferred

    def _forget(self, waiter: _Waiter) -> None:
        waiter.feed = None
        if waiter.timer is not None and waiter.timer.active():
            waiter.timer.cancel()
        waiter.timer = None
        waiters = self._waiters.get(waiter.gateway_id)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del self._waiters[waiter.gateway_id]

    def notify(self, commit: Commit) -> None:
        """A write committed: wake those it concerns."""
        target = commit.audience
        if target.everyone:
            self._latest_everyone = max(self._latest_everyone, commit.revision)
            gateways = list(self._waiters)
        else:
            for gateway_id in target.gateways:
                self._latest[gateway_id] = max(self._latest.get(gateway_id, 0), commit.revision)
            gateways = [g for g in target.gateways if g in self._waiters]
        for gateway_id in gateways:
            for waiter in list(self._waiters.get(gateway_id, ())):
                if commit.revision > waiter.seen:
                    waiter.fire(True)

    def close(self) -> None:
        """Answer every wait now (shutdown): the clients poll again elsewhere."""
        for waiters in list(self._waiters.values()):
            for waiter in list(waiters):
                waiter.fire(False)
