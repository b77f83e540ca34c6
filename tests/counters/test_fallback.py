"""
:class:`FallbackCounters` with a real ``redis-server`` that is killed,
restarted, or drops its connections mid-load: no take fails, the fallback
is counted and logged once, and the replay keeps the counts exact.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks, maybeDeferred
from twisted.logger import globalLogPublisher

from gateway.counters import FallbackCounters, LocalCounters, RedisCounters, Verdict
from gateway.testing.redis import RedisServer
from gateway.testing.waiting import wait_for

from .test_redis import RedisTestCase

LIMIT = 100
PERIOD = 600.0


class FallbackTests(RedisTestCase):
    """Redis decides while it answers; the local counters when it does not."""

    def setUp(self) -> None:
        self.server = self.start_server()
        self.fallbacks = 0
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def gateway(self, namespace: str = "shared", timeout: float = 5.0) -> FallbackCounters:
        # A generous timeout by default: a loaded machine must not turn a
        # slow answer into a fallback; the frozen-Redis test sets a short one.
        redis = RedisCounters(reactor, self.server.url, namespace=namespace,
                              command_timeout=timeout)
        counters = FallbackCounters(redis, LocalCounters(reactor), self.count_fallback)
        counters.start()
        self.addCleanup(counters.stop)
        return counters

    def count_fallback(self) -> None:
        self.fallbacks += 1

    def logged(self, text: str) -> int:
        return sum(text in (e.get("log_format") or "") for e in self.events)

    @inlineCallbacks
    def takes(self, counters: FallbackCounters, n: int, **kw: Any) -> Generator[Any, Any, list[Verdict]]:
        kw = {"limit": LIMIT, "period": PERIOD, **kw}
        verdicts = yield gatherResults([maybeDeferred(counters.take, "k", **kw) for _ in range(n)])
        return verdicts

    @inlineCallbacks
    def redis_count(self, key: str = "apimgw:shared:s:600:k") -> Generator[Any, Any, int]:
        probe = RedisCounters(reactor, self.server.url)
        probe.start()
        try:
            count = yield probe.client.execute(b"ZCARD", key)
        finally:
            yield probe.stop()
        return count

    @inlineCallbacks
    def test_killed_mid_load_then_restarted(self) -> Generator[Any, Any, None]:
        """
        Redis killed with takes in flight: none fails, each is decided
        locally (on_fallback counts them), one outage line is logged; Redis
        restarted empty: the replay of every open window's admissions makes
        the total exactly the limit.
        """
        gw = self.gateway()
        yield gw._redis.client.when_connected()
        first = yield self.takes(gw, 30)
        self.assertEqual(sum(v.admitted for v in first), 30)
        self.assertEqual(self.fallbacks, 0)
        in_flight = [maybeDeferred(gw.take, "k", LIMIT, PERIOD) for _ in range(20)]
        self.server.kill()
        during = yield gatherResults(in_flight)
        more = yield self.takes(gw, 40)
        self.assertFalse(gw.redis_decides)
        self.assertEqual(self.fallbacks, 60)
        self.assertEqual(sum(v.admitted for v in first + during + more), 90)
        self.assertEqual(self.logged("Redis unavailable"), 1)

        self.server.start()  # empty: it lost the 30 it had counted
        yield wait_for(lambda: gw.redis_decides, what="Redis deciding again")
        self.assertEqual(self.logged("Redis is back"), 1)
        self.assertEqual((yield self.redis_count()), 90)
        after = yield self.takes(gw, 30)
        self.assertEqual(sum(v.admitted for v in after), 10)
        self.assertEqual(self.fallbacks, 60)
        self.assertEqual(self.logged("Redis unavailable"), 1)

    @inlineCallbacks
    def test_connection_dropped_redis_kept_its_data(self) -> Generator[Any, Any, None]:
        """Connections killed but data kept: only the outage's admissions are replayed (no double count)."""
        gw = self.gateway()
        yield gw._redis.client.when_connected()
        yield wait_for(lambda: gw._epoch is not None, what="the epoch learnt")
        yield self.takes(gw, 30)
        probe = RedisCounters(reactor, self.server.url)
        probe.start()
        self.addCleanup(probe.stop)
        yield probe.client.execute(b"CLIENT", b"KILL", b"ID", (yield gw._redis.client.execute(b"CLIENT", b"ID")))
        yield wait_for(lambda: not gw.redis_decides or self.fallbacks, what="the outage")
        local = yield self.takes(gw, 5)  # decided locally if before the reconnection
        yield wait_for(lambda: gw.redis_decides, what="Redis deciding again")
        self.assertEqual((yield self.redis_count()), 35)
        after = yield self.takes(gw, 100)
        self.assertEqual(sum(v.admitted for v in after), 65)
        self.assertEqual(sum(v.admitted for v in local), 5)

    @inlineCallbacks
    def test_two_gateways_recover_without_a_burst(self) -> Generator[Any, Any, None]:
        """
        Two gateways, Redis restarted empty: each replays what it admitted
        in the open window, so Redis counts both and admits nothing more
        (the outage's local limits are what exceeded the limit, nothing after).
        """
        a, b = self.gateway(), self.gateway()
        yield gatherResults([a._redis.client.when_connected(), b._redis.client.when_connected()])
        yield self.takes(a, 30)
        yield self.takes(b, 30)
        self.server.kill()
        local_a = yield self.takes(a, 100)
        local_b = yield self.takes(b, 10)
        self.assertEqual(sum(v.admitted for v in local_a), 70)  # its shadow counted its 30
        self.assertEqual(sum(v.admitted for v in local_b), 10)
        self.server.start()
        yield wait_for(lambda: a.redis_decides and b.redis_decides, what="both back on Redis")
        self.assertEqual((yield self.redis_count()), 140)
        after = yield gatherResults([maybeDeferred(g.take, "k", LIMIT, PERIOD) for g in (a, b)])
        self.assertFalse(any(v.admitted for v in after))

    @inlineCallbacks
    def test_fixed_windows_replayed(self) -> Generator[Any, Any, None]:
        """A quota counted locally during the outage is added to Redis's window on recovery."""
        gw = self.gateway()
        yield gw._redis.client.when_connected()
        yield self.takes(gw, 10, sliding=False, anchor=0.0)
        self.server.kill()
        yield self.takes(gw, 5, sliding=False, anchor=0.0)
        gw.add("k", 7, PERIOD, sliding=False)
        self.server.start()
        yield wait_for(lambda: gw.redis_decides, what="Redis deciding again")
        verdict = yield gw.peek("k", LIMIT, PERIOD, sliding=False)
        self.assertEqual(verdict.count, 22)

    @inlineCallbacks
    def test_unresponsive_redis_times_out(self) -> Generator[Any, Any, None]:
        """
        Redis frozen (SIGSTOP): the takes waiting on it are decided locally
        after the command timeout, later ones at once; thawed, Redis decides
        again with the outage's admissions replayed (it kept its data); the
        timed-out commands may also have run: over-counted, never lost.
        """
        import os
        import signal

        gw = self.gateway(timeout=0.5)
        yield gw._redis.client.when_connected()
        yield wait_for(lambda: gw._epoch is not None, what="the epoch learnt")
        yield self.takes(gw, 10)
        assert self.server.process is not None
        pid = self.server.process.pid
        os.kill(pid, signal.SIGSTOP)
        self.addCleanup(lambda: os.kill(pid, signal.SIGCONT) if self.server.process else None)
        # They resolve at all (the test's own timeout would catch a hang).
        frozen = yield self.takes(gw, 20)
        self.assertEqual(sum(v.admitted for v in frozen), 20)
        self.assertEqual(self.fallbacks, 20)
        now = gw.take("k", LIMIT, PERIOD)
        self.assertIsInstance(now, Verdict)  # no Redis round trip during the outage
        os.kill(pid, signal.SIGCONT)
        yield wait_for(lambda: gw.redis_decides, what="Redis deciding again")
        # 10 + 20 + 1 admitted. The 20 timed-out takes were in Redis's
        # socket buffer and may have run when it thawed: counted twice
        # (over-counting, the safe side), never lost.
        count = yield self.redis_count()
        self.assertTrue(31 <= count <= 51, count)
        self.assertEqual(self.logged("Redis unavailable"), 1)
