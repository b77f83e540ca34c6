"""
Tests for the supervisor's rollout, scrapes and bookkeeping, with the
workers' channels replaced by recorders (the processes themselves are
exercised in tests/integration/test_workers.py).
"""

from __future__ import annotations

import pickle
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gateway.model import ObjectRef, Problem, Route, RouteSet, SourceObject, Store
from gateway.workers import Applied, Scrape, Scraped, Snapshot, WorkerPool, snapshot_of
from gateway.workers._channel import Channel


class Recorder(Channel):
    """A channel that records what the pool sends."""

    def __init__(self) -> None:
        super().__init__(lambda m: None, lambda: None)
        self.sent: list[Any] = []

    def send(self, message: Any) -> None:
        self.sent.append(message)

    def send_encoded(self, data: bytes) -> None:
        self.sent.append(pickle.loads(data[4:]))


def pool_with_channels(count: int = 2) -> tuple[WorkerPool, Clock, list[Recorder]]:
    clock = Clock()
    pool = WorkerPool(clock, count, {}, lambda i, fds: None, rollout_timeout=30)  # type: ignore[arg-type,return-value]
    channels: list[Recorder] = []
    for worker in pool.workers:
        worker.channel = channels_append(channels)
        worker.process = object()
    return pool, clock, channels


def channels_append(channels: list[Recorder]) -> Recorder:
    channel = Recorder()
    channels.append(channel)
    return channel


class RolloutTests(SynchronousTestCase):
    def test_one_worker_at_a_time(self) -> None:
        """A snapshot goes to worker 1, and to worker 2 only once worker 1 has applied it."""
        pool, _, (one, two) = pool_with_channels()
        pool.publish(Snapshot(1))
        self.assertEqual((one.sent, two.sent), ([Snapshot(1)], []))
        pool._received(pool.workers[0], Applied(1, 1))
        self.assertEqual(two.sent, [Snapshot(1)])
        rolled = pool.when_rolled_out()
        self.assertNoResult(rolled)
        pool._received(pool.workers[1], Applied(1, 1))
        self.successResultOf(rolled)

    def test_newer_snapshot_during_a_rollout_replaces_the_older(self) -> None:
        """Snapshots published while one worker builds are coalesced: the next worker gets only the newest."""
        pool, _, (one, two) = pool_with_channels()
        pool.publish(Snapshot(1))
        pool.publish(Snapshot(2))
        pool.publish(Snapshot(3))
        self.assertEqual(one.sent, [Snapshot(1)])
        pool._received(pool.workers[0], Applied(1, 1))
        self.assertEqual(two.sent, [Snapshot(3)])
        pool._received(pool.workers[1], Applied(3, 1))
        self.assertEqual(one.sent, [Snapshot(1), Snapshot(3)])

    def test_a_silent_worker_holds_no_one_back(self) -> None:
        """A worker that never acknowledges is passed over after the rollout timeout."""
        pool, clock, (_one, two) = pool_with_channels()
        pool.publish(Snapshot(1))
        clock.advance(29)
        self.assertEqual(two.sent, [])
        clock.advance(2)
        self.assertEqual(two.sent, [Snapshot(1)])

    def test_a_worker_without_channel_is_skipped(self) -> None:
        """A dead worker (being restarted) does not receive the rollout; it gets the latest at its start."""
        pool, _, (one, two) = pool_with_channels()
        pool.workers[0].channel = None
        pool.publish(Snapshot(1))
        self.assertEqual((one.sent, two.sent), ([], [Snapshot(1)]))


class ScrapeTests(SynchronousTestCase):
    def test_texts_of_the_workers_that_answer(self) -> None:
        """A scrape asks every worker; one that does not answer in time is left out."""
        pool, clock, (one, two) = pool_with_channels()
        d = pool.scrape()
        (ask_one,), (ask_two,) = one.sent, two.sent
        self.assertIsInstance(ask_one, Scrape)
        pool._received(pool.workers[0], Scraped(ask_one.request, b"a 1.0\n"))
        self.assertNoResult(d)
        clock.advance(pool.scrape_timeout)
        self.assertEqual(self.successResultOf(d), [b"a 1.0\n"])
        # A late answer is ignored.
        pool._received(pool.workers[1], Scraped(ask_two.request, b"b 1.0\n"))


class BookkeepingTests(SynchronousTestCase):
    def test_snapshot_of_a_store(self) -> None:
        """The store's objects and problems, grouped by source."""
        store = Store()
        route = SourceObject(
            ObjectRef("file", "routes", "routes"),
            1.0,
            RouteSet((Route(path="/a", backend="http://127.0.0.1:9"),)),
        )
        store.upsert(route)
        problem = Problem(ObjectRef("cloud", "api", "x"), "broken")
        store.report(problem.ref, [problem])
        snapshot = snapshot_of(store, 4)
        self.assertEqual(snapshot, Snapshot(4, {"file": (route,)}, {"cloud": (problem,)}))

    def test_status_and_metrics(self) -> None:
        """/config lists each worker; the collector counts live workers and restarts."""
        pool, _, _ = pool_with_channels()
        pool.workers[1].process = None
        pool.workers[1].restarts = 2
        status = pool.status()
        self.assertEqual([w["index"] for w in status], [1, 2])
        self.assertIsNone(status[1]["pid"])
        families = {f.name: f for f in pool.collect()}
        self.assertEqual(families["apimgw_workers"].samples[0].value, 1)
        restarts = {s.labels["worker"]: s.value for s in families["apimgw_worker_restarts"].samples if s.name.endswith("_total")}
        self.assertEqual(restarts, {"1": 0, "2": 2})


class ReadinessTests(SynchronousTestCase):
    def test_ready_once_a_worker_serves(self) -> None:
        """The supervisor's readiness waits for a worker's acknowledged generation, and again when none is left."""
        from gateway.observability import Health

        health = Health()
        health.generation = 1
        pool, _, _ = pool_with_channels()
        pool.health = health
        pool._update_readiness()
        self.assertFalse(health.ready)
        self.assertIn("workers", health.describe())
        pool.publish(Snapshot(1))
        pool._received(pool.workers[0], Applied(1, 1))
        self.assertTrue(health.ready)
        for worker in pool.workers:
            worker.process = None
        pool._update_readiness()
        self.assertFalse(health.ready)
