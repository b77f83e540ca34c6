"""
Tests for :mod:`gateway.sources.kubernetes._informer`.

Two layers: unit tests with a scripted client and a ``Clock`` for the
decisions (what follows a failure, a 410, a closed stream; the backoff
schedule), and tests against the fake API server over real loopback HTTP
for the whole protocol: list, watch, resume, relist after 410, reconnect
after an API server restart, bookmarks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gateway.sources.kubernetes import INGRESS, Gone, Informer, ObjectList, WatchEvent
from gateway.testing.fakekube import FakeKubeServer

from ._support import start_fake, wait_for

JSON = dict[str, Any]


def obj(name: str, rv: str, namespace: str = "default", **labels: str) -> JSON:
    return {
        "kind": "Ingress",
        "apiVersion": "networking.k8s.io/v1",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": rv, "labels": labels},
        "spec": {},
    }


class _ScriptedClient:
    """A client whose calls return Deferreds the test fires."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], Deferred[Any]]] = []
        self.cancelled: list[str] = []

    def list_all(self, kind: Any, namespace: Any, **kwargs: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred(lambda _: self.cancelled.append("list"))
        self.calls.append(("list", kwargs, d))
        return d

    def watch(self, kind: Any, namespace: Any, **kwargs: Any) -> Deferred[None]:
        d: Deferred[None] = Deferred(lambda _: self.cancelled.append("watch"))
        self.calls.append(("watch", kwargs, d))
        return d

    def last(self, what: str) -> tuple[dict[str, Any], Deferred[Any]]:
        kind, kwargs, d = self.calls[-1]
        assert kind == what, f"last call was {kind}, not {what}"
        return kwargs, d


class _Recorder:
    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []

    def upsert(self, o: JSON) -> None:
        self.log.append(("upsert", o["metadata"]["name"]))

    def delete(self, o: JSON) -> None:
        self.log.append(("delete", o["metadata"]["name"]))

    def synced(self) -> None:
        self.log.append(("synced", ""))


class InformerUnitTests(SynchronousTestCase):
    """The informer's decisions, with a scripted client and a fake clock."""

    def make(self, **kwargs: Any) -> tuple[Informer, _ScriptedClient, Clock, _Recorder, list[int]]:
        client = _ScriptedClient()
        clock = Clock()
        recorder = _Recorder()
        attempts: list[int] = []

        def backoff(attempt: int) -> float:
            attempts.append(attempt)
            return 2.0**attempt

        informer = Informer(
            client,
            INGRESS,
            reactor=clock,
            namespace="default",  # type: ignore[arg-type]
            on_upsert=recorder.upsert,
            on_delete=recorder.delete,
            on_synced=recorder.synced,
            backoff=backoff,
            random_source=lambda: 0.0,
            **kwargs,
        )
        informer.start()
        self.addCleanup(informer.stop)
        return informer, client, clock, recorder, attempts

    def test_list_then_watch_from_its_version(self) -> None:
        """
        After the first list the handlers see every object, on_synced fires once, and the watch
        starts at the list's version with bookmarks.
        """
        informer, client, clock, recorder, _ = self.make()
        synced = informer.when_synced()
        self.assertNoResult(synced)
        client.last("list")[1].callback(ObjectList([obj("a", "3"), obj("b", "4")], "10"))
        self.assertEqual(recorder.log, [("upsert", "a"), ("upsert", "b"), ("synced", "")])
        self.successResultOf(synced)
        kwargs, _ = client.last("watch")
        self.assertEqual(kwargs["resource_version"], "10")
        self.assertTrue(kwargs["allow_bookmarks"])

    def test_events_and_bookmarks_advance_version(self) -> None:
        """
        Watch events update the cache and handlers; bookmarks only move the version that a new watch
        resumes from.
        """
        informer, client, clock, recorder, _ = self.make()
        client.last("list")[1].callback(ObjectList([obj("a", "3")], "10"))
        kwargs, watch = client.last("watch")
        on_event: Callable[[WatchEvent], None] = kwargs["on_event"]
        on_event(WatchEvent("MODIFIED", obj("a", "11")))
        on_event(WatchEvent("ADDED", obj("b", "12")))
        on_event(WatchEvent("DELETED", obj("a", "13")))
        on_event(WatchEvent("BOOKMARK", {"metadata": {"resourceVersion": "20"}}))
        self.assertEqual(recorder.log[-3:], [("upsert", "a"), ("upsert", "b"), ("delete", "a")])
        self.assertEqual(sorted(informer.cache), [("default", "b")])
        self.assertEqual(informer.resource_version, "20")
        watch.callback(None)  # the server ended the stream
        self.assertEqual(client.last("watch")[0]["resource_version"], "20")
        self.assertEqual([c[0] for c in client.calls], ["list", "watch", "watch"])

    def test_gone_relists_never_rewatches_stale_version(self) -> None:
        """
        A 410 on the watch leads to a new list at once, never to a watch from the expired version.
        """
        informer, client, clock, recorder, _ = self.make()
        client.last("list")[1].callback(ObjectList([obj("a", "3"), obj("b", "4")], "10"))
        client.last("watch")[1].errback(Gone(410, "Expired", "too old resource version: 10 (50)"))
        kwargs, relist = client.last("list")
        relist.callback(ObjectList([obj("b", "4"), obj("c", "40")], "60"))
        self.assertEqual(recorder.log[3:], [("delete", "a"), ("upsert", "c")])
        self.assertEqual(client.last("watch")[0]["resource_version"], "60")
        self.assertEqual([c[0] for c in client.calls], ["list", "watch", "list", "watch"])
        self.assertEqual(recorder.log.count(("synced", "")), 1)

    def test_failure_backs_off_and_resets(self) -> None:
        """
        Failures wait for growing backoff delays on the injected clock, and a success resets the
        count.
        """
        informer, client, clock, recorder, attempts = self.make()
        client.last("list")[1].errback(ConnectionRefusedError())
        self.assertEqual(attempts, [1])
        self.assertEqual(len(client.calls), 1)
        clock.advance(1.9)
        self.assertEqual(len(client.calls), 1)
        clock.advance(0.1)
        client.last("list")[1].errback(ConnectionRefusedError())
        self.assertEqual(attempts, [1, 2])
        clock.advance(4.0)
        client.last("list")[1].callback(ObjectList([obj("a", "1")], "5"))
        kwargs, watch = client.last("watch")
        kwargs["on_event"](WatchEvent("ADDED", obj("b", "6")))
        watch.errback(ConnectionRefusedError())
        self.assertEqual(attempts, [1, 2, 1])
        clock.advance(2.0)
        self.assertEqual(client.last("watch")[0]["resource_version"], "6")
        self.assertEqual(informer.failures, 3)

    def test_empty_streams_back_off(self) -> None:
        """
        A watch that ends cleanly without any event is retried after a backoff, not in a busy loop.
        """
        informer, client, clock, recorder, attempts = self.make()
        client.last("list")[1].callback(ObjectList([], "5"))
        client.last("watch")[1].callback(None)
        self.assertEqual(attempts, [1])
        self.assertEqual([c[0] for c in client.calls], ["list", "watch"])
        clock.advance(2.0)
        self.assertEqual([c[0] for c in client.calls], ["list", "watch", "watch"])

    def test_stop_cancels(self) -> None:
        """stop() cancels the open watch and schedules nothing more."""
        informer, client, clock, recorder, _ = self.make()
        client.last("list")[1].callback(ObjectList([], "5"))
        self.successResultOf(informer.stop())
        self.assertEqual(client.cancelled, ["watch"])
        clock.advance(1000)
        self.assertEqual(len(client.calls), 2)

    def test_stop_during_backoff(self) -> None:
        """stop() during a backoff wait ends the informer without another attempt."""
        informer, client, clock, recorder, _ = self.make()
        client.last("list")[1].errback(ConnectionRefusedError())
        self.successResultOf(informer.stop())
        clock.advance(1000)
        self.assertEqual(len(client.calls), 1)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stop_from_synced_waiter(self) -> None:
        """
        stop() called by a when_synced waiter, while the informer is between its list and its watch,
        leaves no watch open.
        """
        informer, client, clock, recorder, _ = self.make()
        stopped: list[Deferred[None]] = []
        informer.when_synced().addCallback(lambda _: stopped.append(informer.stop()))
        client.last("list")[1].callback(ObjectList([], "5"))
        self.successResultOf(stopped[0])
        self.assertEqual([c[0] for c in client.calls], ["list"])
        clock.advance(1000)
        self.assertEqual([c[0] for c in client.calls], ["list"])

    def test_handler_exception_isolated(self) -> None:
        """A handler that raises is logged, and the informer goes on with the next object."""
        client = _ScriptedClient()
        seen: list[str] = []

        def upsert(o: JSON) -> None:
            seen.append(o["metadata"]["name"])
            if o["metadata"]["name"] == "a":
                raise RuntimeError("handler bug")

        informer = Informer(client, INGRESS, reactor=Clock(), on_upsert=upsert)  # type: ignore[arg-type]
        informer.start()
        self.addCleanup(informer.stop)
        client.last("list")[1].callback(ObjectList([obj("a", "1"), obj("b", "2")], "5"))
        self.assertEqual(seen, ["a", "b"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertTrue(informer.synced)

    def test_relist_skips_unchanged(self) -> None:
        """A relist reports only objects whose resourceVersion changed, plus the deletions."""
        informer, client, clock, recorder, _ = self.make()
        client.last("list")[1].callback(ObjectList([obj("a", "1"), obj("b", "2")], "5"))
        client.last("watch")[1].errback(Gone(410, "Expired", "old"))
        client.last("list")[1].callback(ObjectList([obj("a", "1"), obj("b", "7")], "9"))
        self.assertEqual(recorder.log[3:], [("upsert", "b")])


class _Collected:
    """Handlers that record what an informer reports, with full objects."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str, str]] = []
        self.synced = 0

    def upsert(self, o: JSON) -> None:
        self.log.append(("upsert", o["metadata"]["name"], o["metadata"]["resourceVersion"]))

    def delete(self, o: JSON) -> None:
        self.log.append(("delete", o["metadata"]["name"], o["metadata"]["resourceVersion"]))

    def on_synced(self) -> None:
        self.synced += 1

    def names(self) -> list[tuple[str, str]]:
        return [(kind, name) for kind, name, _ in self.log]


def ingress(name: str, namespace: str = "default", **labels: str) -> JSON:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {},
    }


class InformerLoopbackTests(TestCase):
    """The informer against the fake API server over loopback HTTP."""

    async def start(self, **kwargs: Any) -> tuple[FakeKubeServer, Informer, _Collected, list[int]]:
        server, client = await start_fake(self)
        seen = _Collected()
        attempts: list[int] = []

        def backoff(attempt: int) -> float:
            attempts.append(attempt)
            return min(0.05 * 2**attempt, 0.4)

        kwargs.setdefault("namespace", "default")
        informer = Informer(
            client,
            INGRESS,
            reactor=reactor,
            on_upsert=seen.upsert,
            on_delete=seen.delete,
            on_synced=seen.on_synced,
            backoff=backoff,
            **kwargs,
        )
        informer.start()
        self.addCleanup(informer.stop)
        return server, informer, seen, attempts

    async def test_list_then_watch(self) -> None:
        """
        Existing objects arrive through the list, later changes through the watch, in order, and
        on_synced fires once.
        """
        server = None
        server, client = await start_fake(self)
        server.set_object(ingress("a"))
        server.set_object(ingress("b"))
        seen = _Collected()
        informer = Informer(
            client,
            INGRESS,
            reactor=reactor,
            namespace="default",
            on_upsert=seen.upsert,
            on_delete=seen.delete,
            on_synced=seen.on_synced,
        )
        informer.start()
        self.addCleanup(informer.stop)
        await informer.when_synced()
        self.assertEqual(seen.names(), [("upsert", "a"), ("upsert", "b")])
        server.set_object(ingress("c"))
        server.set_object(ingress("a", tier="web"))
        server.delete_object("networking.k8s.io/v1", "Ingress", "default", "b")
        await wait_for(lambda: len(seen.log) == 5, what="three watch events")
        self.assertEqual(seen.names()[2:], [("upsert", "c"), ("upsert", "a"), ("delete", "b")])
        self.assertEqual(sorted(informer.cache), [("default", "a"), ("default", "c")])
        self.assertEqual(informer.cache[("default", "a")]["metadata"]["labels"], {"tier": "web"})
        self.assertEqual(seen.synced, 1)
        self.assertEqual(informer.resource_version, server.resource_version)

    async def test_namespace_scope(self) -> None:
        """An informer of one namespace neither lists nor watches objects of another."""
        server, informer, seen, _ = await self.start()
        server.set_object(ingress("elsewhere", namespace="other"))
        await informer.when_synced()
        server.set_object(ingress("here"))
        server.set_object(ingress("there", namespace="other"))
        await wait_for(lambda: seen.log, what="the event of this namespace")
        self.assertEqual(seen.names(), [("upsert", "here")])
        self.assertEqual(
            {r.path for r in server.requests_for(plural="ingresses")},
            {"/apis/networking.k8s.io/v1/namespaces/default/ingresses"},
        )

    async def test_closed_watch_resumes(self) -> None:
        """
        After the server closes the watch, the informer watches again from the last version seen: no
        event is lost or repeated.
        """
        server, informer, seen, _ = await self.start()
        await informer.when_synced()
        server.set_object(ingress("a"))
        await wait_for(lambda: len(seen.log) == 1, what="the first event")
        last = informer.resource_version
        self.assertEqual(server.close_watches(), 1)
        server.set_object(ingress("b"))  # while no watch is open
        server.set_object(ingress("c"))
        await wait_for(lambda: len(seen.log) == 3, what="the events made meanwhile")
        await wait_for(lambda: server.open_watches == 1, what="the new watch")
        server.set_object(ingress("d"))
        await wait_for(lambda: len(seen.log) == 4, what="a later event")
        self.assertEqual(seen.names(), [("upsert", n) for n in "abcd"])
        watches = server.requests_for("watch")
        self.assertEqual(watches[1].query["resourceVersion"], last)
        self.assertEqual(len(server.requests_for("list")), 1)

    async def test_gone_relists_and_reports_deletion(self) -> None:
        """
        A 410 during the watch (history compacted while the stream was closed) leads to a relist
        that reports the deletion made meanwhile.
        """
        server, informer, seen, _ = await self.start()
        server.set_object(ingress("keep"))
        server.set_object(ingress("doomed"))
        await informer.when_synced()
        stale = informer.resource_version
        # In one reactor turn: end the stream, delete with no watch open,
        # and forget the history, so the resumed watch cannot be served.
        server.close_watches()
        server.delete_object("networking.k8s.io/v1", "Ingress", "default", "doomed")
        server.set_object(ingress("new"))
        server.compact()
        await wait_for(lambda: ("delete", "doomed") in seen.names(), what="the deletion")
        await wait_for(lambda: ("upsert", "new") in seen.names(), what="the addition")
        self.assertEqual(sorted(informer.cache), [("default", "keep"), ("default", "new")])
        self.assertEqual(len(server.requests_for("list")), 2)
        watches = server.requests_for("watch")
        self.assertEqual([w.query.get("resourceVersion") for w in watches].count(stale), 1)
        await wait_for(lambda: server.open_watches == 1, what="the watch after the relist")
        self.assertEqual(
            server.requests_for("watch")[-1].query["resourceVersion"], informer.resource_version
        )
        self.assertEqual(seen.names().count(("upsert", "keep")), 1)
        self.assertEqual(seen.synced, 1)

    async def test_api_server_restart(self) -> None:
        """
        With the API server stopped the informer retries with growing backoff, and after a restart
        it catches up on what changed meanwhile without a relist.
        """
        server, informer, seen, attempts = await self.start()
        server.set_object(ingress("a"))
        await informer.when_synced()
        await wait_for(lambda: server.open_watches == 1, what="the watch")
        await server.stop()
        server.set_object(ingress("b"))  # changes while it is unreachable
        server.delete_object("networking.k8s.io/v1", "Ingress", "default", "a")
        await wait_for(lambda: len(attempts) >= 3, what="several reconnection attempts")
        self.assertEqual(attempts[:3], [1, 2, 3])
        self.assertEqual(seen.names(), [("upsert", "a")])
        await server.restart()
        await wait_for(
            lambda: seen.names() == [("upsert", "a"), ("upsert", "b"), ("delete", "a")],
            what="the informer to catch up",
        )
        self.assertEqual(len(server.requests_for("list")), 1)
        server.set_object(ingress("c"))
        await wait_for(
            lambda: ("upsert", "c") in seen.names(), what="a live event after the restart"
        )

    async def test_unreachable_at_start(self) -> None:
        """
        An API server that is down at start is retried until it answers, and then the informer
        syncs.
        """
        server, client = await start_fake(self)
        await server.stop()
        attempts: list[int] = []

        def backoff(attempt: int) -> float:
            attempts.append(attempt)
            return 0.05

        informer = Informer(client, INGRESS, reactor=reactor, backoff=backoff)
        informer.start()
        self.addCleanup(informer.stop)
        synced = informer.when_synced()
        await wait_for(lambda: len(attempts) >= 2, what="retries")
        self.assertNoResult(synced)
        server.set_object(ingress("a"))
        await server.restart()
        await synced
        self.assertEqual(sorted(informer.cache), [("default", "a")])

    async def test_bookmarks_advance_resume_version(self) -> None:
        """
        Bookmarks move the resume version past changes the informer does not watch, so a later
        resume needs no relist even after compaction.
        """
        server, informer, seen, _ = await self.start()
        await informer.when_synced()
        for i in range(3):
            server.set_object(ingress(f"x{i}", namespace="other"))
        latest = server.resource_version
        await wait_for(
            lambda: informer.resource_version == latest, what="a bookmark with the latest version"
        )
        self.assertEqual(seen.log, [])
        server.compact()
        server.close_watches()
        await wait_for(
            lambda: len(server.requests_for("watch")) == 2 and server.open_watches == 1,
            what="the resumed watch",
        )
        self.assertEqual(server.requests_for("watch")[1].query["resourceVersion"], latest)
        server.set_object(ingress("mine"))
        await wait_for(lambda: seen.log, what="an event on the resumed watch")
        self.assertEqual(seen.names(), [("upsert", "mine")])
        self.assertEqual(len(server.requests_for("list")), 1)

    async def test_list_failure_retried(self) -> None:
        """A failed list (HTTP 500) is retried after a backoff and then syncs."""
        server, client = await start_fake(self)
        server.fail_next(500, verb="list")
        attempts: list[int] = []
        informer = Informer(
            client, INGRESS, reactor=reactor, backoff=lambda n: attempts.append(n) or 0.05
        )  # type: ignore[func-returns-value]
        informer.start()
        self.addCleanup(informer.stop)
        await informer.when_synced()
        self.assertEqual(attempts, [1])
        self.assertEqual([r.code for r in server.requests_for("list")], [500, 200])

    async def test_paged_list(self) -> None:
        """The list is read in pages and the informer still sees every object once."""
        server, client = await start_fake(self)
        for i in range(7):
            server.set_object(ingress(f"i{i}"))
        seen = _Collected()
        informer = Informer(client, INGRESS, reactor=reactor, page_size=3, on_upsert=seen.upsert)
        informer.start()
        self.addCleanup(informer.stop)
        await informer.when_synced()
        self.assertEqual(seen.names(), [("upsert", f"i{i}") for i in range(7)])
        self.assertEqual(len(server.requests_for("list")), 3)

    async def test_stop_closes_watch(self) -> None:
        """stop() closes the watch stream and the informer makes no further requests."""
        server, informer, seen, _ = await self.start()
        await informer.when_synced()
        await wait_for(lambda: server.open_watches == 1, what="the watch")
        await informer.stop()
        await wait_for(lambda: server.open_watches == 0, what="the server to see the watch closed")
        count = len(server.requests)
        server.set_object(ingress("late"))
        self.assertEqual(len(server.requests), count)
        self.assertEqual(seen.log, [])

    async def test_label_selector(self) -> None:
        """
        An informer with a label selector sees only matching objects, and one relabelled away as
        deleted.
        """
        server, informer, seen, _ = await self.start(label_selector="app=gw")
        server.set_object(ingress("in", app="gw"))
        server.set_object(ingress("out", app="other"))
        await informer.when_synced()
        await wait_for(lambda: seen.log, what="the matching object")
        server.set_object(ingress("in", app="other"))
        await wait_for(lambda: len(seen.log) == 2, what="the object leaving the selection")
        self.assertEqual(seen.names(), [("upsert", "in"), ("delete", "in")])
        self.assertEqual(informer.cache, {})
