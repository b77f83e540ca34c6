"""
End-to-end tests of the Kubernetes Ingress source: a real gateway (in
process, real sockets) reading a fake API server on loopback, forwarding to
real backends. Routing must follow Ingress changes, stay up when the API
server goes away, and isolate invalid objects.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from gateway.model import Route, RouteSet
from gateway.sources.ingress import WAITING
from gateway.testing.certs import self_signed

from .harness import request_sync
from .kubeharness import IngressTestCase, ingress, ingress_class, service, tls_secret
from .tlsclient import handshake

NETWORKING = "networking.k8s.io/v1"


class RoutingFollowsIngressTests(IngressTestCase):
    """Create / update / delete, namespaces and classes."""

    @inlineCallbacks
    def test_create_update_delete(self) -> Any:
        """A new Ingress is served, a changed backend followed, a deleted one gone (404)."""
        self.assertEqual((yield self.get("/shop")).status, 404)
        self.kube.set_object(ingress("shop", [("/shop", "alpha", self.backend_ports["alpha"])]))
        yield self.wait_for(lambda: self.served_by("/shop/cart").addCallback(lambda b: b == "alpha"))

        metrics = (yield self.admin("/metrics")).body.decode()
        self.assertIn("apimgw_ingress_served 1.0", metrics)
        self.assertIn('apimgw_kubernetes_synced{kind="Ingress"} 1.0', metrics)
        self.assertIn("apimgw_ingress_leader 1.0", metrics)
        config = (yield self.admin("/config")).json()
        (route,) = [r for r in config["routes"] if r["path"] == "/shop"]
        self.assertEqual(route["source"], "ingress:routes/default/shop")

        self.kube.set_object(ingress("shop", [("/shop", "beta", self.backend_ports["beta"])]))
        yield self.wait_for(lambda: self.served_by("/shop/cart").addCallback(lambda b: b == "beta"))

        self.kube.delete_object(NETWORKING, "Ingress", "default", "shop")
        yield self.wait_for(lambda: self.served_by("/shop/cart").addCallback(lambda b: b == 404))

    @inlineCallbacks
    def test_hosts_are_matched(self) -> Any:
        """A rule's host only matches requests for that host."""
        self.kube.set_object(
            ingress("api", [("/", "alpha", self.backend_ports["alpha"])], host="api.example.com")
        )
        yield self.wait_for(
            lambda: self.served_by("/x", host="api.example.com").addCallback(lambda b: b == "alpha")
        )
        self.assertEqual((yield self.served_by("/x", host="www.example.com")), 404)

    @inlineCallbacks
    def test_root_rule_wins_over_default_backend(self) -> Any:
        """
        A host-less ``/`` rule takes every request its Ingress's other rules
        do not (on any host); the defaultBackend only takes what no rule
        matches, such as the other hosts of an Ingress whose rules all name one.
        """
        alpha, beta = self.backend_ports["alpha"], self.backend_ports["beta"]
        root = ingress("site", [("/api", "beta", beta)], host="api.example.com")
        root["spec"]["rules"].append(ingress("x", [("/", "alpha", alpha)])["spec"]["rules"][0])
        root["spec"]["defaultBackend"] = {"service": {"name": "beta", "port": {"number": beta}}}
        self.kube.set_object(root)
        yield self.wait_for(lambda: self.served_by("/api", host="api.example.com").addCallback(lambda b: b == "beta"))
        self.assertEqual((yield self.served_by("/")), "alpha")
        self.assertEqual((yield self.served_by("/anything", host="www.example.com")), "alpha")
        # The host-less rule matches api.example.com's other paths too.
        self.assertEqual((yield self.served_by("/other", host="api.example.com")), "alpha")
        config = (yield self.admin("/config")).json()
        self.assertEqual(config["problems"], [])

        # Rules for one host only: the other hosts go to the defaultBackend.
        hosted = ingress("site", [("/", "alpha", alpha)], host="site.example.com")
        hosted["spec"]["defaultBackend"] = {"service": {"name": "beta", "port": {"number": beta}}}
        self.kube.set_object(hosted)
        yield self.wait_for(lambda: self.served_by("/", host="www.example.com").addCallback(lambda b: b == "beta"))
        self.assertEqual((yield self.served_by("/page", host="site.example.com")), "alpha")

    @inlineCallbacks
    def test_only_the_watched_namespace_and_our_class(self) -> Any:
        """Ingresses of another namespace or another class are not served; a class change away removes routes."""
        other_ns = ingress("elsewhere", [("/elsewhere", "alpha", 80)], namespace="other")
        self.kube.set_object(service("alpha", self.backend_ports["alpha"], namespace="other"))
        self.kube.set_object(other_ns)
        self.kube.set_object(ingress_class("nginx", "k8s.io/ingress-nginx"))
        self.kube.set_object(
            ingress("theirs", [("/theirs", "alpha", self.backend_ports["alpha"])], class_name="nginx")
        )
        self.kube.set_object(
            ingress(
                "annotated",
                [("/annotated", "alpha", self.backend_ports["alpha"])],
                class_name=None,
                annotations={"kubernetes.io/ingress.class": "azure-api-management/gateway"},
            )
        )
        self.kube.set_object(ingress("ours", [("/ours", "alpha", self.backend_ports["alpha"])]))
        yield self.wait_for(lambda: self.served_by("/ours").addCallback(lambda b: b == "alpha"))
        yield self.wait_for(lambda: self.served_by("/annotated").addCallback(lambda b: b == "alpha"))
        self.assertEqual((yield self.served_by("/theirs")), 404)
        self.assertEqual((yield self.served_by("/elsewhere")), 404)
        # The gateway never even read the other namespace.
        listed = {r.namespace for r in self.kube.requests_for(plural="ingresses")}
        self.assertEqual(listed, {"default"})

        moved = ingress("ours", [("/ours", "alpha", self.backend_ports["alpha"])], class_name="nginx")
        self.kube.set_object(moved)
        yield self.wait_for(lambda: self.served_by("/ours").addCallback(lambda b: b == 404))
        self.assertEqual((yield self.served_by("/annotated")), "alpha")

    @inlineCallbacks
    def test_default_class(self) -> Any:
        """An Ingress without a class is served once one of our IngressClasses is the default."""
        self.kube.set_object(
            ingress("plain", [("/plain", "alpha", self.backend_ports["alpha"])], class_name=None)
        )
        yield deferLater(reactor, 0.3, lambda: None)
        self.assertEqual((yield self.served_by("/plain")), 404)
        default = ingress_class()
        default["metadata"]["annotations"] = {"ingressclass.kubernetes.io/is-default-class": "true"}
        self.kube.set_object(default)
        yield self.wait_for(lambda: self.served_by("/plain").addCallback(lambda b: b == "alpha"))

    @inlineCallbacks
    def test_service_port_change_is_followed(self) -> Any:
        """A Service change (its port named by the Ingress) re-routes without touching the Ingress."""
        named = ingress("named", [("/named", "alpha", 0)])
        named["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"] = {"name": "http"}
        self.kube.set_object(named)
        yield self.wait_for(lambda: self.served_by("/named").addCallback(lambda b: b == "alpha"))
        # Point the alpha Service's named port at beta's backend port: the
        # URL stays alpha.default..., the port is beta's.
        self.kube.set_object(service("alpha", self.backend_ports["beta"]))
        before = self.backends["beta"].requests
        yield self.wait_for(
            lambda: self.get("/named").addCallback(lambda _: self.backends["beta"].requests > before)
        )


