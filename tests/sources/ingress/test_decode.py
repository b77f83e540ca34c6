"""
Golden-file tests of the Ingress decoder (:mod:`gateway.sources.ingress._decode`).

One test method per ``testdata/<case>.in.yaml``: the Kubernetes
objects (and optional settings) are translated and the canonical YAML of the
result is compared with ``<case>.out.yaml``. Set ``APIMGW_REGENERATE_GOLDEN=1``
to rewrite the ``.out.yaml`` files (then review the diff).
"""

from __future__ import annotations

import copy
import hashlib
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from twisted.trial.unittest import SynchronousTestCase

from gateway.model import Certificate, RouteSet
from gateway.sources.ingress import (
    IngressDecoding,
    IngressInputs,
    IngressMemo,
    IngressSettings,
    decode_ingresses,
    is_ours,
    modification_time,
)

TESTDATA = Path(__file__).parent / "testdata"
_KINDS = {"Ingress": "ingresses", "IngressClass": "ingress_classes", "Service": "services",
          "Secret": "secrets", "EndpointSlice": "endpoint_slices"}


def load_inputs(path: Path, *, reverse: bool = False) -> IngressInputs:
    doc = yaml.safe_load(path.read_text())
    settings = IngressSettings(**{
        "ingress_class": doc.get("settings", {}).get("ingressClass", IngressSettings.ingress_class),
        "dns_suffix": doc.get("settings", {}).get("dnsSuffix", IngressSettings.dns_suffix),
        "backend_mode": doc.get("settings", {}).get("backend", IngressSettings.backend_mode),
    })
    groups: dict[str, list[Any]] = {v: [] for v in _KINDS.values()}
    for obj in doc["objects"]:
        groups[_KINDS[obj["kind"]]].append(obj)
    if reverse:
        groups = {k: list(reversed(v)) for k, v in groups.items()}
    return IngressInputs(settings=settings, **{k: tuple(v) for k, v in groups.items()})


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat().replace("+00:00", "Z")


def canonical(result: IngressDecoding) -> str:
    """The result as stable, reviewable YAML (certificate PEM as a digest)."""
    objects = []
    for obj in result.objects:
        entry: dict[str, Any] = {"ref": str(obj.ref), "modified": _iso(obj.modified)}
        if isinstance(obj.body, RouteSet):
            entry["routes"] = [
                {"host": r.host, "path": r.path, "pathType": r.path_type, "backend": r.backend}
                | ({} if r.endpoints is None else {"endpoints": list(r.endpoints)})
                for r in obj.body.routes
            ]
        elif isinstance(obj.body, Certificate):
            entry["hosts"] = list(obj.body.hosts)
            entry["certSha256"] = hashlib.sha256(obj.body.cert_pem.encode()).hexdigest()[:16]
            entry["keySha256"] = hashlib.sha256(obj.body.key_pem.encode()).hexdigest()[:16]
        objects.append(entry)
    doc = {
        "served": list(result.served),
        "secrets": list(result.secrets),
        "objects": objects,
        "problems": [{"ref": str(p.ref), "message": p.message} for p in result.problems],
    }
    return yaml.safe_dump(doc, sort_keys=False, width=120)


class GoldenTests(SynchronousTestCase):
    """Generated below: one ``test_<case>`` per input file."""


def _make(case: Path) -> Any:
    def test(self: SynchronousTestCase) -> None:
        got = canonical(decode_ingresses(load_inputs(case)))
        expected_path = case.with_name(case.name.replace(".in.yaml", ".out.yaml"))
        if os.environ.get("APIMGW_REGENERATE_GOLDEN"):
            expected_path.write_text(got)
        self.assertEqual(got, expected_path.read_text())
        # The arrival order of the watched objects never matters.
        self.assertEqual(canonical(decode_ingresses(load_inputs(case, reverse=True))), got)
        # Nor does a memo of the previous translation, also after every
        # object was replaced by an equal copy (a relist).
        inputs = load_inputs(case)
        memo = IngressMemo()
        self.assertEqual(canonical(decode_ingresses(inputs, memo)), got)
        self.assertEqual(canonical(decode_ingresses(inputs, memo)), got)
        self.assertEqual(canonical(decode_ingresses(copy.deepcopy(inputs), memo)), got)

    first_line = case.read_text().splitlines()[0].lstrip("# ").strip()
    test.__doc__ = f"{first_line} (golden file {case.name}; input order does not matter)."
    return test


for _case in sorted(TESTDATA.glob("*.in.yaml")):
    _name = "test_" + _case.name.removesuffix(".in.yaml").replace("-", "_")
    setattr(GoldenTests, _name, _make(_case))


