"""
The cluster-wide RBAC (``k8s/rbac.yaml`` with the Component
``k8s/cluster-wide/``) against what the gateway really does when it watches
all namespaces (``k8s.ingress.namespace`` empty): the fake API server
enforces the rules bound to the ``apimgw`` ServiceAccount, composed from the
manifest files without kustomize (``tests.test_manifests`` checks the
composition against kustomize where kubectl is installed), and a gateway
authenticated as that account serves Ingresses of two namespaces. Not a
single request may be refused, and every permission granted is used. With
the base's namespaced rules instead, the first cluster-wide list is refused.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import inlineCallbacks

from gateway.testing._kuberbac import rules_for_service_account
from gateway.testing.certs import self_signed
from tests.test_manifests import cluster_wide_rbac_documents, rbac_documents

from .kubeharness import IngressTestCase, ingress, service, tls_secret

USER = "system:serviceaccount:default:apimgw"
NETWORKING = "networking.k8s.io/v1"
ADDRESS = "198.51.100.7"
CLUSTER = "cluster"


def _cluster_wide_rules() -> list[Any]:
    return rules_for_service_account(cluster_wide_rbac_documents(), "default", "apimgw")


def _base_rules() -> list[Any]:
    return rules_for_service_account(rbac_documents(), "default", "apimgw")


def _slice(namespace: str, service_name: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service_name}-1",
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
    }


class ClusterWideRBACTests(IngressTestCase):
    start_gateway = False
    environment = {
        "k8s.ingress.namespace": "",
        "k8s.ingress.backend": "endpoints",
        "k8s.ingress.publish-address": ADDRESS,
    }

    def restrict(self, rules: list[Any]) -> None:
        """Authenticate the gateway as the ServiceAccount, limited to ``rules``."""
        self.kube.add_token("sa-token", USER)
        self.kube.rbac.grant(USER, rules)
        self.kubeconfig = self.kube.kubeconfig(
            os.path.abspath(self.mktemp() + ".kubeconfig"), token="sa-token"
        )

    def mine(self) -> list[Any]:
        return [r for r in self.kube.requests if r.user == USER and r.code is not None]

    def refused(self) -> list[Any]:
        return [r for r in self.mine() if r.code == 403]

    def used(self) -> set[tuple[str, str, str]]:
        """What the gateway was allowed to do (answered, if only with 404), and where."""
        return {
            (
                r.verb,
                r.plural + (f"/{r.subresource}" if r.subresource else ""),
                r.namespace or CLUSTER,
            )
            for r in self.mine()
            if r.code != 403
        }

    def status(self, namespace: str, name: str) -> Any:
        obj = self.kube.get_object(NETWORKING, "Ingress", namespace, name) or {}
        return ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress")

    def events_on(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.kube.objects("v1", "Event") if e["involvedObject"]["name"] == name]

    def populate(self) -> None:
        """A Service with an EndpointSlice in each of ``default`` and ``shop``."""
        self.kube.set_object(service("web", 80))
        self.kube.set_object(_slice("default", "web", self.backend_ports["alpha"]))
        self.kube.set_object(service("store", 80, namespace="shop"))
        self.kube.set_object(_slice("shop", "store", self.backend_ports["beta"]))

    @inlineCallbacks
    def test_everything_the_source_does_is_allowed(self) -> Any:
        self.restrict(_cluster_wide_rules())
        self.populate()
        gateway = yield self.start_another()
        self.gateway = gateway
        yield gateway.reconciler.when_live()

        # default: a plain Ingress.
        self.kube.set_object(ingress("web", [("/web", "web", 80)], host="web.example.com"))
        # shop: a TLS Ingress; its Secret, listed before any Ingress names
        # it, is dropped, then fetched (GET in shop) when one does.
        issued = self_signed("shop.example.com")
        self.kube.set_object(
            tls_secret("shop-tls", issued.chain_pem, issued.key_pem, namespace="shop")
        )
        self.kube.set_object(
            ingress(
                "store",
                [("/store", "store", 80)],
                host="shop.example.com",
                namespace="shop",
                tls=[{"hosts": ["shop.example.com"], "secretName": "shop-tls"}],
            )
        )
        yield self.wait_for(
            lambda: self.served_by("/web", host="web.example.com").addCallback(
                lambda b: b == "web"
            ),
            what="default/web served",
        )
        yield self.wait_for(
            lambda: self.served_by("/store", host="shop.example.com").addCallback(
                lambda b: b == "store"
            ),
            what="shop/store served",
        )
        # Through the endpoints: each namespace's own backend.
        self.assertGreater(self.backends["alpha"].requests, 0)
        self.assertGreater(self.backends["beta"].requests, 0)
        yield self.wait_for(
            lambda: ("get", "secrets", "shop") in self.used(), what="the Secret fetched in shop"
        )
        self.assertEqual(
            [
                h
                for obj in gateway.ingress.translation.objects
                if obj.ref.kind == "certificate"
                for h in obj.body.hosts
            ],
            ["shop.example.com"],
        )

        # Status on the Ingresses of both namespaces.
        yield self.wait_for(
            lambda: self.status("default", "web") == [{"ip": ADDRESS}], what="status in default"
        )
        yield self.wait_for(
            lambda: self.status("shop", "store") == [{"ip": ADDRESS}], what="status in shop"
        )

        # A problem in shop, fixed, and the same problem again: one Event in
        # shop, created then patched.
        self.kube.set_object(ingress("broken", [("/broken", "missing", 80)], namespace="shop"))
        yield self.wait_for(lambda: self.events_on("broken"), what="an Event on shop/broken")
        self.kube.set_object(service("missing", 80, namespace="shop"))
        # Events follow generations: wait until one without the problem is
        # live, or the fix and the new break may fall into one rebuild.
        yield self.wait_for(
            lambda: not any(
                p.ref.source == "ingress" for p in gateway.reconciler.current.config.problems
            )
        )
        self.kube.delete_object("v1", "Service", "shop", "missing")
        yield self.wait_for(
            lambda: [e["count"] for e in self.events_on("broken")] == [2],
            what="the Event patched",
        )
        (event,) = self.events_on("broken")
        self.assertEqual(event["metadata"]["namespace"], "shop")
        self.assertEqual(event["involvedObject"]["namespace"], "shop")
        self.assertEqual(event["reason"], "InvalidIngress")

        # The Lease is in the gateway's own namespace.
        lease = self.kube.get_object("coordination.k8s.io/v1", "Lease", "default", "apimgw-leader")
        self.assertIsNotNone(lease)
        self.assertTrue(lease["spec"]["holderIdentity"].startswith("gateway-0"), lease)
        self.assertEqual({r.namespace for r in self.mine() if r.plural == "leases"}, {"default"})

        yield gateway.stopService()  # releases the Lease
        self.assertEqual(self.refused(), [])
        self.assertEqual(
            self.used(),
            {
                # The informers, at cluster scope.
                ("list", "ingresses", CLUSTER),
                ("watch", "ingresses", CLUSTER),
                ("list", "ingressclasses", CLUSTER),
                ("watch", "ingressclasses", CLUSTER),
                ("list", "services", CLUSTER),
                ("watch", "services", CLUSTER),
                ("list", "secrets", CLUSTER),
                ("watch", "secrets", CLUSTER),
                ("list", "endpointslices", CLUSTER),
                ("watch", "endpointslices", CLUSTER),
                # In the namespace of the object concerned.
                ("get", "secrets", "shop"),
                ("update", "ingresses/status", "default"),
                ("update", "ingresses/status", "shop"),
                ("create", "events", "shop"),
                ("patch", "events", "shop"),
                # Leader election, in the gateway's namespace.
                ("get", "leases", "default"),
                ("create", "leases", "default"),
                ("update", "leases", "default"),
            },
        )
        # Every verb granted was used, but get on IngressClasses (the base's
        # ClusterRole grants it; the informer lists and watches).
        granted = {
            (verb, resource)
            for rule in _cluster_wide_rules()
            for resource in rule.resources
            for verb in rule.verbs
        }
        self.assertEqual(
            granted - {("get", "ingressclasses")},
            {(verb, resource) for verb, resource, _ in self.used()},
        )

    @inlineCallbacks
    def test_namespaced_rules_refuse_the_cluster_wide_list(self) -> Any:
        """
        With the base's rules (a Role in ``default``) and all namespaces
        watched, the list of Ingresses at cluster scope is refused; the
        gateway stays not-ready and says so.
        """
        self.restrict(_base_rules())
        self.populate()
        self.kube.set_object(ingress("web", [("/web", "web", 80)]))
        gateway = yield self.start_another()
        self.gateway = gateway
        yield self.wait_for(
            lambda: any(
                (r.verb, r.plural, r.namespace) == ("list", "ingresses", None)
                for r in self.refused()
            ),
            what="the cluster-wide list of Ingresses refused",
        )
        # Every refusal is of a cluster-wide list; IngressClasses (the
        # base's ClusterRole) are allowed.
        refused = {(r.verb, r.plural, r.namespace) for r in self.refused()}
        self.assertLessEqual(
            refused,
            {
                ("list", plural, None)
                for plural in ("ingresses", "services", "secrets", "endpointslices")
            },
        )
        self.assertIn(("list", "ingressclasses", CLUSTER), self.used())
        response = yield self.wait_for(
            lambda: self.readyz(gateway).addCallback(
                lambda r: r if b"refused to list" in r.body else None
            ),
            what="readiness naming the refusal",
        )
        self.assertEqual(response.status, 503)
        self.assertIn(b"403 Forbidden", response.body)
        response = yield self.get("/web")
        self.assertNotEqual(response.status, 200)
