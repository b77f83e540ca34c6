"""
Tests for the supervisor's rollout, scrapes and bookkeeping, with the
workers' channels replaced by recorders (the processes themselves are
exercised in tests/integration/test_workers.py).
"""

from __future__ import annotations

import pickle
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.error import ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gateway.model import ObjectRef, Problem, Route, RouteSet, SourceObject, Store
from gateway.observability import GatewayMetrics
from gateway.workers import (
    Applied,
    Changes,
    Scrape,
    Scraped,
    StoreState,
    WorkerPool,
    merge_expositions,
)
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


def pool_with_channels(count: int = 2, *, serving: bool = True) -> tuple[WorkerPool, Clock, list[Recorder]]:
    """
    A pool whose workers are live; ``serving``: each already serves a
    generation (a worker that serves nothing gets configurations at once,
    not one worker at a time).
    """
    clock = Clock()
    pool = WorkerPool(clock, count, {}, lambda i, fds: None, rollout_timeout=30)  # type: ignore[arg-type,return-value]
    channels: list[Recorder] = []
    for worker in pool.workers:
        worker.channel = channels_append(channels)
        worker.process = object()
        worker.generation = 1 if serving else 0
    return pool, clock, channels


def channels_append(channels: list[Recorder]) -> Recorder:
    channel = Recorder()
    channels.append(channel)
    return channel


