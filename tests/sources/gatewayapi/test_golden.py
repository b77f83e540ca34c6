"""
Golden-file tests of the Gateway API resolver,
:func:`gateway.sources.gatewayapi.resolve`, over the published Gateway API
conformance manifests.

One test method per ``testdata/<case>.in.yaml``: the case's objects, with
those of ``testdata/base.yaml`` (the conformance Namespaces and Services,
and our GatewayClass), are resolved and the canonical YAML of the
:class:`~gateway.sources.gatewayapi.Resolution` is compared with
``<case>.out.yaml``. Each input file names the conformance manifests it was
copied from and the commit. The expected outputs were written and reviewed
by hand against the conformance test's Go assertions
(``conformance/tests/<name>.go``) and the spec; set
``APIMGW_REGENERATE_GOLDEN=1`` to rewrite them, then review the diff: a
golden file is a claim about behaviour, not a snapshot to accept blindly.

The conformance suite checks statuses and then sends requests. Here the
statuses are compared directly, and the requests are checked by reading
the resolved listeners (which host group, which rule in which order,
which backend); serving them is a later part of issue 13, so "passes"
below means "the resolution is what the test's assertions require":

===================================================  =====================================
conformance test (``ShortName``)                      resolution
===================================================  =====================================
HTTPRouteSimpleSameNamespace                          passes
HTTPRouteCrossNamespace                               passes
HTTPRouteReferenceGrant                               passes
HTTPRouteInvalidCrossNamespaceBackendRef              passes (RefNotPermitted, 500 backend)
HTTPRouteHostnameIntersection                         passes
HTTPRouteMatching                                     passes
HTTPRouteMatchingAcrossRoutes                         passes
HTTPRouteHeaderMatching                               passes
HTTPRouteRequestHeaderModifier                        passes
HTTPRouteRedirectHostAndStatus, HTTPRouteRedirectPath passes
HTTPRouteRewritePath, HTTPRouteRewriteHost            passes
HTTPRouteWeight                                       passes (weights resolved; split not served)
GatewayHTTPListenerIsolation                          passes
HTTPRoutePathMatchOrder                               passes
HTTPRouteMethodMatching                               passes
HTTPRouteQueryParamMatching                           passes
HTTPRouteInvalidNonExistentBackendRef                 passes (BackendNotFound, 500 backend)
HTTPRouteInvalidParentRefNotMatchingSectionName       passes (NoMatchingParent)
HTTPRouteHTTPSListener                                passes (certificates resolved; TLS not served)
GatewayInvalidTLSConfiguration                        passes (InvalidCertificateRef, not programmed)
GatewayWithAttachedRoutes                             passes (counted on an unprogrammed listener too)
===================================================  =====================================
"""

from __future__ import annotations

import os
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml
from twisted.trial.unittest import SynchronousTestCase

from gateway.sources.gatewayapi import (
    Backend,
    Condition,
    GatewayApiInputs,
    Match,
    Resolution,
    ResolvedRule,
    resolve,
)

TESTDATA = Path(__file__).parent / "testdata"

#: Set to a non-empty value to rewrite the ``.out.yaml`` files.
REGENERATE = "APIMGW_REGENERATE_GOLDEN"

_FIELDS = {
    "GatewayClass": "gateway_classes",
    "Gateway": "gateways",
    "HTTPRoute": "http_routes",
    "ReferenceGrant": "reference_grants",
    "Service": "services",
    "Secret": "secrets",
    "Namespace": "namespaces",
}


def load_inputs(case: Path, reverse: bool = False) -> GatewayApiInputs:
    """``base.yaml`` and the case's documents, sorted into the inputs by kind."""
    found: dict[str, list[Any]] = {name: [] for name in _FIELDS.values()}
    for path in (TESTDATA / "base.yaml", case):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                found[_FIELDS[doc["kind"]]].append(doc)
    order = reversed if reverse else tuple

    def kind(name: str) -> tuple[Any, ...]:
        return tuple(order(found[name]))

    return GatewayApiInputs(
        gateway_classes=kind("gateway_classes"),
        gateways=kind("gateways"),
        http_routes=kind("http_routes"),
        reference_grants=kind("reference_grants"),
        services=kind("services"),
        secrets=kind("secrets"),
        namespaces=kind("namespaces"),
    )