class RuleTests(SynchronousTestCase):
    def test_root_rule_is_served_not_the_default_backend(self) -> None:
        """Translated, a host-less / Prefix rule serves /, with no duplicate problem; the defaultBackend is unused."""
        from gateway.translate import translate

        decoded = decode_ingresses(load_inputs(TESTDATA / "default-backend.in.yaml"))
        mine = [o for o in decoded.objects if o.ref.name == "default/root-prefix"]
        config = translate(mine, problems=decoded.problems, now=0.0)
        self.assertEqual(config.problems, ())
        (root,) = [r for r in config.routes if r.host == "" and r.match == "prefix" and r.path in ("", "/")]
        self.assertEqual(root.backend.host, "web.default.svc.cluster.local")

    def test_problems_carry_the_ingress_ref(self) -> None:
        """Decoding problems name the Ingress (source ingress, kind routes), as the store requires."""
        decoded = decode_ingresses(load_inputs(TESTDATA / "backends.in.yaml"))
        self.assertTrue(decoded.problems)
        self.assertEqual({str(p.ref) for p in decoded.problems}, {"ingress:routes/shop/mixed"})

    def test_modification_time_prefers_newest_managed_field(self) -> None:
        """The newest managedFields time wins over creationTimestamp; without them creationTimestamp is used."""
        obj = {"metadata": {"creationTimestamp": "2024-01-01T00:00:00Z", "managedFields": [
            {"time": "2024-03-01T00:00:00Z"}, {"time": "2024-05-01T00:00:00Z"}, {}]}}
        self.assertEqual(_iso(modification_time(obj)), "2024-05-01T00:00:00Z")
        self.assertEqual(_iso(modification_time({"metadata": {"creationTimestamp": "2024-01-01T00:00:00Z"}})),
                         "2024-01-01T00:00:00Z")

    def test_status_writes_do_not_count_as_modification(self) -> None:
        """A managedFields entry of a subresource write (the gateway's own status update) is ignored."""
        obj = {"metadata": {"creationTimestamp": "2024-01-01T00:00:00Z", "managedFields": [
            {"manager": "kubectl", "time": "2024-03-01T00:00:00Z"},
            {"manager": "apimgw", "subresource": "status", "time": "2024-09-01T00:00:00Z"}]}}
        self.assertEqual(_iso(modification_time(obj)), "2024-03-01T00:00:00Z")

    def test_annotation_wins_over_class_name(self) -> None:
        """With both, the ingress.class annotation decides."""
        ours = {"metadata": {"name": "c"}, "spec": {"controller": "azure-api-management/gateway"}}
        ingress = {"metadata": {"annotations": {"kubernetes.io/ingress.class": "nginx"}},
                   "spec": {"ingressClassName": "c"}}
        self.assertFalse(is_ours(ingress, [ours], "azure-api-management/gateway"))


class MemoTests(SynchronousTestCase):
    """What the memo reuses and what invalidates it."""

    def _inputs(self, **changes: Any) -> dict[str, Any]:
        ours = {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "c"},
                "spec": {"controller": "azure-api-management/gateway"}}
        def ingress(name: str, svc: str) -> dict[str, Any]:
            return {"metadata": {"name": name, "namespace": "ns"}, "spec": {"ingressClassName": "c", "rules": [
                {"http": {"paths": [{"path": f"/{name}", "pathType": "Prefix",
                                     "backend": {"service": {"name": svc, "port": {"number": 80}}}}]}}]}}
        base = {
            "ingresses": [ingress("a", "svc-a"), ingress("b", "svc-b")],
            "ingress_classes": [ours],
            "services": [{"metadata": {"name": "svc-a", "namespace": "ns"}, "spec": {"ports": [{"port": 80}]}}],
        }
        base.update(changes)
        return base

    def test_only_affected_ingresses_are_translated_again(self) -> None:
        """A Service appearing re-translates the Ingress that read its absence, not the others."""
        memo = IngressMemo()
        raw = self._inputs()
        settings = IngressSettings()

        def run() -> IngressDecoding:
            return decode_ingresses(
                IngressInputs(
                    ingresses=tuple(raw["ingresses"]),
                    ingress_classes=tuple(raw["ingress_classes"]),
                    services=tuple(raw["services"]),
                    settings=settings,
                ),
                memo,
            )

        first = run()
        self.assertEqual(len(first.problems), 1)  # svc-b is missing
        self.assertEqual((memo.hits, memo.misses), (0, 2))
        run()
        self.assertEqual((memo.hits, memo.misses), (2, 2))
        raw["services"].append(
            {"metadata": {"name": "svc-b", "namespace": "ns"}, "spec": {"ports": [{"port": 80}]}}
        )
        third = run()
        self.assertEqual((memo.hits, memo.misses), (3, 3))
        self.assertEqual(third.problems, ())
        # Reused results keep the model objects identical.
        self.assertIs(third.objects[0], first.objects[0])
