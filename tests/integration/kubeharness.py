"""
An in-process gateway with the Kubernetes Ingress source, reading a fake
API server on a real loopback port, and real backends.

Service backends are ``http://<svc>.<ns>.svc.cluster.local:<port>``: the
test installs a name resolver on the reactor that answers
``*.svc.cluster.local`` with 127.0.0.1 (as cluster DNS would answer with the
Service's address), so the Services' ports are the backends' loopback
ports. Everything else resolves as usual.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IHostnameResolver, IHostResolution
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from gateway.model import Store
from gateway.tap import Gateway, Options, build_gateway
from gateway.testing.backends import CountingSite, ScenarioResource, _EchoRequest
from gateway.testing.fakekube import FakeKubeServer
from gateway.testing.memory import MemorySource
from gateway.testing.waiting import wait_for

from .harness import Response, request_sync

CLUSTER_SUFFIX = ".svc.cluster.local"
CLASS_NAME = "azure-api-management"
CONTROLLER = "azure-api-management/gateway"


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        pass


@implementer(IHostnameResolver)
class ClusterDNS:
    """``*.svc.cluster.local`` → 127.0.0.1; other names to the previous resolver."""

    def __init__(self, fallback: IHostnameResolver) -> None:
        self.fallback = fallback
        self.lookups: list[str] = []

    def resolveHostName(  # noqa: N802 (Twisted's interface)
        self,
        resolutionReceiver: Any,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Any = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        if not hostName.endswith(CLUSTER_SUFFIX):
            return self.fallback.resolveHostName(
                resolutionReceiver, hostName, portNumber, addressTypes, transportSemantics
            )
        self.lookups.append(hostName)
        resolution = _Resolution(hostName)
        resolutionReceiver.resolutionBegan(resolution)
        resolutionReceiver.addressResolved(IPv4Address("TCP", "127.0.0.1", portNumber))
        resolutionReceiver.resolutionComplete()
        return resolution


class RequestCountingSite(CountingSite):
    """A backend that also counts the requests it answered."""

    def __init__(self, resource: Any, **kw: Any) -> None:
        super().__init__(resource, **kw)
        self.requests = 0

    def log(self, request: Any) -> None:
        self.requests += 1


def ingress(
    name: str,
    paths: list[tuple[str, str, int]],
    *,
    host: str | None = None,
    namespace: str = "default",
    class_name: str | None = CLASS_NAME,
    annotations: Mapping[str, str] | None = None,
    tls: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An Ingress routing ``(path, service, port)`` entries (Prefix) on one host."""
    rule: dict[str, Any] = {
        "http": {
            "paths": [
                {
                    "path": path,
                    "pathType": "Prefix",
                    "backend": {"service": {"name": svc, "port": {"number": port}}},
                }
                for path, svc, port in paths
            ]
        }
    }
    if host:
        rule["host"] = host
    spec: dict[str, Any] = {"rules": [rule]}
    if class_name:
        spec["ingressClassName"] = class_name
    if tls:
        spec["tls"] = tls
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": metadata, "spec": spec}


def service(name: str, port: int, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"type": "ClusterIP", "ports": [{"name": "http", "port": port, "targetPort": port}]},
    }


def tls_secret(name: str, cert_pem: str, key_pem: str, namespace: str = "default") -> dict[str, Any]:
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


def ingress_class(name: str = CLASS_NAME, controller: str = CONTROLLER) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": name},
        "spec": {"controller": controller},
    }