# --- canonical output ----------------------------------------------------


def _condition(c: Condition) -> str:
    text = f"{c.type}={c.status} {c.reason}"
    if c.message:
        text += f": {c.message}"
    if c.observed_generation is not None:
        text += f" (generation {c.observed_generation})"
    return text


def _match(m: Match) -> str:
    parts = [f"{m.path_kind} {m.path}"]
    if m.method:
        parts.append(f"method {m.method}")
    parts += [f"header {h.name} {'=' if h.kind == 'Exact' else '~'} {h.value}" for h in m.headers]
    parts += [f"query {q.name} {'=' if q.kind == 'Exact' else '~'} {q.value}" for q in m.query]
    return ", ".join(parts)


def _backend(b: Backend) -> str:
    if b.url is not None:
        return f"{b.weight} {b.url}"
    return f"{b.weight} {b.problem} {b.service}:{b.port}"


def _plain(value: Any) -> Any:
    """Dataclasses → dicts without ``None`` or empty fields; tuples → lists."""
    if is_dataclass(value):
        out = {}
        for f in fields(value):
            item = _plain(getattr(value, f.name))
            if item not in (None, [], {}):
                out[f.name] = item
        return out
    if isinstance(value, tuple):
        if all(isinstance(v, tuple) and len(v) == 2 for v in value):
            return [f"{name}: {text}" for name, text in value]  # header (name, value) pairs
        return [_plain(v) for v in value]
    return value


def _rule(r: ResolvedRule) -> dict[str, Any]:
    out: dict[str, Any] = {
        "route": f"{r.route} rule {r.rule} match {r.match_index}",
        "match": _match(r.match),
    }
    filters = _plain(r.filters)
    if filters:
        out["filters"] = filters
    out["backends"] = [_backend(b) for b in r.backends]
    return out


def canonical(result: Resolution) -> str:
    """The resolution as YAML a reviewer reads (conditions and matches as one line each)."""
    doc = {
        "listeners": [
            {
                "listener": f"{l.gateway} {l.name}",
                "port": l.port,
                "protocol": l.protocol,
                "hostname": l.hostname,
                **({"certificates": list(l.certificates)} if l.certificates else {}),
                "hosts": [{"host": h.host, "rules": [_rule(r) for r in h.rules]} for h in l.hosts],
            }
            for l in result.listeners
        ],
        "classes": {c.name: [_condition(x) for x in c.conditions] for c in result.classes},
        "gateways": {
            g.gateway: {
                "conditions": [_condition(x) for x in g.conditions],
                "listeners": {
                    s.name: {
                        "supportedKinds": list(s.supported_kinds),
                        "attachedRoutes": s.attached_routes,
                        "conditions": [_condition(x) for x in s.conditions],
                    }
                    for s in g.listeners
                },
            }
            for g in result.gateways
        },
        "routes": {
            r.route: [
                {
                    "parent": _plain(p.parent),
                    "controller": p.controller_name,
                    "conditions": [_condition(x) for x in p.conditions],
                }
                for p in r.parents
            ]
            for r in result.routes
        },
        "secrets": list(result.secrets),
    }
    return yaml.safe_dump(doc, sort_keys=False, width=120)


class GoldenTests(SynchronousTestCase):
    """One method per ``testdata/<case>.in.yaml`` (added below)."""


def _make(case: Path) -> Any:
    def test(self: SynchronousTestCase) -> None:
        got = canonical(resolve(load_inputs(case)))
        out = case.with_name(case.name.replace(".in.yaml", ".out.yaml"))
        if os.environ.get(REGENERATE):
            out.write_text(got, encoding="utf-8")
        self.assertEqual(got, out.read_text(encoding="utf-8"))
        # The order objects arrive in changes nothing.
        self.assertEqual(canonical(resolve(load_inputs(case, reverse=True))), got)

    test.__doc__ = (
        f"The resolution of {case.name} is the reviewed {case.name.replace('.in.', '.out.')}."
    )
    return test


for _case in sorted(TESTDATA.glob("*.in.yaml")):
    _name = "test_" + _case.name[: -len(".in.yaml")].replace("-", "_")
    setattr(GoldenTests, _name, _make(_case))
