"""
The Gateway API examples under ``k8s/examples/gateway-api/`` resolve as
their README says: the shipped manifests are read as they are (with the
echo Service of ``k8s/examples/echo.yaml``, the GatewayClass of
``k8s/gateway-api/`` and the TLS Secret the walkthrough creates), so an
example that stops attaching, or a grant that stops mattering, fails here.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml
from twisted.trial.unittest import SynchronousTestCase

from gateway.sources.gatewayapi import (
    GatewayApiInputs,
    Resolution,
    ResolvedListener,
    resolve,
)
from gateway.testing.certs import self_signed

EXAMPLES = Path(__file__).parent.parent / "k8s" / "examples"
GATEWAY_API = EXAMPLES / "gateway-api"

_FIELDS = {
    "GatewayClass": "gateway_classes",
    "Gateway": "gateways",
    "HTTPRoute": "http_routes",
    "ReferenceGrant": "reference_grants",
    "Service": "services",
    "Secret": "secrets",
    "Namespace": "namespaces",
}
_CLUSTER_SCOPED = ("GatewayClass", "Namespace")


def _documents(*paths: Path) -> list[dict[str, Any]]:
    docs = []
    for path in paths:
        docs += [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    return docs


def _tls_secret(name: str, *hosts: str) -> dict[str, Any]:
    """A ``kubernetes.io/tls`` Secret, as ``kubectl create secret tls`` makes it."""
    issued = self_signed(*hosts)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": "default"},
        "data": {
            "tls.crt": base64.b64encode(issued.chain_pem.encode()).decode(),
            "tls.key": base64.b64encode(issued.key_pem.encode()).decode(),
        },
    }


def example_inputs(*, without: tuple[str, ...] = ()) -> GatewayApiInputs:
    """
    Every example object, applied in the ``default`` namespace as the README
    does, except the kinds named in ``without``.
    """
    docs = _documents(
        EXAMPLES / "echo.yaml",
        *sorted(GATEWAY_API.glob("*.yaml")),
        Path(__file__).parent.parent / "k8s" / "gateway-api" / "gatewayclass.yaml",
    )
    docs.append(_tls_secret("wildcard-example-com", "*.example.com"))
    found: dict[str, list[Any]] = {name: [] for name in _FIELDS.values()}
    for doc in docs:
        kind = doc["kind"]
        if kind not in _FIELDS or kind in without:
            continue
        if kind not in _CLUSTER_SCOPED:
            doc.setdefault("metadata", {}).setdefault("namespace", "default")
        found[_FIELDS[kind]].append(doc)
    return GatewayApiInputs(**{name: tuple(objs) for name, objs in found.items()})


def _listener(result: Resolution, name: str) -> ResolvedListener:
    (listener,) = [l for l in result.listeners if l.name == name]
    return listener


def _conditions(result: Resolution, route: str, section: str) -> dict[str, tuple[bool, str]]:
    (status,) = [r for r in result.routes if r.route == route]
    (parent,) = [p for p in status.parents if p.parent.section_name == section]
    return {c.type: (c.status, c.reason) for c in parent.conditions}


def _hosts(listener: ResolvedListener) -> dict[str | None, list[str]]:
    """Host group → ``route rule match → backends`` lines, in serving order."""
    return {
        h.host: [
            f"{r.route} {r.rule}.{r.match_index} {r.match.path_kind} {r.match.path} -> "
            + ",".join(f"{b.weight}:{b.url}" for b in r.backends)
            for r in h.rules
        ]
        for h in listener.hosts
    }


ECHO = "http://echo-service.default.svc.cluster.local:8080"
CANARY = "http://echo-canary.default.svc.cluster.local:8080"


class GatewayApiExamplesTests(SynchronousTestCase):
    def test_gatewayProgrammed(self) -> None:
        """
        The shared Gateway is accepted and programmed with both listeners,
        which count the routes the README attaches to them.
        """
        result = resolve(example_inputs())
        (gateway,) = result.gateways
        self.assertEqual(gateway.gateway, "default/shared-gateway")
        self.assertEqual(
            {c.type: (c.status, c.reason) for c in gateway.conditions},
            {"Accepted": (True, "Accepted"), "Programmed": (True, "Programmed")},
        )
        attached = {l.name: l.attached_routes for l in gateway.listeners}
        self.assertEqual(attached, {"http": 2, "https": 2})
        self.assertEqual(result.secrets, ("default/wildcard-example-com",))

    def test_echoOnBothListeners(self) -> None:
        """The Prometheus-like route serves every path of its host on both listeners."""
        result = resolve(example_inputs())
        for section in ("http", "https"):
            self.assertEqual(
                _conditions(result, "default/echo", section),
                {"Accepted": (True, "Accepted"), "ResolvedRefs": (True, "ResolvedRefs")},
            )
            self.assertEqual(
                _hosts(_listener(result, section))["echo.example.com"],
                [f"default/echo 0.0 PathPrefix / -> 1:{ECHO}"],
            )

    def test_canaryRules(self) -> None:
        """
        The canary route's rules, in the spec's order: the header match
        before the plain /api split (same path, more headers), the /old
        redirect (a method match) before both, and the weights as written.
        """
        result = resolve(example_inputs())
        self.assertEqual(
            _hosts(_listener(result, "https"))["api.example.com"],
            [
                # same path length: the method match first
                "default/canary 2.0 PathPrefix /old -> ",
                f"default/canary 0.0 PathPrefix /api -> 1:{CANARY}",
                f"default/canary 1.0 PathPrefix /api -> 90:{ECHO},10:{CANARY}",
                f"default/canary 3.0 PathPrefix /v1 -> 1:{ECHO}",
            ],
        )
        self.assertNotIn("api.example.com", _hosts(_listener(result, "http")))

    def test_crossNamespaceNeedsTheGrant(self) -> None:
        """
        team-a's route reaches the Service in ``default`` with the
        ReferenceGrant; without it the reference is not permitted and its
        share is answered 500 (a backend without a URL).
        """
        granted = resolve(example_inputs())
        self.assertEqual(
            _hosts(_listener(granted, "http"))["team-a.example.com"],
            [f"team-a/team-a 0.0 PathPrefix / -> 1:{ECHO}"],
        )
        refused = resolve(example_inputs(without=("ReferenceGrant",)))
        self.assertEqual(
            _conditions(refused, "team-a/team-a", "http")["ResolvedRefs"],
            (False, "RefNotPermitted"),
        )
        (rule,) = _listener(refused, "http").hosts[0].rules
        self.assertEqual([(b.url, b.problem) for b in rule.backends], [(None, "RefNotPermitted")])
