"""
The Gateway API source in a real gateway process (``twistd -n apimgw``),
with the fake API server and two backends in the test process, on
loopback: a Gateway and HTTPRoutes like the product notes' Prometheus
example serve traffic, their status is written, a route change is served,
and removing a ReferenceGrant withdraws the cross-namespace route.

The backends are reached through ``ExternalName`` Services naming
127.0.0.1, so the child process needs no cluster DNS; each answers with
its own name, which tells which one answered. How fast a change is served is measured in
``bench/gatewayapi_bench.py``, not here.
"""

from __future__ import annotations

import base64
import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from gateway.testing.certs import CertificateAuthority
from gateway.testing.fakekube import FakeKubeServer
from gateway.testing.process import GatewayProcess
from gateway.testing.waiting import wait_for

from .harness import Response, request_sync
from .tlsclient import client_context, tls_connect

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GATEWAY_API = "gateway.networking.k8s.io/v1"
CONTROLLER = "apimgw.io/gateway-controller"


class Named(Resource):
    """A backend answering every request with ``<name> <request URI>``."""

    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name.encode()

    def render(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/plain")
        return self.name + b" " + request.uri


def gateway_class(name: str = "apimgw", controller: str = CONTROLLER) -> dict[str, Any]:
    return {
        "apiVersion": GATEWAY_API,
        "kind": "GatewayClass",
        "metadata": {"name": name},
        "spec": {"controllerName": controller},
    }


def shared_gateway() -> dict[str, Any]:
    """The product notes' Gateway: one HTTP listener for ``*.example.com``, routes from all namespaces."""
    return {
        "apiVersion": GATEWAY_API,
        "kind": "Gateway",
        "metadata": {"name": "shared-gateway", "namespace": "default"},
        "spec": {
            "gatewayClassName": "apimgw",
            "listeners": [
                {
                    "name": "http",
                    "port": 80,
                    "protocol": "HTTP",
                    "hostname": "*.example.com",
                    "allowedRoutes": {"namespaces": {"from": "All"}},
                }
            ],
        },
    }


def service(name: str, port: int, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "type": "ExternalName",
            "externalName": "127.0.0.1",
            "ports": [{"name": "http", "port": port}],
        },
    }


def http_route(
    name: str,
    host: str,
    backend: str,
    port: int,
    *,
    namespace: str = "default",
    backend_namespace: str | None = None,
    rules: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": backend, "port": port}
    if backend_namespace is not None:
        ref["namespace"] = backend_namespace
    return {
        "apiVersion": GATEWAY_API,
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "parentRefs": [
                {"name": "shared-gateway", "namespace": "default", "sectionName": "http"}
            ],
            "hostnames": [host],
            "rules": (rules or []) + [{"backendRefs": [ref]}],
        },
    }


def reference_grant(from_namespace: str, service_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {"name": f"{from_namespace}-to-{service_name}", "namespace": "default"},
        "spec": {
            "from": [
                {
                    "group": "gateway.networking.k8s.io",
                    "kind": "HTTPRoute",
                    "namespace": from_namespace,
                }
            ],
            "to": [{"group": "", "kind": "Service", "name": service_name}],
        },
    }


def _conditions(obj: dict[str, Any] | None) -> dict[str, str]:
    return {
        c["type"]: c["status"] for c in ((obj or {}).get("status") or {}).get("conditions") or ()
    }


class GatewayApiProcessTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def setUp(self) -> Any:
        self.ports: dict[str, int] = {}
        for name in ("a", "b"):
            port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
                Site(Named(name))
            )
            self.addCleanup(port.stopListening)
            self.ports[name] = port.getHost().port
        self.kube = FakeKubeServer(reactor=reactor, bookmark_interval=0.5)
        yield self.kube.start()
        self.addCleanup(self.kube.stop)
        self.kube.set_object(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}
        )
        self.kube.set_object(gateway_class())
        self.kube.set_object(gateway_class("other", "example.com/other-controller"))
        self.kube.set_object(shared_gateway())
        self.kube.set_object(service("prometheus-a", self.ports["a"]))
        self.kube.set_object(service("prometheus-b", self.ports["b"]))
        self.kube.set_object(
            http_route("prometheus", "prometheus.example.com", "prometheus-a", self.ports["a"])
        )
        self.process = self.gateway("gw-1")
        yield deferToThread(self.process.start)

    def gateway(self, name: str) -> GatewayProcess:
        token = f"token-{name}"
        self.kube.add_token(token, name)
        kubeconfig = self.kube.kubeconfig(os.path.abspath(self.mktemp()), token=token)
        env = dict(os.environ)
        env.update(
            {
                "k8s.gateway.enabled": "true",
                "k8s.gateway.config.path": kubeconfig,
                "k8s.gateway.namespace": "",
                # The backends are ExternalName Services naming 127.0.0.1,
                # which the gateway refuses unless allowed (SSRF).
                "k8s.gateway.allow-external-name": "true",
                "telemetry.logs.std": "none",
                "POD_NAME": name,
                "POD_NAMESPACE": "default",
            }
        )
        process = GatewayProcess(
            ["--grace", "5"], env=env, cwd=_REPO, logfile=os.path.abspath(self.mktemp() + ".log")
        )
        self.addCleanup(lambda: deferToThread(process.kill))
        return process

    def get(self, host: str, path: str = "/", headers: list[tuple[str, str]] | None = None) -> Any:
        return deferToThread(
            request_sync, self.process.http_port, "GET", path, [("Host", host), *(headers or [])]
        )

    def served_by(self, response: Response) -> str | None:
        """Which backend answered (the echo reports the Host it was sent)."""
        if response.status != 200:
            return None
        return response.body.split(b" ", 1)[0].decode()

    @inlineCallbacks
    def until_served(self, host: str, expected: str | None, path: str = "/", **kw: Any) -> Any:
        """Poll until ``host`` is answered by backend ``expected`` (``None``: not 200)."""
        last: list[Any] = [None]

        @inlineCallbacks
        def check() -> Any:
            response = yield self.get(host, path, **kw)
            last[0] = (response.status, self.served_by(response))
            return self.served_by(response) == expected

        yield wait_for(
            check, 30.0, f"{host}{path} served by {expected} (last: {last})", interval=0.05
        )

    def object(self, kind: str, namespace: str | None, name: str) -> Any:
        return self.kube.get_object(GATEWAY_API, kind, namespace, name)

    @inlineCallbacks
    def test_prometheusExampleServedWithStatus(self) -> Any:
        """
        The product notes' example: the route's host is served by its
        backend, another host of the listener is 404, and the GatewayClass,
        Gateway and HTTPRoute get their status from the one replica.
        """
        yield self.until_served("prometheus.example.com", "a")
        response = yield self.get("grafana.example.com")
        self.assertEqual(response.status, 404)
        yield wait_for(
            lambda: (
                _conditions(self.object("GatewayClass", None, "apimgw")).get("Accepted") == "True"
            ),
            30.0,
            "GatewayClass Accepted",
        )
        # Another controller's class keeps the API server's default (Pending).
        self.assertEqual(
            _conditions(self.object("GatewayClass", None, "other")), {"Accepted": "Unknown"}
        )
        yield wait_for(
            lambda: (
                _conditions(self.object("Gateway", "default", "shared-gateway")).get("Programmed")
                == "True"
            ),
            30.0,
            "Gateway Programmed",
        )
        gateway = self.object("Gateway", "default", "shared-gateway")
        (listener,) = gateway["status"]["listeners"]
        self.assertEqual(listener["attachedRoutes"], 1)
        yield wait_for(
            lambda: (
                (self.object("HTTPRoute", "default", "prometheus") or {}).get("status") or {}
            ).get("parents"),
            30.0,
            "HTTPRoute status",
        )
        (parent,) = self.object("HTTPRoute", "default", "prometheus")["status"]["parents"]
        self.assertEqual(parent["controllerName"], CONTROLLER)
        self.assertEqual(
            {c["type"]: c["status"] for c in parent["conditions"]},
            {"Accepted": "True", "ResolvedRefs": "True"},
        )

    @inlineCallbacks
    def test_routeChangeServed(self) -> Any:
        """
        Changing the route's backend, then adding a header-matched rule,
        is served without a restart; deleting the route withdraws it.
        """
        yield self.until_served("prometheus.example.com", "a")
        self.kube.set_object(
            http_route("prometheus", "prometheus.example.com", "prometheus-b", self.ports["b"])
        )
        yield self.until_served("prometheus.example.com", "b")
        canary = {
            "matches": [{"headers": [{"name": "x-canary", "value": "yes"}]}],
            "backendRefs": [{"name": "prometheus-a", "port": self.ports["a"]}],
        }
        self.kube.set_object(
            http_route(
                "prometheus",
                "prometheus.example.com",
                "prometheus-b",
                self.ports["b"],
                rules=[canary],
            )
        )
        yield self.until_served("prometheus.example.com", "a", headers=[("x-canary", "yes")])
        response = yield self.get("prometheus.example.com")
        self.assertEqual(self.served_by(response), "b")
        self.kube.delete_object(GATEWAY_API, "HTTPRoute", "default", "prometheus")
        yield self.until_served("prometheus.example.com", None)
        response = yield self.get("prometheus.example.com")
        self.assertEqual(response.status, 404)

    @inlineCallbacks
    def test_referenceGrantRemovalWithdrawsRoute(self) -> Any:
        """
        A route in another namespace reaches a Service in ``default`` while
        a ReferenceGrant allows it; once the grant is deleted its requests
        are answered 500 (the spec's answer for a reference not permitted)
        and the route's status says RefNotPermitted.
        """
        self.kube.set_object(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}
        )
        self.kube.set_object(reference_grant("team-a", "prometheus-b"))
        self.kube.set_object(
            http_route(
                "team-a",
                "team-a.example.com",
                "prometheus-b",
                self.ports["b"],
                namespace="team-a",
                backend_namespace="default",
            )
        )
        yield self.until_served("team-a.example.com", "b")
        self.kube.delete_object(
            "gateway.networking.k8s.io/v1beta1",
            "ReferenceGrant",
            "default",
            "team-a-to-prometheus-b",
        )
        yield self.until_served("team-a.example.com", None)
        response = yield self.get("team-a.example.com")
        self.assertEqual(response.status, 500)

        def refused() -> bool:
            route = self.object("HTTPRoute", "team-a", "team-a") or {}
            parents = (route.get("status") or {}).get("parents") or ()
            return any(
                c["type"] == "ResolvedRefs" and c["reason"] == "RefNotPermitted"
                for p in parents
                for c in p["conditions"]
            )

        yield wait_for(refused, 30.0, "RefNotPermitted written")
        # The rest of the Gateway keeps serving.
        response = yield self.get("prometheus.example.com")
        self.assertEqual(self.served_by(response), "a")

    @inlineCallbacks
    def test_httpsListenerServesItsCertificate(self) -> Any:
        """
        An HTTPS listener whose certificate is a ``kubernetes.io/tls``
        Secret: a client that trusts only the Secret's CA verifies the
        certificate for the route's host (SNI) and is served over TLS; the
        route's HTTP-only sibling is not served on HTTPS.
        """
        ca = CertificateAuthority()
        issued = ca.issue("*.secure.example.com")
        self.kube.set_object(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/tls",
                "metadata": {"name": "secure-tls", "namespace": "default"},
                "data": {
                    "tls.crt": base64.b64encode(issued.chain_pem.encode()).decode(),
                    "tls.key": base64.b64encode(issued.key_pem.encode()).decode(),
                },
            }
        )
        gateway = shared_gateway()
        gateway["spec"]["listeners"].append(
            {
                "name": "https",
                "port": 443,
                "protocol": "HTTPS",
                "hostname": "*.secure.example.com",
                "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": "secure-tls"}]},
                "allowedRoutes": {"namespaces": {"from": "All"}},
            }
        )
        self.kube.set_object(gateway)
        route = http_route("secure", "api.secure.example.com", "prometheus-b", self.ports["b"])
        route["spec"]["parentRefs"] = [{"name": "shared-gateway", "sectionName": "https"}]
        self.kube.set_object(route)
        context = client_context(ca_pem=ca.cert_pem)

        def fetch() -> tuple[int, str | None]:
            session = tls_connect(self.process.https_port, "api.secure.example.com", context)
            try:
                response = session.request("GET", "/", "api.secure.example.com")
                return response.status, self.served_by(response)
            finally:
                session.close()

        last: list[Any] = [None]

        @inlineCallbacks
        def served() -> Any:
            try:
                last[0] = yield deferToThread(fetch)
            except Exception as e:  # noqa: BLE001 (the certificate is not live yet: retry)
                last[0] = e
                return False
            return last[0] == (200, "b")

        yield wait_for(served, 30.0, f"HTTPS served with the Secret's certificate (last: {last})")
        # The plain listener does not serve the HTTPS-only route.
        response = yield self.get("api.secure.example.com")
        self.assertEqual(response.status, 404)
