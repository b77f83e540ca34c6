"""
The Gateway API source against the fake API server on a real loopback
port and a real store: what it publishes after each change, which
Secrets it holds, readiness, leadership, and its behaviour through an
API server outage and a relist after ``410``.
"""

from __future__ import annotations

import base64
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from gateway.model import Certificate, GatewayRoutes, ObjectRef, Store
from gateway.observability import Health
from gateway.sources.gatewayapi import (
    SOURCE,
    WAITING,
    GatewayApiSource,
    Resolution,
    ResolvedRule,
)
from gateway.sources.kubernetes import GATEWAY, GATEWAY_CLASS, HTTP_ROUTE, Kind
from gateway.testing.certs import self_signed
from gateway.testing.fakekube import FakeKubeServer

from ..kubernetes._support import start_fake, wait_for

CONTROLLER = "apimgw.io/gateway-controller"
V1 = "gateway.networking.k8s.io/v1"
V1BETA1 = "gateway.networking.k8s.io/v1beta1"
INFRA, APPS, BACKENDS = "infra", "apps", "backends"
SECURE_HOST = "secure.example.com"


def gateway_class(name: str = "apimgw", controller: str = CONTROLLER) -> dict[str, Any]:
    return {
        "apiVersion": V1,
        "kind": "GatewayClass",
        "metadata": {"name": name},
        "spec": {"controllerName": controller},
    }


def gateway(
    name: str = "gw",
    *,
    cls: str = "apimgw",
    secret: str | None = "secure-tls",
    secret_namespace: str | None = None,
) -> dict[str, Any]:
    """An HTTP listener on 80 taking routes from every namespace; with ``secret``, HTTPS on 443."""
    listeners: list[dict[str, Any]] = [
        {
            "name": "http",
            "port": 80,
            "protocol": "HTTP",
            "allowedRoutes": {"namespaces": {"from": "All"}},
        }
    ]
    if secret is not None:
        ref = {"name": secret}
        if secret_namespace is not None:
            ref["namespace"] = secret_namespace
        listeners.append(
            {
                "name": "https",
                "port": 443,
                "protocol": "HTTPS",
                "hostname": SECURE_HOST,
                "tls": {"mode": "Terminate", "certificateRefs": [ref]},
                "allowedRoutes": {"namespaces": {"from": "All"}},
            }
        )
    return {
        "apiVersion": V1,
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": INFRA},
        "spec": {"gatewayClassName": cls, "listeners": listeners},
    }


def http_route(
    name: str,
    namespace: str,
    path: str,
    service: str,
    *,
    service_namespace: str | None = None,
    parent: str = "gw",
) -> dict[str, Any]:
    backend: dict[str, Any] = {"name": service, "port": 8080}
    if service_namespace is not None:
        backend["namespace"] = service_namespace
    return {
        "apiVersion": V1,
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "parentRefs": [{"name": parent, "namespace": INFRA}],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": path}}],
                    "backendRefs": [backend],
                }
            ],
        },
    }


def service(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"ports": [{"name": "http", "port": 8080}]},
    }


