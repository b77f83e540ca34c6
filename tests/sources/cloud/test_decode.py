"""Tests of the pure cloud decoder and of the mirror of raw entities."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from gateway.model import ObjectRef, Problem
from gateway.sources.cloud._decode import Decoder, parse_modified
from gateway.sources.cloud._mirror import Mirror

MODIFIED = "2025-01-02T03:04:05.000000Z"


def _api(**fields: object) -> dict[str, object]:
    return {"id": "x", "path": "x", "serviceUrl": "http://b", "modified": MODIFIED, **fields}


class DecoderTests(TestCase):
    """Entities → objects and problems."""

    def test_api(self) -> None:
        """An API becomes an Api object with its operations and its own modification time."""
        decoded = Decoder("cloud").decode({"apis": {"x": _api(operations=[
            {"id": "get", "method": "GET", "urlTemplate": "/r"}])}})
        (obj,) = decoded.objects.values()
        self.assertEqual(obj.ref, ObjectRef("cloud", "api", "x"))
        self.assertEqual(obj.body.operations[0].url_template, "/r")
        self.assertEqual(obj.modified, parse_modified(MODIFIED))
        self.assertEqual(decoded.problems, {})

    def test_malformedApiIsAProblem(self) -> None:
        """
        An API lacking a field or with one of the wrong type is no object
        but a problem naming the field; the other APIs decode.
        """
        decoded = Decoder("cloud").decode({"apis": {
            "good": _api(id="good"),
            "nourl": {"id": "nourl", "path": "n"},
            "badops": _api(id="badops", operations="GET /"),
            "badhost": _api(id="badhost", hostnames=[3]),
        }})
        self.assertEqual([r.name for r in decoded.objects], ["good"])
        messages = {ref.name: ps[0].message for ref, ps in decoded.problems.items()}
        self.assertIn("serviceUrl", messages["nourl"])
        self.assertIn("operations must be a list", messages["badops"])
        self.assertIn("hostnames[] must be a string", messages["badhost"])
        for ref, (problem,) in decoded.problems.items():
            self.assertIsInstance(problem, Problem)
            self.assertEqual(problem.ref, ref)

    def test_unchangedApiReused(self) -> None:
        """An API entity that did not change decodes to the very same object."""
        decoder = Decoder("cloud")
        entities = {"apis": {"x": _api()}}
        first = decoder.decode(entities).objects
        second = decoder.decode(entities).objects
        (ref,) = first
        self.assertIs(first[ref], second[ref])

    def test_certificateNamedByHostname(self) -> None:
        """A certificate becomes an object only when a host name names it."""
        entities = {
            "certificates": {"c": {"id": "c", "pem": "CERT", "key": "KEY"},
                             "unused": {"id": "unused", "pem": "P"}},
            "hostnames": {"h": {"id": "h", "hostname": "www.example.com", "certificateId": "c"}},
        }
        (obj,) = Decoder("cloud").decode(entities).objects.values()
        self.assertEqual(obj.body.hosts, ("www.example.com",))
        self.assertEqual(obj.body.key_pem, "KEY")

    def test_modifiedMalformed(self) -> None:
        """A missing or malformed modification time is 0 (it loses every conflict)."""
        self.assertEqual(parse_modified(None), 0.0)
        self.assertEqual(parse_modified("yesterday"), 0.0)
        self.assertEqual(parse_modified("2025-01-02T03:04:05"), 0.0)


class MirrorTests(TestCase):
    """Snapshots and events on the raw entities."""

    def test_snapshotThenEvents(self) -> None:
        """A snapshot replaces everything; events upsert and delete in order; unknown kinds are skipped."""
        mirror = Mirror()
        self.assertFalse(mirror.loaded)
        mirror.apply_snapshot({"revision": 3, "apis": [_api(), "junk", {"no": "id"}]}, "gw")
        self.assertEqual(list(mirror.entities["apis"]), ["x"])
        self.assertTrue(mirror.apply_event({"kind": "api", "id": "y", "operation": "upsert",
                                            "body": _api(id="y")}))
        self.assertTrue(mirror.apply_event({"kind": "api", "id": "x", "operation": "delete"}))
        self.assertFalse(mirror.apply_event({"kind": "gadget", "id": "z"}))
        self.assertEqual(mirror.snapshot()["apis"], [_api(id="y")])
        self.assertEqual((mirror.snapshot()["revision"], mirror.gateway_id), (3, "gw"))