class InvalidIngressTests(IngressTestCase):
    """One invalid Ingress does not affect the others."""

    @inlineCallbacks
    def test_invalid_parts_are_isolated_and_reported(self) -> Any:
        """Valid paths keep serving; the invalid ones are logged and written as Warning Events."""
        broken = ingress(
            "broken",
            [
                ("/fine", "alpha", self.backend_ports["alpha"]),
                ("/missing", "nope", self.backend_ports["beta"]),
                ("relative", "alpha", self.backend_ports["alpha"]),
            ],
        )
        broken["spec"]["tls"] = [{"hosts": ["x.example.com"], "secretName": "absent"}]
        self.kube.set_object(broken)
        self.kube.set_object(ingress("good", [("/good", "beta", self.backend_ports["beta"])]))
        yield self.wait_for(lambda: self.served_by("/good").addCallback(lambda b: b == "beta"))
        self.assertEqual((yield self.served_by("/fine")), "alpha")
        self.assertEqual((yield self.served_by("/missing")), 404)

        def warnings() -> list[dict[str, Any]]:
            return [
                e
                for e in self.kube.objects("v1", "Event")
                if e["involvedObject"]["name"] == "broken" and e["type"] == "Warning"
            ]

        yield self.wait_for(lambda: len(warnings()) >= 3, what="three Warning events")
        messages = sorted(e["message"] for e in warnings())
        self.assertTrue(any("Service default/nope not found" in m for m in messages), messages)
        self.assertTrue(any("must start with '/'" in m for m in messages), messages)
        self.assertTrue(any("Secret default/absent not found" in m for m in messages), messages)
        self.assertEqual({e["reason"] for e in warnings()}, {"InvalidIngress"})
        self.assertEqual({e["involvedObject"]["kind"] for e in warnings()}, {"Ingress"})
        # Decoding problems reach the configuration's problems: logged once
        # by the reconciler and listed by /config, like translation's own.
        self.assertTrue(
            any(e.get("log_format", "").startswith("Configuration problem in {object}:")
                and e.get("object") == "ingress:routes/default/broken"
                for e in self.log_events)
        )
        config = (yield self.admin("/config")).json()
        listed = {p["message"] for p in config["problems"] if p["object"] == "ingress:routes/default/broken"}
        self.assertTrue(any("Service default/nope not found" in m for m in listed), listed)
        # Fixing the Ingress takes the problem away and serves the path.
        self.kube.set_object(service("nope", self.backend_ports["beta"]))
        yield self.wait_for(lambda: self.served_by("/missing").addCallback(lambda b: b == "nope"))