def reference_grant() -> dict[str, Any]:
    """Lets HTTPRoutes of ``apps`` name Services of ``backends``."""
    return {
        "apiVersion": V1BETA1,
        "kind": "ReferenceGrant",
        "metadata": {"name": "apps-to-backends", "namespace": BACKENDS},
        "spec": {
            "from": [
                {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": APPS}
            ],
            "to": [{"group": "", "kind": "Service"}],
        },
    }


def tls_secret(name: str, namespace: str, cert_pem: str, key_pem: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": namespace},
        "data": {
            "tls.crt": base64.b64encode(cert_pem.encode()).decode(),
            "tls.key": base64.b64encode(key_pem.encode()).decode(),
        },
    }


def served(resolution: Resolution | None) -> dict[str, list[tuple[str, str | None]]]:
    """Route ``ns/name`` → [(path, backend URL)] as resolved on the HTTP listener."""
    result: dict[str, list[tuple[str, str | None]]] = {}
    if resolution is None:
        return result
    for listener in resolution.listeners:
        if listener.name != "http":
            continue
        for group in listener.hosts:
            for rule in group.rules:
                result.setdefault(rule.route, []).extend(_backends(rule))
    return result


def _backends(rule: ResolvedRule) -> list[tuple[str, str | None]]:
    return [(rule.match.path, b.url) for b in rule.backends]


class SourceTests(TestCase):
    """One fake API server, one store, one source per test."""

    server: FakeKubeServer

    async def _start(
        self, *objects: dict[str, Any], kubeconfig: bool = False, **kwargs: Any
    ) -> GatewayApiSource:
        self.server, client = await start_fake(self)
        for obj in objects:
            self.server.set_object(obj)
        self.store = Store()
        self.health = Health()
        kwargs.setdefault("election_id", None)
        if kubeconfig:
            path = self.server.kubeconfig(self.mktemp() + ".kubeconfig")
            kwargs["config_path"] = path
        else:
            kwargs["client"] = client
        kwargs.setdefault("namespace", None)
        source = GatewayApiSource(
            self.store,
            reactor=reactor,
            controller_name=CONTROLLER,
            health=self.health,
            environ={},
            identity="gw-0_test",
            **kwargs,
        )
        source.startService()
        self.addCleanup(source.stopService)
        return source

    def _certificates(self) -> list[Certificate]:
        return [obj.body for obj in self.store.objects(SOURCE) if isinstance(obj.body, Certificate)]

    def _stored(self) -> dict[str, list[tuple[str, str | None]]]:
        """What the store holds of Gateway ``infra/gw``: route → [(path, backend URL)], HTTP listener."""
        result: dict[str, list[tuple[str, str | None]]] = {}
        for obj in self.store.objects(SOURCE):
            if obj.ref == ObjectRef(SOURCE, "gatewayroutes", "infra/gw"):
                assert isinstance(obj.body, GatewayRoutes)
                for rule in obj.body.rules:
                    if rule.protocol == "HTTP":
                        result.setdefault(rule.route, []).extend(
                            (rule.path, b.url) for b in rule.backends
                        )
        return result

    def _problems(self) -> list[str]:
        return [f"{p.ref.name}: {p.message}" for p in self.store.problems(SOURCE)]

    async def _world(self, **kwargs: Any) -> tuple[GatewayApiSource, Any]:
        """Our class and Gateway, a same-namespace and a granted cross-namespace route."""
        cert = self_signed(SECURE_HOST)
        source = await self._start(
            gateway_class(),
            gateway(),
            tls_secret("secure-tls", INFRA, cert.chain_pem, cert.key_pem),
            service("web", INFRA),
            service("api", BACKENDS),
            http_route("web", INFRA, "/web", "web"),
            http_route("api", APPS, "/api", "api", service_namespace=BACKENDS),
            reference_grant(),
            **kwargs,
        )
        await source.when_synced()
        return source, cert

    async def test_objects_reach_the_store(self) -> None:
        """
        After the first lists: the routes resolved on the Gateway's
        listener (the cross-namespace one through its ReferenceGrant) and
        held in the store as the Gateway's body, the
        HTTPS listener's certificate in the store for its hostname, no
        problems, and readiness no longer waiting.
        """
        source, cert = await self._world()
        self.assertEqual(
            served(source.resolution),
            {
                "apps/api": [("/api", "http://api.backends.svc.cluster.local:8080")],
                "infra/web": [("/web", "http://web.infra.svc.cluster.local:8080")],
            },
        )
        self.assertEqual(self._stored(), served(source.resolution))
        (certificate,) = self._certificates()
        self.assertEqual(certificate.hosts, (SECURE_HOST,))
        self.assertEqual(
            (certificate.cert_pem, certificate.key_pem), (cert.chain_pem, cert.key_pem)
        )
        self.assertEqual(self._problems(), [])
        self.assertNotIn(WAITING, self.health.waiting)

    async def test_route_change_is_resolved_again(self) -> None:
        """A changed HTTPRoute is served with its new path, and listeners hear of it after the store has it."""
        source, _ = await self._world()
        heard: list[Resolution] = []
        source.add_resolution_listener(heard.append)
        self.server.set_object(http_route("web", INFRA, "/new", "web"))
        await wait_for(
            lambda: (
                ("/new", "http://web.infra.svc.cluster.local:8080")
                in served(source.resolution).get("infra/web", [])
            )
        )
        self.assertEqual(
            served(source.resolution)["infra/web"],
            [("/new", "http://web.infra.svc.cluster.local:8080")],
        )
        self.assertIs(heard[-1], source.resolution)
        self.assertEqual(
            self._stored()["infra/web"], [("/new", "http://web.infra.svc.cluster.local:8080")]
        )

    async def test_reference_grant_deleted_withdraws_the_cross_namespace_backend(self) -> None:
        """
        Without its ReferenceGrant the cross-namespace backend has no URL
        in the store (its traffic is answered 500, as the spec requires,
        never sent across namespaces), the route reports
        RefNotPermitted, and the same-namespace route is untouched.
        """
        source, _ = await self._world()
        self.server.delete_object(V1BETA1, "ReferenceGrant", BACKENDS, "apps-to-backends")
        await wait_for(lambda: served(source.resolution)["apps/api"] == [("/api", None)])
        (backend,) = [
            b
            for listener in source.resolution.listeners  # type: ignore[union-attr]
            for group in listener.hosts
            for rule in group.rules
            if rule.route == "apps/api"
            for b in rule.backends
        ][:1]
        self.assertEqual(backend.problem, "RefNotPermitted")
        self.assertEqual(self._stored()["apps/api"], [("/api", None)])
        self.assertEqual(
            served(source.resolution)["infra/web"],
            [("/web", "http://web.infra.svc.cluster.local:8080")],
        )
        self.assertTrue(
            any(
                p.startswith("HTTPRoute/apps/api: ") and "RefNotPermitted" in p
                for p in self._problems()
            ),
            self._problems(),
        )
        self.server.set_object(reference_grant())
        await wait_for(
            lambda: (
                served(source.resolution)["apps/api"]
                == [("/api", "http://api.backends.svc.cluster.local:8080")]
            )
        )
        self.assertEqual(self._problems(), [])
        self.assertEqual(
            self._stored()["apps/api"], [("/api", "http://api.backends.svc.cluster.local:8080")]
        )

    async def test_modification_time_comes_from_the_objects(self) -> None:
        """
        A Gateway's body is as new as the newest write to the Gateway or
        its HTTPRoutes (so "last one wins" against other sources survives
        a restart); a status write, as the status writer makes, changes
        nothing, while a spec change makes it newer.
        """
        source, _ = await self._world()
        ref = ObjectRef(SOURCE, "gatewayroutes", "infra/gw")

        def modified() -> float:
            (obj,) = [o for o in self.store.objects(SOURCE) if o.ref == ref]
            return obj.modified

        first = modified()
        self.assertGreater(first, 0)
        client = await source.when_started()
        route = source.informer(HTTP_ROUTE).get(APPS, "api")
        assert route is not None
        written = await client.update_status(HTTP_ROUTE, {**route, "status": {"parents": []}})
        await wait_for(
            lambda: (
                (source.informer(HTTP_ROUTE).get(APPS, "api") or {})
                .get("metadata", {})
                .get("resourceVersion")
                == written["metadata"]["resourceVersion"]
                and source._pending is None
            )
        )
        self.assertEqual(modified(), first)
        # managedFields times have whole seconds: the next second is newer.
        await wait_for(lambda: time.time() >= int(first) + 1, timeout=3)
        self.server.set_object(http_route("api", APPS, "/v2", "api", service_namespace=BACKENDS))
        await wait_for(lambda: modified() > first)

    async def test_status_write_is_not_resolved_again(self) -> None:
        """
        A status write to an HTTPRoute, a Gateway or a GatewayClass (what
        the Lease holder does after each resolution) leaves their
        generation alone and costs no resolution; a spec change does.
        """
        source, _ = await self._world()
        client = await source.when_started()
        before = source.resolutions
        for kind, namespace, name in ((HTTP_ROUTE, APPS, "api"), (GATEWAY, INFRA, "gw")):
            current = source.informer(kind).get(namespace, name)
            assert current is not None
            written = await client.update_status(kind, {**current, "status": {"conditions": []}})
            await wait_for(
                lambda k=kind, ns=namespace, n=name, w=written: (
                    (source.informer(k).get(ns, n) or {}).get("metadata", {}).get("resourceVersion")
                    == w["metadata"]["resourceVersion"]
                )
            )
        await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(source.resolutions, before)
        self.server.set_object(http_route("api", APPS, "/v2", "api", service_namespace=BACKENDS))
        await wait_for(lambda: source.resolutions > before)

    async def test_one_namespace(self) -> None:
        """
        Watching one namespace: its Gateway and routes are served, a
        route of another namespace is not seen, and only that Namespace
        is read (what a Role there and a ClusterRole naming just that
        Namespace allow).
        """
        source, _ = await self._world(namespace=INFRA)
        self.assertEqual(list(served(source.resolution)), ["infra/web"])
        self.assertEqual(list(source.informers["namespaces"].cache), [("", INFRA)])
        self.assertEqual(list(source.informers["services"].cache), [(INFRA, "web")])

    async def test_gateway_of_another_controller_is_ignored(self) -> None:
        """A Gateway whose class another controller owns gets no listener, no status and no certificate here."""
        source, _ = await self._world()
        cert = self_signed("other.example.com")
        self.server.set_object(gateway_class("other", "example.com/other-controller"))
        self.server.set_object(tls_secret("other-tls", INFRA, cert.chain_pem, cert.key_pem))
        self.server.set_object(gateway("other-gw", cls="other", secret="other-tls"))
        self.server.set_object(http_route("other", INFRA, "/other", "web", parent="other-gw"))
        await wait_for(
            lambda: (
                source.informer(HTTP_ROUTE).get(INFRA, "other") is not None
                and source.informer(GATEWAY).get(INFRA, "other-gw") is not None
                and source.informer(GATEWAY_CLASS).get(None, "other") is not None
                and source._pending is None
            )
        )
        resolution = source.resolution
        assert resolution is not None
        self.assertEqual({g.gateway for g in resolution.gateways}, {"infra/gw"})
        self.assertEqual({c.name for c in resolution.classes}, {"apimgw"})
        self.assertEqual({listener.gateway for listener in resolution.listeners}, {"infra/gw"})
        self.assertNotIn("infra/other", served(resolution))
        self.assertEqual(
            sorted(o.ref.name for o in self.store.objects(SOURCE) if o.ref.kind == "gatewayroutes"),
            ["infra/gw"],
        )
        self.assertNotIn(("infra", "other-tls"), source.informers["secrets"].cache)
        self.assertEqual(len(self._certificates()), 1)

    async def test_only_referenced_secrets_are_held(self) -> None:
        """
        An unreferenced TLS Secret is dropped after the first resolution; a
        Secret a listener starts naming is fetched and its certificate
        published.
        """
        source, _ = await self._world()
        other = self_signed(SECURE_HOST)
        stored = self.server.set_object(
            tls_secret("rotated-tls", INFRA, other.chain_pem, other.key_pem)
        )
        secrets = source.informers["secrets"]
        await wait_for(
            lambda: int(secrets.resource_version or 0) >= int(stored["metadata"]["resourceVersion"])
        )
        self.assertEqual(list(source.informers["secrets"].cache), [(INFRA, "secure-tls")])
        self.server.set_object(gateway(secret="rotated-tls"))
        await wait_for(lambda: [c.cert_pem for c in self._certificates()] == [other.chain_pem])
        self.assertEqual(list(source.informers["secrets"].cache), [(INFRA, "rotated-tls")])

    async def test_failed_secret_fetch_is_retried_without_holding_back_changes(self) -> None:
        """
        The GET of a newly named Secret fails (503, twice): the source
        does not wait for it — a route change made meanwhile is
        published, the HTTPS listener reporting the Secret it lacks — and
        retries with backoff until the Secret is there; then its
        certificate is published. (Before: the failed fetch was never
        retried, and the certificate stayed missing until the Secret
        changed.)
        """
        source, _ = await self._world(secret_grace=0.1)
        other = self_signed(SECURE_HOST)
        stored = self.server.set_object(
            tls_secret("rotated-tls", INFRA, other.chain_pem, other.key_pem)
        )
        secrets = source.informers["secrets"]
        await wait_for(
            lambda: int(secrets.resource_version or 0) >= int(stored["metadata"]["resourceVersion"])
        )
        gets = len(self.server.requests_for("get", "secrets"))
        self.server.fail_next(503, verb="get", plural="secrets", count=2)
        self.server.set_object(gateway(secret="rotated-tls"))
        self.server.set_object(http_route("web", INFRA, "/new", "web"))
        await wait_for(
            lambda: self._stored().get("infra/web")
            == [("/new", "http://web.infra.svc.cluster.local:8080")]
        )
        self.assertEqual(self._certificates(), [])
        self.assertTrue(
            any("listener https" in p and "rotated-tls" in p for p in self._problems()),
            self._problems(),
        )
        await wait_for(
            lambda: [c.cert_pem for c in self._certificates()] == [other.chain_pem], timeout=15
        )
        self.assertEqual(len(self.server.requests_for("get", "secrets")) - gets, 3)
        self.assertEqual(self._problems(), [])

    async def test_invalid_secret_is_a_problem(self) -> None:
        """
        A named Secret that is missing takes its listener down with a
        problem naming it; one whose data is not PEM is a
        problem of its certificate (the API server accepts any bytes).
        Neither stops the routes.
        """
        source = await self._start(
            gateway_class(),
            gateway(secret="missing-tls"),
            service("web", INFRA),
            http_route("web", INFRA, "/web", "web"),
        )
        await source.when_synced()
        self.assertIn("infra/web", served(source.resolution))
        self.assertEqual(self._certificates(), [])
        self.assertTrue(
            any("listener https" in p and "missing-tls" in p for p in self._problems()),
            self._problems(),
        )
        broken = tls_secret("missing-tls", INFRA, "x", "y")
        broken["data"]["tls.crt"] = base64.b64encode(b"\xff\xfe not text").decode()
        self.server.set_object(broken)
        await wait_for(
            lambda: any("tls.crt is not base64-encoded PEM" in p for p in self._problems())
        )
        self.assertEqual(self._certificates(), [])
        self.assertIn("infra/web", served(source.resolution))

    async def _external_name_world(self, **kwargs: Any) -> GatewayApiSource:
        external = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "ext", "namespace": INFRA},
            "spec": {"type": "ExternalName", "externalName": "127.0.0.1"},
        }
        source = await self._start(
            gateway_class(),
            gateway(secret=None),
            external,
            http_route("web", INFRA, "/web", "ext"),
            **kwargs,
        )
        await source.when_synced()
        return source

    async def test_external_name_is_not_served_by_default(self) -> None:
        """
        A route to an ExternalName Service: no URL in the store (answered
        500), and a problem naming the setting that would allow it.
        """
        source = await self._external_name_world()
        self.assertEqual(self._stored(), {"infra/web": [("/web", None)]})
        self.assertTrue(
            any(
                p.startswith("HTTPRoute/infra/web: ") and "k8s.gateway.allow-external-name" in p
                for p in self._problems()
            ),
            self._problems(),
        )
        self.assertFalse(source.settings.allow_external_name)

    async def test_external_name_allowed(self) -> None:
        """``allow_external_name=True``: the external name is the backend, no problem."""
        await self._external_name_world(allow_external_name=True)
        self.assertEqual(self._stored(), {"infra/web": [("/web", "http://127.0.0.1:8080")]})
        self.assertEqual(self._problems(), [])

    async def test_outage_keeps_the_last_state_and_resumes(self) -> None:
        """
        With the API server down the store keeps what it held (no empty
        configuration); once it is back, changes made meanwhile are
        picked up.
        """
        source, _ = await self._world()
        held = self.store.objects(SOURCE)
        resolution = source.resolution
        await self.server.stop()
        informer = source.informer(HTTP_ROUTE)
        failures = informer.failures
        await wait_for(lambda: informer.failures > failures, what="a failed watch")
        self.assertEqual(self.store.objects(SOURCE), held)
        self.assertIs(source.resolution, resolution)
        self.server.set_object(http_route("web", INFRA, "/after", "web"))
        await self.server.start()
        await wait_for(
            lambda: (
                served(source.resolution).get("infra/web")
                == [("/after", "http://web.infra.svc.cluster.local:8080")]
            ),
            timeout=30,
        )
        self.assertEqual(len(self._certificates()), 1)
        self.assertEqual(self._stored(), served(source.resolution))

    async def test_relist_after_410_picks_up_changes(self) -> None:
        """
        Changes the watch missed while history was compacted away: the
        informer is answered 410, lists again, and the route deleted
        meanwhile is gone from the resolution.
        """
        source, _ = await self._world()
        informer = source.informer(HTTP_ROUTE)
        lists = informer.lists
        await self.server.stop()
        self.server.delete_object(V1, "HTTPRoute", APPS, "api")
        self.server.compact()
        await self.server.start()
        await wait_for(lambda: "apps/api" not in served(source.resolution), timeout=30)
        self.assertGreater(informer.lists, lists)
        self.assertIn("infra/web", served(source.resolution))
        self.assertNotIn("apps/api", self._stored())

    async def test_interface_for_the_status_writer(self) -> None:
        """
        The started source offers its client, its informers by kind (with
        the objects' resourceVersion), its controller name and, without an
        election, leadership at once.
        """
        source, _ = await self._world()
        client = await source.when_started()
        self.assertIs(client, source.client)
        self.assertEqual(source.controller_name, CONTROLLER)
        gw = source.informer(GATEWAY).get(INFRA, "gw")
        assert gw is not None
        self.assertTrue(gw["metadata"]["resourceVersion"])
        self.assertIsNotNone(source.informer(GATEWAY_CLASS).get(None, "apimgw"))
        with self.assertRaises(KeyError):
            source.informer(Kind("apps", "v1", "Deployment", "deployments"))
        heard: list[bool] = []
        source.add_leadership_listener(heard.append)
        self.assertEqual((heard, source.leading), ([True], True))

    async def test_lease_elects_the_status_writer(self) -> None:
        """With an election id, the source takes the Lease of that name and tells its listeners."""
        source, _ = await self._world(
            election_id="apimgw-gateway-api", lease_timing=(2.0, 1.5, 0.2)
        )
        heard: list[bool] = []
        source.add_leadership_listener(heard.append)
        await wait_for(lambda: source.leading)
        self.assertEqual(heard[-1], True)
        lease = self.server.get_object(
            "coordination.k8s.io/v1", "Lease", "default", "apimgw-gateway-api"
        )
        assert lease is not None
        self.assertEqual(lease["spec"]["holderIdentity"], "gw-0_test")

    async def test_unreachable_beside_other_sources(self) -> None:
        """
        Not the only source and the API server unreachable: it releases
        the others after the first failure but keeps readiness waiting,
        saying why; once the server answers, it publishes and is ready.
        """
        self.server, _ = await start_fake(self)
        self.server.set_object(gateway_class())
        path = self.server.kubeconfig(self.mktemp() + ".kubeconfig")
        await self.server.stop()
        self.store, self.health = Store(), Health()
        source = GatewayApiSource(
            self.store,
            reactor=reactor,
            controller_name=CONTROLLER,
            namespace=None,
            config_path=path,
            health=self.health,
            require_configuration=False,
            election_id=None,
            environ={},
        )
        source.startService()
        self.addCleanup(source.stopService)
        await source.when_synced()
        self.assertIn("cannot be reached", self.health.waiting[WAITING])
        self.assertIsNone(source.resolution)
        await self.server.start()
        await wait_for(lambda: source.resolution is not None, timeout=30)
        self.assertNotIn(WAITING, self.health.waiting)

    async def test_kubeconfig_credentials(self) -> None:
        """Without a client, the source loads the kubeconfig, and owns (and closes) its client."""
        source = await self._start(gateway_class(), gateway(secret=None), kubeconfig=True)
        await source.when_synced()
        self.assertIsNotNone(source.client)
        self.assertEqual([g.gateway for g in source.resolution.gateways], ["infra/gw"])  # type: ignore[union-attr]