class IngressTestCase(TestCase):
    """
    Per test: two backends (``alpha``, ``beta`` Services), a fake API
    server holding our IngressClass and the two Services, and a gateway
    with ``k8s.ingress.enabled`` reading it (as its only source).
    """

    timeout = 60
    #: Extra environment settings of the gateway.
    environment: dict[str, str] = {}
    #: Start the gateway in setUp.
    start_gateway = True
    #: Give each gateway a second source: an in-memory one (``self.memory``).
    with_memory_source = False

    @inlineCallbacks
    def setUp(self) -> Any:
        self.log_events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.log_events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.log_events.append)

        self.dns = ClusterDNS(reactor.nameResolver)
        previous = reactor.installNameResolver(self.dns)
        self.addCleanup(reactor.installNameResolver, previous)

        self.backends: dict[str, RequestCountingSite] = {}
        self.backend_ports: dict[str, int] = {}
        for name in ("alpha", "beta"):
            site = RequestCountingSite(ScenarioResource(reactor), requestFactory=_EchoRequest)
            port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
            self.addCleanup(port.stopListening)
            self.backends[name] = site
            self.backend_ports[name] = port.getHost().port

        self.kube = FakeKubeServer(reactor=reactor, bookmark_interval=0.5)
        yield self.kube.start()
        self.addCleanup(self.kube.stop)
        self.kubeconfig = self.kube.kubeconfig(os.path.abspath(self.mktemp() + ".kubeconfig"))
        self.kube.set_object(ingress_class())
        for name, port in self.backend_ports.items():
            self.kube.set_object(service(name, port))
        self.gateways: list[Gateway] = []
        if self.start_gateway:
            self.gateway = yield self.start_another()
            yield self.gateway.reconciler.when_live()

    def environ(self, **extra: str) -> dict[str, str]:
        env = {
            "k8s.ingress.enabled": "true",
            "k8s.ingress.config.path": self.kubeconfig,
            "k8s.ingress.namespace": "default",
            "telemetry.logs.std": "none",
            "POD_NAME": f"gateway-{len(self.gateways)}",
            "POD_NAMESPACE": "default",
        }
        env.update(self.environment)
        env.update(extra)
        return env

    def start_another(self, **extra: str) -> Deferred[Gateway]:
        """Build and start one more gateway (stopped at cleanup)."""
        options = Options(environ=self.environ(**extra))
        options.parseOptions(
            [
                "--http", "tcp:0:interface=127.0.0.1",
                "--https", "tcp:0:interface=127.0.0.1",
                "--admin", "tcp:0:interface=127.0.0.1",
                "--grace", "5",
            ]
        )
        if self.with_memory_source:
            store = Store()
            self.memory = MemorySource(store)
            gateway = build_gateway(options, reactor, store=store, extra_sources=[self.memory])
        else:
            gateway = build_gateway(options, reactor)
        gateway.startService()
        self.gateways.append(gateway)
        self.addCleanup(self._stop, gateway)
        d: Deferred[Gateway] = Deferred()
        # The listeners are bound right after start (port 0 is immediate).
        reactor.callLater(0, d.callback, gateway)
        return d

    @staticmethod
    def _stop(gateway: Gateway) -> Any:
        if gateway.running:
            return gateway.stopService()
        return None

    @staticmethod
    def port_of(gateway: Gateway, listener: str = "http") -> int:
        return int(gateway.listeners[listener].port.getHost().port)

    def get(self, path: str, host: str | None = None, gateway: Gateway | None = None) -> Deferred[Response]:
        port = self.port_of(gateway or self.gateway)
        headers = [("Host", host)] if host else None
        return deferToThread(request_sync, port, "GET", path, headers)

    def admin(self, path: str, gateway: Gateway | None = None) -> Deferred[Response]:
        return deferToThread(request_sync, self.port_of(gateway or self.gateway, "admin"), "GET", path)

    def readyz(self, gateway: Gateway | None = None) -> Deferred[Response]:
        return self.admin("/readyz", gateway)

    def backend_of(self, response: Response) -> str | None:
        """Which backend answered: the echo reports the Host it was sent."""
        if response.status != 200:
            return None
        hosts = [v for k, v in response.json()["headers"] if k.lower() == "host"]
        return hosts[0].split(".", 1)[0] if hosts else None

    def wait_for(self, predicate: Any, timeout: float = 10.0, what: str = "condition") -> Deferred[Any]:
        """Poll ``predicate()`` (may return a Deferred) until true; fail after ``timeout`` s."""
        return wait_for(predicate, timeout, what)

    @inlineCallbacks
    def served_by(self, path: str, host: str | None = None, gateway: Gateway | None = None) -> Any:
        response = yield self.get(path, host, gateway)
        return self.backend_of(response) if response.status == 200 else response.status