class TLSIngressTests(IngressTestCase):
    """TLS from kubernetes.io/tls Secrets, chosen by SNI, rotated by updating the Secret."""

    @inlineCallbacks
    def test_secret_certificate_served_and_rotated(self) -> Any:
        first = self_signed("secure.example.com")
        self.kube.set_object(tls_secret("secure-tls", first.chain_pem, first.key_pem))
        unrelated = self_signed("unrelated.example.com")
        self.kube.set_object(tls_secret("unrelated-tls", unrelated.chain_pem, unrelated.key_pem))
        self.kube.set_object(
            ingress(
                "secure",
                [("/", "alpha", self.backend_ports["alpha"])],
                host="secure.example.com",
                tls=[{"hosts": ["secure.example.com"], "secretName": "secure-tls"}],
            )
        )
        https = self.port_of(self.gateway, "https")

        def serial() -> Any:
            return deferToThread(handshake, https, "secure.example.com").addCallback(
                lambda s: s.certificate.serial_number
            )

        yield self.wait_for(lambda: serial().addCallback(lambda n: n == first.certificate.serial_number))
        # Only the referenced Secret is held in memory.
        held = set(self.gateway.ingress.informers["secrets"].cache)
        self.assertEqual(held, {("default", "secure-tls")})

        second = self_signed("secure.example.com")
        self.kube.set_object(tls_secret("secure-tls", second.chain_pem, second.key_pem))
        yield self.wait_for(lambda: serial().addCallback(lambda n: n == second.certificate.serial_number))

        # An Ingress that starts referencing a Secret listed earlier gets it.
        self.kube.set_object(
            ingress(
                "other",
                [("/", "beta", self.backend_ports["beta"])],
                host="unrelated.example.com",
                tls=[{"hosts": ["unrelated.example.com"], "secretName": "unrelated-tls"}],
            )
        )
        yield self.wait_for(
            lambda: deferToThread(handshake, https, "unrelated.example.com").addCallback(
                lambda s: s.certificate.serial_number == unrelated.certificate.serial_number
            )
        )