def samples(text: bytes) -> dict[Any, float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def route_object(source: str, path: str) -> SourceObject:
    return SourceObject(
        ObjectRef(source, "routes", "routes"),
        1.0,
        RouteSet((Route(path=path, backend="http://127.0.0.1:9"),)),
    )


class RolloutTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.store = Store()
        self.version = 0

    def change(self, pool: WorkerPool, source: str, path: str) -> None:
        """The supervisor's store changes and its reconciler swaps."""
        self.store.upsert(route_object(source, path))
        self.version += 1
        pool.publish(self.store, self.version)

    def versions(self, channel: Recorder) -> list[int]:
        return [m.version for m in channel.sent]

    def test_one_worker_at_a_time(self) -> None:
        """Changes go to worker 1, and to worker 2 only once worker 1 has applied them."""
        pool, _, (one, two) = pool_with_channels()
        self.change(pool, "file", "/a")
        self.assertEqual((self.versions(one), self.versions(two)), ([1], []))
        pool._received(pool.workers[0], Applied(1, 1))
        self.assertEqual(self.versions(two), [1])
        rolled = pool.when_rolled_out()
        self.assertNoResult(rolled)
        pool._received(pool.workers[1], Applied(1, 1))
        self.successResultOf(rolled)

    def test_only_changed_objects_cross(self) -> None:
        """A worker's first Changes hold everything; later ones only what changed since, and removals."""
        pool, _, (one,) = pool_with_channels(1)
        self.change(pool, "file", "/a")
        pool._received(pool.workers[0], Applied(1, 1))
        self.change(pool, "cloud", "/c")
        pool._received(pool.workers[0], Applied(2, 2))
        self.change(pool, "cloud", "/d")
        pool._received(pool.workers[0], Applied(3, 3))
        self.store.delete(ObjectRef("cloud", "routes", "routes"))
        self.version += 1
        pool.publish(self.store, self.version)
        sent = [
            (m.version, [(o.ref.source, o.body.routes[0].path) for o in m.upserts], m.removed)
            for m in one.sent
        ]
        self.assertEqual(
            sent,
            [
                (1, [("file", "/a")], ()),
                (2, [("cloud", "/c")], ()),
                (3, [("cloud", "/d")], ()),
                (4, [], (ObjectRef("cloud", "routes", "routes"),)),
            ],
        )

    def test_newer_change_during_a_rollout_is_coalesced(self) -> None:
        """Swaps published while one worker builds are coalesced: the next worker gets only the newest state."""
        pool, _, (one, two) = pool_with_channels()
        self.change(pool, "file", "/a")
        self.change(pool, "file", "/b")
        self.change(pool, "file", "/c")
        self.assertEqual(self.versions(one), [1])
        pool._received(pool.workers[0], Applied(1, 1))
        self.assertEqual(self.versions(two), [3])
        self.assertEqual(two.sent[0].upserts[0].body.routes[0].path, "/c")
        pool._received(pool.workers[1], Applied(3, 1))
        self.assertEqual(self.versions(one), [1, 3])

    def test_a_silent_worker_holds_no_one_back(self) -> None:
        """A worker that never acknowledges is passed over after the rollout timeout."""
        pool, clock, (_one, two) = pool_with_channels()
        self.change(pool, "file", "/a")
        clock.advance(29)
        self.assertEqual(two.sent, [])
        clock.advance(2)
        self.assertEqual(self.versions(two), [1])

    def test_a_worker_without_channel_is_skipped(self) -> None:
        """A dead worker (being restarted) does not receive the rollout; it gets the latest at its start."""
        pool, _, (one, two) = pool_with_channels()
        pool.workers[0].channel = None
        self.change(pool, "file", "/a")
        self.assertEqual((one.sent, self.versions(two)), ([], [1]))


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

    def test_merged_counters_never_go_down(self) -> None:
        """
        Scrape 1: both workers answer. Scrape 2: worker 2 is late (its last
        answer stands in). Scrape 3: worker 2 died and its successor counts
        from 0 (the dead one's counts are kept as the slot's offset). Every
        merged counter, histogram bucket, count and sum is non-decreasing,
        and the totals are what all processes counted; a dead worker's
        gauges drop out.
        """
        pool, clock, channels = pool_with_channels()
        one, two = GatewayMetrics(), GatewayMetrics()

        def scrape(answers: dict[int, GatewayMetrics]) -> dict[Any, float]:
            d = pool.scrape()
            for index, metrics in answers.items():
                request = channels[index].sent[-1].request
                pool._received(pool.workers[index], Scraped(request, generate_latest(metrics.registry)))
            clock.advance(pool.scrape_timeout)
            texts: list[bytes] = self.successResultOf(d)
            return samples(merge_expositions(texts))

        one.observe_request("echo", "GET", 200, 0.001)
        two.observe_request("echo", "GET", 200, 0.003)
        two.in_flight.inc(5)
        first = scrape({0: one, 1: two})
        one.observe_request("echo", "GET", 200, 0.001)
        two.observe_request("echo", "GET", 200, 0.003)  # counted, but worker 2 is late
        second = scrape({0: one})
        # Worker 2 dies (its last scrape is all the supervisor knows of
        # it) and is restarted: a new process, a new registry.
        pool._ended(pool.workers[1], Failure(ProcessTerminated(signal=9)))
        self.flushLoggedErrors()
        channels[1] = Recorder()
        pool.workers[1].channel, pool.workers[1].process = channels[1], object()
        restarted = GatewayMetrics()
        restarted.observe_request("echo", "GET", 200, 0.003)
        third = scrape({0: one, 1: restarted})

        cumulative = [
            key for key in third if key[0].startswith(("apimgw_requests_total", "apimgw_request_duration_seconds"))
        ]
        self.assertTrue(cumulative)
        for key in cumulative:
            self.assertLessEqual(first.get(key, 0.0), second[key], key)
            self.assertLessEqual(second[key], third[key], key)
        ok = ("apimgw_requests_total", (("method", "GET"), ("route", "echo"), ("status_class", "2xx")))
        # 1 + 1 (worker 1), 1 (worker 2's last answer: its second request
        # was never scraped), 1 (its successor).
        self.assertEqual((first[ok], second[ok], third[ok]), (2.0, 3.0, 4.0))
        in_flight = ("apimgw_requests_in_flight", ())
        self.assertEqual((first[in_flight], second[in_flight], third[in_flight]), (5.0, 5.0, 0.0))


class BookkeepingTests(SynchronousTestCase):
    def test_store_state_and_changes(self) -> None:
        """A store's objects by ref and problems by source; changes against what a worker holds, by identity."""
        store = Store()
        route = route_object("file", "/a")
        store.upsert(route)
        problem = Problem(ObjectRef("cloud", "api", "x"), "broken")
        store.report(problem.ref, [problem])
        state = StoreState.of(store, 4)
        self.assertEqual(state.objects, {route.ref: route})
        self.assertEqual(state.problems, {"cloud": (problem,)})
        self.assertEqual(state.changes_since({}), Changes(4, (route,), (), {"cloud": (problem,)}))
        self.assertEqual(state.changes_since({route.ref: route}).upserts, ())
        equal_but_other = route_object("file", "/a")
        self.assertEqual(state.changes_since({route.ref: equal_but_other}).upserts, (route,))
        gone = ObjectRef("file", "api", "gone")
        self.assertEqual(state.changes_since({gone: route}).removed, (gone,))

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
    def test_ready_once_every_worker_serves(self) -> None:
        """
        The first configuration goes to every worker at once, and the
        supervisor's readiness waits until every live worker acknowledged
        a generation (one serving is not enough: the other's socket still
        takes connections); later, a worker restarting does not take the
        gateway out of rotation, none left serving does.
        """
        from gateway.observability import Health

        health = Health()
        health.generation = 1
        pool, _, (one, two) = pool_with_channels(serving=False)
        pool.health = health
        pool._update_readiness()
        self.assertFalse(health.ready)
        self.assertIn("workers", health.describe())
        pool.publish(Store(), 1)
        self.assertEqual(([m.version for m in one.sent], [m.version for m in two.sent]), ([1], [1]))
        pool._received(pool.workers[0], Applied(1, 1))
        self.assertFalse(health.ready)
        self.assertIn("1 of 2 worker processes serve no configuration yet", health.describe())
        pool._received(pool.workers[1], Applied(1, 1))
        self.assertTrue(health.ready)
        # Worker 2 restarting: still ready.
        pool.workers[1].generation = 0
        pool._update_readiness()
        self.assertTrue(health.ready)
        for worker in pool.workers:
            worker.process = None
        pool._update_readiness()
        self.assertFalse(health.ready)

    def test_a_dead_worker_does_not_hold_readiness_back(self) -> None:
        """Only live workers count: one that died before its first configuration is not waited for."""
        from gateway.observability import Health

        health = Health()
        health.generation = 1
        pool, _, _ = pool_with_channels(serving=False)
        pool.health = health
        pool.publish(Store(), 1)
        pool.workers[1].process = None
        pool._received(pool.workers[0], Applied(1, 1))
        self.assertTrue(health.ready)


class FailedBuildTests(SynchronousTestCase):
    def test_a_failed_build_is_retried_with_the_whole_state(self) -> None:
        """
        ``Applied(failed=True)``: the worker's version does not advance, the
        failure is logged once, and after a delay the worker is sent the
        whole state again (not an empty diff); the rollout to the others
        goes on meanwhile, and is complete only once the retry applied.
        """
        pool, clock, (one, two) = pool_with_channels()
        store = Store()
        store.upsert(route_object("file", "/a"))
        pool.publish(store, 1)
        pool._received(pool.workers[0], Applied(1, 1))
        pool._received(pool.workers[1], Applied(1, 1))
        store.upsert(route_object("file", "/b"))
        pool.publish(store, 2)
        rolled = pool.when_rolled_out()
        pool._received(pool.workers[0], Applied(2, 1, failed=True))
        self.assertEqual(pool.workers[0].version, 1)
        self.assertEqual(pool.status()[0]["applied"], 1)
        # Worker 2 is not held back.
        self.assertEqual([m.version for m in two.sent], [1, 2])
        pool._received(pool.workers[1], Applied(2, 2))
        self.assertEqual(len(one.sent), 2)
        self.assertNoResult(rolled)
        clock.advance(pool.retry_delay)
        self.assertEqual(len(one.sent), 3)
        resent = one.sent[-1]
        self.assertEqual((resent.version, len(resent.upserts)), (2, 1))
        # It fails again: not logged again, retried after a longer delay.
        pool._received(pool.workers[0], Applied(2, 1, failed=True))
        clock.advance(pool.retry_delay)
        self.assertEqual(len(one.sent), 3)
        clock.advance(pool.retry_delay)
        self.assertEqual(len(one.sent), 4)
        pool._received(pool.workers[0], Applied(2, 2))
        self.assertEqual(pool.workers[0].version, 2)
        self.successResultOf(rolled)

    def test_failure_logged_once(self) -> None:
        """Repeated failures of one worker make one error line, until it applies a configuration."""
        from typing import cast

        from twisted.logger import ILogObserver, globalLogPublisher

        events: list[dict[str, Any]] = []
        observer = cast(ILogObserver, events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        pool, clock, _ = pool_with_channels(1)
        pool.publish(Store(), 1)
        for _ in range(3):
            pool._received(pool.workers[0], Applied(1, 1, failed=True))
            clock.advance(60)
        failures = [e for e in events if "failed to build" in e.get("log_format", "")]
        self.assertEqual(len(failures), 1)


class NewWorkerTests(SynchronousTestCase):
    def test_a_new_worker_that_hangs_holds_no_one_back(self) -> None:
        """A (re)started worker gets everything at once; if it never acknowledges, the rollout to the others resumes after the timeout."""
        pool, clock, (one, two) = pool_with_channels()
        store = Store()
        store.upsert(route_object("file", "/a"))
        pool.publish(store, 1)
        pool._received(pool.workers[0], Applied(1, 1))
        pool._received(pool.workers[1], Applied(1, 1))
        # Worker 1 restarts: its state is sent whole at spawn (as _spawn does).
        worker = pool.workers[0]
        worker.version, worker.held = 0, {}
        pool._send(worker, pool._latest)  # type: ignore[arg-type]
        self.assertEqual(len(one.sent[-1].upserts), 1)
        store.upsert(route_object("file", "/b"))
        pool.publish(store, 2)
        self.assertEqual([m.version for m in two.sent], [1])
        clock.advance(pool.rollout_timeout + 1)
        self.assertEqual([m.version for m in two.sent], [1, 2])


class SpawnFailureTests(SynchronousTestCase):
    def test_a_worker_that_cannot_start_is_tried_again(self) -> None:
        """spawnProcess failing (no descriptors, no processes) keeps the slot: another try 5 s later."""
        tries: list[int] = []

        class Refusing(Clock):
            def spawnProcess(self, *args: Any, **kwargs: Any) -> Any:
                tries.append(1)
                raise OSError(24, "Too many open files")

        clock = Refusing()
        pool = WorkerPool(clock, 2, {}, lambda i, fds: None)  # type: ignore[arg-type,return-value]
        pool.startService()
        self.addCleanup(pool.stopService)
        self.assertEqual(len(tries), 2)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 2)
        clock.advance(5)
        self.assertEqual(len(tries), 4)
        self.flushLoggedErrors(OSError)
        self.assertEqual([w.process for w in pool.workers], [None, None])
