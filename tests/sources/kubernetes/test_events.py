"""
Tests for :mod:`gateway.sources.kubernetes._events`.

The recorder writes to the fake API server over real loopback HTTP; its
clock (timestamps, the aggregation window, the rate limit's refill) is a
``Clock``, so time-dependent behaviour is exact. The Deferred each call
returns fires once the write is done, so no test waits for anything else.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet.defer import gatherResults
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import provider

from gateway.sources.kubernetes import EVENT, INGRESS, INGRESS_CLASS, EventRecorder, KubeClient
from gateway.sources.kubernetes._events import event_time, object_reference, truncate_message

from ._support import start_fake

JSON = dict[str, Any]

#: 2026-12-01T10:00:00Z
NOW = 1_796_119_200.0
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def ingress(name: str) -> JSON:
    return {
        "metadata": {"name": name},
        "spec": {"defaultBackend": {"service": {"name": "echo", "port": {"number": 80}}}},
    }


class EventRecorderTests(TestCase):
    """A recorder on a ``Clock`` writing to the fake API server."""

    async def setUp(self) -> None:  # type: ignore[override]
        self.server, self.client = await start_fake(self)
        self.clock = Clock()
        self.clock.advance(NOW)
        self.ingress = await self.client.create(INGRESS, ingress("web"), "default")
        self.logged: list[JSON] = []

        @provider(ILogObserver)
        def observe(event: JSON) -> None:
            if str(event.get("log_namespace", "")).startswith("gateway.sources.kubernetes._events"):
                self.logged.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def recorder(self, client: KubeClient | None = None, **kwargs: Any) -> EventRecorder:
        return EventRecorder(client or self.client, reactor=self.clock, instance="gw-0", **kwargs)

    def events(self, namespace: str = "default") -> list[JSON]:
        events = self.server.objects("v1", "Event")
        return [e for e in events if e["metadata"]["namespace"] == namespace]

    def logged_at(self, level: LogLevel) -> list[JSON]:
        return [e for e in self.logged if e["log_level"] is level]

    async def test_warning_creates_event(self) -> None:
        """
        A warning becomes one Warning Event in the object's namespace, named after it, with the
        object's reference, the source, the reporting fields, timestamps and a count of 1.
        """
        recorder = self.recorder()
        result = await recorder.warning(self.ingress, "InvalidIngress", "path /x is invalid")
        self.assertIsNone(result)
        [event] = self.events()
        meta = self.ingress["metadata"]
        self.assertRegex(event["metadata"]["name"], r"^web\.[0-9a-f]{16}$")
        self.assertEqual(event["metadata"]["namespace"], "default")
        self.assertEqual(
            event["involvedObject"],
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "namespace": "default",
                "name": "web",
                "uid": meta["uid"],
                "resourceVersion": meta["resourceVersion"],
            },
        )
        self.assertEqual(event["type"], "Warning")
        self.assertEqual(event["reason"], "InvalidIngress")
        self.assertEqual(event["message"], "path /x is invalid")
        self.assertEqual(event["source"], {"component": "apimgw", "host": "gw-0"})
        self.assertEqual(event["reportingComponent"], "apimgw")
        self.assertEqual(event["reportingInstance"], "gw-0")
        self.assertEqual(event["firstTimestamp"], "2026-12-01T10:00:00Z")
        self.assertEqual(event["lastTimestamp"], event["firstTimestamp"])
        self.assertRegex(event["firstTimestamp"], TIMESTAMP)
        self.assertEqual(event["count"], 1)
        listed = await self.client.list(
            EVENT, "default", field_selector=f"involvedObject.uid={meta['uid']},type=Warning"
        )
        self.assertEqual(len(listed.items), 1)

    async def test_normal(self) -> None:
        """normal() writes a Normal Event."""
        await self.recorder().normal(self.ingress, "Synced", "routes published")
        [event] = self.events()
        self.assertEqual((event["type"], event["reason"]), ("Normal", "Synced"))

    async def test_repeat_patches_count(self) -> None:
        """
        The same warning again within ten minutes patches the one Event: count 2, a later
        lastTimestamp, the same firstTimestamp.
        """
        recorder = self.recorder()
        await recorder.warning(self.ingress, "InvalidIngress", "bad")
        self.clock.advance(30)
        await recorder.warning(self.ingress, "InvalidIngress", "bad")
        [event] = self.events()
        self.assertEqual(event["count"], 2)
        self.assertEqual(event["firstTimestamp"], "2026-12-01T10:00:00Z")
        self.assertEqual(event["lastTimestamp"], "2026-12-01T10:00:30Z")
        self.assertEqual(len(self.server.requests_for("create", "events")), 1)
        [patch] = self.server.requests_for("patch", "events")
        self.assertEqual(patch.name, event["metadata"]["name"])

    async def test_different_message_two_events(self) -> None:
        """Warnings that differ in their message are two Events."""
        recorder = self.recorder()
        await recorder.warning(self.ingress, "InvalidIngress", "first problem")
        await recorder.warning(self.ingress, "InvalidIngress", "second problem")
        events = self.events()
        self.assertEqual(sorted(e["message"] for e in events), ["first problem", "second problem"])
        self.assertEqual([e["count"] for e in events], [1, 1])

    async def test_after_window_new_event(self) -> None:
        """The same warning more than ten minutes after the last one is a new Event."""
        recorder = self.recorder()
        await recorder.warning(self.ingress, "InvalidIngress", "bad")
        self.clock.advance(601)
        await recorder.warning(self.ingress, "InvalidIngress", "bad")
        self.assertEqual([e["count"] for e in self.events()], [1, 1])

    async def test_concurrent_repeats_one_event(self) -> None:
        """
        Repeats sent before the first write is answered never race it: one Event, counting all.
        """
        recorder = self.recorder()
        await gatherResults(
            [recorder.warning(self.ingress, "InvalidIngress", "bad") for _ in range(4)]
        )
        [event] = self.events()
        self.assertEqual(event["count"], 4)
        self.assertEqual(len(self.server.requests_for("create", "events")), 1)
        self.assertLessEqual(len(self.server.requests_for("patch", "events")), 3)

    async def test_deleted_event_created_again(self) -> None:
        """
        A repeat whose Event was deleted meanwhile (the patch answers NotFound) creates it again
        under a new name, keeping the count.
        """
        recorder = self.recorder()
        await recorder.warning(self.ingress, "InvalidIngress", "bad")
        [first] = self.events()
        self.server.delete_object("v1", "Event", "default", first["metadata"]["name"])
        self.clock.advance(5)
        await recorder.warning(self.ingress, "InvalidIngress", "bad")
        [again] = self.events()
        self.assertNotEqual(again["metadata"]["name"], first["metadata"]["name"])
        self.assertEqual(again["count"], 2)
        self.assertEqual(again["firstTimestamp"], first["firstTimestamp"])
        self.assertEqual([r.code for r in self.server.requests_for("patch", "events")], [404])
        self.assertEqual(recorder.failures, 0)

    async def test_forbidden_swallowed_and_logged_once(self) -> None:
        """
        403 Forbidden answers never reach the caller; the first is logged at warn level, the next
        of the same kind only at debug level.
        """
        self.server.fail_next(403, verb="create", plural="events", reason="Forbidden", count=2)
        recorder = self.recorder()
        first = await recorder.warning(self.ingress, "InvalidIngress", "one")
        second = await recorder.warning(self.ingress, "InvalidIngress", "two")
        self.assertEqual((first, second), (None, None))
        self.assertEqual(self.events(), [])
        self.assertEqual(recorder.failures, 2)
        [warned] = self.logged_at(LogLevel.warn)
        self.assertEqual(warned["why"].split(":")[0], "403 Forbidden")
        self.assertEqual(len(self.logged_at(LogLevel.debug)), 1)
        await recorder.warning(self.ingress, "InvalidIngress", "three")
        self.assertEqual([e["message"] for e in self.events()], ["three"])

    async def test_unreachable_swallowed(self) -> None:
        """
        An API server that cannot be reached (a dropped connection, then a refused one) is one
        kind of failure: logged once, never raised.
        """
        recorder = self.recorder()
        await self.server.stop()
        self.assertIsNone(await recorder.warning(self.ingress, "InvalidIngress", "one"))
        self.assertIsNone(await recorder.warning(self.ingress, "InvalidIngress", "two"))
        self.assertEqual(recorder.failures, 2)
        self.assertEqual(len(self.logged_at(LogLevel.warn)), 1)

    async def test_repeat_after_failed_create_creates(self) -> None:
        """
        When the first create failed, the next occurrence creates the Event, counting both.
        """
        self.server.fail_next(500, verb="create", plural="events")
        recorder = self.recorder()
        await recorder.warning(self.ingress, "InvalidIngress", "bad")
        await recorder.warning(self.ingress, "InvalidIngress", "bad")
        [event] = self.events()
        self.assertEqual(event["count"], 2)

    async def test_rate_limit_per_object(self) -> None:
        """
        After a burst of 25 events about one object the rest are dropped (one debug line each)
        until the bucket refills; other objects are not affected.
        """
        recorder = self.recorder()
        await gatherResults(
            [recorder.warning(self.ingress, "InvalidIngress", f"problem {i}") for i in range(30)]
        )
        self.assertEqual(len(self.events()), 25)
        self.assertEqual(recorder.dropped, 5)
        drops = [e for e in self.logged_at(LogLevel.debug) if "dropped" in e["log_format"]]
        self.assertEqual(len(drops), 5)
        self.assertEqual(self.logged_at(LogLevel.warn), [])
        other = await self.client.create(INGRESS, ingress("other"), "default")
        await recorder.warning(other, "InvalidIngress", "problem 0")
        self.assertEqual(len(self.events()), 26)
        self.clock.advance(300)
        await recorder.warning(self.ingress, "InvalidIngress", "problem 30")
        await recorder.warning(self.ingress, "InvalidIngress", "problem 31")
        self.assertEqual(len(self.events()), 27)
        self.assertEqual(recorder.dropped, 6)

    async def test_cache_bounded(self) -> None:
        """
        The aggregation cache holds at most cache_size series: a repeat of an evicted one is a new
        Event.
        """
        recorder = self.recorder(cache_size=2)
        for message in ("a", "b", "c", "a"):
            await recorder.warning(self.ingress, "InvalidIngress", message)
        self.assertEqual(sorted(e["message"] for e in self.events()), ["a", "a", "b", "c"])
        self.assertEqual(self.server.requests_for("patch", "events"), [])

    async def test_long_message_truncated(self) -> None:
        """A message longer than 1024 bytes is cut to 1024 bytes of whole characters."""
        await self.recorder().warning(self.ingress, "InvalidIngress", "é" * 1000)
        [event] = self.events()
        self.assertEqual(event["message"], "é" * 512)

    async def test_cluster_scoped_object(self) -> None:
        """An Event about a cluster-scoped object (an IngressClass) is written in default."""
        name = "apimgw-events-test"
        klass = await self.client.create(
            INGRESS_CLASS,
            {"metadata": {"name": name}, "spec": {"controller": "azure-api-management/gateway"}},
        )
        self.addCleanup(lambda: self.client.delete(INGRESS_CLASS, None, name))
        await self.recorder().warning(klass, "Conflict", "two default classes")
        [event] = self.events()
        self.assertNotIn("namespace", event["involvedObject"])
        self.assertEqual(event["involvedObject"]["kind"], "IngressClass")

    async def test_other_namespace(self) -> None:
        """An Event about an object in another namespace is written in that namespace."""
        self.server.set_object(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}
        )
        ing = await self.client.create(INGRESS, ingress("api"), "team-a")
        await self.recorder().warning(ing, "InvalidIngress", "bad")
        self.assertEqual(self.events(), [])
        [event] = self.events("team-a")
        self.assertEqual(event["involvedObject"]["namespace"], "team-a")


class HelperTests(SynchronousTestCase):
    """The pure helpers."""

    def test_event_time(self) -> None:
        """Event timestamps are RFC 3339 in UTC with whole seconds."""
        self.assertEqual(event_time(NOW + 0.9), "2026-12-01T10:00:00Z")

    def test_truncate_message(self) -> None:
        """Truncation counts UTF-8 bytes and never splits a character."""
        self.assertEqual(truncate_message("short"), "short")
        self.assertEqual(truncate_message("x" * 2000), "x" * 1024)
        self.assertEqual(truncate_message("a" + "€" * 400, limit=5), "a€")

    def test_object_reference(self) -> None:
        """The reference keeps type, place and version, and leaves out what the object lacks."""
        self.assertEqual(
            object_reference(
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "s", "namespace": "n", "uid": "u", "labels": {"a": "b"}},
                }
            ),
            {"apiVersion": "v1", "kind": "Service", "namespace": "n", "name": "s", "uid": "u"},
        )

    def test_unserialisable_input_never_raises(self) -> None:
        """Whatever the caller passes, the Deferred succeeds (the error is logged)."""
        recorder = EventRecorder(None, reactor=Clock(), instance="gw-0")  # type: ignore[arg-type]
        written = recorder.warning(None, "R", "m")  # type: ignore[arg-type]
        self.assertIsNone(self.successResultOf(written))
        self.assertEqual(len(self.flushLoggedErrors()), 1)
