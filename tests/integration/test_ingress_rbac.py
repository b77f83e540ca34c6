"""
The shipped RBAC (``k8s/rbac.yaml``) against what the gateway really does:
the fake API server enforces the Role and ClusterRole bound to the
``apimgw`` ServiceAccount, and a gateway authenticated as that account
runs through everything the Ingress source does (list and watch every kind,
fetch a Secret, write status, create and patch Events, take and release
the Lease). Not a single request may be refused; and the enforcement is
real: without one rule, its request is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from twisted.internet.defer import inlineCallbacks

from gateway.testing._kuberbac import rules_for_service_account
from gateway.testing.certs import self_signed

from .kubeharness import IngressTestCase, ingress, service, tls_secret

_RBAC = Path(__file__).resolve().parents[2] / "k8s" / "rbac.yaml"
USER = "system:serviceaccount:default:apimgw"
NETWORKING = "networking.k8s.io/v1"


def _shipped_rules() -> list[Any]:
    with open(_RBAC) as f:
        documents = [d for d in yaml.safe_load_all(f) if d]
    return rules_for_service_account(documents, "default", "apimgw")


class ShippedRBACTests(IngressTestCase):
    start_gateway = False
    environment = {
        "k8s.ingress.backend": "endpoints",
        "k8s.ingress.publish-service": "default/apimgw",
    }

    def restrict(self, rules: list[Any]) -> None:
        """Authenticate the gateway as the ServiceAccount, limited to ``rules``."""
        self.kube.add_token("sa-token", USER)
        self.kube.rbac.grant(USER, rules)
        self.kubeconfig = self.kube.kubeconfig(
            os.path.abspath(self.mktemp() + ".kubeconfig"), token="sa-token"
        )

    def refused(self) -> list[Any]:
        return [r for r in self.kube.requests if r.user == USER and r.code == 403]

    def used(self) -> set[tuple[str, str]]:
        """What the gateway was allowed to do (answered, if only with 404)."""
        return {
            (r.verb, r.plural + (f"/{r.subresource}" if r.subresource else ""))
            for r in self.kube.requests
            if r.user == USER and r.code is not None and r.code != 403
        }

    def slice(self, port: int) -> dict[str, Any]:
        return {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "web-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
        }

    @inlineCallbacks
    def start_with_web_service(self) -> Any:
        """The gateway's own Service (with an address), Service ``web`` with one endpoint, a live gateway."""
        gateway_service = service("apimgw", 80)
        gateway_service["status"] = {"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}]}}
        self.kube.set_object(gateway_service)
        self.kube.set_object(service("web", 80))
        self.kube.set_object(self.slice(self.backend_ports["alpha"]))
        gateway = yield self.start_another()
        self.gateway = gateway
        yield gateway.reconciler.when_live()
        return gateway

    @inlineCallbacks
    def test_everything_the_source_does_is_allowed(self) -> Any:
        self.restrict(_shipped_rules())
        gateway = yield self.start_with_web_service()

        # A Secret listed before any Ingress references it is dropped, then
        # fetched (GET) when one does.
        issued = self_signed("secure.example.com")
        self.kube.set_object(tls_secret("secure-tls", issued.chain_pem, issued.key_pem))
        web = ingress("web", [("/web", "web", 80)], host="secure.example.com",
                      tls=[{"hosts": ["secure.example.com"], "secretName": "secure-tls"}])
        self.kube.set_object(web)
        yield self.wait_for(lambda: self.served_by("/web", host="secure.example.com").addCallback(lambda b: b == "web"))
        yield self.wait_for(lambda: ("get", "secrets") in self.used(), what="the Secret fetched")

        def status() -> Any:
            obj = self.kube.get_object(NETWORKING, "Ingress", "default", "web") or {}
            return ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress")

        yield self.wait_for(lambda: status() == [{"ip": "198.51.100.7"}], what="status written")

        # A problem, fixed, and the same problem again: one Event, patched.
        def broken_events() -> list[dict[str, Any]]:
            return [e for e in self.kube.objects("v1", "Event")
                    if e["involvedObject"]["name"] == "broken"]

        self.kube.set_object(ingress("broken", [("/broken", "missing", 80)]))
        yield self.wait_for(broken_events, what="an Event on the broken Ingress")
        self.kube.set_object(service("missing", 80))
        # Events follow generations: wait until one without the problem is
        # live, or the fix and the new break may fall into one rebuild.
        yield self.wait_for(
            lambda: not any(
                p.ref.source == "ingress" for p in gateway.reconciler.current.config.problems
            )
        )
        self.kube.delete_object("v1", "Service", "default", "missing")
        yield self.wait_for(lambda: [e["count"] for e in broken_events()] == [2], what="the Event patched")
        # The Secret was fetched before anything was published: it was
        # never reported missing.
        self.assertEqual(
            [e["message"] for e in self.kube.objects("v1", "Event") if e["involvedObject"]["name"] == "web"], []
        )

        yield gateway.stopService()  # releases the Lease
        self.assertEqual(self.refused(), [])
        expected = {
            ("list", "ingresses"), ("watch", "ingresses"),
            ("list", "ingressclasses"), ("watch", "ingressclasses"),
            ("list", "services"), ("watch", "services"),
            ("list", "secrets"), ("watch", "secrets"), ("get", "secrets"),
            ("list", "endpointslices"), ("watch", "endpointslices"),
            ("update", "ingresses/status"),
            ("create", "events"), ("patch", "events"),
            ("get", "leases"), ("create", "leases"), ("update", "leases"),
        }
        self.assertEqual(self.used(), expected)

    @inlineCallbacks
    def test_enforcement_is_real(self) -> Any:
        """Without the ingresses/status rule, the status write is refused (and logged), routing is not affected."""
        rules = [r for r in _shipped_rules() if "ingresses/status" not in r.resources]
        self.restrict(rules)
        gateway = yield self.start_with_web_service()
        self.kube.set_object(ingress("web", [("/web", "web", 80)]))
        yield self.wait_for(lambda: self.refused(), what="a refused status write")
        self.assertEqual(
            {(r.verb, r.plural, r.subresource) for r in self.refused()},
            {("update", "ingresses", "status")},
        )
        yield self.wait_for(lambda: self.served_by("/web").addCallback(lambda b: b == "web"))
        self.assertTrue(
            any("Could not write the status" in e.get("log_format", "") for e in self.log_events)
        )

    @inlineCallbacks
    def test_missing_permission_is_named_by_readiness(self) -> Any:
        """Without the ingressclasses ClusterRole the gateway stays not-ready and /readyz says what was refused."""
        rules = [r for r in _shipped_rules() if "ingressclasses" not in r.resources]
        self.restrict(rules)
        gateway = yield self.start_another()
        self.gateway = gateway
        yield self.wait_for(lambda: self.refused(), what="a refused list")
        response = yield self.wait_for(
            lambda: self.readyz(gateway).addCallback(
                lambda r: r if b"refused to list ingressclasses" in r.body else None
            )
        )
        self.assertEqual(response.status, 503)
        self.assertIn(b"403 Forbidden", response.body)
