"""
Tests for the Gateway API status writer.

Pure tests of the desired status (conditions, transition times, other
controllers' parent entries), then the writer against the fake API
server over loopback: a real :class:`KubeClient`, real informers of the
three kinds, and a stand-in for the Gateway API source whose resolution
is the real resolver's over those informers' caches and whose leadership
the test sets.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gateway.ready import OneShot
from gateway.sources.gatewayapi import (
    DEFAULT_CONTROLLER,
    Condition,
    GatewayApiInputs,
    ParentRef,
    Resolution,
    RouteParentStatus,
    resolve,
)
from gateway.sources.kubernetes import (
    GATEWAY,
    GATEWAY_CLASS,
    HTTP_ROUTE,
    SERVICE,
    Informer,
    Kind,
    KubeClient,
    load_kubeconfig,
)
from gateway.status import GatewayApiStatusWriter
from gateway.status._gatewayapi import (
    condition_entries,
    rfc3339,
    route_status,
)
from gateway.testing.fakekube import FakeKubeServer
from gateway.testing.waiting import wait_for

JSON = dict[str, Any]
API = "gateway.networking.k8s.io/v1"
OTHER = "example.net/other-controller"
T1 = 1_800_000_000.0


class ConditionTests(SynchronousTestCase):
    def test_transition_time_kept_while_status_unchanged(self) -> None:
        """Same type and status: the old lastTransitionTime stays, even when reason or message change."""
        current = [
            {
                "type": "Accepted",
                "status": "True",
                "reason": "Accepted",
                "message": "",
                "observedGeneration": 1,
                "lastTransitionTime": "2020-01-01T00:00:00Z",
            },
            {
                "type": "ResolvedRefs",
                "status": "True",
                "reason": "ResolvedRefs",
                "message": "",
                "observedGeneration": 1,
                "lastTransitionTime": "2020-01-01T00:00:00Z",
            },
        ]
        entries = condition_entries(
            (
                Condition("Accepted", True, "Accepted", "now with a message", 2),
                Condition("ResolvedRefs", False, "BackendNotFound", "no Service", 2),
                Condition("PartiallyInvalid", True, "UnsupportedValue", "x", None),
            ),
            current,
            now="2030-01-01T00:00:00Z",
            generation=3,
        )
        self.assertEqual(
            [(e["type"], e["lastTransitionTime"], e["observedGeneration"]) for e in entries],
            [
                ("Accepted", "2020-01-01T00:00:00Z", 2),
                ("ResolvedRefs", "2030-01-01T00:00:00Z", 2),
                # Unknown observed generation: the object's.
                ("PartiallyInvalid", "2030-01-01T00:00:00Z", 3),
            ],
        )
        self.assertEqual(entries[1]["status"], "False")
        self.assertEqual(entries[1]["reason"], "BackendNotFound")

    def test_rfc3339(self) -> None:
        self.assertEqual(rfc3339(0.9), "1970-01-01T00:00:00Z")
        self.assertEqual(rfc3339(T1), "2027-01-15T08:00:00Z")

    def test_route_parents_of_other_controllers_kept(self) -> None:
        """Only our entries are replaced; defaults (namespace, group, kind) match the old entry."""
        theirs = {
            "parentRef": {"name": "theirs"},
            "controllerName": OTHER,
            "conditions": [{"type": "Accepted", "status": "False"}],
        }
        ours_before = {
            "parentRef": {"name": "gw"},  # namespace, group, kind defaulted
            "controllerName": DEFAULT_CONTROLLER,
            "conditions": [
                {"type": "Accepted", "status": "True", "lastTransitionTime": "2020-01-01T00:00:00Z"}
            ],
        }
        stale = {
            "parentRef": {"name": "gone"},
            "controllerName": DEFAULT_CONTROLLER,
            "conditions": [],
        }
        route = {
            "metadata": {"namespace": "default", "name": "r", "generation": 4},
            "status": {"parents": [ours_before, theirs, stale]},
        }
        desired = (
            RouteParentStatus(
                ParentRef("gw", "default"),
                DEFAULT_CONTROLLER,
                (Condition("Accepted", True, "Accepted", "", 4),),
            ),
        )
        status = route_status(
            desired, route, controller=DEFAULT_CONTROLLER, now="2030-01-01T00:00:00Z"
        )
        self.assertEqual(status["parents"][0], theirs)
        self.assertEqual(len(status["parents"]), 2)
        ours = status["parents"][1]
        self.assertEqual(
            ours["parentRef"],
            {
                "group": "gateway.networking.k8s.io",
                "kind": "Gateway",
                "namespace": "default",
                "name": "gw",
            },
        )
        self.assertEqual(ours["conditions"][0]["lastTransitionTime"], "2020-01-01T00:00:00Z")
        # No parents of ours any more: ours removed, theirs kept.
        status = route_status((), route, controller=DEFAULT_CONTROLLER, now="2030-01-01T00:00:00Z")
        self.assertEqual(status["parents"], [theirs])


# --- against the fake API server ------------------------------------------------


def gateway_class(name: str = "apimgw", controller: str = DEFAULT_CONTROLLER) -> JSON:
    return {
        "apiVersion": API,
        "kind": "GatewayClass",
        "metadata": {"name": name},
        "spec": {"controllerName": controller},
    }


def gateway(name: str = "gw", namespace: str = "infra", cls: str = "apimgw") -> JSON:
    return {
        "apiVersion": API,
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "gatewayClassName": cls,
            "listeners": [
                {
                    "name": "http",
                    "port": 80,
                    "protocol": "HTTP",
                    "allowedRoutes": {"namespaces": {"from": "All"}},
                }
            ],
        },
    }


def http_route(
    name: str = "web",
    namespace: str = "default",
    parents: list[JSON] | None = None,
    service: str = "web",
    status: JSON | None = None,
) -> JSON:
    route: JSON = {
        "apiVersion": API,
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "parentRefs": parents
            if parents is not None
            else [{"name": "gw", "namespace": "infra"}],
            "rules": [{"backendRefs": [{"name": service, "port": 80}]}],
        },
    }
    if status is not None:
        route["status"] = status
    return route


def service(name: str = "web", namespace: str = "default") -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"ports": [{"port": 80}]},
    }


class SourceDouble:
    """
    The part of the Gateway API source the writer uses: a real client,
    real informers, the real resolver over their caches; leadership set
    by the test.
    """

    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self.controller_name = DEFAULT_CONTROLLER
        self.leading = False
        self.resolution: Resolution | None = None
        self.informers: dict[Kind, Informer] = {
            kind: Informer(client, kind, reactor=reactor)
            for kind in (GATEWAY_CLASS, GATEWAY, HTTP_ROUTE, SERVICE)
        }
        self._started: OneShot[KubeClient] = OneShot()
        self._leadership: list[Callable[[bool], None]] = []
        self._resolution: list[Callable[[Resolution], None]] = []

    async def start(self) -> None:
        for informer in self.informers.values():
            informer.start()
        for informer in self.informers.values():
            await informer.when_synced()
        self._started.fire(self.client)

    def stop(self) -> Deferred[Any]:
        return gatherResults([i.stop() for i in self.informers.values()])

    def when_started(self) -> Deferred[KubeClient]:
        return self._started.when()

    def informer(self, kind: Kind) -> Informer:
        return self.informers[kind]

    def add_leadership_listener(self, listener: Callable[[bool], None]) -> None:
        self._leadership.append(listener)

    def add_resolution_listener(self, listener: Callable[[Resolution], None]) -> None:
        self._resolution.append(listener)

    def lead(self, leading: bool) -> None:
        self.leading = leading
        for listener in self._leadership:
            listener(leading)

    def resolve(self) -> Resolution:
        """Resolve the informers' current objects and tell the listeners."""

        def objects(kind: Kind) -> tuple[JSON, ...]:
            return tuple(self.informers[kind].cache.values())

        self.resolution = resolve(
            GatewayApiInputs(
                gateway_classes=objects(GATEWAY_CLASS),
                gateways=objects(GATEWAY),
                http_routes=objects(HTTP_ROUTE),
                services=objects(SERVICE),
            )
        )
        for listener in self._resolution:
            listener(self.resolution)
        return self.resolution


