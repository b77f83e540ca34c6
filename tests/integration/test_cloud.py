"""
The gateway with its cloud source against a real configuration service,
both in-process on loopback, with real backends: management API changes
reach the traffic port, and a conflict with a second source resolves the
same way before and after restarts (from the backup and from the service).
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.threads import deferToThread
from twisted.web.resource import Resource
from twisted.web.server import Site

from gateway.model import Api, Store
from gateway.sources.cloud._backup import BACKUP_FILE
from gateway.tap import Options, build_gateway
from gateway.testing.memory import MemorySource
from tests.configservice.harness import ServiceTestCase
from tests.integration.harness import dead_port, request_sync

GATEWAY = "edge"

#: A policy document in APIM's syntax, as the management API accepts it.
POLICY = (
    '<policies><inbound><base /><set-header name="X-Api" exists-action="override">'
    "<value>orders</value></set-header></inbound><backend><base /></backend>"
    "<outbound><base /></outbound><on-error><base /></on-error></policies>"
)


class _Named(Resource):
    """Answers every request with its name and the path it received."""

    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def render(self, request: Any) -> bytes:
        return f"{self.name} {request.uri.decode()}".encode()


class CloudGatewayTests(ServiceTestCase):
    """A service with gateway ``edge``, two named backends, gateways built per test."""

    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        self.backends: dict[str, str] = {}
        for name in ("cloud-backend", "memory-backend", "other-backend"):
            port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
                Site(_Named(name))
            )
            self.addCleanup(port.stopListening)
            self.backends[name] = f"http://127.0.0.1:{port.getHost().port}"
        self.backup_dir = tempfile.mkdtemp()
        yield self.ok("PUT", f"/gateways/{GATEWAY}", {})
        self.token_value = yield self.token(GATEWAY)

    @inlineCallbacks
    def start_gateway(self, *, endpoint: str | None = None, memory: bool = False) -> Any:
        """Build and start a gateway; ``self.gateway``, ``self.port``, ``self.memory``."""
        environ = {
            "config.service.endpoint": endpoint or f"http://127.0.0.1:{self.gateway_port}",
            "config.service.auth": self.token_value,
            "config.backup.interval": "0",
            "TELEMETRY_LOGS_STD": "none",
        }
        options = Options(environ=environ)
        options.parseOptions([
            "--http", "tcp:0:interface=127.0.0.1",
            "--https", "",
            "--admin", "tcp:0:interface=127.0.0.1",
            "--backup-path", self.backup_dir,
        ])
        store = Store()
        self.memory = MemorySource(store) if memory else None
        gateway = build_gateway(
            options, reactor, store=store, extra_sources=[self.memory] if memory else []
        )
        self.gateway = gateway
        gateway.startService()
        self.addCleanup(lambda: gateway.stopService() if gateway.running else None)
        yield gateway.reconciler.when_live()
        self.port = gateway.listeners["http"].port.getHost().port
        self.admin_port = gateway.listeners["admin"].port.getHost().port
        return gateway

    def get(self, path: str) -> Any:
        return deferToThread(request_sync, self.port, "GET", path)

    def admin_config(self) -> Any:
        """The gateway's effective configuration (admin ``/config``)."""
        return deferToThread(request_sync, self.admin_port, "GET", "/config").addCallback(
            lambda r: r.json()
        )

    def served_by(self, path: str, backend: str) -> Any:
        @inlineCallbacks
        def check() -> Any:
            response = yield self.get(path)
            return response.status == 200 and response.body.startswith(backend.encode())

        return self.wait_for(check)

    @inlineCallbacks
    def cloud_api(self, api_id: str, path: str, backend: str) -> Any:
        yield self.ok("PUT", f"/apis/{api_id}",
                      {"path": path, "serviceUrl": self.backends[backend] + "/base"})
        yield self.ok("PUT", f"/gateways/{GATEWAY}/apis/{api_id}")

    @inlineCallbacks
    def test_managementChangesServed(self) -> Any:
        """
        An API created through the management API is served by the gateway;
        changing its service URL moves the traffic to the new backend, and
        deleting it makes the path answer 404.
        """
        yield self.cloud_api("seed", "seed", "other-backend")
        yield self.start_gateway()
        yield self.served_by("/seed/x", "other-backend")
        yield self.cloud_api("users", "users", "cloud-backend")
        yield self.served_by("/users/42", "cloud-backend")
        response = yield self.get("/users/42")
        self.assertEqual(response.body, b"cloud-backend /base/42")
        yield self.ok("PUT", "/apis/users",
                      {"path": "users", "serviceUrl": self.backends["other-backend"] + "/v2"})
        yield self.served_by("/users/42", "other-backend")
        # protocols reach the gateway: an https-only API is not served on the
        # plain-HTTP listener.
        yield self.ok("PUT", "/apis/users",
                      {"path": "users", "serviceUrl": self.backends["other-backend"] + "/v2",
                       "protocols": ["https"]})

        @inlineCallbacks
        def https_only() -> Any:
            route = [r for r in (yield self.admin_config())["routes"] if r["path"] == "/users"]
            return route and route[0].get("protocols") == ["https"]

        yield self.wait_for(https_only)
        self.assertEqual((yield self.get("/users/42")).status, 404)
        yield self.ok("DELETE", "/apis/users")

        @inlineCallbacks
        def gone() -> Any:
            return not [r for r in (yield self.admin_config())["routes"] if r["path"] == "/users"]

        yield self.wait_for(gone)

    @inlineCallbacks
    def test_malformedApiIsAProblem(self) -> Any:
        """
        An API the service sends in a shape the gateway cannot decode (here
        without ``serviceUrl``, as a newer or broken service might) shows
        in the gateway's ``/config`` problems, naming the API and the
        field, while the other APIs are served; once the service sends it
        whole again the problem goes and the API is served.
        """
        import configservice._changes
        import configservice._queries

        original = configservice._queries.gateway_view

        def view(kind: str, entity_id: str, *args: Any) -> Any:
            entity = original(kind, entity_id, *args)
            if kind == "api" and entity_id == "broken":
                entity.pop("serviceUrl", None)
            return entity

        self.patch(configservice._queries, "gateway_view", view)
        self.patch(configservice._changes, "gateway_view", view)
        yield self.cloud_api("good", "good", "cloud-backend")
        yield self.cloud_api("broken", "broken", "other-backend")
        yield self.start_gateway()
        yield self.served_by("/good/x", "cloud-backend")
        config = yield self.admin_config()
        self.assertIn("cloud:api/broken", [p["object"] for p in config["problems"]])
        (problem,) = [p for p in config["problems"] if p["object"] == "cloud:api/broken"]
        self.assertIn("serviceUrl", problem["message"])
        self.assertNotIn("/broken", [r["path"] for r in config["routes"]])
        self.assertEqual((yield self.get("/broken/x")).status, 404)

        # The service mends it: the change event clears the problem.
        self.patch(configservice._changes, "gateway_view", original)
        self.patch(configservice._queries, "gateway_view", original)
        yield self.cloud_api("broken", "broken", "other-backend")
        yield self.served_by("/broken/x", "other-backend")
        config = yield self.admin_config()
        self.assertEqual([p for p in config["problems"] if p["object"].startswith("cloud:")], [])

    @inlineCallbacks
    def test_notReadyWithoutAnyConfiguration(self) -> Any:
        """
        A gateway whose only source is an unreachable cloud with no backup
        builds no configuration: /readyz stays 503, it never serves an
        empty one.
        """
        environ = {
            "config.service.endpoint": f"http://127.0.0.1:{dead_port()}",
            "config.service.auth": self.token_value,
        }
        options = Options(environ=environ)
        options.parseOptions(["--http", "tcp:0:interface=127.0.0.1", "--https", "",
                              "--admin", "tcp:0:interface=127.0.0.1",
                              "--backup-path", self.backup_dir])
        gateway = build_gateway(options, reactor)
        gateway.startService()
        self.addCleanup(lambda: gateway.stopService() if gateway.running else None)
        yield self.wait_for(lambda: self.logged("No cloud configuration backup"))
        yield self.wait_for(lambda: gateway.listeners["admin"].port is not None)
        port = gateway.listeners["admin"].port.getHost().port
        response = yield deferToThread(request_sync, port, "GET", "/readyz")
        self.assertEqual(response.status, 503)
        self.assertIsNone(gateway.reconciler.current)

    @inlineCallbacks
    def assert_memory_wins(self) -> Any:
        yield self.served_by("/users/1", "memory-backend")
        response = yield deferToThread(request_sync, self.admin_port, "GET", "/config")
        dump = response.json()
        (route,) = [r for r in dump["routes"] if r["path"] == "/users"]
        self.assertEqual(route["source"], "memory:api/users")
        self.assertEqual(route["shadows"], ["cloud:api/users"])

    @inlineCallbacks
    def test_conflictStableAcrossRestarts(self) -> Any:
        """
        The seed's scenario: the cloud adds ``/users``, a second source adds
        ``/users`` later and wins; after a restart with the cloud
        unreachable (served from the backup) and after one with it
        reachable, where the second source loads first and the cloud's
        snapshot arrives after it, the second source still wins.
        """
        yield self.cloud_api("users", "users", "cloud-backend")
        yield self.start_gateway(memory=True)
        yield self.served_by("/users/1", "cloud-backend")
        later = time.time() + 1
        memory_api = Api(name="users", path="users", service_url=self.backends["memory-backend"])
        self.memory.put("users", memory_api, modified=later)
        yield self.assert_memory_wins()
        backup = os.path.join(self.backup_dir, BACKUP_FILE)
        yield self.wait_for(lambda: os.path.exists(backup))
        yield self.gateway.stopService()

        # Restart 1: the service is unreachable; the cloud API comes from the backup.
        self.memory = None
        yield self.start_gateway(endpoint=f"http://127.0.0.1:{dead_port()}", memory=True)
        self.memory.put("users", memory_api, modified=later)
        self.assertTrue(self.gateway.cloud.from_backup)
        yield self.assert_memory_wins()
        yield self.gateway.stopService()

        # Restart 2: the service answers; the memory object is there first.
        yield self.start_gateway_memory_first(memory_api, later)
        self.assertFalse(self.gateway.cloud.from_backup)
        yield self.assert_memory_wins()

    @inlineCallbacks
    def start_gateway_memory_first(self, api: Api, modified: float) -> Any:
        """Start a gateway whose memory source holds ``api`` before the cloud answers."""
        original = MemorySource.startService

        def start_with_api(source: MemorySource) -> None:
            source.put("users", api, modified=modified)
            original(source)

        self.patch(MemorySource, "startService", start_with_api)
        yield self.start_gateway(memory=True)

    @inlineCallbacks
    def test_managementObjectsArrive(self) -> Any:
        """
        A product with an API of the gateway, a subscription to it and a
        policy on the API, put through the management API, arrive in the
        gateway's store as model objects (the API still served); the
        subscription keys reach the backup sealed, never in clear.
        """
        from gateway.model import Policy, Product, Subscription, SubscriptionScope

        yield self.cloud_api("orders", "orders", "cloud-backend")
        yield self.start_gateway()
        yield self.ok("PUT", "/products/starter", {"displayName": "Starter"})
        yield self.ok("PUT", "/products/starter/apis/orders")
        yield self.ok("PUT", "/subscriptions/contoso", {
            "scope": "/products/starter", "primaryKey": "primary-key-0001",
            "secondaryKey": "secondary-key-0002"})
        yield self.ok("PUT", "/apis/orders/policy", {"format": "xml", "value": POLICY})

        def bodies() -> dict[str, Any]:
            return {str(o.ref): o.body for o in self.gateway.store.objects("cloud")}

        yield self.wait_for(lambda: {"cloud:product/starter", "cloud:subscription/contoso",
                                     "cloud:policy/apis/orders"} <= set(bodies()))
        found = bodies()
        self.assertEqual(found["cloud:product/starter"],
                         Product("starter", "Starter", ("orders",), True, "published"))
        subscription = found["cloud:subscription/contoso"]
        self.assertIsInstance(subscription, Subscription)
        self.assertEqual((subscription.scope, subscription.state, subscription.keys),
                         (SubscriptionScope("product", "starter"), "active",
                          ("primary-key-0001", "secondary-key-0002")))
        policy = found["cloud:policy/apis/orders"]
        self.assertIsInstance(policy, Policy)
        self.assertEqual((policy.scope.api_id, policy.xml), ("orders", POLICY))
        yield self.served_by("/orders/x", "cloud-backend")
        self.assertEqual([p for p in (yield self.admin_config())["problems"]
                          if p["object"].startswith("cloud:")], [])

        backup = os.path.join(self.backup_dir, BACKUP_FILE)

        def backed_up() -> bool:
            try:
                with open(backup, "rb") as f:
                    return b'"contoso"' in f.read()
            except OSError:
                return False

        with open(backup, "rb") as f:
            content = f.read()
        self.assertNotIn(b"primary-key-0001", content)
        self.assertNotIn(b"secondary-key-0002", content)

    @inlineCallbacks
    def test_malformedPolicyIsAProblem(self) -> Any:
        """
        A policy entity the gateway cannot decode (here without its
        document, as a broken service might send it) shows in ``/config``
        problems naming the policy and the field; the API is still served.
        """
        import configservice._changes
        import configservice._queries

        original = configservice._queries.gateway_view

        def view(kind: str, entity_id: str, *args: Any) -> Any:
            entity = original(kind, entity_id, *args)
            if kind == "policy":
                entity.pop("value", None)
            return entity

        self.patch(configservice._queries, "gateway_view", view)
        self.patch(configservice._changes, "gateway_view", view)
        yield self.cloud_api("orders", "orders", "cloud-backend")
        yield self.start_gateway()
        yield self.ok("PUT", "/apis/orders/policy", {"format": "xml", "value": POLICY})

        @inlineCallbacks
        def reported() -> Any:
            problems = (yield self.admin_config())["problems"]
            return [p for p in problems if p["object"] == "cloud:policy/apis/orders"]

        yield self.wait_for(reported)
        (problem,) = yield reported()
        self.assertIn("lacks value", problem["message"])
        yield self.served_by("/orders/x", "cloud-backend")


    @inlineCallbacks
    def test_subscriptionKeyParameterNames(self) -> Any:
        """
        An API whose subscriptionKeyParameterNames are set through the
        management API takes its key from the custom header and from the
        custom query parameter, and from neither default name; the key
        reaches the backend in neither place, the other query parameters
        do. After a restart with the service unreachable the names come
        back from the backup and still hold.
        """
        from gateway.testing.backends import scenario_site

        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            scenario_site(reactor))
        self.addCleanup(port.stopListening)
        echo = f"http://127.0.0.1:{port.getHost().port}"
        key = "catalog-key-0001"
        yield self.cloud_api("seed", "seed", "other-backend")
        yield self.start_gateway()
        yield self.ok("PUT", "/apis/catalog", {
            "path": "catalog", "serviceUrl": echo + "/api", "subscriptionRequired": True,
            "subscriptionKeyParameterNames": {"header": "X-Catalog-Key", "query": "catalog-key"}})
        yield self.ok("PUT", f"/gateways/{GATEWAY}/apis/catalog")
        yield self.ok("PUT", "/subscriptions/catalog-only",
                      {"scope": "/apis/catalog", "primaryKey": key})

        def call(path: str, *headers: tuple[str, str]) -> Any:
            return deferToThread(request_sync, self.port, "GET", path, list(headers))

        @inlineCallbacks
        def admitted() -> Any:
            return (yield call("/catalog/x", ("X-Catalog-Key", key))).status == 200

        @inlineCallbacks
        def check() -> Any:
            by_header = yield call("/catalog/x?a=1", ("X-Catalog-Key", key))
            self.assertEqual(by_header.status, 200, by_header.body)
            seen = by_header.json()
            self.assertEqual((seen["path"], seen["query"]), ("/api/x", "a=1"))
            self.assertNotIn("x-catalog-key", [k.lower() for k, _ in seen["headers"]])
            self.assertNotIn(key, by_header.body.decode())

            by_query = yield call(f"/catalog/x?a=1&catalog-key={key}&b=2")
            self.assertEqual(by_query.status, 200, by_query.body)
            seen = by_query.json()
            self.assertEqual((seen["path"], seen["query"]), ("/api/x", "a=1&b=2"))
            self.assertNotIn(key, by_query.body.decode())

            for refused in (call("/catalog/x", ("Ocp-Apim-Subscription-Key", key)),
                            call(f"/catalog/x?subscription-key={key}"),
                            call("/catalog/x")):
                response = yield refused
                self.assertEqual(response.status, 401, response.body)
                self.assertIn("missing subscription key", response.json()["message"])
            wrong = yield call("/catalog/x", ("X-Catalog-Key", "not-the-key-0000"))
            self.assertEqual(wrong.status, 401)
            self.assertIn("invalid subscription key", wrong.json()["message"])

        yield self.wait_for(admitted)
        yield check()
        self.assertEqual([p for p in (yield self.admin_config())["problems"]
                          if p["object"].startswith("cloud:")], [])

        backup = os.path.join(self.backup_dir, BACKUP_FILE)
        yield self.wait_for(lambda: _backup_has(backup, b'"X-Catalog-Key"', b'"catalog-only"'))
        yield self.gateway.stopService()
        yield self.start_gateway(endpoint=f"http://127.0.0.1:{dead_port()}")
        self.assertTrue(self.gateway.cloud.from_backup)
        yield self.wait_for(admitted)
        yield check()


def _backup_has(path: str, *needles: bytes) -> bool:
    """The backup file at ``path`` exists and holds every one of ``needles``."""
    try:
        with open(path, "rb") as f:
            content = f.read()
    except OSError:
        return False
    return all(needle in content for needle in needles)
