"""
Counters in this process: exact, synchronous, and bounded in memory.

Used alone when no Redis is configured (each replica then has its own
limits), and by :class:`~gateway.counters.FallbackCounters` as the shadow
that decides while Redis is away. It answers with a :class:`Verdict`, never
a Deferred, because this is the hot path and a Deferred per request is
measurable.

Sliding windows are exact: each counter keeps a deque of ``(time, amount)``
admissions, pruned from the left as they leave the window. Because refused
calls are not counted, a ``take``-only counter holds at most ``limit``
entries (``add`` may append more: one per call within the window).
Fixed windows keep ``[window index, count, last time]``.

Memory is bounded by expiry: a counter whose window holds nothing any more
is dropped by a sweep that runs every ``sweep_interval`` seconds on the
injected clock while counters exist (never per request, never when empty).
Fixed counters with ``period == 0`` never expire: they are bounded by the
number of distinct keys.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from typing import NamedTuple

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from ._verdict import NEVER, Verdict

__all__ = ["Entry", "LocalCounters"]


class Entry(NamedTuple):
    """One recorded amount of one counter, as :meth:`LocalCounters.entries` lists it (for replay)."""

    key: str
    period: float
    sliding: bool
    anchor: float
    at: float
    amount: int


class _Sliding:
    __slots__ = ("log", "count", "last")

    def __init__(self) -> None:
        self.log: deque[tuple[float, int]] = deque()
        self.count = 0
        self.last = 0.0


class _Fixed:
    __slots__ = ("window", "count", "last", "anchor")

    def __init__(self, window: int, anchor: float) -> None:
        self.window = window
        self.count = 0
        self.last = 0.0
        self.anchor = anchor


def _window(now: float, period: float, anchor: float) -> int:
    return math.floor((now - anchor) / period) if period > 0 else 0


class LocalCounters:
    """
    In-process counters on ``clock`` (an ``IReactorTime``).

    :param sweep_interval: seconds between sweeps of expired counters.
    """

    def __init__(self, clock: IReactorTime, *, sweep_interval: float = 10.0) -> None:
        self._clock = clock
        self._sweep_interval = sweep_interval
        self._sliding: dict[tuple[str, float], _Sliding] = {}
        self._fixed: dict[tuple[str, float], _Fixed] = {}
        self._sweep: IDelayedCall | None = None

    @property
    def clock(self) -> IReactorTime:
        return self._clock

    def __len__(self) -> int:
        """How many counters are held (expired ones until the next sweep)."""
        return len(self._sliding) + len(self._fixed)

    # -- the Counters interface -------------------------------------------

    def take(
        self,
        key: str,
        limit: int,
        period: float,
        amount: int = 1,
        *,
        sliding: bool = True,
        anchor: float = 0.0,
    ) -> Verdict:
        now = self._clock.seconds()
        if sliding:
            return self._sliding_check(key, limit, period, amount, now, True)
        return self._fixed_check(key, limit, period, amount, anchor, now, True)

    def peek(
        self, key: str, limit: int, period: float, *, sliding: bool = True, anchor: float = 0.0
    ) -> Verdict:
        now = self._clock.seconds()
        if sliding:
            return self._sliding_check(key, limit, period, 1, now, False)
        return self._fixed_check(key, limit, period, 1, anchor, now, False)

    def add(
        self, key: str, amount: int, period: float, *, sliding: bool = True, anchor: float = 0.0
    ) -> None:
        self.record(key, amount, period, sliding=sliding, anchor=anchor, at=self._clock.seconds())

    # -- replay support ----------------------------------------------------

    def record(
        self,
        key: str,
        amount: int,
        period: float,
        *,
        sliding: bool = True,
        anchor: float = 0.0,
        at: float,
    ) -> None:
        """
        Add ``amount`` as if at time ``at`` (not before the counter's last
        record: sliding logs stay in time order). Fixed windows drop an
        amount recorded for a window older than the counter's current one.
        """
        if sliding:
            counter = self._sliding.get((key, period))
            if counter is None:
                counter = self._sliding[(key, period)] = _Sliding()
                self._arm()
            at = max(at, counter.last)
            # Drop what left the window, as a check would: a counter only
            # ever recorded into (the shadow of Redis's, while Redis decides)
            # must not grow with every call.
            log = counter.log
            horizon = at - period
            while log and log[0][0] <= horizon:
                counter.count -= log.popleft()[1]
            log.append((at, amount))
            counter.count += amount
            counter.last = at
            return
        window = _window(at, period, anchor)
        fixed = self._fixed.get((key, period))
        if fixed is None:
            fixed = self._fixed[(key, period)] = _Fixed(window, anchor)
            self._arm()
        elif fixed.window != window or fixed.anchor != anchor:
            if fixed.window > window and fixed.anchor == anchor:
                return
            fixed.window, fixed.anchor, fixed.count = window, anchor, 0
        fixed.count += amount
        fixed.last = at

    def entries(self) -> Iterator[Entry]:
        """What every counter holds in windows still open, oldest first per counter."""
        now = self._clock.seconds()
        for (key, period), s in list(self._sliding.items()):
            horizon = now - period
            for at, amount in s.log:
                if at > horizon:
                    yield Entry(key, period, True, 0.0, at, amount)
        for (key, period), f in list(self._fixed.items()):
            if f.count and f.window == _window(now, period, f.anchor):
                yield Entry(key, period, False, f.anchor, f.last, f.count)

    def clear(self) -> None:
        """Forget every counter (and stop sweeping)."""
        self._sliding.clear()
        self._fixed.clear()
        self.close()

    def close(self) -> None:
        """Stop the sweep timer (the counters stay usable and re-arm it)."""
        if self._sweep is not None and self._sweep.active():
            self._sweep.cancel()
        self._sweep = None

    # -- internals ---------------------------------------------------------

    def _sliding_check(
        self, key: str, limit: int, period: float, amount: int, now: float, take: bool
    ) -> Verdict:
        counter = self._sliding.get((key, period))
        count = 0
        if counter is not None:
            log = counter.log
            horizon = now - period
            while log and log[0][0] <= horizon:
                counter.count -= log.popleft()[1]
            count = counter.count
        if (count < limit) if not take else (count + amount <= limit):
            if not take:
                return Verdict(True, count, limit - count, 0.0)
            if counter is None:
                counter = self._sliding[(key, period)] = _Sliding()
                self._arm()
            counter.log.append((now, amount))
            counter.last = now
            count = counter.count = count + amount
            return Verdict(True, count, limit - count, 0.0)
        if amount > limit:
            return Verdict(False, count, max(0, limit - count), NEVER)
        # The admission that must leave the window before `amount` fits.
        need = count + amount - limit
        assert counter is not None
        for at, n in counter.log:
            need -= n
            if need <= 0:
                return Verdict(False, count, max(0, limit - count), at + period - now)
        return Verdict(False, count, max(0, limit - count), period)  # pragma: no cover

    def _fixed_check(
        self,
        key: str,
        limit: int,
        period: float,
        amount: int,
        anchor: float,
        now: float,
        take: bool,
    ) -> Verdict:
        window = math.floor((now - anchor) / period) if period > 0 else 0
        counter = self._fixed.get((key, period))
        count = 0
        if counter is not None and counter.window == window and counter.anchor == anchor:
            count = counter.count
        if (count < limit) if not take else (count + amount <= limit):
            if not take:
                return Verdict(True, count, limit - count, 0.0)
            if counter is None:
                counter = self._fixed[(key, period)] = _Fixed(window, anchor)
                self._arm()
            elif counter.window != window or counter.anchor != anchor:
                counter.window, counter.anchor = window, anchor
            count = counter.count = count + amount
            counter.last = now
            return Verdict(True, count, limit - count, 0.0)
        if amount > limit or period <= 0:
            retry = NEVER
        else:
            retry = anchor + (window + 1) * period - now
        return Verdict(False, count, max(0, limit - count), retry)

    def _arm(self) -> None:
        if self._sweep is None:
            self._sweep = self._clock.callLater(self._sweep_interval, self._expire)

    def _expire(self) -> None:
        """Drop the counters whose windows hold nothing any more."""
        self._sweep = None
        now = self._clock.seconds()
        for k, s in list(self._sliding.items()):
            if s.last + k[1] <= now:
                del self._sliding[k]
        for k, f in list(self._fixed.items()):
            period = k[1]
            if period > 0 and f.anchor + (f.window + 1) * period <= now:
                del self._fixed[k]
        if self._sliding or any(k[1] > 0 for k in self._fixed):
            self._arm()
