"""
Pipelines in translation: compiled once per configuration and reused by
the build memo while their inputs do not change.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gateway.memo import BuildMemo
from gateway.model import Api, NamedValue, ObjectRef, Policy, PolicyScope, SourceObject
from gateway.translate import GatewayConfig, RouteEntry, describe_pipeline, translate

_XML = ('<policies><inbound><base/><set-header name="X-T" exists-action="override">'
        '<value>{{tenant}}</value></set-header></inbound></policies>')


def _obj(kind: str, name: str, body: object, modified: float = 1.0) -> SourceObject:
    return SourceObject(ObjectRef("cloud", kind, name), modified, body)  # type: ignore[arg-type]


def _route(config: GatewayConfig, label: str) -> RouteEntry:
    return next(r for r in config.routes if r.label == label)


class MemoTests(SynchronousTestCase):
    """What a rebuild reuses."""

    def setUp(self) -> None:
        self.policy = _obj("policy", "a", Policy(PolicyScope("api", api_id="a"), _XML))
        self.tenant = _obj("namedvalue", "tenant", NamedValue("tenant", "contoso"))
        self.other = _obj("namedvalue", "other", NamedValue("other", "x"))
        self.a = _obj("api", "a", Api("a", "a", "http://a:9000"))
        self.b = _obj("api", "b", Api("b", "b", "http://b:9000"))
        self.memo = BuildMemo()
        self.first = self.build(self.b, self.other)

    def build(self, b: SourceObject, other: SourceObject) -> GatewayConfig:
        config = translate([self.policy, self.tenant, other, self.a, b], memo=self.memo)
        self.memo.rotate()
        return config

    def test_unrelated_change_reuses_the_api_entry(self) -> None:
        """Another API or an unreferenced named value changing keeps the same entry and pipelines."""
        b2 = _obj("api", "b", Api("b", "moved", "http://b:9000"), 2.0)
        other2 = _obj("namedvalue", "other", NamedValue("other", "y"), 2.0)
        second = self.build(b2, other2)
        self.assertIs(_route(second, "api:a"), _route(self.first, "api:a"))

    def test_referenced_named_value_recompiles(self) -> None:
        """A change of a named value the document uses gives a new pipeline with the new value."""
        self.tenant = _obj("namedvalue", "tenant", NamedValue("tenant", "fabrikam"), 2.0)
        second = self.build(self.b, self.other)
        pipelines = _route(second, "api:a").pipelines
        assert pipelines is not None
        self.assertIn('values=["fabrikam"]', describe_pipeline(pipelines[None])[0])

    def test_same_result_without_memo(self) -> None:
        """The memoized build equals a build without memo."""
        self.assertEqual(self.first, translate([self.policy, self.tenant, self.other, self.a, self.b]))

    def test_api_without_policy_has_none(self) -> None:
        """An API no document applies to carries no pipelines: the plain path."""
        self.assertIsNone(_route(self.first, "api:b").pipelines)
        self.assertIsNone(_route(self.first, "api:b").policy_error)
