"""
Tests for the Ingress status writer: the address it publishes, and the
Events it writes from each generation's problems and shadowed routes,
on the leading replica only.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gateway.model import ObjectRef, Problem
from gateway.ready import OneShot
from gateway.routing import Generation, RouteTable
from gateway.sources.ingress import IngressDecoding
from gateway.sources.kubernetes import Conflict
from gateway.status import IngressStatusWriter, StatusStage, address_entries, service_addresses
from gateway.translate import GatewayConfig
from gateway.translate._config import Shadowing


class AddressTests(SynchronousTestCase):
    def test_fixed_addresses(self) -> None:
        """IPs (v4 and v6) become ip entries, names hostname entries; blanks are dropped."""
        self.assertEqual(
            address_entries(("203.0.113.7", " gw.example.com ", "", "2001:db8::1")),
            [{"ip": "203.0.113.7"}, {"hostname": "gw.example.com"}, {"ip": "2001:db8::1"}],
        )

    def test_service_load_balancer_first(self) -> None:
        """The Service's load-balancer entries win; only ip and hostname are copied."""
        svc = {
            "spec": {"clusterIP": "10.0.0.5", "externalIPs": ["192.0.2.1"]},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.4", "ports": [{"port": 80}]}]}},
        }
        self.assertEqual(service_addresses(svc), [{"ip": "198.51.100.4"}])

    def test_service_fallbacks(self) -> None:
        """No load balancer: external IPs, else the cluster IP (not for headless Services)."""
        self.assertEqual(
            service_addresses({"spec": {"clusterIP": "10.0.0.5", "externalIPs": ["192.0.2.1"]}}),
            [{"ip": "192.0.2.1"}],
        )
        self.assertEqual(service_addresses({"spec": {"clusterIP": "10.0.0.5"}}), [{"ip": "10.0.0.5"}])
        self.assertEqual(service_addresses({"spec": {"clusterIP": "None"}}), [])
        self.assertEqual(service_addresses(None), [])


def _ingress(name: str, status: Any = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
    }
    if status is not None:
        obj["status"] = status
    return obj


