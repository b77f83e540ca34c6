"""
The Ingress source in real gateway processes (``twistd -n apimgw``), with
the fake API server and a backend in the test process, on loopback.

The backend is reached through an ``ExternalName`` Service naming
127.0.0.1, so the child processes need no cluster DNS. Each gateway
authenticates with a token of its own, so the fake's request log tells
which process wrote what.
"""

from __future__ import annotations

import http.client
import os
import threading
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from gateway.testing.backends import scenario_site
from gateway.testing.fakekube import FakeKubeServer
from gateway.testing.process import GatewayProcess
from gateway.testing.waiting import wait_for

from .harness import request_sync
from .kubeharness import ingress, ingress_class

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NETWORKING = "networking.k8s.io/v1"
ADDRESS = "203.0.113.9"


class IngressProcessTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def setUp(self) -> Any:
        site = scenario_site(reactor)
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        self.addCleanup(port.stopListening)
        self.backend_port = port.getHost().port
        self.kube = FakeKubeServer(reactor=reactor, bookmark_interval=0.5)
        yield self.kube.start()
        self.addCleanup(self.kube.stop)
        self.kube.set_object(ingress_class())
        self.kube.set_object(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "backend", "namespace": "default"},
                "spec": {
                    "type": "ExternalName",
                    "externalName": "127.0.0.1",
                    "ports": [{"name": "http", "port": self.backend_port}],
                },
            }
        )
        self.kube.set_object(ingress("app", [("/app", "backend", self.backend_port)]))

    def gateway(self, name: str) -> GatewayProcess:
        """A gateway process authenticating as ``name`` (stopped at cleanup)."""
        token = f"token-{name}"
        self.kube.add_token(token, name)
        kubeconfig = self.kube.kubeconfig(os.path.abspath(self.mktemp()), token=token)
        env = dict(os.environ)
        env.update(
            {
                "k8s.ingress.enabled": "true",
                "k8s.ingress.config.path": kubeconfig,
                "k8s.ingress.namespace": "default",
                "k8s.ingress.publish-address": ADDRESS,
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

    def wait_for(self, predicate: Any, timeout: float = 30.0, what: str = "condition") -> Any:
        return wait_for(predicate, timeout, what, interval=0.05)

    def status(self, process: GatewayProcess, path: str) -> Any:
        return deferToThread(request_sync, process.http_port, "GET", path).addCallback(
            lambda r: r.status
        )

    def readyz(self, process: GatewayProcess) -> Any:
        return deferToThread(request_sync, process.admin_port, "GET", "/readyz").addCallback(
            lambda r: r.status
        )

    def status_writers(self) -> set[str | None]:
        return {
            r.user
            for r in self.kube.requests_for("update", "ingresses")
            if r.subresource == "status" and r.code == 200
        }

    def address_of(self, name: str) -> Any:
        obj = self.kube.get_object(NETWORKING, "Ingress", "default", name) or {}
        return ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress")

    @inlineCallbacks
    def test_api_server_restart_under_load(self) -> Any:
        """The API server killed and restarted while requests flow: zero failed requests."""
        gateway = self.gateway("solo")
        yield deferToThread(gateway.start)
        yield self.wait_for(lambda: self.readyz(gateway).addCallback(lambda s: s == 200))
        yield self.wait_for(lambda: self.status(gateway, "/app").addCallback(lambda s: s == 200))

        stop = threading.Event()
        statuses: list[int] = []

        def load() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", gateway.http_port, timeout=10)
            while not stop.is_set():
                statuses.append(request_sync(gateway.http_port, "GET", "/app/x", conn=conn).status)
            conn.close()

        workers = [deferToThread(load) for _ in range(4)]
        yield deferLater(reactor, 0.5, lambda: None)
        yield self.kube.stop()
        yield deferLater(reactor, 2.0, lambda: None)
        during = len(statuses)
        yield self.kube.start()
        # Back in sync: a change made after the restart is served.
        self.kube.set_object(ingress("later", [("/later", "backend", self.backend_port)]))
        yield self.wait_for(lambda: self.status(gateway, "/later").addCallback(lambda s: s == 200))
        stop.set()
        for worker in workers:
            yield worker
        self.assertGreater(during, 50)
        self.assertEqual(set(statuses), {200})
        self.assertEqual((yield self.readyz(gateway)), 200)

    @inlineCallbacks
    def test_one_status_writer_and_takeover(self) -> Any:
        """Of two gateway processes exactly one writes status; when it stops, the other takes over."""
        first, second = self.gateway("first"), self.gateway("second")
        yield deferToThread(first.start)
        yield deferToThread(second.start)
        for process in (first, second):
            yield self.wait_for(lambda p=process: self.status(p, "/app").addCallback(lambda s: s == 200))
        yield self.wait_for(lambda: self.address_of("app") == [{"ip": ADDRESS}], what="status written")
        writers = self.status_writers()
        self.assertEqual(len(writers), 1, writers)
        (leader_name,) = writers
        leader, follower = (first, second) if leader_name == "first" else (second, first)
        follower_name = "second" if leader_name == "first" else "first"
        lease = self.kube.get_object("coordination.k8s.io/v1", "Lease", "default", "apimgw-leader")
        self.assertTrue(lease["spec"]["holderIdentity"].startswith(leader_name + "_"))

        # SIGTERM: the leader drains, releases the Lease and exits.
        code = yield deferToThread(leader.stop)
        self.assertIn(code, (0, -15))
        self.kube.set_object(ingress("new", [("/new", "backend", self.backend_port)]))
        yield self.wait_for(lambda: self.address_of("new") == [{"ip": ADDRESS}], what="takeover")
        self.assertEqual(self.status_writers(), {leader_name, follower_name})
        lease = self.kube.get_object("coordination.k8s.io/v1", "Lease", "default", "apimgw-leader")
        self.assertTrue(lease["spec"]["holderIdentity"].startswith(follower_name + "_"))
        self.assertEqual((yield self.status(follower, "/new")), 200)
