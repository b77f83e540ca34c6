"""
Redis when it answers, the local counters when it does not — with no
request failing because of Redis and no burst when it comes back.

While Redis decides, each admission it grants is also recorded in the local
counters (the *shadow*: one local ``add``, a microsecond). When a command
fails or times out, that request is decided by the local counters, and so
is every request after it (without asking Redis, so none waits for a
timeout) until Redis is back. The shadow means a replica's local limit
already counts what this replica was admitted in the open windows: a
single-replica deployment stays exact across an outage, and N replicas
admit at most N times their remaining share (the limit becomes local).

Local admissions made during the outage are also kept in a *journal* (a
second :class:`LocalCounters`, so it expires by itself). Going back to
Redis is a replay, then the switch:

1. read the namespace's epoch marker (created if missing: it is missing
   after Redis lost its data — restart without persistence, flush); the
   gateway remembers the marker it saw last;
2. if Redis kept its data (same marker), replay the journal (what Redis
   has not seen); if it lost it (another marker, or none remembered), replay
   the whole shadow (everything this replica admitted in windows still
   open, Redis-decided or not);
3. once every replayed ``add`` has landed, replay what was admitted
   locally meanwhile, and switch: Redis decides again.

The replay adds each admission at its original time (sliding windows: a
member with the original score; fixed windows: the count into the original
window, dropped if that window closed), so Redis's count when it decides
again includes everything admitted in the open windows: no burst. Replay
errs towards over-counting (a replay that fails half-way is repeated in
full; an admission whose reply was lost with the connection is counted by
Redis and locally), never towards over-admission. What it cannot undo:
two replicas that both admitted locally during the outage may together
have exceeded the limit already (that is "the limit becomes local"), and
between the first and the last replica's replay Redis does not yet know
the others' local admissions.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from twisted.application.internet import backoffPolicy
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._local import Entry, LocalCounters
from ._redis import RedisCounters
from ._verdict import Verdict

__all__ = ["FallbackCounters"]


class FallbackCounters:
    """
    :param redis: decides while it answers (started by this object).
    :param local: decides while Redis does not (the shadow).
    :param on_fallback: called once per request decided locally (the
        gateway counts ``apimgw_ratelimit_fallback_total``).
    """

    _log = Logger()

    def __init__(
        self,
        redis: RedisCounters,
        local: LocalCounters,
        on_fallback: Callable[[], None] = lambda: None,
    ) -> None:
        self._redis = redis
        self._local = local
        self._clock = local.clock
        self._on_fallback = on_fallback
        self._journal = LocalCounters(self._clock)
        self._redis_decides = True
        self._epoch: str | None = None
        self._policy = backoffPolicy(initialDelay=0.1, maxDelay=5.0, factor=2.0)
        self._attempts = 0
        self._retry: IDelayedCall | None = None
        self._recovering = False
        self._running = False
        redis.client.on_connected(self._connected)
        redis.client.on_lost(self._lost)

    @property
    def redis_decides(self) -> bool:
        """Redis decides (``False``: the local counters do, until the replay is done)."""
        return self._redis_decides

    def start(self) -> None:
        self._running = True
        self._redis.start()

    def stop(self) -> Deferred[None]:
        self._running = False
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        self._local.close()
        self._journal.close()
        return self._redis.stop()

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
    ) -> Verdict | Deferred[Verdict]:
        if not self._redis_decides:
            return self._take_locally(key, limit, period, amount, sliding, anchor)
        d = self._redis.take(key, limit, period, amount, sliding=sliding, anchor=anchor)

        def shadow(verdict: Verdict) -> Verdict:
            if verdict.admitted:
                self._local.add(key, amount, period, sliding=sliding, anchor=anchor)
            return verdict

        def fall_back(failure: Failure) -> Verdict:
            self._outage(failure)
            return self._take_locally(key, limit, period, amount, sliding, anchor)

        return d.addCallbacks(shadow, fall_back)

    def peek(
        self, key: str, limit: int, period: float, *, sliding: bool = True, anchor: float = 0.0
    ) -> Verdict | Deferred[Verdict]:
        if not self._redis_decides:
            self._on_fallback()
            return self._local.peek(key, limit, period, sliding=sliding, anchor=anchor)

        def fall_back(failure: Failure) -> Verdict:
            self._outage(failure)
            self._on_fallback()
            return self._local.peek(key, limit, period, sliding=sliding, anchor=anchor)

        d = self._redis.peek(key, limit, period, sliding=sliding, anchor=anchor)
        return d.addErrback(fall_back)

    def add(
        self, key: str, amount: int, period: float, *, sliding: bool = True, anchor: float = 0.0
    ) -> None:
        at = self._clock.seconds()
        self._local.add(key, amount, period, sliding=sliding, anchor=anchor)
        if not self._redis_decides:
            self._journal.record(key, amount, period, sliding=sliding, anchor=anchor, at=at)
            return

        def fall_back(failure: Failure) -> None:
            self._outage(failure)
            self._journal.record(key, amount, period, sliding=sliding, anchor=anchor, at=at)

        self._redis.add_at(key, amount, period, sliding=sliding, anchor=anchor).addErrback(fall_back)

    # -- outage and recovery ----------------------------------------------

    def _take_locally(
        self, key: str, limit: int, period: float, amount: int, sliding: bool, anchor: float
    ) -> Verdict:
        verdict = self._local.take(key, limit, period, amount, sliding=sliding, anchor=anchor)
        self._on_fallback()
        if verdict.admitted:
            self._journal.add(key, amount, period, sliding=sliding, anchor=anchor)
        return verdict

    def _outage(self, reason: Failure | Exception) -> None:
        if not self._redis_decides:
            return
        self._redis_decides = False
        message = reason.getErrorMessage() if isinstance(reason, Failure) else str(reason)
        self._log.warn(
            "Redis unavailable ({error}): rate limits and quotas are counted by this replica "
            "alone until it is back",
            error=message,
        )
        self._attempts = 0
        self._schedule()

    def _lost(self, reason: Exception) -> None:
        # Redis may come back empty: nothing may be decided there before
        # the epoch check and the replay.
        self._outage(reason)

    def _connected(self) -> None:
        if self._redis_decides and self._epoch is None:
            # First connection: learn the epoch (nothing to replay).
            self._redis.epoch(os.urandom(8).hex()).addCallbacks(self._first_epoch, lambda _: None)
            return
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        self._recover()

    def _first_epoch(self, epoch: str) -> None:
        if self._epoch is None:
            self._epoch = epoch

    def _schedule(self) -> None:
        if not self._running or self._retry is not None or self._redis_decides:
            return
        self._attempts += 1
        self._retry = self._clock.callLater(self._policy(self._attempts), self._recover)

    def _recover(self) -> None:
        self._retry = None
        if self._recovering or self._redis_decides or not self._running:
            return
        if not self._redis.client.connected:
            self._schedule()  # the client's own reconnection will call _connected
            return
        self._recovering = True
        d = self._redis.epoch(os.urandom(8).hex())
        d.addCallback(self._replay)
        d.addBoth(self._recovered)

    def _replay(self, epoch: str) -> Deferred[int]:
        # An unknown epoch (the first read raced the outage) counts as lost
        # data: replaying the whole shadow can only over-count.
        lost_data = epoch != self._epoch
        journal, self._journal = self._journal, LocalCounters(self._clock)
        entries = list((self._local if lost_data else journal).entries())

        def landed(_: object) -> Deferred[int] | int:
            self._epoch = epoch
            journal.clear()
            if len(self._journal):  # admitted locally while replaying: once more
                return self._replay(epoch).addCallback(lambda n: n + len(entries))
            self._redis_decides = True
            self._log.info(
                "Redis is back: replayed {count} local admissions ({what}); Redis decides again",
                count=len(entries),
                what="all open windows: Redis had lost its data" if lost_data else "the outage's",
            )
            return len(entries)

        def failed(failure: Failure) -> Failure:
            for e in journal.entries():  # keep them for the next attempt
                self._journal.record(
                    e.key, e.amount, e.period, sliding=e.sliding, anchor=e.anchor, at=e.at
                )
            journal.clear()
            return failure

        return gatherResults([self._add(e) for e in entries], consumeErrors=True).addCallbacks(
            landed, failed
        )

    def _add(self, e: Entry) -> Deferred[None]:
        return self._redis.add_at(
            e.key, e.amount, e.period, sliding=e.sliding, anchor=e.anchor, at=e.at
        )

    def _recovered(self, result: object) -> None:
        self._recovering = False
        if isinstance(result, Failure):
            self._schedule()