class FakeClient:
    """Records the writes a writer makes; answers from ``answers`` (default: success)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.answers: list[Deferred[Any]] = []
        #: Where a successful status write lands (as the watch would bring it).
        self.informer: FakeInformer | None = None

    def _answer(self, call: str, what: Any) -> Deferred[Any]:
        self.calls.append((call, what))
        return self.answers.pop(0) if self.answers else succeed({})

    def create(self, kind: Any, obj: Any, namespace: Any = None) -> Deferred[Any]:
        return self._answer("create", obj)

    def patch(self, kind: Any, namespace: Any, name: str, patch: Any, **kw: Any) -> Deferred[Any]:
        return self._answer("patch", (name, patch))

    def update_status(self, kind: Any, obj: Any) -> Deferred[Any]:
        d = self._answer("status", obj)
        if self.informer is not None:
            informer = self.informer

            def written(result: Any) -> Any:
                informer.cache[("default", obj["metadata"]["name"])] = obj
                return result

            d.addCallback(written)
        return d

    def events(self) -> list[tuple[str, str, str]]:
        return [
            (c[1]["involvedObject"]["name"], c[1]["reason"], c[1]["message"])
            for c in self.calls
            if c[0] == "create"
        ]


class FakeInformer:
    def __init__(self, *objects: dict[str, Any]) -> None:
        self.cache = {("default", o["metadata"]["name"]): o for o in objects}

    def get(self, namespace: str | None, name: str) -> Any:
        return self.cache.get((namespace or "", name))


class FakeSource:
    """What :class:`IngressStatusWriter` reads of an :class:`IngressSource`."""

    def __init__(self, informer: FakeInformer, served: tuple[str, ...]) -> None:
        self.informers = {"ingresses": informer}
        self.translation = IngressDecoding(served=served)
        self.identity = "gateway-0_test"
        self.publish_service = None
        self.publish_addresses = ("203.0.113.7",)
        self.status: Any = None
        self.started: OneShot[Any] = OneShot()
        self.listeners: list[Any] = []
        self.leading = False

    def when_started(self) -> Deferred[Any]:
        return self.started.when()

    def add_leadership_listener(self, listener: Any) -> None:
        self.listeners.append(listener)
        if self.started.done:
            listener(self.leading)

    def lead(self, leading: bool) -> None:
        self.leading = leading
        for listener in self.listeners:
            listener(leading)


def _generation(number: int, problems: tuple[Problem, ...] = (), shadowed: tuple[Any, ...] = ()) -> Generation:
    config = GatewayConfig(problems=problems, shadowed=shadowed)
    return Generation(number, config, RouteTable.build(()), float(number))


BROKEN = Problem(ObjectRef("ingress", "routes", "default/broken"), "rules[0].http.paths[0]: Service default/nope not found")
BAD_CERT = Problem(ObjectRef("ingress", "certificate", "default/broken/tls"), "certificate has expired")
OTHER = Problem(ObjectRef("cloud", "api", "echo"), "not ours")
SHADOWED = Shadowing(("", "prefix", "/shop"), ObjectRef("memory", "routes", "newer"), ObjectRef("ingress", "routes", "default/shop"))


class WriterTests(SynchronousTestCase):
    """IngressStatusWriter, fed by a status stage, against a fake source and client."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.client = FakeClient()
        self.informer = FakeInformer(_ingress("broken"), _ingress("shop"))
        self.client.informer = self.informer
        self.source = FakeSource(self.informer, ("default/broken", "default/shop"))
        self.writer = IngressStatusWriter(self.source, reactor=self.clock)  # type: ignore[arg-type]
        self.stage = StatusStage([self.writer])
        self.stage.startService()
        self.addCleanup(self.stage.stopService)

    def start(self, leading: bool = True) -> None:
        self.source.leading = leading
        self.source.started.fire(self.client)

    def test_generations_before_start_are_written_once_started(self) -> None:
        """A generation that arrives before the source has its client is written when it has."""
        self.stage.generation_swapped(_generation(1, problems=(BROKEN,)))
        self.assertEqual(self.client.calls, [])
        self.start()
        self.assertEqual(self.client.events(), [("broken", "InvalidIngress", BROKEN.message)])
        addresses = [c[1]["status"]["loadBalancer"]["ingress"] for c in self.client.calls if c[0] == "status"]
        self.assertEqual(addresses, [[{"ip": "203.0.113.7"}]] * 2)
        self.assertEqual(self.writer.updates, 2)

    def test_problems_and_shadowing_become_events_once(self) -> None:
        """Ingress problems (decoder's or translation's) and shadowed routes are written once while they last."""
        self.start()
        self.stage.generation_swapped(_generation(1, problems=(BROKEN, BAD_CERT, OTHER), shadowed=(SHADOWED,)))
        self.stage.generation_swapped(_generation(2, problems=(BROKEN, BAD_CERT, OTHER), shadowed=(SHADOWED,)))
        events = self.client.events()
        self.assertEqual(
            sorted(events),
            [
                ("broken", "InvalidIngress", BAD_CERT.message),
                ("broken", "InvalidIngress", BROKEN.message),
                ("shop", "RouteShadowed",
                 "route */shop (prefix) is shadowed by memory:routes/newer, modified later (last one wins)"),
            ],
        )
        # Gone, then back: written again (a repeat patches the Event's count).
        self.stage.generation_swapped(_generation(3))
        self.stage.generation_swapped(_generation(4, problems=(BROKEN,)))
        self.assertEqual([c[0] for c in self.client.calls if c[0] in ("create", "patch")][-1], "patch")

    def test_followers_write_nothing_until_they_lead(self) -> None:
        """A follower writes no status and no Event; on winning the Lease it writes what is current."""
        self.start(leading=False)
        self.stage.generation_swapped(_generation(1, problems=(BROKEN,)))
        self.assertEqual(self.client.calls, [])
        self.assertFalse(self.writer.leading)
        self.source.lead(True)
        self.assertTrue(self.writer.leading)
        self.assertEqual(self.client.events(), [("broken", "InvalidIngress", BROKEN.message)])
        self.assertEqual(self.writer.updates, 2)
        # Lost and regained: the current problems are written again
        # (the other leader may not have written them).
        self.source.lead(False)
        self.source.lead(True)
        self.assertEqual([c[0] for c in self.client.calls if c[0] in ("create", "patch")], ["create", "patch"])

    def test_conflict_is_retried_shortly(self) -> None:
        """A status write that lost to a concurrent change is retried after a second, not at the next resync."""
        self.informer.cache = {("default", "shop"): _ingress("shop")}
        self.source.translation = IngressDecoding(served=("default/shop",))
        self.client.answers.append(fail(Conflict(409, "Conflict", "the object has been modified")))
        self.start()
        self.assertEqual([c[0] for c in self.client.calls], ["status"])
        self.assertEqual(self.writer.updates, 0)
        self.clock.advance(1.0)
        self.assertEqual([c[0] for c in self.client.calls], ["status", "status"])
        self.assertEqual(self.writer.updates, 1)

    def test_nothing_is_written_after_stop(self) -> None:
        """A stopped writer ignores generations and leadership (the election reports during shutdown)."""
        self.start(leading=False)
        self.stage.stopService()
        self.source.lead(True)
        self.stage.generation_swapped(_generation(1, problems=(BROKEN,)))
        self.assertEqual(self.client.calls, [])

    def test_published_addresses_are_not_rewritten(self) -> None:
        """An Ingress that already shows the address is left alone."""
        self.informer.cache = {
            ("default", "shop"): _ingress("shop", {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}})
        }
        self.source.translation = IngressDecoding(served=("default/shop",))
        self.start()
        self.stage.generation_swapped(_generation(1))
        self.assertEqual(self.client.calls, [])
