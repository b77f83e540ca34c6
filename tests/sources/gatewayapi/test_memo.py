"""
:class:`~gateway.sources.gatewayapi.RulesMemo`: resolving with the memo
gives what resolving without it gives, reads only the routes that changed,
and forgets everything when a Service or ReferenceGrant changed.
"""

from __future__ import annotations

import copy
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from gateway.sources.gatewayapi import GatewayApiInputs, RulesMemo, resolve

from .test_golden import TESTDATA, canonical, load_inputs


def _versioned(inputs: GatewayApiInputs) -> GatewayApiInputs:
    """Every object with a uid and a resourceVersion, as the informers hold them."""

    def stamp(objs: tuple[Any, ...], kind: str) -> tuple[Any, ...]:
        out = []
        for n, obj in enumerate(objs):
            obj = copy.deepcopy(obj)
            obj["metadata"].update(uid=f"{kind}-{n}", resourceVersion="1")
            out.append(obj)
        return tuple(out)

    return GatewayApiInputs(
        gateway_classes=stamp(inputs.gateway_classes, "class"),
        gateways=stamp(inputs.gateways, "gateway"),
        http_routes=stamp(inputs.http_routes, "route"),
        reference_grants=stamp(inputs.reference_grants, "grant"),
        services=stamp(inputs.services, "service"),
        secrets=stamp(inputs.secrets, "secret"),
        namespaces=stamp(inputs.namespaces, "namespace"),
    )


def _with(inputs: GatewayApiInputs, **changes: Any) -> GatewayApiInputs:
    fields = {name: getattr(inputs, name) for name in inputs.__dataclass_fields__}
    fields.update(changes)
    return GatewayApiInputs(**fields)


class RulesMemoTests(SynchronousTestCase):
    def setUp(self) -> None:
        inputs = _versioned(load_inputs(TESTDATA / "reference-grant.in.yaml"))
        (route,) = inputs.http_routes
        second = copy.deepcopy(route)
        second["metadata"].update(name="second", uid="route-second")
        self.inputs = _with(inputs, http_routes=(route, second))

    def test_same_result_and_unchanged_routes_kept(self) -> None:
        """A second resolution reads no route again, and gives the same result."""
        memo = RulesMemo()
        first = resolve(self.inputs, memo)
        self.assertEqual(memo.hits, 0)
        second = resolve(self.inputs, memo)
        self.assertEqual(memo.hits, len(self.inputs.http_routes))
        self.assertEqual(canonical(second), canonical(first))
        self.assertEqual(canonical(first), canonical(resolve(self.inputs)))

    def test_changed_route_read_again(self) -> None:
        """A route with a new resourceVersion is read again; its new rules are served."""
        memo = RulesMemo()
        resolve(self.inputs, memo)
        routes = list(self.inputs.http_routes)
        changed = copy.deepcopy(routes[0])
        changed["metadata"]["resourceVersion"] = "2"
        changed["spec"]["rules"][0]["matches"] = [{"path": {"type": "Exact", "value": "/only"}}]
        routes[0] = changed
        inputs = _with(self.inputs, http_routes=tuple(routes))
        result = resolve(inputs, memo)
        self.assertEqual(memo.hits, len(routes) - 1)
        self.assertEqual(canonical(result), canonical(resolve(inputs)))
        self.assertIn("Exact /only", canonical(result))

    def test_service_or_grant_change_forgets_everything(self) -> None:
        """
        Backends are read against Services and grants: when one changes
        (here the grant is gone), every route is read again and loses what
        the grant allowed.
        """
        memo = RulesMemo()
        resolve(self.inputs, memo)
        inputs = _with(self.inputs, reference_grants=())
        hits = memo.hits
        result = resolve(inputs, memo)
        self.assertEqual(memo.hits, hits)
        self.assertEqual(canonical(result), canonical(resolve(inputs)))
        services = list(self.inputs.services)
        services[0] = copy.deepcopy(services[0])
        services[0]["metadata"]["resourceVersion"] = "2"
        resolve(self.inputs, memo)  # the grant is back: nothing kept either
        resolve(_with(self.inputs, services=tuple(services)), memo)
        self.assertEqual(memo.hits, hits)

    def test_objects_without_versions_are_not_kept(self) -> None:
        """Hand-built inputs (no uid / resourceVersion) are always read."""
        plain = load_inputs(TESTDATA / "reference-grant.in.yaml")
        memo = RulesMemo()
        resolve(plain, memo)
        resolve(plain, memo)
        self.assertEqual(memo.hits, 0)