class WriterTests(TestCase):
    """GatewayApiStatusWriter against the fake API server."""

    async def _setUp(self, *objects: JSON) -> None:
        self.fake = FakeKubeServer(reactor=reactor, bookmark_interval=0.5)
        await self.fake.start()
        self.addCleanup(self.fake.stop)
        path = self.fake.kubeconfig(os.path.join(self.mktemp() + ".kubeconfig"))
        self.client = KubeClient(load_kubeconfig(path), reactor=reactor)
        self.addCleanup(self.client.close)
        for obj in objects:
            self.fake.set_object(obj)
        self.source = SourceDouble(self.client)
        self.addCleanup(self.source.stop)
        self.time = T1
        self.writer = GatewayApiStatusWriter(
            self.source, reactor=reactor, conflict_retry=0.05, now=lambda: self.time
        )
        self.writer.startService()
        self.addCleanup(self.writer.stopService)
        await self.source.start()

    def stored(self, kind: str, namespace: str | None, name: str) -> JSON:
        obj = self.fake.get_object(API, kind, namespace, name)
        assert obj is not None
        return obj

    def route_parents(self, name: str = "web") -> list[JSON]:
        return list(
            self.stored("HTTPRoute", "default", name).get("status", {}).get("parents") or []
        )

    def status_puts(self) -> int:
        return len([r for r in self.fake.requests_for("update") if r.subresource == "status"])

    async def settle(self, changed: Callable[[], bool] | None = None) -> None:
        """Wait for the informers to see a change, resolve, and let the writer's pass finish."""
        if changed is not None:
            await wait_for(changed, what="informers caught up")
        self.source.resolve()
        await self.writer.idle()

    def cached(self, kind: Kind, namespace: str | None, name: str) -> JSON:
        obj = self.source.informers[kind].get(namespace, name)
        assert obj is not None
        return obj

    async def test_statuses_written_as_resolved_and_once(self) -> None:
        """
        GatewayClass, Gateway (conditions, listeners) and HTTPRoute (our
        parent entry) get the resolved status; a second identical pass,
        and a third after the watch delivered the writes, PUT nothing.
        """
        await self._setUp(gateway_class(), gateway(), http_route(), service())
        self.source.lead(True)
        await self.settle()
        stamp = rfc3339(T1)

        cls = self.stored("GatewayClass", None, "apimgw")
        self.assertEqual(
            cls["status"]["conditions"],
            [
                {
                    "type": "Accepted",
                    "status": "True",
                    "reason": "Accepted",
                    "message": "",
                    "observedGeneration": 1,
                    "lastTransitionTime": stamp,
                }
            ],
        )
        gw = self.stored("Gateway", "infra", "gw")["status"]
        self.assertEqual(
            [(c["type"], c["status"], c["observedGeneration"]) for c in gw["conditions"]],
            [("Accepted", "True", 1), ("Programmed", "True", 1)],
        )
        [listener] = gw["listeners"]
        self.assertEqual(listener["name"], "http")
        self.assertEqual(
            listener["supportedKinds"],
            [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}],
        )
        self.assertEqual(listener["attachedRoutes"], 1)
        self.assertEqual(
            {(c["type"], c["status"]) for c in listener["conditions"]},
            {
                ("Accepted", "True"),
                ("Programmed", "True"),
                ("ResolvedRefs", "True"),
                ("Conflicted", "False"),
            },
        )
        [parent] = self.route_parents()
        self.assertEqual(parent["controllerName"], DEFAULT_CONTROLLER)
        self.assertEqual(
            parent["parentRef"],
            {
                "group": "gateway.networking.k8s.io",
                "kind": "Gateway",
                "namespace": "infra",
                "name": "gw",
            },
        )
        self.assertEqual(
            [
                (c["type"], c["status"], c["reason"], c["observedGeneration"])
                for c in parent["conditions"]
            ],
            [("Accepted", "True", "Accepted", 1), ("ResolvedRefs", "True", "ResolvedRefs", 1)],
        )
        self.assertEqual(self.status_puts(), 3)
        self.assertEqual(self.writer.updates, 3)

        # The same resolution again, before the watch delivered the writes
        # (the writer's own result stands in): nothing written.
        self.time = T1 + 60
        await self.settle()
        self.assertEqual(self.status_puts(), 3)
        # And once the informers hold the written objects.
        await wait_for(
            lambda: self.cached(HTTP_ROUTE, "default", "web").get("status", {}).get("parents"),
            what="route status in the informer",
        )
        await wait_for(
            lambda: self.cached(GATEWAY, "infra", "gw").get("status", {}).get("listeners")
        )
        await wait_for(lambda: self.cached(GATEWAY_CLASS, None, "apimgw").get("status"))
        await self.settle()
        self.assertEqual(self.status_puts(), 3)
        # Spec untouched by the status writes.
        self.assertEqual(self.stored("HTTPRoute", "default", "web")["spec"], http_route()["spec"])

    async def test_transition_time_and_observed_generation(self) -> None:
        """
        A spec change bumps observedGeneration and keeps
        lastTransitionTime while the status stays; a status flip gets a new one.
        """
        await self._setUp(gateway_class(), gateway(), http_route(), service())
        self.source.lead(True)
        await self.settle()

        # Generation 2: still accepted, backends still found.
        changed = http_route()
        changed["spec"]["hostnames"] = ["web.example.com"]
        self.fake.set_object(changed)
        self.assertEqual(self.stored("HTTPRoute", "default", "web")["metadata"]["generation"], 2)
        self.time = T1 + 100
        await self.settle(
            lambda: self.cached(HTTP_ROUTE, "default", "web")["metadata"]["generation"] == 2
        )
        [parent] = self.route_parents()
        self.assertEqual(
            [
                (c["type"], c["status"], c["observedGeneration"], c["lastTransitionTime"])
                for c in parent["conditions"]
            ],
            [("Accepted", "True", 2, rfc3339(T1)), ("ResolvedRefs", "True", 2, rfc3339(T1))],
        )

        # Generation 3: the backend Service does not exist.
        broken = http_route(service="missing")
        broken["spec"]["hostnames"] = ["web.example.com"]
        self.fake.set_object(broken)
        self.time = T1 + 200
        await self.settle(
            lambda: self.cached(HTTP_ROUTE, "default", "web")["metadata"]["generation"] == 3
        )
        [parent] = self.route_parents()
        self.assertEqual(
            [
                (
                    c["type"],
                    c["status"],
                    c["reason"],
                    c["observedGeneration"],
                    c["lastTransitionTime"],
                )
                for c in parent["conditions"]
            ],
            [
                ("Accepted", "True", "Accepted", 3, rfc3339(T1)),
                ("ResolvedRefs", "False", "BackendNotFound", 3, rfc3339(T1 + 200)),
            ],
        )
        # The Gateway did not change: its conditions keep generation 1 and T1.
        gw = self.stored("Gateway", "infra", "gw")["status"]
        self.assertEqual({c["lastTransitionTime"] for c in gw["conditions"]}, {rfc3339(T1)})

    async def test_followers_write_nothing(self) -> None:
        """
        A replica without the Lease writes nothing however many
        resolutions arrive; on winning it writes; after losing it stops.
        """
        await self._setUp(gateway_class(), gateway(), http_route(), service())
        await self.settle()
        await self.settle()
        self.assertEqual(self.status_puts(), 0)
        self.assertNotIn("status", self.stored("HTTPRoute", "default", "web"))

        self.source.lead(True)
        await self.writer.idle()
        self.assertEqual(self.status_puts(), 3)

        self.source.lead(False)
        self.fake.set_object(http_route(service="missing"))
        await self.settle(
            lambda: self.cached(HTTP_ROUTE, "default", "web")["metadata"]["generation"] == 2
        )
        self.assertEqual(self.status_puts(), 3)
        [parent] = self.route_parents()
        self.assertEqual(parent["conditions"][1]["status"], "True")

    async def test_other_controllers_entries_kept(self) -> None:
        """
        Another controller's parent entry is kept as it is; when the route
        stops naming our Gateway, our entry is removed and theirs still kept.
        """
        theirs = {
            "parentRef": {
                "group": "gateway.networking.k8s.io",
                "kind": "Gateway",
                "namespace": "default",
                "name": "their-gw",
            },
            "controllerName": OTHER,
            "conditions": [
                {
                    "type": "Accepted",
                    "status": "True",
                    "reason": "Accepted",
                    "message": "",
                    "observedGeneration": 1,
                    "lastTransitionTime": "2021-02-03T04:05:06Z",
                }
            ],
        }
        parents = [{"name": "gw", "namespace": "infra"}, {"name": "their-gw"}]
        await self._setUp(
            gateway_class(),
            gateway_class("theirs", OTHER),
            gateway(),
            gateway("their-gw", "default", cls="theirs"),
            http_route(parents=parents, status={"parents": [theirs]}),
            service(),
        )
        self.source.lead(True)
        # The fake, like a CRD's defaults, gives a new Gateway a "Pending" status.
        their_status = self.stored("Gateway", "default", "their-gw").get("status")
        await self.settle()
        entries = self.route_parents()
        self.assertEqual(entries[0], theirs)
        self.assertEqual([e["controllerName"] for e in entries], [OTHER, DEFAULT_CONTROLLER])
        # Their Gateway and class are not ours: never written.
        self.assertEqual(self.stored("Gateway", "default", "their-gw").get("status"), their_status)
        written = {
            (r.plural, r.name)
            for r in self.fake.requests_for("update")
            if r.subresource == "status"
        }
        self.assertEqual(
            written, {("gatewayclasses", "apimgw"), ("gateways", "gw"), ("httproutes", "web")}
        )

        self.fake.set_object(http_route(parents=[{"name": "their-gw"}]))
        await self.settle(
            lambda: self.cached(HTTP_ROUTE, "default", "web")["metadata"]["generation"] == 2
        )
        self.assertEqual(self.route_parents(), [theirs])
        gw = self.stored("Gateway", "infra", "gw")["status"]
        self.assertEqual(gw["listeners"][0]["attachedRoutes"], 0)

    async def stale_route(self) -> Informer:
        """Stop the route informer, then change the route: the writer's copy is stale."""
        routes = self.source.informers[HTTP_ROUTE]
        await routes.stop()  # its cache is kept, and now goes stale
        relabelled = copy.deepcopy(self.stored("HTTPRoute", "default", "web"))
        relabelled["metadata"]["labels"] = {"team": "web"}
        self.fake.set_object(relabelled)
        return routes

    async def test_conflict_retried_until_it_converges(self) -> None:
        """
        The route changes between the informer's read and the write: the
        PUT is refused 409, the fresh object fetched, the write retried
        shortly (even while the watch lags); the final object has both the
        other writer's change and our status.
        """
        await self._setUp(gateway_class(), gateway(), http_route(), service())
        routes = await self.stale_route()
        self.source.lead(True)
        await self.settle()
        self.assertEqual(self.writer.conflicts, 1)
        self.assertEqual([r.code for r in self.fake.requests_for("update", "httproutes")], [409])
        await wait_for(lambda: self.route_parents(), what="route status written after the conflict")
        stored = self.stored("HTTPRoute", "default", "web")
        self.assertEqual(stored["metadata"]["labels"], {"team": "web"})
        self.assertEqual(stored["status"]["parents"][0]["controllerName"], DEFAULT_CONTROLLER)
        self.assertEqual(
            [r.code for r in self.fake.requests_for("update", "httproutes")], [409, 200]
        )
        # Converged: once the watch catches up, another pass writes nothing.
        routes.start()
        await wait_for(lambda: self.cached(HTTP_ROUTE, "default", "web").get("status"))
        puts = self.status_puts()
        await self.settle()
        self.assertEqual(self.status_puts(), puts)

    async def test_losing_leadership_cancels_retries(self) -> None:
        """A replica that loses the Lease after a conflict does not retry."""
        await self._setUp(gateway_class(), gateway(), http_route(), service())
        routes = await self.stale_route()
        self.source.lead(True)
        await self.settle()
        self.assertEqual(self.writer.conflicts, 1)
        self.source.lead(False)
        puts = self.status_puts()
        routes.start()
        await wait_for(lambda: self.cached(HTTP_ROUTE, "default", "web")["metadata"].get("labels"))
        self.source.resolve()
        # Several retry intervals (0.05 s) pass; nothing more is written.
        await deferLater(reactor, 0.3, lambda: None)
        self.assertEqual(self.status_puts(), puts)
        self.assertEqual(self.route_parents(), [])

    async def test_deleted_object_dropped(self) -> None:
        """A route deleted between read and write: one 404, no retry, the rest written."""
        await self._setUp(gateway_class(), gateway(), http_route(), service())
        routes = self.source.informers[HTTP_ROUTE]
        await routes.stop()
        self.fake.delete_object(API, "HTTPRoute", "default", "web")
        self.source.lead(True)
        await self.settle()
        await self.settle()
        self.assertEqual(self.writer.conflicts, 0)
        self.assertEqual([r.code for r in self.fake.requests_for("update", "httproutes")], [404])
        self.assertIn("status", self.stored("Gateway", "infra", "gw"))

    async def test_many_objects_up_to_date(self) -> None:
        """
        A pass over more up-to-date objects than it compares per reactor
        turn (it yields between batches) still finishes and writes nothing.
        """
        routes = [http_route(name=f"web-{i:03}") for i in range(210)]
        await self._setUp(gateway_class(), gateway(), service(), *routes)
        self.source.lead(True)
        await self.settle()
        self.assertEqual(self.status_puts(), 212)
        self.assertEqual(
            self.stored("Gateway", "infra", "gw")["status"]["listeners"][0]["attachedRoutes"], 210
        )
        await self.settle()
        self.assertEqual(self.status_puts(), 212)
        self.assertEqual(len(self.route_parents("web-209")), 1)