class ApiServerOutageTests(IngressTestCase):
    """The API server going away, history expiring, the API server unreachable at start."""

    @inlineCallbacks
    def test_relist_after_410_catches_a_deletion(self) -> Any:
        """While the gateway cannot watch, an Ingress is deleted and history compacted: the 410 relist removes it."""
        port = self.backend_ports["alpha"]
        self.kube.set_object(ingress("keep", [("/keep", "alpha", port)]))
        self.kube.set_object(ingress("doomed", [("/doomed", "alpha", port)]))
        yield self.wait_for(lambda: self.served_by("/doomed").addCallback(lambda b: b == "alpha"))
        informer = self.gateway.ingress.informers["ingresses"]
        lists_before = informer.lists

        yield self.kube.stop()
        self.kube.delete_object(NETWORKING, "Ingress", "default", "doomed")
        self.kube.compact()
        # Still serving the last configuration while the API server is down.
        self.assertEqual((yield self.served_by("/doomed")), "alpha")
        yield self.kube.start()

        yield self.wait_for(lambda: self.served_by("/doomed").addCallback(lambda b: b == 404), timeout=30)
        self.assertGreater(informer.lists, lists_before)
        self.assertEqual((yield self.served_by("/keep")), "alpha")

    @inlineCallbacks
    def test_api_server_restart_under_load_drops_nothing(self) -> Any:
        """Requests keep flowing while the API server is killed and restarted: zero failures."""
        self.kube.set_object(ingress("load", [("/load", "alpha", self.backend_ports["alpha"])]))
        yield self.wait_for(lambda: self.served_by("/load").addCallback(lambda b: b == "alpha"))
        port = self.port_of(self.gateway)
        stop = threading.Event()
        statuses: list[int] = []

        def load() -> None:
            import http.client

            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            while not stop.is_set():
                statuses.append(request_sync(port, "GET", "/load/x", conn=conn).status)
            conn.close()

        workers = [deferToThread(load) for _ in range(4)]
        yield deferLater(reactor, 0.3, lambda: None)
        yield self.kube.stop()
        yield deferLater(reactor, 1.0, lambda: None)
        yield self.kube.start()
        informer = self.gateway.ingress.informers["ingresses"]
        watches = informer.watches
        yield self.wait_for(lambda: informer.watches > watches and self.kube.open_watches > 0, timeout=30)
        # A change after the restart is still followed.
        self.kube.set_object(ingress("after", [("/after", "beta", self.backend_ports["beta"])]))
        yield self.wait_for(lambda: self.served_by("/after").addCallback(lambda b: b == "beta"), timeout=30)
        stop.set()
        for worker in workers:
            yield worker
        self.assertGreater(len(statuses), 100)
        self.assertEqual({s for s in statuses}, {200})


class UnreachableAtStartTests(IngressTestCase):
    start_gateway = False

    @inlineCallbacks
    def test_not_ready_until_the_api_server_answers(self) -> Any:
        """With the API server down at start: not ready, retrying; ready and serving once it answers."""
        self.kube.set_object(ingress("late", [("/late", "alpha", self.backend_ports["alpha"])]))
        yield self.kube.stop()
        gateway = yield self.start_another()
        self.gateway = gateway
        yield self.wait_for(lambda: gateway.ingress.informers and gateway.ingress.informers["ingresses"].failures > 0)
        response = yield self.readyz(gateway)
        self.assertEqual(response.status, 503)
        self.assertIn(WAITING, gateway.health.waiting)
        yield self.kube.start()
        yield gateway.reconciler.when_live()
        yield self.wait_for(lambda: self.readyz(gateway).addCallback(lambda r: r.status == 200), timeout=30)
        self.assertEqual((yield self.served_by("/late", gateway=gateway)), "alpha")


class EndpointsModeTests(IngressTestCase):
    """``k8s.ingress.backend=endpoints``: the gateway balances over ready EndpointSlice addresses."""

    environment = {"k8s.ingress.backend": "endpoints"}

    def slices(self, entries: list[tuple[str, int, bool]]) -> None:
        """One EndpointSlice per endpoint (each test backend has its own port)."""
        for name, port, ready in entries:
            self.kube.set_object(
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": name,
                        "namespace": "default",
                        "labels": {"kubernetes.io/service-name": "web"},
                    },
                    "addressType": "IPv4",
                    "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
                    "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": ready}}],
                }
            )

    @inlineCallbacks
    def test_round_robin_over_ready_endpoints_skipping_failed(self) -> Any:
        from .harness import dead_port

        self.kube.set_object(service("web", 80))
        self.kube.set_object(ingress("web", [("/web", "web", 80)]))
        alpha, beta = self.backend_ports["alpha"], self.backend_ports["beta"]
        self.slices([("web-a", alpha, True), ("web-b", beta, True), ("web-c", dead_port(), False)])
        yield self.wait_for(
            lambda: self.get("/web").addCallback(lambda r: r.status == 200)
        )
        yield self.wait_for(
            lambda: len(self.gateway.reconciler.current.config.routes[0].endpoints) == 2
        )
        counts = {n: self.backends[n].requests for n in self.backends}
        for _ in range(20):
            response = yield self.get("/web/x")
            self.assertEqual(response.status, 200)
            # The Host header names the Service, not the endpoint.
            self.assertEqual(self.backend_of(response), "web")
        self.assertEqual(self.backends["alpha"].requests - counts["alpha"], 10)
        self.assertEqual(self.backends["beta"].requests - counts["beta"], 10)

        # A ready endpoint that refuses connections: requests still succeed
        # (retried on another endpoint) and it is skipped from then on.
        dead = dead_port()
        self.slices([("web-c", dead, True)])
        yield self.wait_for(
            lambda: len(self.gateway.reconciler.current.config.routes[0].endpoints) == 3
        )
        statuses = []
        for _ in range(12):
            statuses.append((yield self.get("/web/y")).status)
        self.assertEqual(set(statuses), {200})
        held = self.gateway.pool.balancers.held(reactor.seconds())
        self.assertEqual([port for _, _, port in held], [dead])

    @inlineCallbacks
    def test_no_ready_endpoint_is_503(self) -> Any:
        self.kube.set_object(service("web", 80))
        self.kube.set_object(ingress("web", [("/web", "web", 80)]))
        self.slices([("web-a", self.backend_ports["alpha"], False)])
        yield self.wait_for(lambda: self.get("/web").addCallback(lambda r: r.status == 503))
        response = yield self.get("/web")
        self.assertEqual(response.json()["statusCode"], 503)
        self.slices([("web-a", self.backend_ports["alpha"], True)])
        yield self.wait_for(lambda: self.get("/web").addCallback(lambda r: r.status == 200))


class StatusTests(IngressTestCase):
    """The address in status.loadBalancer.ingress, written by one replica only."""

    environment = {"k8s.ingress.publish-address": "203.0.113.7,gateway.example.com"}
    start_gateway = False

    def status_of(self, name: str) -> Any:
        obj = self.kube.get_object(NETWORKING, "Ingress", "default", name) or {}
        return ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress")

    def lease_holder(self) -> Any:
        lease = self.kube.get_object("coordination.k8s.io/v1", "Lease", "default", "apimgw-leader")
        return (lease or {}).get("spec", {}).get("holderIdentity")

    @inlineCallbacks
    def test_one_writer_and_takeover(self) -> Any:
        expected = [{"ip": "203.0.113.7"}, {"hostname": "gateway.example.com"}]
        first = yield self.start_another()
        yield first.reconciler.when_live()
        second = yield self.start_another()
        yield second.reconciler.when_live()
        self.kube.set_object(ingress("one", [("/one", "alpha", self.backend_ports["alpha"])]))
        yield self.wait_for(lambda: self.status_of("one") == expected, what="status written")
        yield self.wait_for(lambda: self.lease_holder() is not None)
        sources = {g: g.ingress for g in (first, second)}
        writers = {g: g.getServiceNamed("status").getServiceNamed("ingress") for g in (first, second)}
        leaders = [g for g, s in sources.items() if s.election.is_leader]
        self.assertEqual(len(leaders), 1)
        leader = leaders[0]
        follower = second if leader is first else first
        self.assertEqual(self.lease_holder(), sources[leader].election.identity)
        # The fake API server applies the write before the writer hears back
        # and counts it: wait for the count rather than race it.
        yield self.wait_for(lambda: writers[leader].updates >= 1, what="the leader's count")
        self.assertEqual(writers[follower].updates, 0)
        # Both serve the Ingress, whoever writes the status.
        for gateway in (first, second):
            yield self.wait_for(
                lambda: self.served_by("/one", gateway=gateway).addCallback(lambda b: b == "alpha")
            )

        # The leader stops: the other replica takes the Lease over and
        # writes the status of a new Ingress.
        yield leader.stopService()
        yield self.wait_for(lambda: sources[follower].election.is_leader, timeout=30, what="takeover")
        self.kube.set_object(ingress("two", [("/two", "beta", self.backend_ports["beta"])]))
        yield self.wait_for(lambda: self.status_of("two") == expected, timeout=30)
        yield self.wait_for(lambda: writers[follower].updates >= 1, what="the new leader's count")
        self.assertEqual(self.lease_holder(), sources[follower].election.identity)

    @inlineCallbacks
    def test_status_write_does_not_change_precedence(self) -> Any:
        """Writing the status adds a managedFields entry for the status subresource; the route's time is unchanged."""
        gateway = yield self.start_another()
        yield gateway.reconciler.when_live()
        self.kube.set_object(ingress("one", [("/one", "alpha", self.backend_ports["alpha"])]))
        yield self.wait_for(lambda: self.status_of("one") is not None)
        yield self.wait_for(lambda: self.served_by("/one", gateway=gateway).addCallback(lambda b: b == "alpha"))
        created = self.kube.get_object(NETWORKING, "Ingress", "default", "one")
        managers = [e.get("subresource") for e in created["metadata"]["managedFields"]]
        self.assertIn("status", managers)
        (route,) = [r for r in gateway.reconciler.current.config.routes if r.path == "/one"]
        from gateway.sources.ingress import modification_time

        without_status = dict(created)
        without_status["metadata"] = dict(created["metadata"])
        without_status["metadata"]["managedFields"] = [
            e for e in created["metadata"]["managedFields"] if not e.get("subresource")
        ]
        self.assertEqual(route.modified, modification_time(without_status))


class PublishServiceTests(IngressTestCase):
    """The address taken from the gateway's own Service."""

    environment = {"k8s.ingress.publish-service": "default/apimgw"}

    @inlineCallbacks
    def test_address_follows_the_service(self) -> Any:
        gateway_service = service("apimgw", 80)
        gateway_service["spec"]["type"] = "LoadBalancer"
        gateway_service["status"] = {"loadBalancer": {"ingress": [{"ip": "198.51.100.4"}]}}
        self.kube.set_object(gateway_service)
        self.kube.set_object(ingress("one", [("/one", "alpha", self.backend_ports["alpha"])]))

        def status() -> Any:
            obj = self.kube.get_object(NETWORKING, "Ingress", "default", "one") or {}
            return ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress")

        yield self.wait_for(lambda: status() == [{"ip": "198.51.100.4"}])
        gateway_service["status"] = {"loadBalancer": {"ingress": [{"hostname": "lb.example.net"}]}}
        self.kube.set_object(gateway_service)
        yield self.wait_for(lambda: status() == [{"hostname": "lb.example.net"}])


class ShadowingTests(IngressTestCase):
    """An Ingress route that loses "last one wins" to another source gets a Warning Event."""

    with_memory_source = True

    @inlineCallbacks
    def test_shadowed_route_event(self) -> Any:
        self.kube.set_object(ingress("shop", [("/shop", "alpha", self.backend_ports["alpha"])]))
        yield self.wait_for(lambda: self.served_by("/shop").addCallback(lambda b: b == "alpha"))
        # Another source configures the same route, modified later: it wins.
        beta = f"http://beta.default.svc.cluster.local:{self.backend_ports['beta']}"
        self.memory.put("newer", RouteSet((Route(path="/shop", backend=beta),)), time.time() + 60)
        yield self.wait_for(lambda: self.served_by("/shop").addCallback(lambda b: b == "beta"))

        def shadowed() -> list[dict[str, Any]]:
            return [
                e
                for e in self.kube.objects("v1", "Event")
                if e["involvedObject"]["name"] == "shop" and e["reason"] == "RouteShadowed"
            ]

        yield self.wait_for(shadowed, what="a RouteShadowed event")
        (event,) = shadowed()
        self.assertEqual(event["type"], "Warning")
        self.assertIn("/shop", event["message"])
        self.assertIn("memory:routes/newer", event["message"])


class SecretsAtStartTests(IngressTestCase):
    start_gateway = False

    @inlineCallbacks
    def test_secrets_listed_at_start_need_no_get(self) -> Any:
        """TLS Secrets present at start come from the list (no GET each); the unreferenced are then dropped."""
        used = self_signed("used.example.com")
        spare = self_signed("spare.example.com")
        self.kube.set_object(tls_secret("used-tls", used.chain_pem, used.key_pem))
        self.kube.set_object(tls_secret("spare-tls", spare.chain_pem, spare.key_pem))
        self.kube.set_object(
            ingress(
                "used",
                [("/", "alpha", self.backend_ports["alpha"])],
                host="used.example.com",
                tls=[{"hosts": ["used.example.com"], "secretName": "used-tls"}],
            )
        )
        gateway = yield self.start_another()
        yield gateway.reconciler.when_live()
        https = self.port_of(gateway, "https")
        session = yield deferToThread(handshake, https, "used.example.com")
        self.assertEqual(session.certificate.serial_number, used.certificate.serial_number)
        self.assertEqual(self.kube.requests_for("get", "secrets"), [])
        self.assertEqual(set(gateway.ingress.informers["secrets"].cache), {("default", "used-tls")})
        lists = self.kube.requests_for("list", "secrets")
        self.assertEqual({r.query.get("fieldSelector") for r in lists}, {"type=kubernetes.io/tls"})
